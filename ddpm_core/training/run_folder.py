"""A training run's folder, recognised and never assumed: its records, its checkpoints, their pruning,
where a resumed run starts, and undoing a run that never completed a step (docs/training.md).

RUN_DIR layout:
  run.json                  the resolved settings (written once, atomically); ``--resume`` reads them back
  config.json               {"unet", "diffusion", "image_size"}: what ``sample --config`` reads
  log.jsonl                 one line per step: {"step", "epoch", "loss", "lr"} (append-only, flushed per line)
  checkpoints/step_NNNNNNNNN.{pt|ckpt}   model + optimizer + progress after NNNNNNNNN steps
  latest.json               the run's records: the newest checkpoint {"step", "checkpoint", "bytes", "sha256"}
                            and, under "checkpoints", every checkpoint the run keeps, oldest first
  model.{pt|ckpt}, model.safetensors    the final weights, exported through ``ddpm_core.weights``

Rules it keeps:
  * one training writes a run folder at a time: it holds the folder's lock (``fcntl.flock`` on the folder
    itself, so nothing is added to it) from before its first check to its exit; a second ``--out`` or
    ``--resume`` of the folder is refused in one line. A new run's folder is made to be locked, and removed
    again if it stays empty (the run stopped before writing anything);
  * a folder is ours only if it holds run.json; a new run goes into a missing or empty folder, or (with
    ``--allow-other-files``) beside other files, never over a file named like one it writes;
  * nothing is deleted unless the run's records name it: pruning keeps the newest ``--keep`` checkpoints by
    the steps recorded in latest.json (never by file names), and temporary files are removed only when their
    name says this host's killed process made them for one of the run's own files (``ddpm_core.runtime.atomic``);
  * a checkpoint is trusted only through its record (size and sha256) or, for one the records lack, its
    own checksum; a damaged newest checkpoint, or checkpoints without latest.json, stop ``--resume`` with
    one line that names the way on (``--from-step N``), never a silent restart.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from ddpm_core import schema
from ddpm_core.errors import OutputError, RunError, WeightsError
from ddpm_core.runtime.atomic import atomic_write, atomic_write_bytes, output_problem, remove_stale_temporaries
from ddpm_core.weights.digest import file_digest
from ddpm_core.weights.formats import verify_checksum

KILL_ENV = "DDPM_KILL_AT"
KILL_RANK_ENV = "DDPM_KILL_RANK"
RUN_FILES = ("run.json", "config.json", "log.jsonl", "latest.json", "model.pt", "model.ckpt", "model.safetensors")
"""The files a run writes in its folder (besides checkpoints/)."""
CHECKPOINT_NAME = r"step_\d{9}\.(?:pt|ckpt)"
"""A checkpoint's file name in checkpoints/."""


def kill_point(where: str, step: int, rank: int = 0) -> None:
    """SIGKILL this process if ``DDPM_KILL_AT`` names ``where:step`` and ``DDPM_KILL_RANK`` (if set) names
    ``rank`` (a testing hook)."""
    if os.environ.get(KILL_ENV) == f"{where}:{step}" and os.environ.get(KILL_RANK_ENV, str(rank)) == str(rank):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    """The JSON value in ``path``, read with a size limit; any problem is one ``RunError`` naming the file."""
    return schema.load_json(path, RunError)


_CHECKPOINT = schema.string(pattern=rf"checkpoints/{CHECKPOINT_NAME}")
_SHA256 = schema.string(pattern="[0-9a-f]{64}")
_RECORD = schema.obj({"step": schema.integer(0), "checkpoint": _CHECKPOINT, "bytes": schema.integer(0),
                      "sha256": _SHA256})
LATEST_SCHEMA = schema.obj(
    {"step": schema.integer(0), "checkpoint": schema.optional(_CHECKPOINT)},
    {"framework": schema.string(), "bytes": schema.integer(0), "sha256": _SHA256, "checkpoints": schema.list_of(_RECORD)})
"""latest.json: the newest checkpoint's record (its "checkpoint" null before the first), and under "checkpoints"
every record the run keeps (absent in run folders written before the records were kept)."""


def check_latest(pointer: Any, path: Path) -> dict[str, Any]:
    """``pointer`` (latest.json's content) if it fits ``LATEST_SCHEMA`` and names the size and sha256 of the
    checkpoint it names; else a ``RunError`` naming ``path`` and the field."""
    schema.check(pointer, LATEST_SCHEMA, str(path), RunError)
    lacking = [k for k in ("bytes", "sha256") if pointer["checkpoint"] is not None and k not in pointer]
    if lacking:
        raise RunError(f"{path}: {lacking[0]}: missing (the record of {pointer['checkpoint']} needs it)")
    return pointer


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts: after ``step`` steps, from ``checkpoint`` (relative to the run; None: the
    initial weights). ``adopt``: the records must be rewritten to it first (an explicit ``--from-step``)."""

    step: int
    checkpoint: str | None
    adopt: bool = False


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"
        self.settings_file = self.path / "run.json"
        self.config_file = self.path / "config.json"
        self.log_file = self.path / "log.jsonl"
        self.latest_file = self.path / "latest.json"
        self._made: list[Path] = []
        self._lock: int | None = None

    # ------------------------------------------------------------ one writer at a time
    def lock(self, new: bool) -> None:
        """Take the folder's lock for this process (``new``: make the folder first, as a new run's; ``unlock``
        removes it again if it stays empty). Refused (``RunError``) while another process holds it; a folder
        that cannot be made or written in is refused (``OutputError``) before any work."""
        self._refuse_a_file()
        for _ in range(3):  # a folder removed and made again between our open and our lock: lock the new one
            if new:
                missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
                try:
                    self.path.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"--out {self.path}: cannot make the folder ({e.strerror or e})") from None
                self._made = missing + [p for p in self._made if p not in missing]
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._made = []  # the holder writes in them now
                raise RunError(f"{self.path}: another training is writing this run folder (it holds the folder's "
                               f"lock); wait for it to finish{', or pick another --out' if new else ''}") from None
            if _same_inode(fd, self.path):
                self._lock = fd
                break
            os.close(fd)
        else:
            self._made = []
            raise RunError(f"{self.path}: the folder keeps being replaced while this training tries to lock it")
        problem = output_problem(self.settings_file)
        if problem:
            self.unlock()
            raise OutputError(f"{'--out' if new else '--resume'} {self.path}: {problem}")

    def unlock(self) -> None:
        """Release the lock; first, unless the folder holds a run, remove the folders made for it while empty."""
        if not self.settings_file.exists():
            self._remove_made()
        self._made = []
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # ------------------------------------------------------------ a new run
    def check_new(self, allow_other_files: bool = False) -> None:
        """Refuse (``RunError``) a folder a new run must not write into; change nothing."""
        self._refuse_a_file()
        if self.settings_file.exists():
            raise RunError(f"{self.path}: already holds a run; continue it with --resume {self.path}, or pick a new --out")
        if not self.path.is_dir():
            return
        ours = [n for n in RUN_FILES if (self.path / n).exists()] + self._checkpoint_files()
        if ours:
            shown = ", ".join(ours[:3]) + (f" and {len(ours) - 3} more" if len(ours) > 3 else "")
            raise RunError(f"{self.path}: holds {shown} but no run.json, so it is not a run folder, and a run's own "
                           "files would replace or mix with them; pick a new --out")
        others = sorted(p.name for p in self.path.iterdir() if not (p == self.checkpoints and not any(p.iterdir())))
        if others and not allow_other_files:
            count = f"{len(others)} entr{'y' if len(others) == 1 else 'ies'}"
            raise RunError(f"{self.path}: is not empty ({count}, e.g. {others[0]!r}) and not a run folder; "
                           "pick a new or empty --out, or pass --allow-other-files to write the run beside them "
                           "(they are left alone)")

    def _refuse_a_file(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: is a file, not a folder; give --out a new or empty folder")

    def create(self, settings: dict[str, Any], config: dict[str, Any], framework: str) -> None:
        """Write a new run's settings, config and empty records; ``discard`` undoes exactly this."""
        missing = [p for p in (self.checkpoints, self.path, *self.path.parents) if not p.exists()]
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self._made = missing + [p for p in self._made if p not in missing]  # innermost first
        write_json(self.settings_file, settings)
        write_json(self.config_file, config)
        write_json(self.latest_file, {"step": 0, "checkpoint": None, "framework": framework, "checkpoints": []})

    def discard(self) -> None:
        """Remove what ``create`` made and the log of a run that completed no step: its files, and the folders it
        made if they are empty. Anything else stays."""
        for f in (self.settings_file, self.config_file, self.latest_file, self.log_file):
            f.unlink(missing_ok=True)
        self._remove_made()

    def _remove_made(self) -> None:
        """The folders this object made (innermost first), while they are empty."""
        for folder in self._made:
            if not folder.exists():
                continue
            try:
                folder.rmdir()
            except OSError:
                break

    # ------------------------------------------------------------ records
    def _checkpoint_files(self) -> list[str]:
        if not self.checkpoints.is_dir():
            return []
        return sorted(f"checkpoints/{f.name}" for f in self.checkpoints.iterdir() if re.fullmatch(CHECKPOINT_NAME, f.name))

    def _pointer(self) -> dict[str, Any] | None:
        return check_latest(read_json(self.latest_file), self.latest_file) if self.latest_file.exists() else None

    def records(self, pointer: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The checkpoints the run keeps, oldest first: {"step", "checkpoint", "bytes", "sha256"} each."""
        pointer = self._pointer() if pointer is None else pointer
        if pointer is None:
            return []
        if "checkpoints" in pointer:
            entries = pointer["checkpoints"]
        else:  # written before the records were kept: the newest checkpoint alone
            entries = [pointer] if pointer.get("checkpoint") else []
        out = [{k: e[k] for k in ("step", "checkpoint", "bytes", "sha256")} for e in entries]  # check_latest'd
        return sorted(out, key=lambda e: e["step"])

    def problem(self, entry: dict[str, Any]) -> str | None:
        """Why the checkpoint of a record cannot be trusted (missing, or not the bytes recorded); None if intact."""
        path = self.path / entry["checkpoint"]
        if not path.is_file():
            return f"{self.latest_file}: names {path}, which does not exist"
        if path.stat().st_size != entry["bytes"] or file_digest(path) != entry["sha256"]:
            return f"{path}: does not match the sha256 recorded in {self.latest_file}; the file was changed or damaged"
        return None

    def newest(self) -> dict[str, Any] | None:
        """The record of the newest checkpoint, or None if the run has written none."""
        records = self.records()
        return records[-1] if records else None

    def write_checkpoint(self, step: int, ext: str, framework: str, save: Callable[[Path], None], keep: int) -> Path:
        """Write ``checkpoints/step_<step><ext>`` with ``save(tmp_path)``, record it, then delete the recorded
        checkpoints beyond the newest ``keep`` (by step). Files the records do not name are left alone."""
        path = self.checkpoints / f"step_{step:09d}{ext}"

        def write(tmp: Path) -> None:
            save(tmp)
            kill_point("during-save", step)

        atomic_write(path, write)
        kill_point("before-pointer", step)
        entry = {"step": step, "checkpoint": str(path.relative_to(self.path)), "bytes": path.stat().st_size,
                 "sha256": file_digest(path)}
        records = [e for e in self.records() if e["step"] < step] + [entry]
        write_json(self.latest_file, {**entry, "framework": framework, "checkpoints": records[-keep:]})
        for e in records[:-keep]:
            (self.path / e["checkpoint"]).unlink(missing_ok=True)
        return path

    def remove_stale_temporaries(self) -> None:
        """Temporary files that this host's killed processes left for the run's own files; nothing else."""
        remove_stale_temporaries(self.path, "|".join(re.escape(n) for n in RUN_FILES))
        remove_stale_temporaries(self.checkpoints, CHECKPOINT_NAME)

    # ------------------------------------------------------------ resuming
    def resume_point(self, ext: str, from_step: int | None = None) -> ResumePoint:
        """Where ``--resume`` starts: the newest recorded checkpoint, verified; or, with ``from_step``, that
        step's checkpoint (0: the beginning). A checkpoint the records lack is accepted only if its own
        checksum confirms it. Every refusal is a ``RunError`` that names the way on."""
        pointer = self._pointer()
        records = self.records(pointer)
        if from_step is None:
            if pointer is None:
                found = self._checkpoint_files()
                if found:
                    raise RunError(f"{self.latest_file} is missing, but the run holds {', '.join(found)}; continue from "
                                   f"one of them with --resume {self.path} --from-step N (its own checksum is "
                                   "verified), or start again from the beginning with --from-step 0")
                return ResumePoint(0, None)  # no checkpoint was completed
            if pointer.get("checkpoint") is None:
                return ResumePoint(0, None)
            newest = records[-1] if records else {k: pointer[k] for k in ("step", "checkpoint", "bytes", "sha256")}
            problem = self.problem(newest)
            if problem is None:
                return ResumePoint(int(newest["step"]), newest["checkpoint"])
            intact = next((e for e in reversed(records[:-1]) if self.problem(e) is None), None)
            way = (f"the newest intact checkpoint is {intact['checkpoint']} (step {intact['step']}): continue from it "
                   f"with --resume {self.path} --from-step {intact['step']}" if intact else
                   f"no older checkpoint recorded is intact: start again with --resume {self.path} --from-step 0")
            raise RunError(f"{problem}; {way}")
        if from_step == 0:
            return ResumePoint(0, None, adopt=True)
        entry = next((e for e in records if e["step"] == from_step), None)
        if entry is not None:
            problem = self.problem(entry)
            if problem:
                raise RunError(problem)
            return ResumePoint(from_step, entry["checkpoint"], adopt=True)
        path = self.checkpoints / f"step_{from_step:09d}{ext}"
        if not path.is_file():
            have = sorted({e["step"] for e in records} | {int(re.findall(r"\d{9}", n)[0]) for n in self._checkpoint_files()})
            raise RunError(f"--from-step {from_step}: {self.path} has no checkpoint of step {from_step} (steps: "
                           f"{', '.join(map(str, have)) or 'none'}; 0 starts from the beginning)")
        if not _own_checksum_matches(path):
            raise RunError(f"{path}: is not in the run's records and carries no checksum of its own to verify")
        return ResumePoint(from_step, str(path.relative_to(self.path)), adopt=True)

    def adopt(self, point: ResumePoint, framework: str) -> None:
        """Rewrite the records to resume from ``point``: its checkpoint becomes the newest, later ones are
        forgotten (and so never pruned: a later checkpoint of the same step replaces its file)."""
        records = [e for e in self.records() if e["step"] < point.step]
        if point.checkpoint is None:
            write_json(self.latest_file, {"step": 0, "checkpoint": None, "framework": framework, "checkpoints": records})
            return
        path = self.path / point.checkpoint
        entry = {"step": point.step, "checkpoint": point.checkpoint, "bytes": path.stat().st_size,
                 "sha256": file_digest(path)}
        write_json(self.latest_file, {**entry, "framework": framework, "checkpoints": records + [entry]})

    # ------------------------------------------------------------ the log
    @contextlib.contextmanager
    def log_writer(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """A function that appends one JSON line to log.jsonl and flushes it; a write that fails (a full disk)
        is one ``OutputError`` naming the log (a half-written last line is dropped by ``cut_log``)."""
        try:
            f = open(self.log_file, "a")
        except OSError as e:
            raise OutputError(f"cannot write {self.log_file}: {e.strerror or e}") from None

        def write(record: dict[str, Any]) -> None:
            try:
                f.write(json.dumps(record) + "\n")
                f.flush()
            except OSError as e:
                raise OutputError(f"cannot write {self.log_file}: {e.strerror or e}") from None

        try:
            yield write
        finally:
            with contextlib.suppress(OSError):  # each line was flushed; a failed one was reported
                f.close()

    def cut_log(self, step: int) -> None:
        """Keep the log lines of steps before ``step`` (dropping a half-written last line), atomically."""
        if not self.log_file.exists():
            return
        kept = []
        for line in self.log_file.read_text().splitlines():
            try:
                if json.loads(line)["step"] < step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue
        atomic_write_bytes(self.log_file, "".join(x + "\n" for x in kept).encode())

    def read_log(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def locked(path: str | os.PathLike, new: bool = False) -> Iterator[RunDir]:
    """``RunDir(path)`` with its lock held for the block (``RunDir.lock``)."""
    run = RunDir(path)
    run.lock(new)
    try:
        yield run
    finally:
        run.unlock()


def _same_inode(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the folder open as ``fd`` (it may have been removed and made again)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _own_checksum_matches(path: Path) -> bool:
    """A checkpoint's own checksum (zip CRC-32 / MindSpore's CRC): True if it matched, False if it has none;
    a ``RunError`` if it did not match."""
    try:
        return verify_checksum(path)
    except WeightsError as e:
        raise RunError(str(e)) from None
