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

import pytest

from ddpm_core.cli import train_parser
from ddpm_core.datasets import make_stage_dir, prepare_data

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
