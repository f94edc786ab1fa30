"""Atomic file writes: the destination either keeps its old content or gets the complete new one.

Rules it keeps:
  * every file this project writes (weights, checkpoints, logs snapshots, pictures, reports) goes through
    ``atomic_write``: a temporary file in the destination folder, flushed and fsynced, then ``os.replace``d
    into place; on any failure the temporary file is removed;
  * a write that fails for the file system's sake (no space left, a read-only mount, no permission, a
    quota) is one ``OutputError`` naming the destination, whatever the writer raised (PyTorch and
    safetensors raise their own types for a full disk); any other failure keeps its type;
  * a temporary file is recognisably ours: ``.<destination name>.<host>-<pid>.<8 random>.tmp`` (MindSpore's
    writer adds ``.ckpt`` or ``.tmp`` to it). A process killed with SIGKILL cannot remove it, so every write
    first removes those of its destination whose process on this host is gone (``remove_stale_temporaries``),
    and nothing else: a user's own ``*.tmp`` files, and those of a live process, are left alone;
  * ``output_problem`` says, before any expensive work, why a path could not be written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from ddpm_core.errors import EnvironmentRefused, OutputError, UserError

FULL_BELOW = 1 << 20
"""A writer that fails without an ``OSError`` (torch.save's RuntimeError) failed for lack of space when its
file system has less than this free afterwards (the partial temporary file still in place)."""


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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest.parent, re.escape(dest.name))
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(dest.name), suffix=".tmp", dir=dest.parent)
    except OSError as e:
        raise OutputError(f"cannot write {dest}: {_reason(e)}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, dest)
    except Exception as e:
        fault = None if isinstance(e, UserError) else write_fault(e, dest.parent)
        if fault is None:
            raise
        raise OutputError(f"cannot write {dest}: {fault}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def free_bytes(folder: str | os.PathLike) -> int | None:
    """The bytes this process may still write on the file system of ``folder`` (or of its nearest existing
    parent); None if it cannot be told."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def write_fault(e: BaseException, folder: Path) -> str | None:
    """Why writing in ``folder`` failed, when the file system is the cause: an ``OSError`` from the system
    (in ``e`` or what it was raised from) gives its reason; any other failure counts only when the file system
    is now (almost) full or ``folder`` is not writable. None: not a file-system fault (a bug keeps its type, and so
    do a missing framework and the project's own errors, which say what they are whatever the disk holds)."""
    if isinstance(e, (ImportError, UserError, EnvironmentRefused)):
        return None
    seen: BaseException | None = e
    for _ in range(8):  # the chain of causes, not followed around a cycle
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno is not None:
            return _reason(seen) + (" (the disk is full)" if seen.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        seen = seen.__cause__ or seen.__context__
    free = free_bytes(folder)
    if free is not None and free < FULL_BELOW:
        return f"no space left on its file system (the writer raised {type(e).__name__})"
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable"
    return None


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` and move the result to ``path`` only if it returns normally."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez``'s file (stored members ``NAME.npy``, zip64), with the zip closed here also when a write
    fails: ``np.savez`` leaves a failed zip to the garbage collector, whose late close prints a traceback."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in arrays.items():
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)


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
