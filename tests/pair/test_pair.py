"""parity.pair on a hand-written pair (tests/pair/tiny_pair.py): the correct port passes, and each planted porting
slip fails, is found at its module, is blamed on MindSpore, and names the setting where one can be read."""
from __future__ import annotations

import numpy as np
import pytest

from parity.pair import assert_pair_parity, compare
from tests.host import needs

SLIPS = {  # slip -> (the module it is in, the setting that says so, or "" where no setting can)
    "ln_eps": ("block.norm", "eps"),
    "gelu": ("block.act", "approximate"),
    "transpose": ("head", ""),
    "momentum": ("bn", "momentum"),
}


@pytest.fixture
def tp():
    """tests/pair/tiny_pair.py (a SPEC file), imported once the test's ``needs`` are met; each test says whether
    it needs MindSpore too."""
    from tests.pair import tiny_pair

    return tiny_pair


@needs("torch", "mindspore")
def test_the_correct_port_passes_and_compared_everything(tp) -> None:
    report = assert_pair_parity(tp.torch_model(), tp.ms_model(), tp.inputs())
    d = report.to_dict()
    assert d["passed"] and d["first_divergence"] is None
    assert d["weights"]["counts"] == {"identical": 8, "rule": 6, "dropped": 1}
    assert len(d["weights"]["check"]["members"]) == 14 and not d["modules"]["unpaired_torch"]
    (only,) = d["inputs"]
    assert only["output"]["max_abs"] > 0  # two float32 implementations: compared, not skipped
    assert len(only["depth"]) == 10  # every module call on both sides, against float64
    assert d["training_mode"]["passed"] and d["training_mode"]["output"]["max_abs"] > 0


@needs("torch", "mindspore")
@pytest.mark.parametrize("slip", sorted(SLIPS))
def test_each_porting_slip_is_found_at_its_module_and_blamed_on_mindspore(tp, slip: str) -> None:
    report = compare(tp.torch_model(), tp.ms_model(slip), tp.inputs(), name_map=tp.name_map(slip))
    assert not report.passed
    first = report.first_divergence()
    module, setting = SLIPS[slip]
    assert first["module"] == {"torch": module, "other": module}, first["message"]
    assert first["blame"] == "MindSpore" and first["own"] and first["different_function"], first["message"]
    if setting:
        assert [s["key"] for s in first["settings"]] == [setting], first["message"]
    with pytest.raises(AssertionError, match="FAIL"):
        assert_pair_parity(tp.torch_model(), tp.ms_model(slip), tp.inputs(), name_map=tp.name_map(slip))


@needs("torch", "mindspore")
def test_the_momentum_convention_is_read_in_pytorchs_terms(tp) -> None:
    report = compare(tp.torch_model(), tp.ms_model("momentum"), tp.inputs())
    (setting,) = report.inputs[0].settings
    assert (setting.torch_value, round(setting.other_value, 6)) == (0.1, 0.9)
    assert report.inputs[0].output.passed  # eval mode cannot see it: the training-mode pass does
    assert [b.buffer for b in report.train.buffers] == ["bn.running_mean", "bn.running_var"]


@needs("torch")
def test_pytorch_against_pytorch_is_a_pair_too(tp) -> None:
    """The other side may be PyTorch (another device, or here a copy): the same engine, no MindSpore involved."""
    report = compare(tp.torch_model(), tp.torch_model(), tp.inputs())
    assert report.passed and report.other_label.startswith("PyTorch")
    assert report.inputs[0].output.comparison.max_abs == 0  # the same kernels on the same device: bit-identical


@needs("torch", "mindspore")
def test_an_op_without_a_kernel_names_the_op_and_the_cell() -> None:
    from mindspore import mint, nn
    from torch import nn as tnn

    from parity.pair.ms_side import KernelMissing

    class Inner(nn.Cell):
        def construct(self, x):
            return mint.baddbmm(x, x, x)  # no CPU kernel in MindSpore 2.10

    class Outer(nn.Cell):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def construct(self, x):
            return self.inner(x)

    class Same(tnn.Module):
        def forward(self, x):
            return x.baddbmm(x, x)

    with pytest.raises(KernelMissing, match=r"kernel for Baddbmm, in cell `inner` \(Inner\)"):
        compare(Same(), Outer(), [np.ones((1, 2, 2), np.float32)])


@needs("torch", "mindspore")
def test_the_self_test_catches_each_planted_bug_at_its_module_and_undoes_it(tp) -> None:
    from parity.pair.selftest import self_test

    ms_model = tp.ms_model()
    base, probes = self_test(tp.torch_model(), ms_model, tp.inputs())
    assert base.passed
    assert [(p.bug, p.planted_at) for p in probes] == [
        ("eps", "bn"), ("eps", "block.norm"), ("weight", "conv"), ("weight", "block.fc2"), ("weight", "head"),
        ("activation", "relu"), ("activation", "block.act")]
    assert all(p.caught and p.located and p.blame == "MindSpore" for p in probes), probes
    assert compare(tp.torch_model(), ms_model, tp.inputs()).passed  # every plant undone


@needs("torch", "mindspore")
def test_a_training_step_matches_with_sgd_and_adams_eps_convention_is_found_and_blamed(tp) -> None:
    """One step: the loss, 12 gradients by name, 12 weights after the optimizer. MindSpore's nn.Adam adds eps
    before the bias correction (docs/porting.md): the gradients agree, the step does not, MindSpore is farther
    from PyTorch's Adam in float64."""
    sgd = compare(tp.torch_model(), tp.ms_model(), tp.inputs(), loss=tp.loss, optimizers=tp.optimizers("sgd"))
    assert sgd.passed and len(sgd.step.grads) == 12 and len(sgd.step.stepped) == 12
    adam = compare(tp.torch_model(), tp.ms_model(), tp.inputs(), loss=tp.loss, optimizers=tp.optimizers("adam"),
                   train_pass=False)
    assert not adam.passed and all(v.judged.passed for v in adam.step.grads)
    first = adam.first_divergence()
    assert first["error"] == "training step: optimizer step" and first["blame"] == "MindSpore", first


@needs("torch")
def test_a_module_that_cannot_run_alone_is_still_named_without_a_guess() -> None:
    """A module whose forward needs state its caller sets cannot be single-stepped: the walk still names it, and
    says own against inherited is not known instead of guessing."""
    from torch import nn as tnn

    class NeedsState(tnn.Module):
        def forward(self, x):
            return x * self.scale  # set by the caller before each call

    class Outer(tnn.Module):
        def __init__(self, scale: float):
            super().__init__()
            self.inner, self.s = NeedsState(), scale

        def forward(self, x):
            self.inner.scale = self.s
            out = self.inner(x)
            del self.inner.scale
            return out

    report = compare(Outer(2.0), Outer(3.0), [np.ones((2, 3), np.float32)], train_pass=False)
    first = report.first_divergence()
    assert first["module"]["torch"] == "inner" and first["error"] == "unknown" and first["blame"] == "neither"
    assert "cannot run alone on its recorded inputs (AttributeError" in first["message"]


@needs("torch", "mindspore")
def test_a_specs_tolerances_replace_the_rule_and_a_loose_one_lets_a_small_slip_through(tp) -> None:
    """k = 10^4 on the output gate lets the LayerNorm epsilon slip (1.1e-05 at the output) through at the output,
    but not at the module (its own gate is untouched): the tolerances are the user's, the localisation is not."""
    from ddpm_core.errors import UserError

    loose = compare(tp.torch_model(), tp.ms_model("ln_eps"), tp.inputs(), tolerances={"pair_output": {"k": 1e4}},
                    train_pass=False)
    assert loose.inputs[0].output.passed and "SPEC's tolerances" in loose.inputs[0].output.comparison.tolerance.reason
    assert not loose.passed and loose.first_divergence()["module"]["torch"] == "block.norm"  # hidden, still found
    with pytest.raises(UserError, match="tolerances\\['prediction'\\]"):
        compare(tp.torch_model(), tp.ms_model(), tp.inputs(), tolerances={"prediction": {"k": 2}})
