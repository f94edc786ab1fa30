"""The diffusion-math probes' oracle (``parity.engine.probes.Oracle``, the specification's DDPM math driven by the
toy model) predicts what each twin's probes produce, within the float32 diffusion-math tolerance."""
import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig
from parity.engine.compare import compare
from parity.engine.probes import Oracle, run_probes
from parity.engine.tape import TapeSpec, make_tape
from parity.engine.tolerances import tolerance

LOSS_TYPES = ("huber", "l1", "l2")
ETAS = (0.0, 0.5)


@pytest.mark.parametrize("cfg", [TUTORIAL_DIFFUSION, DiffusionConfig(timesteps=10, p2_loss_weight_gamma=1.0)],
                         ids=["T200", "T10-p2"])
def test_oracle_predicts_both_twins_probes(sides, cfg):
    """T=200 also runs the loops on the probes' 10-step schedule, with the tape's 200 noise rows cut to 10."""
    tape = make_tape(TapeSpec(seed=0, batch=2, channels=1, image_size=8, timesteps=cfg.timesteps, ddim_steps=5))
    expected = Oracle(cfg).expected(tape, LOSS_TYPES, 5, ETAS)
    tol = tolerance("diffusion_math", "float32")
    for side in sides:
        got = run_probes(side, side.diffusion(cfg), tape, cfg, LOSS_TYPES, 5, ETAS)
        assert sorted(got) == sorted(expected)
        failing = [c.describe() for c in (compare(n, got[n], expected[n], tol) for n in expected) if not c.passed]
        assert not failing, (type(side).__name__, failing)
    assert expected["ddpm_loop"].shape == (10, *tape["probe_x"].shape)
    assert expected["q_sample_table"].shape == (2, cfg.timesteps)
    assert np.ndim(expected["loss_huber"]) == 0
