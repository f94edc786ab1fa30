"""Every command's output paths, checked against its inputs and its other outputs before any work: a
command never writes over a file it reads, however the two are named, and a destination that cannot take
the file (a folder, a read-only mount, a full disk) is refused before the work, not after it.

Rules it keeps:
  * two paths are the same file when their real paths agree (symbolic links resolved, also those of a file
    that does not exist yet) or when both exist with the same (st_dev, st_ino) (a hard link, a bind mount);
  * a refusal is one ``OutputError`` (a ``UserError``: exit 2) that names both options and both paths; nothing is created, read or
    written to decide it (the writability probe makes and removes one empty temporary file);
  * free space is checked only where the size is known (``check_space``): an estimate never refuses a
    write that would fit by more than the margin it states.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ddpm_core.errors import OutputError
from ddpm_core.runtime.atomic import free_bytes, output_problem

Named = tuple[str, "str | os.PathLike | None"]
"""(the option that names it, e.g. ``--weights``; the path, or None when the option was not given)."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: the same real path, or an existing file's same inode."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the real paths decided
        return False


def _given(named: Sequence[Named]) -> list[tuple[str, str]]:
    """The options that were given; JSON text (``--config '{...}'``) names no file."""
    return [(option, os.fspath(p)) for option, p in named
            if p is not None and not os.fspath(p).lstrip().startswith("{")]


def check_outputs(outputs: Sequence[Named], inputs: Sequence[Named] = ()) -> None:
    """Refuse, with one ``OutputError``, an output that is the same file as an input or as another output,
    then an output that could not be written (``ddpm_core.runtime.atomic.output_problem``)."""
    outs, ins = _given(outputs), _given(inputs)
    for i, (option, path) in enumerate(outs):
        for other, other_path in ins:
            if same_file(path, other_path):
                raise OutputError(f"{option} {path} is the same file as {other} {other_path}: writing it would "
                                f"destroy an input; pick another {option}")
        for other, other_path in outs[:i]:
            if same_file(path, other_path):
                raise OutputError(f"{option} {path} is the same file as {other} {other_path}: one output would "
                                f"replace the other; pick another {option}")
    for option, path in outs:
        problem = output_problem(path)
        if problem:
            raise OutputError(f"{option} {path}: {problem}")


def check_space(option: str, path: str | os.PathLike, nbytes: int) -> None:
    """Refuse (``OutputError``) to start writing ``nbytes`` to ``path`` (a file, or a folder to write in) when
    its file system has less free space than that (a temporary file needs all of it, even when it replaces a
    file of the same size)."""
    free = free_bytes(path)
    if free is not None and free < nbytes:
        raise OutputError(f"{option} {path}: needs about {_size(nbytes)} but its file system has {_size(free)} "
                          "free; free some space or write it elsewhere")


def check_inside(option: str, path: str | os.PathLike, other: str, folder: str | os.PathLike) -> None:
    """Refuse (``OutputError``) a folder ``path`` that is the folder ``folder`` or lies inside it."""
    real, outer = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    if real == outer or outer in real.parents:
        raise OutputError(f"{option} {path} is inside {other} {folder}: what it writes would be read as input; "
                        f"pick another {option}")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"
