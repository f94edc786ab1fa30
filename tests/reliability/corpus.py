"""The adversarial corpus's one assertion (issue 25): a command given bad input, a crafted file or a fault
exits with the expected status, prints exactly one ``error: ...`` line and no traceback, and leaves every
input byte-for-byte as it was.

``run_cli`` runs the command as a user does, in a child process (``python -m MODULE ARGS``), so a crash in
teardown, a traceback printed by a library or output from C code cannot hide from the check.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ddpm_core.runtime.environment import child_env

ROOT = Path(__file__).resolve().parents[2]


def sha256_of(path: Path) -> str:
    """The sha256 of a file, or of every file below a folder (names and contents), or "absent"."""
    path = Path(path)
    if not path.exists():
        return "absent"
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode())
        h.update(f.read_bytes())
    return h.hexdigest()


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.startswith("error:")]


def run_cli(module: str, args: Sequence[str], *, rc: int, inputs: Iterable[Path] = (), says: str | None = None,
            env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> Result:
    """Run ``python -m module *args`` and assert: exit status ``rc``; when ``rc`` is not 0, exactly one line
    of stderr starts with ``error:`` and contains ``says`` (when given); no ``Traceback`` anywhere; every
    path in ``inputs`` hashes the same after as before. The child imports what this process imports: this
    checkout first on ``PYTHONPATH``, the rest kept, so a framework blocked here (tests/one_framework.py) is
    blocked there too and a test of a missing framework's command must say it ``needs`` it."""
    inputs = [Path(p) for p in inputs]
    before = {p: sha256_of(p) for p in inputs}
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=child_env(pythonpath=ROOT, PYTHONWARNINGS="ignore", **(env or {})),
                          cwd=str(cwd or ROOT), timeout=timeout)
    res = Result(proc.returncode, proc.stdout, proc.stderr)
    shown = f"\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-3000:]}"
    assert res.rc == rc, f"exit {res.rc}, expected {rc}{shown}"
    assert "Traceback" not in res.stderr + res.stdout, f"a traceback{shown}"
    if rc != 0:
        assert len(res.error_lines) == 1, f"expected one 'error:' line, got {res.error_lines}{shown}"
        if says is not None:
            assert says in res.error_lines[0], f"{says!r} not in {res.error_lines[0]!r}"
    changed = [str(p) for p in inputs if sha256_of(p) != before[p]]
    assert not changed, f"inputs changed: {changed}"
    return res
