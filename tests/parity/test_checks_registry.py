"""The registry of checks (parity.engine.checks): each check is one unit with one name. Framework-free and
cheap: the outputs compared here are made up from the shapes the spec implies."""
from __future__ import annotations

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.api import make_spec
from parity.engine.checks import CHECKS, REGISTRY, RUN_ORDER, check_of, tolerance_of
from parity.engine.suite import compare_outputs, implied_outputs
from parity.engine.tolerances import OUTPUTS

SPEC = make_spec(UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=10), image_size=8,
                 ddim_steps=5, pred_timesteps=(0, 9))
WRITERS = [c for c in REGISTRY if c.implied(SPEC, "ms", (0, 9))]


def _outputs(framework: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32)
            for k, s in implied_outputs(SPEC, framework, (0, 9)).items()}


def test_every_check_has_one_name_and_known_tolerance_entries() -> None:
    assert CHECKS == tuple(c.name for c in REGISTRY) and len(set(CHECKS)) == len(CHECKS)
    assert [c.name for c in RUN_ORDER][-1] == "adam"  # the check that trains runs after all that do not
    for check in REGISTRY:
        assert set(check.tolerances) <= set(OUTPUTS), (check.name, check.tolerances)


@pytest.mark.parametrize("check", WRITERS, ids=lambda c: c.name)
def test_every_key_a_check_implies_is_judged_by_its_own_tolerance_entry(check) -> None:
    keys = [*check.implied(SPEC, "torch", (0, 9))]
    assert keys
    for key in keys:
        assert tolerance_of(key) in check.tolerances, (check.name, key)


@pytest.mark.parametrize("check", WRITERS, ids=lambda c: c.name)
def test_a_difference_in_one_checks_output_fails_only_that_checks_rows(check) -> None:
    a, b = _outputs("torch"), _outputs("ms")
    b.update({k: a[k] for k in b})  # the same values on both sides
    implied = (implied_outputs(SPEC, "torch", (0, 9)), implied_outputs(SPEC, "ms", (0, 9)))
    assert all(r.passed for r in compare_outputs(a, b, SPEC, "cpu", implied=implied) if r.gate)
    key = [*check.implied(SPEC, "ms", (0, 9))][-1]
    b[key] = b[key] + np.float32(1.0)
    failed = [r for r in compare_outputs(a, b, SPEC, "cpu", implied=implied) if r.gate and not r.passed]
    assert failed and {check_of(r.output).name for r in failed} == {check.name}, [r.label for r in failed]


def test_a_key_no_check_writes_has_no_tolerance_entry() -> None:
    with pytest.raises(KeyError, match="no check writes"):
        tolerance_of("nonsense/x")
