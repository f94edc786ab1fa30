"""What a new user meets first: links and files the README names are in the repository, the commands the
examples print can be pasted into a shell, ``train --help`` shows how to train without data, and the
virtual environment the README makes is not committed."""
from __future__ import annotations

import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.cli import train_parser
from ddpm_core.config import DiffusionConfig
from ddpm_core.runtime.environment import child_env
from ddpm_core.training.datasets import make_stage_dir, prepare_data
from tests.host import needs

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_stay_in_the_repository_and_exist(doc):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: link to {target}"


def test_files_the_readme_commands_name_are_shipped():
    blocks = re.findall(r"```(?:bash|python)?\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    named = {m for block in blocks for m in re.findall(r"\b((?:examples|docs|scripts)/[\w./-]+)", block)}
    assert "examples/cat.jpg" in named
    assert [n for n in sorted(named) if not (ROOT / n).exists()] == []


@pytest.mark.parametrize("script", ["train_torch_sample_ms.py", "train_ms_sample_torch.py", "data_parallel.py"])
def test_example_commands_are_printed_ready_to_paste(script, capfd):
    run = runpy.run_path(str(ROOT / "examples" / script), run_name="example")["run"]
    code, config = "import sys; print(sys.argv[1:])", '{"dim": 8, "dim_mults": [1, 2]}'
    if script == "data_parallel.py":
        run([sys.executable, "-c", code, config])
    else:
        run("-c", code, config)
    printed, child = capfd.readouterr().out.splitlines()[:2]
    assert printed.startswith("$ ") and shlex.split(printed[2:]) == ["python", "-c", code, config]
    assert child == repr([config])  # and it is the command that ran


def test_train_help_shows_how_to_train_without_data(tmp_path):
    text = train_parser("python -m ddpm_torch.train").format_help()
    assert "--download" in text and "no data, no network: synthetic" in text
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("python ")]
    write = next(shlex.split(ln) for ln in lines if ln.startswith("python -c"))
    subprocess.run([sys.executable, *write[1:]], cwd=tmp_path, check=True,
                   env={"PYTHONPATH": str(ROOT)})
    train = next(shlex.split(ln) for ln in lines if "--data runs/synthetic" in ln)
    data = tmp_path / train[train.index("--data") + 1]
    with make_stage_dir() as stage:
        assert prepare_data(data, "auto", 28, None, stage).examples == 64


def test_the_readme_virtual_environment_is_ignored():
    assert subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------- docs that cannot drift

def _columns(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def _report_blocks() -> list[tuple[str, list[str]]]:
    """(document, lines) of every code block in the README and docs/ that shows parity.check's table."""
    found = []
    for doc in DOCS:
        block = None
        for line in doc.read_text().splitlines():
            if line.startswith("```"):
                if block is not None and any(ln.startswith("check ") and "max abs" in ln for ln in block):
                    found.append((doc.name, block))
                block = [] if block is None else None
            elif block is not None:
                block.append(line)
    return found


def test_every_documented_report_has_the_reports_own_columns():
    """The header a run prints, made by the report code itself (no run needed: the columns do not depend on
    the rows), against each documented block: the same columns, the underline under each, and every row as
    wide as the header."""
    from parity.engine.report import Report

    empty = Report(title="", spec={"checks": []}, tape_hash="", weights_hash="", environment={})
    head, rule = empty.table().splitlines()[:2]
    blocks = _report_blocks()
    assert {name for name, _ in blocks} >= {"README.md", "harness.md"}
    for name, lines in blocks:
        at = next(i for i, ln in enumerate(lines) if ln.startswith("check ") and "max abs" in ln)
        header, underline = lines[at], lines[at + 1]
        assert _columns(header) == _columns(head), f"{name}: the documented columns differ from the report's"
        widths = [len(d) for d in underline.split("  ")]
        assert len(widths) == len(rule.split("  ")), f"{name}: the underline has {len(widths)} columns"
        assert len(header) == len(underline), f"{name}: the header and its underline differ in width"
        rows = [ln for ln in lines[at + 2:] if ln.strip() and not ln.startswith(("PASS", "FAIL"))]
        assert rows and all(len(ln) == len(underline) for ln in rows), f"{name}: a row is not as wide as the table"


def test_docs_with_a_report_show_the_same_run():
    (_, readme), *others = sorted(_report_blocks(), key=lambda b: b[0] != "README.md")
    for name, lines in others:
        assert lines == readme, f"{name}: its report block differs from the README's (copy the README's)"


def test_the_readme_writes_its_example_outputs_under_runs_or_ignored_paths():
    """What the README's commands write (--out, --gif, --npy, --json, convert's DST, the synthetic data
    folder) goes under runs/ or a path git ignores, so trying them leaves the checkout clean."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    written = []
    for line in (ln.split("#")[0] for block in blocks for ln in block.splitlines()):
        written += re.findall(r"--(?:out|gif|npy|json|manifest) (\S+)", line)
        written += re.findall(r"w\('([^']+)'\)", line)
        convert = re.search(r"parity\.convert (\S+) (\S+)", line)
        if convert and not convert.group(2).startswith("-"):
            written.append(convert.group(2))
    assert len(written) >= 8
    stray = [p for p in written if not p.startswith("runs/")
             and subprocess.run(["git", "check-ignore", "-q", p], cwd=ROOT).returncode != 0]
    assert stray == []


def test_the_architecture_command_list_names_every_command():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for package, pattern in (("parity", r"python -m parity\.X: ([\w, ]+)\)"),
                             ("ddpm_torch", r"python -m ddpm_<twin>\.X: ([\w, ]+)\)")):
        listed = re.search(pattern, text.replace("\n", " ").replace("  ", " "))
        assert listed, f"architecture.md lists no {package} commands"
        documented = sorted(n.strip() for n in listed.group(1).split(","))
        commands = sorted(p.stem for p in (ROOT / package).glob("*.py") if '__name__ == "__main__"' in p.read_text())
        assert documented == commands, package


@needs("torch", "mindspore")  # a stand-in check, but the two real sides are built
def test_sensitivity_prints_a_plain_markdown_table(monkeypatch, capsys):
    """stdout is the table alone (no HTML comments); the time goes to stderr. The control run only, with a
    stand-in for ``check_models`` (what is printed is under test here, not the check)."""
    from types import SimpleNamespace

    import parity.api
    import parity.env
    import parity.sensitivity as sensitivity

    anchor = SimpleNamespace(passed=True, err_torch=7.2e-7, err_ms=4.7e-7)
    row = SimpleNamespace(gate=True, passed=True, output="predict", summary=SimpleNamespace(passed=True), anchor=anchor)
    monkeypatch.setattr(sensitivity, "bugs", lambda: [])
    monkeypatch.setattr(parity.api, "check_models", lambda *a, **k: SimpleNamespace(rows=[row], failures=[]))
    monkeypatch.setattr(parity.env, "setup_torch", lambda *a: None)
    monkeypatch.setattr(parity.env, "setup_mindspore", lambda *a: None)
    assert sensitivity.main([]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[2] == "| none (control) | - | none | - | 7.2e-07 | 4.7e-07 |"
    assert len(out.splitlines()) == 3 and "<!--" not in out and "none (control): 0 s" in err


# ---------------------------------------------------------------- no noise, and errors that name the fix

@needs("torch", "mindspore")
@pytest.mark.parametrize("model_twin, diffusion_twin", [("ms", "torch"), ("torch", "ms")])
def test_a_model_given_to_the_other_twins_diffusion_names_the_fix(model_twin, diffusion_twin):
    """The README's `# or ddpm_ms.Unet(...)` with ddpm_torch's diffusion used to fail deep in the model with
    "x is torch.float32 but the model's weights are Float32"."""
    import ddpm_ms
    import ddpm_torch

    twins = {"torch": ddpm_torch, "ms": ddpm_ms}
    model = twins[model_twin].Unet(dim=8, channels=1, dim_mults=(1, 2))
    diffusion = twins[diffusion_twin].GaussianDiffusion(DiffusionConfig(timesteps=10))
    x, t = np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, np.int32)
    fix = f"needs ddpm_{model_twin}.GaussianDiffusion; you passed it to ddpm_{diffusion_twin}'s"
    for call in (lambda: diffusion.p_losses(model, x, t, x), lambda: diffusion.p_sample(model, x, t, 1, x),
                 lambda: diffusion.p_sample_loop(model, x.shape), lambda: diffusion.ddim_sample_loop(model, x.shape, 2)):
        with pytest.raises(TypeError, match=re.escape(fix)):
            call()


@needs("torch")
def test_the_torch_diffusion_copies_a_read_only_array_instead_of_sharing_it():
    """The cause of PyTorch's "The given NumPy array is not writable" warning (the harness's tape is read-only):
    a tensor sharing a read-only array's memory. Writable arrays are still shared, not copied."""
    import ddpm_torch

    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=10))
    tape = np.zeros(4, np.float32)
    tape.setflags(write=False)
    diffusion.tensor(tape).add_(1)
    assert (tape == 0).all()
    own = np.zeros(4, np.float32)
    assert diffusion.tensor(own).data_ptr() == own.ctypes.data


@needs("mindspore")
def test_ddpm_ms_builds_its_optimizer_without_mindspores_deprecation_line():
    """MindSpore 2.8+ logs "'FusedSparseAdam' is deprecated" when nn.Adam is built (every ddpm_ms.train);
    make_optimizer leaves out that line, and only it."""
    def stderr(build: str) -> str:
        code = ("import mindspore as ms; from ddpm_ms.optim import make_optimizer; from ddpm_ms.unet import Unet; "
                f"m = Unet(dim=8, channels=1, dim_mults=(1, 2)); {build}")
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                              env=child_env(pythonpath=ROOT, GLOG_v="2")).stderr  # 2: warnings shown

    if "FusedSparseAdam" not in stderr("ms.nn.Adam(m.trainable_params())"):
        pytest.skip("this MindSpore logs no FusedSparseAdam deprecation")
    assert "FusedSparseAdam" not in stderr("make_optimizer(m, 1e-4)")
