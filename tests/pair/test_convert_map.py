"""``python -m parity.convert SRC DST --map SPEC.py``: a pair's weights converted with the map parity.pair computes,
so the converted checkpoint is what the comparison loaded, bit for bit; a map or a file that does not fit is one line
per tensor, exit 2; an input is never overwritten."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.host import needs
from tests.reliability.corpus import ROOT, run_cli

TINY = ROOT / "tests" / "pair" / "tiny_pair.py"
pytestmark = needs("torch", "mindspore")


@pytest.fixture
def tp():
    from tests.pair import tiny_pair

    return tiny_pair


def _save_pt(path: Path, state: dict) -> Path:
    import torch

    torch.save({n: torch.as_tensor(v) for n, v in state.items()}, path)
    return path


def _ckpt(path: Path) -> dict[str, np.ndarray]:
    """Read with MindSpore's own reader, not ours."""
    import mindspore as ms

    return {n: p.asnumpy() for n, p in ms.load_checkpoint(str(path)).items()}


def test_the_converted_checkpoint_is_what_the_comparison_loaded_and_converts_back_exactly(
        tp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """slip=transpose: the SPEC's name_map stores the head's weight transposed, so the map's layouts are used."""
    from parity.convert import main
    from parity.pair import compare

    src = _save_pt(tmp_path / "w.pt", tp.torch_model().state_dict())
    dst, back = tmp_path / "w.ckpt", tmp_path / "back.pt"
    assert main([str(src), str(dst), "--map", str(TINY), "--set", "slip=transpose"]) == 0
    assert "14 tensors" in capsys.readouterr().err
    ms_model = tp.ms_model("transpose")
    compare(tp.torch_model(), ms_model, tp.inputs(), name_map=tp.name_map("transpose"), train_pass=False)
    loaded = {n: p.asnumpy() for n, p in ms_model.parameters_and_names()}  # what compare loaded into it
    converted = _ckpt(dst)
    assert sorted(converted) == sorted(loaded)
    assert all(np.array_equal(converted[n], loaded[n]) and converted[n].dtype == loaded[n].dtype for n in loaded)
    t = tp.torch_model().state_dict()
    assert np.array_equal(converted["head.weight"], t["head.weight"].numpy().T)  # the layout did move it
    assert main([str(dst), str(back), "--map", str(TINY), "--set", "slip=transpose"]) == 0
    import torch

    again = torch.load(back, weights_only=True)
    assert sorted(again) == sorted(t) and all(torch.equal(again[n], t[n]) for n in t)


def test_a_file_that_does_not_fit_the_map_is_one_line_per_tensor_and_nothing_is_written(
        tp, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from parity.convert import main

    state = tp.torch_model().state_dict()
    state["extra.weight"] = state.pop("head.bias")
    src = _save_pt(tmp_path / "w.pt", state)
    assert main([str(src), str(tmp_path / "w.ckpt"), "--map", str(TINY)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.startswith("error:")] == [f"error: {src} does not fit the map: 2 problem(s)"]
    assert f"  {src} has no PyTorch tensor 'head.bias' (8,), which the map needs" in err
    assert f"  {src}: PyTorch tensor 'extra.weight' (8,) maps to nothing in the SPEC's models" in err
    assert not (tmp_path / "w.ckpt").exists()
    assert main([str(src), str(src), "--map", str(TINY)]) == 2  # never over its input
    assert "is the same file as SRC" in capsys.readouterr().err


def test_a_map_with_a_target_claimed_twice_exits_2_one_line_each_in_a_child(tp, tmp_path: Path) -> None:
    spec = tmp_path / "spec.py"
    spec.write_text("from tests.pair.tiny_pair import torch_model, ms_model, inputs\n"
                    "name_map = {'bn.weight': 'bn.gamma', 'bn.bias': 'bn.gamma'}\n")
    src = _save_pt(tmp_path / "w.pt", tp.torch_model().state_dict())
    res = run_cli("parity.convert", [src, tmp_path / "w.ckpt", "--map", spec], rc=2,
                  says="the weights do not map: 2 problem(s)", inputs=[src, spec])
    assert "  MindSpore parameter 'bn.gamma' is mapped two ways: from 'bn.weight' and from 'bn.bias'" in res.stderr
    assert "  MindSpore parameter 'bn.beta' (8,) (BatchNorm2d) has no PyTorch source" in res.stderr
    assert not (tmp_path / "w.ckpt").exists()
