"""Atomic file writes: the destination either keeps its old content or gets the complete new one.

Rules it keeps:
  * every file this project writes (weights, checkpoints, logs snapshots, pictures, reports) goes through
    ``atomic_write``: a temporary file in the destination folder, flushed and fsynced, then ``os.replace``d
    into place; on any failure the temporary file is removed;
  * a temporary file is recognisably ours: ``.<destination name>.<host>-<pid>.<8 random>.tmp`` (MindSpore's
    writer adds ``.ckpt`` or ``.tmp`` to it). A process killed with SIGKILL cannot remove it, so
    ``remove_stale_temporaries`` removes those of a destination whose process on this host is gone, and
    nothing else: a user's own ``*.tmp`` files, and those of a live process, are left alone;
  * ``output_problem`` says, before any expensive work, why a path could not be written.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def host_tag() -> str:
    """This machine's name, reduced to letters, digits and ``_`` (it goes into file and folder names)."""
    return "".join(c if c.isalnum() else "_" for c in os.uname().nodename)[:40] or "host"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(name: str) -> str:
    return f".{name}.{host_tag()}-{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; after the block succeeds it replaces ``path``."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(dest.name), suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it returns normally."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def remove_stale_temporaries(folder: str | os.PathLike, names: str) -> list[Path]:
    """Remove the temporary files that ``atomic_path`` made in ``folder`` for destinations whose name matches
    the regular expression ``names`` (whole name), on this host, by processes that no longer exist.
    Returns what it removed; any other file, whatever its name, is left alone."""
    folder = Path(folder)
    pattern = re.compile(rf"\.(?:{names})\.{re.escape(host_tag())}-(\d+)\.[a-z0-9_]{{8}}\.tmp(?:\.ckpt|\.tmp)?")
    removed = []
    if not folder.is_dir():
        return removed
    for f in folder.iterdir():
        m = pattern.fullmatch(f.name)
        if m and f.is_file() and not f.is_symlink() and not process_alive(int(m.group(1))):
            f.unlink()
            removed.append(f)
    return removed


def output_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` could not be written by ``atomic_write`` (a folder, a parent that is a file, a folder
    without write permission), or None. Creates nothing: the nearest existing parent is probed with a
    temporary file that is removed at once."""
    dest = Path(path)
    if dest.is_dir():
        return "is a folder, not a file"
    parent = dest.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix(dest.name), suffix=".tmp", dir=parent)
    except OSError as e:
        return f"cannot write in {parent} ({e.strerror or e})"
    os.close(fd)
    os.unlink(probe)
    return None
