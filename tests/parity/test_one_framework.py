"""Hosts with one framework (docs/hosts.md): the README's cross-host recipe with PyTorch blocked from import in
one process and MindSpore in the other, both directions; ``parity.convert`` on each host; and the one line a
missing framework gives. Processes are started by tests/one_framework.py; the tutorial-checkpoint
conversion with MindSpore blocked is in test_convert.py."""
import json
import shlex

import numpy as np
import pytest

from ddpm_core.config import UnetConfig
from ddpm_core.weights.files import load_weights, save_weights
from ddpm_core.weights.integrity import manifest
from parity.engine.initial import initial_weights
from tests.one_framework import ROOT, run
from tests.host import framework, needs

TINY = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10", "--image-size", "8",
        "--ddim-steps", "5", "--no-progress"]
CFG = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stdout


def one_line(proc, code: int) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def readme_recipe() -> list[list[str]]:
    """The command lines of the README's "Across two hosts" block, comments removed."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("## Across two hosts"):].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("python -m ")]


@needs("torch", "mindspore")  # a process for each host
def test_readme_recipe_across_two_hosts(tmp_path, tutorial_ckpt):
    """The README's lines, each on its host with the other framework blocked (the record gets the tiny options):
    every check passes, the teacher-forced step included, and the tutorial's checkpoint converts."""
    files = {"runs/golden.npz": tmp_path / "golden.npz", "tutorial.ckpt": tutorial_ckpt[0],
             "runs/model.pt": tmp_path / "model.pt"}
    recipe = readme_recipe()
    assert [line[:4] for line in recipe] == [["python", "-m", "parity.check", "record"],
                                             ["python", "-m", "parity.check", "compare"],
                                             ["python", "-m", "parity.convert", "tutorial.ckpt"]]
    out = tmp_path / "compare.json"
    extra = {"record": ["--seed", "3", *TINY], "compare": ["--no-progress", "--json", out]}
    stdout = {}
    for line in recipe:
        host = line[line.index("--framework") + 1] if "--framework" in line else "torch"
        args = [files.get(a, a) for a in line[3:]] + extra.get(line[3], [])
        stdout[line[3]] = ok(run(host, line[2], args))
    golden = files["runs/golden.npz"]
    assert "model.pt" in [p.name for p in tmp_path.iterdir()]
    report = json.loads(out.read_text())
    assert report["mode"] == "compare" and report["spec"]["tape"]["seed"] == 3 and report["passed"]
    note = report["environment"]["version_note"]  # None on a measured pair (parity.env.MEASURED_VERSIONS)
    assert "PASS" in stdout["compare"] and (note is None or stdout["compare"].rstrip().endswith(note))
    assert report["environment"]["golden"]["framework"] == "ms" and "torch" in report["environment"]
    assert "torch" not in report["environment"]["golden"]["environment"]  # the recording host had no PyTorch
    assert any(r["label"] == "DDPM one step (teacher-forced)" for r in report["rows"])
    # the float64 specification on the two-host path: err columns, blame, and the logic row (PyTorch is local)
    rows = {r["label"]: r for r in report["rows"]}
    assert all(r["err_torch"] is not None and r["err_ms"] is not None for k, r in rows.items() if k.startswith("predict"))
    assert rows["float64 logic (PyTorch float64 vs spec)"]["passed"]
    how = report["environment"]["two_host_rounding"]["how"]
    assert "MindSpore on CPU (the recording host): table entry, no float64 convolution there" in how
    assert "PyTorch on cpu (this host): measured here" in how
    # the same framework again, and a damaged file: structural
    same = run("ms", "parity.check", ["compare", golden, "--framework", "ms"])
    assert "recorded with ms" in one_line(same, 2)
    data = dict(np.load(golden))
    data["tape/x_T"] = data["tape/x_T"] + 1.0
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **data)
    assert "tape does not match" in one_line(run("torch", "parity.check", ["compare", damaged, "--framework", "torch"]), 2)


@needs("torch", "mindspore")  # a process for each host
def test_record_on_pytorch_host_compare_on_mindspore_host(tmp_path):
    golden = tmp_path / "golden.npz"
    checks = ["--checks", "weights,predict,ddpm"]
    ok(run("torch", "parity.check", ["record", "--framework", "torch", "--out", golden, *checks, *TINY]))
    out = tmp_path / "compare.json"
    assert "PASS" in ok(run("ms", "parity.check", ["compare", golden, "--framework", "ms", "--no-progress",
                                                    "--json", out]))
    report = json.loads(out.read_text())
    assert report["environment"]["golden"]["framework"] == "torch" and "mindspore" in report["environment"]
    assert {r["label"].split(" (")[0] for r in report["rows"]} >= {"weights", "DDPM one step"}
    rows = [r for r in report["rows"] if r["label"].startswith(("prediction", "DDPM"))]
    assert rows and all(r["err_torch"] is not None and r["err_ms"] is not None for r in rows)
    assert not any(r["label"].startswith("float64 logic") for r in report["rows"])  # no PyTorch on this host
    assert "PyTorch on cpu (the recording host): measured there" in report["environment"]["two_host_rounding"]["how"]


@needs("torch", "mindspore")  # a process for each host
def test_convert_on_each_host(tmp_path):
    """MindSpore host: .ckpt <-> .safetensors, and a .pt names the missing extra. PyTorch host: .pt -> .ckpt
    that MindSpore loads bit for bit."""
    state = initial_weights(CFG, 1)
    save_weights(state, tmp_path / "w.pt", "torch", CFG)
    config = ["--config", json.dumps(CFG.to_dict())]
    ok(run("torch", "parity.convert", [tmp_path / "w.pt", tmp_path / "w.ckpt", *config]))
    ok(run("ms", "parity.convert", [tmp_path / "w.ckpt", tmp_path / "w.safetensors", *config]))
    ok(run("ms", "parity.convert", [tmp_path / "w.safetensors", tmp_path / "back.ckpt"]))
    assert (tmp_path / "back.ckpt").read_bytes() == (tmp_path / "w.ckpt").read_bytes()
    line = one_line(run("ms", "parity.convert", [tmp_path / "w.ckpt", tmp_path / "x.pt", *config]), 2)
    assert line.startswith("error: PyTorch is not installed") and "pip install 'ddpm-parity[torch]'" in line
    assert not (tmp_path / "x.pt").exists()

    ms = framework("mindspore")

    from ddpm_core.weights.converter import torch_to_ms

    want = torch_to_ms(state, CFG)
    got = ms.load_checkpoint(str(tmp_path / "w.ckpt"))
    assert list(got) == list(want)
    assert all(got[n].asnumpy().tobytes() == want[n].tobytes() for n in want)
    assert manifest(load_weights(tmp_path / "w.safetensors").state) == manifest(state)


@pytest.mark.parametrize("host, module, args, code, extra", [
    ("ms", "ddpm_torch.train", ["--out", "{tmp}/run"], 2, "torch"),
    ("torch", "ddpm_ms.sample", ["--weights", "{tmp}/w.pt", "--out", "{tmp}/s.png"], 2, "mindspore"),
    pytest.param("torch", "parity.check", TINY, 3, "mindspore", marks=needs("torch")),  # PyTorch is found first
    ("ms", "parity.check", ["record", "--framework", "torch", "--out", "{tmp}/g.npz", *TINY], 3, "torch"),
])
def test_missing_framework_is_one_line_naming_the_extra(tmp_path, host, module, args, code, extra):
    line = one_line(run(host, module, [a.replace("{tmp}", str(tmp_path)) for a in args]), code)
    assert f"pip install 'ddpm-parity[{extra}]'" in line
    assert ("use `record` on one and `compare` on the other" in line) == (args is TINY)
    assert list(tmp_path.iterdir()) == []


def test_report_notes_a_version_pair_the_tolerances_were_not_measured_on():
    from parity.env import MEASURED_VERSIONS, unmeasured_note

    torch_v, ms_v = next(iter(MEASURED_VERSIONS))
    assert unmeasured_note({"torch": f"{torch_v}+cu130", "mindspore": ms_v}) is None  # a build label changes nothing
    note = unmeasured_note({"torch": "2.99.0+cpu", "mindspore": ms_v})
    assert note.startswith("note: the tolerances were not measured on PyTorch 2.99.0+cpu / MindSpore " + ms_v)
    assert f"PyTorch {torch_v} / MindSpore {ms_v}" in note and "\n" not in note
    golden = {"golden": {"environment": {"mindspore": "2.98.0"}}}  # compare: the other side is in the golden file
    assert "MindSpore 2.98.0" in unmeasured_note({"torch": torch_v, **golden})
    assert unmeasured_note({"torch": torch_v}) is None  # record: one framework, no pair
