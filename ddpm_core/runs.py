"""A training run, framework-neutral: its settings and the loop that drives a twin's ``Trainer`` and
``TrainingData`` through the per-step tape (docs/training.md). The folder, its records and checkpoints
are ``ddpm_core.run_folder``'s.

Rules it keeps:
  * a file is either complete or absent: checkpoints, records, settings and exports go through
    ``ddpm_core.atomic``; the records name a checkpoint only after that checkpoint is in place, so a run
    killed at any instant resumes from the last complete checkpoint;
  * a new run writes nothing until its settings are valid and its trainer is built, and one that stops
    before completing a step leaves no folder behind that would block a retry;
  * a non-finite loss (or non-finite weights at a checkpoint) stops the run at once with one line naming the
    step; the checkpoints written before stay;
  * resuming replays nothing and skips nothing: the log is cut back to the checkpoint's step and the tape
    is a function of (seed, step), so the resumed loss curve equals an uninterrupted one exactly, given the
    same numerics (library versions, oneDNN instruction set, PyTorch threads: recorded in each checkpoint,
    and a warning if they changed);
  * ``DDPM_KILL_AT`` (``after-step:K``, ``during-save:K``, ``before-pointer:K``) sends the process a real
    SIGKILL at that point (in a data-parallel job, only rank ``DDPM_KILL_RANK`` when that is set); the tests
    use it to interrupt runs deterministically;
  * data parallel (``torchrun`` / ``msrun``, ddpm_core/distributed.py): every rank runs this loop on its slice
    of each global batch; rank 0 alone writes the run folder, and every rank resumes from the same checkpoint.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddpm_core.cli import RESUME_OVERRIDABLE, UserError, explicit_options, train_parser
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.datasets import DataSpec, default_flip, default_image_size, make_stage_dir, prepare_data
from ddpm_core.distributed import World, launched_size
from ddpm_core.download import default_root, download_fashion_mnist
from ddpm_core.formats import WeightsError, verify_checksum
from ddpm_core.run_folder import ResumePoint, RunDir, RunError, kill_point, read_json
from ddpm_core.schedules import cosine_decay_lr
from ddpm_core.train_tape import (
    TAPE_VERSION,
    apply_flips,
    batch_indices,
    shard,
    step_draws,
    steps_per_epoch,
    to_model_range,
)

CHECKPOINT_FORMAT = "ddpm-parity-train-state"
CHECKPOINT_VERSION = 1


class Trainer(Protocol):
    """What each twin's ``train.Trainer`` provides (mirrored in ddpm_torch/train.py and ddpm_ms/train.py)."""

    framework: str
    naming: str
    checkpoint_ext: str

    def step(self, x_start: np.ndarray, t: np.ndarray, noise: np.ndarray) -> float: ...
    def lr_position(self) -> int: ...
    def numerics(self) -> dict[str, Any]: ...
    def state(self) -> dict[str, np.ndarray]: ...
    def save_checkpoint(self, path: Path, meta: dict[str, Any]) -> None: ...
    def load_checkpoint(self, path: Path) -> dict[str, Any]: ...


# ---------------------------------------------------------------- settings
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


def _settings_from_args(args: Any, framework: str) -> Settings:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)}
    values["dim_mults"] = tuple(values["dim_mults"])
    if values["image_size"] is None:
        values["image_size"] = default_image_size(args.data, args.data_format)
    if values["flip"] is None:
        values["flip"] = default_flip(args.data, args.data_format)
    if values["dim"] is None:
        values["dim"] = values["image_size"]
    return Settings(framework=framework, **values)


def _check_settings(s: Settings) -> None:
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
    if not 0.0 <= s.min_lr < s.lr:
        raise UserError(f"need 0 <= --min-lr < --lr, got {s.min_lr} and {s.lr}")


def _resume_settings(parser, argv: Sequence[str], args: Any, framework: str) -> tuple[RunDir, Settings]:
    run = RunDir(args.resume)
    if not run.settings_file.exists():
        raise RunError(f"{run.path}: not a run folder (no run.json); start a run with --out")
    if args.out is not None and Path(args.out).resolve() != run.path.resolve():
        raise RunError("--resume RUN_DIR continues RUN_DIR in place; leave out --out")
    stored = read_json(run.settings_file)
    if "jit" in stored:  # run folders written before the option was named --compile
        stored["compile"] = stored.pop("jit")
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


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------- the loop
def train_main(argv: Sequence[str] | None, prog: str, framework: str,
               open_data: Callable[[DataSpec, int], Any], make_trainer: Callable[..., Trainer], dist: Any) -> int:
    """``python -m ddpm_<twin>.train``: parse, prepare the data, build or restore the trainer, run the loop.
    ``dist`` is the twin's ``distributed`` module (``init``, ``barrier``, ``shutdown``, ``PEER_FAILURES``):
    under ``torchrun`` / ``msrun`` this process is one rank of a data-parallel job."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = train_parser(prog)
    args = parser.parse_args(argv)
    if args.resume:
        if args.allow_other_files:
            parser.error("--allow-other-files is for a new run (--out); --resume continues a run folder")
        run, settings = _resume_settings(parser, argv, args, framework)
    else:
        if args.from_step is not None:
            parser.error("--from-step goes with --resume RUN_DIR")
        if not args.out:
            parser.error("--out RUN_DIR is required (or --resume RUN_DIR)")
        if args.download and not args.data:
            args.data = str(default_root())
        if not args.data:
            parser.error("--data DIR is required (or --download: Fashion-MNIST, fetched once)")
        run, settings = RunDir(args.out), _settings_from_args(args, framework)
    try:  # before joining: every process of the job (msrun's scheduler too) stops here at once
        World(0, launched_size()).check_batch(settings.batch_size)
    except ValueError as e:
        raise UserError(f"--batch-size: {e}") from None
    world = dist.init()
    try:
        return _prepare(run, settings, args, open_data, make_trainer, world, dist)
    except dist.PEER_FAILURES as e:
        if not world.distributed:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunError(f"rank {world.rank} of {world.size}: a collective operation failed ({first}): another worker "
                       f"has stopped or is unreachable; after fixing the cause, continue with --resume {run.path}") from None
    finally:
        dist.shutdown(world)


def _prepare(run: RunDir, settings: Settings, args: Any, open_data: Callable[[DataSpec, int], Any],
             make_trainer: Callable[..., Trainer], world: World, dist: Any) -> int:
    if args.download:
        if world.is_main:  # one download per job; the other ranks read what it leaves
            download_fashion_mnist(settings.data)
        dist.barrier(world)
    with make_stage_dir() as stage:
        spec = prepare_data(settings.data, settings.data_format, settings.image_size, settings.channels, stage)
        if args.resume and spec.examples != settings.examples:
            raise RunError(f"{spec.source}: holds {spec.examples} examples, but the run was started on "
                           f"{settings.examples}; the tape (and the loss curve) would change")
        try:
            steps_per_epoch(spec.examples, settings.batch_size)
        except ValueError as e:
            raise UserError(f"{spec.source}: {e}") from None
        settings = dataclasses.replace(settings, data_format=spec.format, channels=spec.channels,
                                       examples=spec.examples)
        _check_settings(settings)
        if not args.resume:
            dist.barrier(world)  # no rank has written yet: each sees the folder as the user left it
            run.check_new(args.allow_other_files)
            dist.barrier(world)
        if world.is_main:
            run.remove_stale_temporaries()
        dist.barrier(world)
        data = open_data(spec, settings.workers)
        if args.resume:
            point = run.resume_point(make_trainer.checkpoint_ext, args.from_step, _verify_checkpoint)
        else:
            point = None
        return _start(run, settings, data, make_trainer, world, point)


def _verify_checkpoint(path: Path) -> bool:
    """A checkpoint's own checksum (zip CRC-32 / MindSpore's CRC): True if it matched, False if it has none."""
    try:
        return verify_checksum(path)
    except WeightsError as e:
        raise RunError(str(e)) from None


def _start(run: RunDir, s: Settings, data: Any, make_trainer: Callable[..., Trainer], world: World,
           point: ResumePoint | None) -> int:
    """Build the trainer; for a new run (``point`` None) only then write the folder, and remove it again if
    the run stops before completing a step; for a resumed one, restore ``point``. Then train."""
    lrs = s.learning_rates()
    weights = None
    if s.init_weights and (point is None or point.checkpoint is None):  # a checkpoint replaces them
        from ddpm_core.weights import load_weights

        weights = load_weights(s.init_weights, naming="torch", config=s.unet_config()).state
    trainer = make_trainer(s.unet_config(), s.diffusion_config(), lrs, seed=s.seed, weights=weights, compile=s.compile,
                           world=world)
    created = point is None and world.is_main
    if created:
        run.create(s.to_json(), {"unet": s.unet_config().to_dict(),
                                 "diffusion": dataclasses.asdict(s.diffusion_config()),
                                 "image_size": s.image_size}, s.framework)
    progress = {"steps": 0}
    try:
        start = _restore(run, trainer, point, s, world) if point is not None else 0
        return _train(run, s, data, trainer, lrs, start, world, progress)
    except Diverged as e:
        if created and run.newest() is None:  # nothing to resume, and --resume would diverge again
            run.discard()
            raise Diverged(f"{e}; {run.path} was removed") from None
        raise
    except BaseException:
        if created and progress["steps"] == 0:
            run.discard()
        raise


def _restore(run: RunDir, trainer: Trainer, point: ResumePoint, s: Settings, world: World) -> int:
    """Load ``point``'s checkpoint (checked to continue this run), adopt it if asked, cut the log; its step."""
    if point.checkpoint is not None:
        meta = trainer.load_checkpoint(run.path / point.checkpoint)
        if int(meta["step"]) != point.step:
            raise RunError(f"{point.checkpoint}: holds step {meta['step']}, not {point.step}")
        if meta["tape"] != {"version": TAPE_VERSION, "seed": s.seed, "next_step": point.step}:
            raise RunError(f"{point.checkpoint}: its tape {meta['tape']} does not continue this run")
        if trainer.lr_position() != point.step:
            raise RunError(f"{point.checkpoint}: the optimizer is at step {trainer.lr_position()}, not {point.step}")
        if meta.get("numerics") != trainer.numerics():
            print(f"warning: the run began with {meta.get('numerics')} and continues with {trainer.numerics()}; "
                  "the losses may differ from an uninterrupted run in the last bits", file=sys.stderr)
    if world.is_main:
        if point.adopt:
            run.adopt(point, s.framework)
        run.cut_log(point.step)
    return point.step


class Diverged(RunError):
    """A non-finite loss or non-finite weights: the run stops at once."""


def _diverged(run: RunDir, step: int, what: str) -> Diverged:
    newest = run.newest()
    kept = "no checkpoint was written"
    if newest:
        kept = f"the last checkpoint, {newest['checkpoint']} (after {newest['step']} step(s)), is kept"
    return Diverged(f"step {step}: {what}: training diverged and stopped (try a lower --lr); {kept}")


def _train(run: RunDir, s: Settings, data: Any, trainer: Trainer, lrs: list[float], start: int, world: World,
           progress: dict[str, int]) -> int:
    """Steps ``start`` to the end: log, checkpoint, stop at the first non-finite loss; then export."""
    from tqdm.auto import tqdm

    end = s.end_step
    spe = s.steps_per_epoch
    shape = (s.channels, s.image_size, s.image_size)
    r, n = world.rank, world.size
    indices = np.stack([shard(batch_indices(s.seed, k, s.examples, s.batch_size), r, n) for k in range(start, end)]) \
        if end > start else np.zeros((0, s.batch_size // n), np.int64)
    bar = tqdm(total=end, initial=start, disable=s.no_progress or not world.is_main, desc=f"train[{s.framework}]",
               unit="step", dynamic_ncols=True)
    with open(run.log_file, "a") if world.is_main else contextlib.nullcontext() as log:
        for step, images in zip(range(start, end), data.batches(indices)):
            draws = step_draws(s.seed, step, s.batch_size, shape, s.timesteps)
            x_start = to_model_range(apply_flips(images, shard(draws.flips, r, n)) if s.flip else images)
            loss = trainer.step(x_start, shard(draws.t, r, n), shard(draws.noise, r, n))
            if world.is_main:
                log.write(json.dumps({"step": step, "epoch": step // spe, "loss": loss, "lr": lrs[step]}) + "\n")
                log.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=step // spe, refresh=False)
            if not math.isfinite(loss):  # the global batch's loss: every rank stops here
                bar.close()
                raise _diverged(run, step, f"the loss is {loss}")
            progress["steps"] += 1
            kill_point("after-step", step + 1, r)
            done = step + 1
            if world.is_main and (done % s.save_every == 0 or done == end):
                if not all(np.isfinite(v).all() for v in trainer.state().values()):
                    bar.close()
                    raise _diverged(run, step, "the weights hold NaN or inf after it")
                meta = _meta(s, trainer, done, lrs)
                run.write_checkpoint(done, trainer.checkpoint_ext, trainer.framework,
                                     lambda tmp: trainer.save_checkpoint(tmp, meta), s.keep)
    bar.close()
    if not world.is_main:
        return 0
    export(run, trainer, s.unet_config(), s.diffusion_config())
    workers = f", {n} workers" if world.distributed else ""
    print(f"{s.framework}: {end} steps in {run.path}{workers} (log.jsonl, checkpoints/, model{trainer.checkpoint_ext}, "
          "model.safetensors)", file=sys.stderr)
    return 0


def _meta(s: Settings, trainer: Trainer, step: int, lrs: list[float]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "framework": trainer.framework,
        "step": step, "epoch": step // s.steps_per_epoch, "lr_position": trainer.lr_position(),
        "next_lr": lrs[step] if step < len(lrs) else None,
        "tape": {"version": TAPE_VERSION, "seed": s.seed, "next_step": step},
        "numerics": trainer.numerics(),
        "settings": s.to_json(),
    }


def export(run: RunDir, trainer: Trainer, cfg: UnetConfig, diffusion: DiffusionConfig) -> None:
    """RUN_DIR/model.{pt|ckpt} in the twin's format and RUN_DIR/model.safetensors (which also records the
    diffusion settings), via ``ddpm_core.weights``."""
    from ddpm_core.weights import save_weights

    state = trainer.state()
    save_weights(state, run.path / f"model{trainer.checkpoint_ext}", trainer.naming, cfg)
    save_weights(state, run.path / "model.safetensors", trainer.naming, cfg, diffusion=diffusion)
