"""The other side of a pair as the same PyTorch model compiled (torch.compile) or under torch.autocast
(parity.pair.variants): an honest run passes under the right gate, a planted bug in that side is found at its module
and blamed on it, and every module call is still recorded under compile."""
from __future__ import annotations

import types

import pytest

from parity.pair.variants import TorchVariant, parse_other
from tests.host import needs

pytestmark = needs("torch")


@pytest.fixture
def tp():
    from tests.pair import tiny_pair

    return tiny_pair


def _patched(model, fn):
    """The model with its GELU's forward replaced (its settings still say exact GELU: only the numbers can tell)."""
    model.block.act.forward = types.MethodType(lambda self, x: fn(x), model.block.act)
    return model


def test_an_honest_compiled_side_passes_and_every_module_call_is_recorded_from_compiled_code(tp) -> None:
    from parity.pair import compare

    report = compare(tp.torch_model(), TorchVariant(tp.torch_model(), compile="aot_eager"), tp.inputs(),
                     loss=tp.loss)
    assert report.passed, report.text()
    assert report.other_label == "PyTorch compiled (aot_eager)"
    assert len(report.inputs[0].depth) == 10  # hooks on the compiled model's own modules: all of them
    (note,) = report.notes
    breaks = int(note.split("(")[2].split(" graph break")[0])
    assert breaks >= 9, note  # the recording run was compiled (dynamo broke it at the hooks), not served eagerly
    assert report.environment["other_torch_run"] == {"compile": "aot_eager", "autocast": None}
    assert report.step is not None and len(report.step.grads) == 12  # a compiled training step too


def test_a_patched_activation_in_the_compiled_side_is_found_and_blamed_on_it(tp) -> None:
    import torch.nn.functional as F

    from parity.pair import compare

    other = _patched(tp.torch_model(), lambda x: F.gelu(x, approximate="tanh"))
    report = compare(tp.torch_model(), TorchVariant(other, compile="aot_eager"), tp.inputs(), train_pass=False)
    first = report.first_divergence()
    assert not report.passed and first["module"] == {"torch": "block.act", "other": "block.act"}
    assert first["own"] and first["blame"] == "PyTorch compiled (aot_eager)" and first["different_function"]


def test_an_autocast_side_is_judged_against_float64_under_its_precisions_measured_gate(tp) -> None:
    """bfloat16: the honest side passes, with a gate from the reference model's bfloat16 rounding (orders above
    float32's); an activation patched to SiLU is found at its module and blamed on the autocast side."""
    import torch.nn.functional as F

    from parity.pair import compare

    honest = compare(tp.torch_model(), TorchVariant(tp.torch_model(), autocast="bfloat16"), tp.inputs())
    assert honest.passed, honest.text()
    out = honest.inputs[0].output
    assert out.err_torch > 1e-3 and out.err_other > 1e-3  # bfloat16 rounding, against float64
    assert out.comparison.max_abs == pytest.approx(out.comparison.atol_needed) and out.comparison.max_abs > 1e-4
    assert "precision" in out.comparison.tolerance.reason  # RELATIVE_AMP's rule, not float32's
    slip = compare(tp.torch_model(), TorchVariant(_patched(tp.torch_model(), F.silu), autocast="bfloat16"),
                   tp.inputs(), train_pass=False)
    first = slip.first_divergence()
    assert not slip.passed and first["module"]["other"] == "block.act", slip.text()
    assert first["own"] and first["blame"] == "PyTorch autocast bfloat16"


@pytest.mark.slow
def test_inductor_compiles_here_and_an_honest_inductor_side_passes(tp) -> None:
    """inductor needs a C++ compiler (this machine has gcc); about 12 s on 2 cores."""
    from parity.pair import compare

    report = compare(tp.torch_model(), TorchVariant(tp.torch_model(), compile="inductor"), tp.inputs())
    assert report.passed and len(report.inputs[0].depth) == 10, report.text()


def test_other_is_spelled_one_way_and_a_bad_spelling_is_one_line() -> None:
    assert parse_other("compile") == {"compile": "inductor"}
    assert parse_other("compile:aot_eager,autocast") == {"compile": "aot_eager", "autocast": "bfloat16"}
    for bad in ("autocast:int8", "jit", "compile,compile"):
        with pytest.raises(ValueError, match="expected compile"):
            parse_other(bad)
    with pytest.raises(ValueError):
        TorchVariant(object())


def test_the_cli_takes_other_and_refuses_a_bad_one_or_a_self_test_of_it(
        tp, tmp_path, capsys: pytest.CaptureFixture) -> None:
    from parity.pair.__main__ import main

    spec = tmp_path / "spec.py"  # no ms_model(): --other does not need one
    spec.write_text("from tests.pair.tiny_pair import torch_model, inputs\n")
    assert main([str(spec), "--other", "autocast:int8"]) == 2
    assert capsys.readouterr().err.startswith("error: --other 'autocast:int8': expected compile")
    assert main([str(spec), "--other", "autocast", "--self-test"]) == 2
    assert "--self-test plants bugs in a MindSpore side" in capsys.readouterr().err
    assert main([str(spec), "--other", "autocast:float16", "--no-train-pass"]) == 0
    assert "PyTorch autocast float16 (eager) vs PyTorch autocast float16" in capsys.readouterr().out
