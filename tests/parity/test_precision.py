"""``parity.check --precision fp16``: the matched mixed-precision configuration passes against float64, a twin
run lower than declared fails and is named, MindSpore's unsupported levels say why, the fixed loss scale changes
no float32 gradient, and the AMP policy table's generator is deterministic and matches docs/porting.md's columns.

Tiny on purpose (``Unet(dim=8, dim_mults=(1, 2))``, 8x8, T=10, batch 2); the tutorial configuration's figures
are in parity/engine/tolerances.py and docs/harness.md.
"""
from __future__ import annotations

import numpy as np
import pytest

from ddpm_core.runtime.amp import Policy
from parity.api import make_spec
from parity.engine.initial import initial_weights
from tests.parity.conftest import SIZE, TINY, TINY_T
from tests.host import framework, needs

FORWARD = ("predict", "loss")


def _run(sides, policies, checks=FORWARD, train_steps=1, prepare=None):
    from parity.precision import check_precision

    models = tuple(side.build(TINY) for side in sides)
    weights = initial_weights(TINY, 0)
    for side, model in zip(sides, models):
        side.load(model, weights)
    if prepare is not None:
        prepare(*models)
    spec = make_spec(TINY, TINY_T, 0, 2, SIZE, train_steps=train_steps, checks=checks)
    return check_precision(sides, models, weights, spec, policies)


def test_matched_configuration_passes_with_training(sides):
    report = _run(sides, (Policy("torch", "autocast"), Policy("ms", "auto")), ("predict", "loss", "grad", "adam"))
    assert report.passed, report.text()
    labels = [r.label for r in report.rows]
    assert any(label.startswith("gradients") for label in labels) and "Adam step 1: MindSporeAdam vs nn.Adam" in labels
    for row in report.rows:
        if row.anchor is not None:  # each twin is really in float16: farther from float64 than float32 rounding
            assert 1e-5 < row.anchor.err_torch and 1e-5 < row.anchor.err_ms, row.label


def test_torch_run_in_bfloat16_while_declared_float16_fails_and_is_named(sides):
    report = _run(sides, (Policy("torch", "autocast", "bfloat16"), Policy("ms", "auto")), ("predict",))
    assert not report.passed
    assert {r.blame for r in report.failures} == {"torch"}, report.text()
    assert "FAIL (PyTorch)" in report.text()


def test_ms_groupnorm_run_lower_fails_and_the_localisation_names_groupnorm(sides):
    ms = framework("mindspore")

    def groupnorm_in_bfloat16(model_t, model_m):  # a planted bug: MindSpore's GroupNorm outputs rounded to bfloat16
        for _, cell in model_m.cells_and_names():
            if type(cell).__name__ == "GroupNorm":
                cell.register_forward_hook(lambda c, args, out: out.astype(ms.bfloat16).astype(out.dtype))

    report = _run(sides, (Policy("torch", "autocast"), Policy("ms", "auto")), ("predict",), prepare=groupnorm_in_bfloat16)
    assert not report.passed
    assert {r.blame for r in report.failures} == {"ms"}, report.text()
    assert any("(GroupNorm): MindSpore" in d for d in report.diagnoses), report.diagnoses


def test_mindspore_o1_and_bfloat16_refuse_with_the_reason(sides):
    import ddpm_ms.amp as ms_amp

    model = sides[1].build(TINY)
    with pytest.raises(ms_amp.UnsupportedPolicy, match="Residual"):
        ms_amp.apply_policy(model, Policy("ms", "O1"))


@pytest.mark.parametrize("twin_name", ["torch", "ms"])
def test_a_power_of_two_loss_scale_leaves_float32_gradients_bit_identical(sides, twin_name):
    side = sides[0] if twin_name == "torch" else sides[1]
    model = side.build(TINY)
    side.load(model, initial_weights(TINY, 0))
    rng = np.random.default_rng(0)
    x0, noise = (rng.standard_normal((2, 1, SIZE, SIZE)).astype(np.float32) for _ in range(2))
    t = np.array([1, 8], np.int32)
    diffusion = side.diffusion(TINY_T)
    loss1, g1 = side.loss_and_grads(model, diffusion, x0, t, noise, "huber")
    side.loss_scale = 1024.0
    try:
        loss2, g2 = side.loss_and_grads(model, diffusion, x0, t, noise, "huber")
    finally:
        side.loss_scale = 1.0
    assert np.array_equal(loss1, loss2)
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


@needs("torch", "mindspore")  # the table measures both twins
def test_policy_table_generator_is_deterministic_and_docs_have_its_columns():
    from parity.amp_table import BEGIN, END, PORTING, measure, render, splice

    first, second = (render(measure(TINY, SIZE, errors=False), False, "test") for _ in range(2))
    assert first == second
    assert "| GroupNorm |" in first and "16→16" in first
    text = PORTING.read_text(encoding="utf-8")
    block = text.split(BEGIN)[1].split(END)[0]
    header = next(line for line in first.splitlines() if line.startswith("| operation |"))
    assert header in block, "docs/porting.md's AMP table is stale: run python -m parity.amp_table --write"
    assert splice(text, block.strip("\n")) == text
