"""A training run's settings: everything that decides its loss curve, resolved from the command line for
a new run or read back from the run folder's run.json for ``--resume``, and checked before anything is
written (docs/training.md).

Rules it keeps:
  * ``Settings`` holds no None: every default (image size, flips, width) is resolved once, here, and stored
    in run.json as it is;
  * ``--resume`` keeps the stored settings: an option given again must agree with them, except those in
    ``RESUME_OVERRIDABLE``, which do not move the loss curve;
  * a bad combination is one ``UserError`` (``RunError`` for the run folder) naming the options;
  * ``--device`` and ``--deterministic`` are not settings: they say where and how exactly each step is
    computed, not what it computes, so a run started on a GPU continues on the CPU and the reverse (each
    checkpoint records them with the numerics, and ``--resume`` warns when they changed).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddpm_core import schema
from ddpm_core.cli import COMPILE_CHOICES, DEFAULT_MAX_LOSS, explicit_options
from ddpm_core.config import LOSS_TYPES, SCHEDULES, DiffusionConfig, UnetConfig
from ddpm_core.errors import RunError, UserError
from ddpm_core.runtime.devices import PRECISIONS
from ddpm_core.schedules import cosine_decay_lr
from ddpm_core.training.datasets import FORMATS as DATA_FORMATS
from ddpm_core.training.datasets import default_flip, default_image_size
from ddpm_core.training.download import default_root
from ddpm_core.training.run_folder import RunDir, read_json
from ddpm_core.training.tape import TAPE_VERSION, steps_per_epoch

FRAMEWORKS = ("torch", "ms")
"""The twins a run is trained with, by package suffix (``python -m ddpm_<framework>.train``)."""
RESUME_OVERRIDABLE = ("data", "workers", "max_steps", "save_every", "keep", "no_progress", "max_loss")
"""Options ``--resume`` may change: they do not move the loss curve (the data must still hold the same examples)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the loss curve, resolved (no None left), as stored in run.json."""

    framework: str
    data: str
    data_format: str
    image_size: int
    channels: int
    workers: int
    epochs: int
    max_steps: int | None
    save_every: int
    keep: int
    seed: int
    batch_size: int
    lr: float
    min_lr: float
    dim: int
    dim_mults: tuple[int, ...]
    timesteps: int
    schedule: str
    loss: str
    compile: str
    init_weights: str | None
    no_progress: bool
    examples: int = 0
    tape_version: int = TAPE_VERSION
    flip: bool = True
    precision: str = "fp32"
    max_loss: float = DEFAULT_MAX_LOSS
    """stop when a step's loss exceeds this (runs started before the option existed resume with the default)"""

    def unet_config(self) -> UnetConfig:
        return UnetConfig(dim=self.dim, channels=self.channels, dim_mults=tuple(self.dim_mults))

    def diffusion_config(self) -> DiffusionConfig:
        return DiffusionConfig(timesteps=self.timesteps, schedule=self.schedule, loss_type=self.loss)

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.examples, self.batch_size)

    @property
    def schedule_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def end_step(self) -> int:
        return min(self.schedule_steps, self.max_steps or self.schedule_steps)

    def learning_rates(self) -> list[float]:
        spe = self.steps_per_epoch
        return cosine_decay_lr(self.min_lr, self.lr, self.schedule_steps, spe, self.epochs)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dim_mults"] = list(self.dim_mults)
        return d


RUN_SCHEMA = schema.for_dataclass(Settings, {
    "framework": schema.string(FRAMEWORKS), "data_format": schema.string(DATA_FORMATS),
    "image_size": schema.integer(1), "channels": schema.integer(1), "workers": schema.integer(0),
    "epochs": schema.integer(1), "max_steps": schema.optional(schema.integer(1)), "save_every": schema.integer(1),
    "keep": schema.integer(1), "seed": schema.integer(0), "batch_size": schema.integer(1),
    "min_lr": schema.number(0.0), "dim": schema.integer(1), "dim_mults": schema.list_of(schema.integer(1), 1),
    "timesteps": schema.integer(2), "schedule": schema.string(SCHEDULES), "loss": schema.string(LOSS_TYPES),
    "compile": schema.string(COMPILE_CHOICES), "examples": schema.integer(0), "tape_version": schema.integer(0),
    "precision": schema.string(PRECISIONS), "max_loss": schema.number(0.0),
})
"""run.json: the fields of ``Settings`` (those with a default may be absent, as in older run folders), each
of its type and within the range its command-line option accepts; no other key."""


def run_and_settings(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                     framework: str) -> tuple[RunDir, Settings]:
    """The run folder and its settings: ``--resume``'s stored ones, or a new run's from the options (the data's
    own facts, such as the number of examples, are filled in once the data is read). Misused options end
    in ``parser.error``; a folder that is not a run, or a resumed setting that changed, is a ``RunError``."""
    if args.resume:
        if args.allow_other_files:
            parser.error("--allow-other-files is for a new run (--out); --resume continues a run folder")
        return _resume_settings(parser, argv, args, framework)
    if args.from_step is not None:
        parser.error("--from-step goes with --resume RUN_DIR")
    if not args.out:
        parser.error("--out RUN_DIR is required (or --resume RUN_DIR)")
    if args.download and not args.data:
        args.data = str(default_root())
    if not args.data:
        parser.error("--data DIR is required (or --download: Fashion-MNIST, fetched once)")
    return RunDir(args.out), _settings_from_args(args, framework)


def _settings_from_args(args: argparse.Namespace, framework: str) -> Settings:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)}
    values["dim_mults"] = tuple(values["dim_mults"])
    if values["image_size"] is None:
        values["image_size"] = default_image_size(args.data, args.data_format)
    if values["flip"] is None:
        values["flip"] = default_flip(args.data, args.data_format)
    if values["dim"] is None:
        values["dim"] = values["image_size"]
    return Settings(framework=framework, **values)


def _resume_settings(parser: argparse.ArgumentParser, argv: Sequence[str], args: argparse.Namespace,
                     framework: str) -> tuple[RunDir, Settings]:
    run = RunDir(args.resume)
    if not run.settings_file.exists():
        raise RunError(f"{run.path}: not a run folder (no run.json); start a run with --out")
    if args.out is not None and Path(args.out).resolve() != run.path.resolve():
        raise RunError("--resume RUN_DIR continues RUN_DIR in place; leave out --out")
    stored = read_json(run.settings_file)
    if isinstance(stored, dict) and "jit" in stored:  # run folders written before the option was named --compile
        stored["compile"] = stored.pop("jit")
    if isinstance(stored, dict):
        stored.setdefault("precision", "fp32")  # run folders written before --precision trained in float32
    schema.check(stored, RUN_SCHEMA, str(run.settings_file), RunError)
    if stored.get("framework") != framework:
        raise RunError(f"{run.path}: was trained with {stored.get('framework')}; resume it with "
                       f"python -m ddpm_{stored.get('framework')}.train")
    explicit = explicit_options(parser, argv) - {"resume", "out"}
    changed = sorted(k for k in explicit if k not in RESUME_OVERRIDABLE and k in stored
                     and _jsonable(getattr(args, k)) != stored[k])
    if changed:
        raise RunError(f"--resume keeps the run's settings; these differ from {run.settings_file}: "
                       + ", ".join(f"--{k.replace('_', '-')}" for k in changed)
                       + f" (only {', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDABLE)} may change)")
    for k in explicit & set(RESUME_OVERRIDABLE):
        stored[k] = _jsonable(getattr(args, k))
    stored["dim_mults"] = tuple(stored["dim_mults"])
    return run, Settings(**stored)


def checkpoint_mismatch(path: Path, found: Mapping[str, Sequence[int]],
                        expected: Mapping[str, Sequence[int]]) -> RunError | None:
    """A ``RunError`` naming ``path`` when its tensors (name -> shape) are not those of the model and optimizer
    that the run's settings build (a hand-edited run.json, say); None when they are. Both twins check
    this before loading a checkpoint, so the refusal is the same one line in both."""
    lacking, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    shape = next(((n, tuple(found[n]), tuple(e)) for n, e in expected.items()
                  if n in found and tuple(found[n]) != tuple(e)), None)
    if not (lacking or extra or shape):
        return None
    what = (f"{shape[0]} has shape {shape[1]}, but the model of the run's settings needs {shape[2]}" if shape
            else f"{len(lacking)} missing (first: {lacking[0]})" if lacking
            else f"{len(extra)} unexpected (first: {extra[0]})")
    return RunError(f"{path}: {what}; run.json does not describe the model this checkpoint holds (was it edited?)")


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def check_settings(s: Settings) -> None:
    """A ``UserError`` naming the options if the model cannot be built or trained with ``s``."""
    try:
        cfg = s.unet_config()
        s.diffusion_config()
    except ValueError as e:
        raise UserError(str(e)) from None
    if s.image_size % cfg.size_multiple:
        raise UserError(f"--image-size {s.image_size} is not a multiple of {cfg.size_multiple}: --dim-mults "
                        f"{','.join(map(str, s.dim_mults))} halves the image {len(s.dim_mults) - 1} time(s)")
    for option, value in (("--lr", s.lr), ("--min-lr", s.min_lr)):
        if not math.isfinite(value):
            raise UserError(f"{option} must be a finite number, got {value}")
    if not (math.isfinite(s.max_loss) and s.max_loss > 0):  # run.json stays strict JSON (no Infinity)
        raise UserError(f"--max-loss must be a finite number > 0 (a huge one, such as 1e30, for no practical limit), "
                        f"got {s.max_loss}")
    if not 0.0 <= s.min_lr < s.lr:
        raise UserError(f"need 0 <= --min-lr < --lr, got {s.min_lr} and {s.lr}")
