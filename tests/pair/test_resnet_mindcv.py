"""A real port nobody here wrote: torchvision's resnet18 against mindcv 0.3.0's (examples/pairs/resnet18_mindcv.py).

As shipped the two differ at 64x64 and agree at 65x65: mindcv's stem pooling is ``pad_mode="same"``, which at an
even size (32x32 after the stem convolution) pads (0, 1) where torchvision pads (1, 1); the tool must find that
module, blame MindSpore, say which setting and at which sizes, and pass once the SPEC's option removes it.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.pair import compare
from parity.pair.spec import load_spec
from tests.host import available, needs
from tests.reliability.corpus import ROOT

pytestmark = needs("torch", "torchvision", "mindspore")  # on a one-framework host each test skips, saying why
if available("mindspore"):  # mindcv imports MindSpore
    try:
        import mindcv  # noqa: F401
    except ModuleNotFoundError as e:  # loud: the reason is in every -ra summary; a broken mindcv fails
        if e.name != "mindcv":
            raise
        pytest.skip(f"the real-port tests of parity.pair need mindcv ({e}): pip install 'ddpm-parity[pairs]'",
                    allow_module_level=True)

SPEC = ROOT / "examples" / "pairs" / "resnet18_mindcv.py"


def _run(**options: object) -> object:
    spec = load_spec(SPEC, options)
    return compare(spec.torch_model, spec.ms_model, spec.inputs, name_map=spec.name_map, name="resnet18")


def test_as_shipped_the_stem_pooling_differs_at_even_sizes_and_the_tool_says_so() -> None:
    report = _run(sizes=[64, 65])
    assert report.weight_map.counts() == {"identical": 17, "rule": 68, "structure": 5, "structure+rule": 12,
                                          "dropped": 20}
    at64, at65 = report.inputs
    assert not at64.passed and at65.passed
    first = report.first_divergence()
    assert first["module"] == {"torch": "maxpool", "other": "max_pool"} and first["kind"]["torch"] == "MaxPool2d"
    assert first["blame"] == "MindSpore" and first["own"] and first["different_function"]
    (setting,) = first["settings"]
    assert (setting["key"], setting["torch"], setting["other"]) == ("padding", "(1, 1, 1, 1)", "(0, 1, 0, 1)")
    assert "'same' at 32x32" in setting["message"]
    assert any("depends on the input" in line for line in report.findings())
    assert report.train is not None and report.train.index == 1 and report.train.passed  # at 65x65, BatchNorm too


def test_with_torchvisions_pooling_the_pair_matches() -> None:
    report = _run(sizes=[64], maxpool="pad")
    assert report.passed, report.text()
    assert report.inputs[0].output.comparison.max_abs > 0 and len(report.inputs[0].depth) > 60


def test_convert_map_writes_the_checkpoint_the_comparison_loads(tmp_path) -> None:
    """``parity.convert --map`` on torchvision's weights: mindcv loads the .ckpt strictly, and every parameter is
    bit-identical to what parity.pair loads into it (the same map: rules, structure, 20 tensors dropped)."""
    import mindspore as ms
    import torch

    from parity.convert import main
    from parity.pair.ms_side import MsPairSide
    from parity.pair.run import pair_map
    from parity.pair.torch_side import TorchPairSide

    spec = load_spec(SPEC, {"sizes": [64]})
    torch.save(spec.torch_model.state_dict(), tmp_path / "r.pt")
    assert main([str(tmp_path / "r.pt"), str(tmp_path / "r.ckpt"), "--map", str(SPEC), "--set", "sizes=[64]"]) == 0
    fresh = load_spec(SPEC, {"sizes": [64]}).ms_model
    assert ms.load_param_into_net(fresh, ms.load_checkpoint(str(tmp_path / "r.ckpt")), strict_load=True) == ([], [])
    side_t, side_o = TorchPairSide(spec.torch_model), MsPairSide(spec.ms_model)
    side_o.load(pair_map(side_t, side_o, spec.name_map).to_ms(side_t.state()))  # what compare() loads
    compared = side_o.state()
    converted = {n: p.asnumpy() for n, p in fresh.parameters_and_names()}
    assert sorted(converted) == sorted(compared) and len(compared) == 102
    assert all(np.array_equal(converted[n], compared[n]) for n in compared)
