"""One pair over two hosts (parity.pair.golden): ``--record`` on a PyTorch-only host, ``--compare`` on a
MindSpore-only host (tests/one_framework.py blocks the other framework in each child), giving the one-process
verdict; a golden file that is damaged, edited, of the other kind or recorded for another pair is one line, exit 2."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ddpm_core.runtime.environment import child_env
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


def _one_process(tmp_path: Path, slips: tuple[str, ...]) -> dict[str, dict]:
    """Each slip's one-process verdict as a user gets it: ``python -m parity.pair`` with both frameworks, in
    children of their own (started together), so no state of this test process can colour the figures."""
    runs = {}
    for slip in slips:
        out = tmp_path / f"one_{slip or 'honest'}.json"
        args = [str(TINY), *(["--set", f"slip={slip}"] if slip else []), "--json", str(out)]
        runs[slip] = (out, subprocess.Popen([sys.executable, "-m", "parity.pair", *args], cwd=ROOT, text=True,
                                            env=child_env(pythonpath=ROOT), stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE))
    reports = {}
    for slip, (out, proc) in runs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1) and out.is_file(), err[-2000:]
        reports[slip] = json.loads(out.read_text())
    return reports


def _same(two: dict, one: dict) -> None:
    """Every verdict and figure equal; only the notes (where PyTorch ran) and the environment may differ."""
    assert {k: v for k, v in two.items() if k not in ("notes", "environment")} == \
        {k: v for k, v in one.items() if k not in ("notes", "environment")}


def test_compare_on_a_mindspore_host_gives_the_one_process_verdict(golden: Path, tmp_path: Path) -> None:
    """The honest port passes; a transposed head weight (no setting can show it) fails at `head`, blamed on
    MindSpore; MindSpore's BatchNorm given PyTorch's momentum is found by the training-mode pass, which the golden
    file carries too: each with the very figures of the one-process comparison (the same recorded arrays, the same
    gates), the training step's loss, gradients and SGD step included."""
    one = _one_process(tmp_path, ("", "transpose", "momentum"))
    honest = one_framework.run("ms", "parity.pair", [TINY, "--compare", golden, "--json", tmp_path / "ok.json"])
    assert honest.returncode == 0 and "PASS: the pair matches" in honest.stdout, honest.stdout + honest.stderr
    ok = json.loads((tmp_path / "ok.json").read_text())
    assert "torch" not in ok["environment"]  # PyTorch was not there
    assert len(ok["training_step"]["gradients"]) == 12 and ok["training_mode"]["passed"]
    assert any("its training-mode pass, its training step are the recording's" in n for n in ok["notes"])
    _same(ok, one[""])
    for slip, rc in (("transpose", 1), ("momentum", 1)):
        res = one_framework.run("ms", "parity.pair", [TINY, "--compare", golden, "--set", f"slip={slip}",
                                                      "--json", tmp_path / f"{slip}.json"])
        assert res.returncode == rc and "error:" not in res.stderr, res.stderr
        two = json.loads((tmp_path / f"{slip}.json").read_text())
        _same(two, one[slip])
        module = "head" if slip == "transpose" else "bn"
        first = two["first_divergence"]
        assert first["module"] == {"torch": module, "other": module} and first["blame"] == "MindSpore", first
    bad = two["training_mode"]["buffers"]  # momentum: the running statistics after the training-mode pass
    assert [b["buffer"] for b in bad] == ["bn.running_mean", "bn.running_var"] and bad[0]["blame"] == "MindSpore"


def _older(golden: Path, tmp_path: Path, drop: str) -> Path:
    """``golden`` as an older parity.pair wrote it: without the manifest field ``drop`` and the members it held
    (written afresh, digests and all, so only what is missing can be refused)."""
    from parity.engine.golden import load_golden, save_pair_golden

    g = load_golden(golden, kind="pair")
    pair = {k: v for k, v in g.manifest["pair"].items() if k not in (drop, "members", "train_pass")}
    prefix = {"train_step": "train/", "buffers": "T"}[drop]
    out = {k: v for k, v in g.outputs.items() if not k.startswith(prefix)}
    path = tmp_path / f"without_{drop}.npz"
    save_pair_golden(path, pair, g.tape, g.weights, out, g.manifest["environment"])
    return path


def test_a_file_without_what_the_spec_implies_is_refused_naming_it(golden: Path, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Never a pass on less than the SPEC implies: a file recorded before training steps (or training-mode passes)
    were recorded, or recorded with --no-train-pass for a model with running statistics, is one line naming the
    missing member or field."""
    rc, err = _run([TINY, "--compare", _older(golden, tmp_path, "train_step")], capsys)
    assert rc == 2 and len(err) == 1 and "member out/train/0/t/loss.npy is missing; SPEC tiny_pair.py defines " \
        "loss() and this file holds no train step" in err[0], err
    older = _older(golden, tmp_path, "buffers")
    rc, err = _run([TINY, "--compare", older], capsys)
    assert rc == 2 and len(err) == 1 and "manifest field pair.buffers is missing" in err[0], err
    rc, err = _run([TINY, "--compare", older, "--no-train-pass", "--set", "slip=gelu"], capsys)
    assert rc == 1 and err == []  # without the training-mode pass it holds everything: compared, the slip found
    without = tmp_path / "without_pass.npz"
    assert _run([TINY, "--record", without, "--no-train-pass"], capsys) == (0, [])
    rc, err = _run([TINY, "--compare", without], capsys)
    assert rc == 2 and len(err) == 1 and "member out/T0/t/o/0.npy is missing: the model has running statistics" \
        in err[0], err


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
