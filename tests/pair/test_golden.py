"""One pair over two hosts (parity.pair.golden): ``--record`` on a PyTorch-only host, ``--compare`` on a
MindSpore-only host (tests/one_framework.py blocks the other framework in each child), giving the one-process
verdict; a golden file that is damaged, edited, of the other kind or recorded for another pair is one line, exit 2."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests import one_framework
from tests.host import needs
from tests.reliability.corpus import ROOT

TINY = ROOT / "tests" / "pair" / "tiny_pair.py"
pytestmark = needs("torch", "mindspore")


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pair's PyTorch side, recorded on a host without MindSpore."""
    path = tmp_path_factory.mktemp("golden") / "tiny.npz"
    res = one_framework.run("torch", "parity.pair", [TINY, "--record", path])
    assert res.returncode == 0 and "recorded" in res.stdout and path.is_file(), res.stderr
    return path


def test_compare_on_a_mindspore_host_gives_the_one_process_verdict(golden: Path, tmp_path: Path) -> None:
    """The honest port passes; a transposed head weight (no setting can show it) fails at `head`, blamed on
    MindSpore, with the very figures of the one-process comparison (the same recorded arrays, the same gates)."""
    from parity.pair import compare
    from tests.pair import tiny_pair as tp

    honest = one_framework.run("ms", "parity.pair", [TINY, "--compare", golden, "--json", tmp_path / "ok.json"])
    assert honest.returncode == 0 and "PASS: the pair matches" in honest.stdout, honest.stdout + honest.stderr
    assert "torch" not in json.loads((tmp_path / "ok.json").read_text())["environment"]  # PyTorch was not there
    slip = one_framework.run("ms", "parity.pair", [TINY, "--compare", golden, "--set", "slip=transpose",
                                                   "--json", tmp_path / "slip.json"])
    assert slip.returncode == 1 and "error:" not in slip.stderr, slip.stderr
    two = json.loads((tmp_path / "slip.json").read_text())
    one = compare(tp.torch_model(), tp.ms_model("transpose"), tp.inputs(), name_map=tp.name_map("transpose"),
                  train_pass=False).to_dict()
    first = two["first_divergence"]
    assert first["module"] == {"torch": "head", "other": "head"} and first["blame"] == "MindSpore" and first["own"]
    assert {k: first[k] for k in ("module", "blame", "own", "different_function", "err_vs_float64", "output")} == \
        {k: one["first_divergence"][k] for k in ("module", "blame", "own", "different_function", "err_vs_float64",
                                                  "output")}
    assert two["inputs"][0]["output"] == one["inputs"][0]["output"]
    assert any("training-mode pass and the training step" in n for n in two["notes"])


def _run(args: list, capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    from parity.pair.__main__ import main

    rc = main([str(a) for a in args])
    return rc, [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def test_a_damaged_edited_or_foreign_golden_file_is_one_line(golden: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    data = golden.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    rc, err = _run([TINY, "--compare", cut], capsys)
    assert rc == 2 and len(err) == 1 and "cannot read golden file" in err[0], err
    edited = tmp_path / "edited.npz"  # one recorded output changed, zip rewritten consistently: only the digest knows
    with zipfile.ZipFile(golden) as src, zipfile.ZipFile(edited, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "out/0/t/o/0.npy":
                body = body[:-4] + bytes(4)
            dst.writestr(info, body)
    rc, err = _run([TINY, "--compare", edited], capsys)
    assert rc == 2 and err == [f"error: {edited}: the stored outputs do not match manifest field 'outputs_sha256' "
                               "(file damaged or edited?)"]
    rc, err = _run([TINY, "--compare", golden, "--set", "seed=1"], capsys)  # other weights: torch_model(seed=1)
    assert rc == 2 and "recorded with the options {} of the SPEC's PyTorch entries, not {'seed': 1}" in err[0]
    other = tmp_path / "other_spec.py"
    other.write_text("from tests.pair.tiny_pair import torch_model, ms_model, inputs\n")
    rc, err = _run([other, "--compare", golden], capsys)
    assert rc == 2 and err == [f"error: {golden} was recorded from SPEC tiny_pair.py, not other_spec.py"]
    (tmp_path / "tiny_pair.py").write_text("import numpy as np\nfrom tests.pair.tiny_pair import torch_model, ms_model\n"
                                           "def inputs():\n    return [np.zeros((2, 3, 5, 5), np.float32)]\n")
    rc, err = _run([tmp_path / "tiny_pair.py", "--compare", golden], capsys)
    assert rc == 2 and "are not this SPEC's inputs()" in err[0]


def test_the_kinds_are_told_apart_and_no_input_is_overwritten(golden: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    from parity.engine.golden import GoldenError, load_golden

    with pytest.raises(GoldenError, match="is a parity.pair golden file; compare it with python -m parity.pair"):
        load_golden(golden)  # parity.check's reader
    before = golden.read_bytes()
    rc, err = _run([TINY, "--compare", golden, "--json", golden], capsys)
    assert rc == 2 and "is the same file as --compare" in err[0] and golden.read_bytes() == before
    rc, err = _run([TINY, "--record", TINY], capsys)
    assert rc == 2 and "is the same file as SPEC" in err[0]
