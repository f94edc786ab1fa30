"""The output and fault corpus's kit (issue 25): a small tmpfs to fill (disk full) or to remount read-only,
tiny weights to write over, and ``refused``: ``run_cli``'s assertion for a command run in this process (the
frameworks are imported already, so a case costs milliseconds instead of a framework's import).

A tmpfs needs root: where the tests do not run as root, or ``mount`` fails (a container without the
capability), the tests that need one skip and say why. Every mount is unmounted in teardown.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from tests.reliability.corpus import sha256_of

TINY_UNET = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
TINY_DIFFUSION = DiffusionConfig(timesteps=10)


def tiny_weights(path: Path) -> Path:
    """The seeded initial weights of ``TINY_UNET`` at ``path`` (its extension picks the format), with T=10."""
    from ddpm_core.weights.files import save_weights
    from parity.engine.initial import initial_weights

    save_weights(initial_weights(TINY_UNET, 0), path, "torch", TINY_UNET, diffusion=TINY_DIFFUSION)
    return path


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's syntax: ``1m``, ``64k``) mounted at ``path`` for the block."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (disk-full and read-only cases) needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        if read_only:
            remount_read_only(path)
        yield path
    finally:  # lazily when busy: a failed test's traceback may still hold a file open there
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(path)], check=True)


def remount_read_only(path: Path) -> None:
    """Root ignores file modes, so a read-only destination is a read-only mount."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def fill(folder: Path, leave: int = 0) -> Path:
    """Fill ``folder``'s file system up to ``leave`` free bytes with one file (returned)."""
    filler = folder / "filler"
    with open(filler, "wb") as f:
        with contextlib.suppress(OSError):
            while True:
                st = os.statvfs(folder)
                room = st.f_bfree * st.f_frsize - leave
                if room <= 0:
                    break
                f.write(b"\0" * min(room, 1 << 16))
                f.flush()
    return filler


def names(folder: Path) -> list[str]:
    """Every entry below ``folder`` (hidden temporaries too), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def refused(main: Callable[[list[str]], int], args: Sequence[object], capsys, *, says: str | None = None,
            inputs: Iterable[Path] = (), rc: int = 2) -> str:
    """``main(args)`` in this process returns ``rc``, prints exactly one line on stderr, ``error: ...``
    (containing ``says``), and leaves every path in ``inputs`` as it was. Returns that line."""
    inputs = [Path(p) for p in inputs]
    before = {p: sha256_of(p) for p in inputs}
    capsys.readouterr()
    assert main([str(a) for a in args]) == rc
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert says is None or says in err[0], f"{says!r} not in {err[0]!r}"
    assert [str(p) for p in inputs if sha256_of(p) != before[p]] == []
    return err[0]
