"""The MindSpore twin's fast path ``Unet(composed_ops=True)`` (GELU and GroupNorm from primitive ops): the parity
harness passes on it (forward checks here, every check through the CLI), catches a plausible bug inside it, and ``parity.check --ms-composed-ops``
really builds it."""
import json
import subprocess
import sys

import numpy as np
import pytest

from parity.engine.initial import initial_weights
from parity.engine.suite import CHECKS
from tests.host import available, needs
from tests.parity.conftest import SIZE, TINY, TINY_RESNET

if available("torch") and available("mindspore"):
    from mindspore import nn

    from ddpm_ms.layers import ComposedGELU, ComposedGroupNorm
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

pytestmark = needs("torch", "mindspore")

TINY_CHECK = ["--config", TINY.to_json(), "--timesteps", "10", "--image-size", str(SIZE), "--ddim-steps", "5",
              "--train-steps", "2", "--no-progress"]


def _composed_pair(cfg):
    side_t, side_m = TorchSide(), MsSide(composed_ops=True)
    model_t, model_m = side_t.build(cfg), side_m.build(cfg)
    weights = initial_weights(cfg, 0)
    side_t.load(model_t, weights)
    side_m.load(model_m, weights)
    return (side_t, side_m), model_t, model_m


def _kinds(model) -> set[type]:
    return {type(c) for _, c in model.cells_and_names()}


@pytest.mark.parametrize("cfg", [TINY, TINY_RESNET], ids=["convnext", "resnet"])
def test_forward_parity_on_composed_ops(cfg, run):
    """Settings, weights, predictions at every timestep of the tape and the float64 reference: the fast path
    is as close to PyTorch and to the specification as the tutorial-exact one (the same gates)."""
    _, model_t, model_m = _composed_pair(cfg)
    kinds = _kinds(model_m)
    assert {ComposedGELU, ComposedGroupNorm} <= kinds and not {nn.GELU, nn.GroupNorm} & kinds
    report = run(model_t, model_m, weights=initial_weights(cfg, 0))
    assert report.passed, report.text()


@pytest.mark.slow  # every check in process, both block types: 1-3 min; the CLI test below runs them all once in CI
@pytest.mark.parametrize("cfg", [TINY, TINY_RESNET], ids=["convnext", "resnet"])
def test_every_check_passes_on_composed_ops(cfg, run):
    _, model_t, model_m = _composed_pair(cfg)
    report = run(model_t, model_m, checks=CHECKS, weights=initial_weights(cfg, 0))
    assert report.passed, report.text()


def test_composed_ops_are_not_the_tutorial_kernels(fresh_pair):
    """The fast path really computes differently (else the parity run above proves nothing new)."""
    _, model_m = fresh_pair(TINY)
    _, _, composed = _composed_pair(TINY)
    x = np.random.default_rng(0).standard_normal((2, 1, SIZE, SIZE)).astype(np.float32)
    t = np.array([3, 7], np.int32)
    side = MsSide()
    assert not np.array_equal(side.predict(model_m, x, t), side.predict(composed, x, t))


def test_harness_catches_an_unbiased_variance_in_the_composed_group_norm(monkeypatch, run):
    """A plausible mistake in the composition: the group variance divided by n - 1. The settings check cannot see
    it (eps and groups are right); the predictions drift past the gate and the report blames MindSpore."""
    from mindspore import ops

    def unbiased(self, x):
        b, c, h, w = x.shape
        g = x.reshape((b * self.num_groups, -1))
        d = g - g.mean(-1, keep_dims=True)
        var = (d * d).sum(-1, keepdims=True) / (g.shape[1] - 1)
        y = (d * ops.rsqrt(var + self.eps)).reshape((b, c, h, w))
        return y * self.gamma.reshape((1, c, 1, 1)) + self.beta.reshape((1, c, 1, 1))

    monkeypatch.setattr(ComposedGroupNorm, "construct", unbiased)
    _, model_t, model_m = _composed_pair(TINY)
    report = run(model_t, model_m, weights=initial_weights(TINY, 0))
    assert not report.passed and not report.settings
    assert any(r.label.startswith("prediction") for r in report.failures), report.text()
    assert {r.blame for r in report.failures if r.anchor is not None} == {"ms"}, report.text()


def test_check_cli_selects_composed_ops(cli_env, tmp_path):
    out = tmp_path / "report.json"
    code = ("import sys, parity.sides.ms as s; from ddpm_ms.layers import ComposedGroupNorm as G; b = s.MsSide.build\n"
            "def build(self, cfg):\n"
            "    m = b(self, cfg); assert any(isinstance(c, G) for _, c in m.cells_and_names()); print('COMPOSED'); return m\n"
            "s.MsSide.build = build\n"
            "from parity.check import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "--ms-composed-ops", *TINY_CHECK, "--json", str(out)],
                          capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "COMPOSED" in proc.stdout
    report = json.loads(out.read_text())
    assert report["passed"] and report["environment"]["ms_composed_ops"] is True
