"""The engine is model-agnostic and framework-free: importing every module of ``parity.engine`` (the checks
included) imports no framework, no twin and no side. Checked in a child process, whose module table starts
empty, so a test that imported a framework earlier cannot hide an import."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import parity.engine
from ddpm_core.runtime.environment import child_env

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("torch", "mindspore", "ddpm_torch", "ddpm_ms", "parity.sides")


def _engine_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(parity.engine.__path__, "parity.engine."))


def test_importing_the_whole_engine_imports_no_framework_and_no_side() -> None:
    modules = _engine_modules()
    assert "parity.engine.checks.ddpm" in modules and "parity.engine.suite" in modules, modules  # walked it all
    code = (f"import importlib, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith('parity.sides')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=child_env(pythonpath=str(ROOT)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"parity.engine imported {done.stdout.strip()}"


def test_the_import_check_sees_a_framework_import() -> None:
    """The same child process does report a side's import (the check above can fail)."""
    code = "import sys, parity.sides.anchor\nprint(sorted(m for m in sys.modules if m.startswith('parity.sides')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=child_env(pythonpath=str(ROOT)))
    assert "parity.sides.anchor" in done.stdout, done.stderr
