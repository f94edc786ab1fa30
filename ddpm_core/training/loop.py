"""The training loop, framework-neutral: it drives a twin's ``Trainer`` and ``TrainingData`` through the
per-step tape (docs/training.md), and reads top to bottom: command line and settings, the data-parallel
job, the data, the trainer (new or restored), the steps, the checkpoints, the export. The settings are
``ddpm_core.training.settings``'s; the folder, its records and checkpoints ``ddpm_core.training.run_folder``'s.

Rules it keeps:
  * a file is either complete or absent: checkpoints, records, settings and exports go through
    ``ddpm_core.runtime.atomic``; the records name a checkpoint only after that checkpoint is in place, so a run
    killed at any instant resumes from the last complete checkpoint;
  * a new run writes nothing until its settings are valid and its trainer is built, and one that stops
    before completing a step leaves no folder behind that would block a retry;
  * a non-finite loss, a loss above ``--max-loss`` (a divergence no real run reaches, ``cli.DEFAULT_MAX_LOSS``)
    or non-finite weights at a checkpoint stop the run at once with one line naming the step; the checkpoints
    written before stay, and nothing is exported;
  * a model and batch whose memory (``ddpm_core.runtime.memory``, a lower bound) exceeds what the machine has available
    are refused in one line before anything else: no download, no folder, no data-parallel job joined;
  * resuming replays nothing and skips nothing: the log is cut back to the checkpoint's step and the tape
    is a function of (seed, step), so the resumed loss curve equals an uninterrupted one exactly, given the
    same numerics (library versions, oneDNN instruction set, PyTorch threads: recorded in each checkpoint,
    and a warning if they changed);
  * ``DDPM_KILL_AT`` (``after-step:K``, ``during-save:K``, ``before-pointer:K``) sends the process a real
    SIGKILL at that point (in a data-parallel job, only rank ``DDPM_KILL_RANK`` when that is set); the tests
    use it to interrupt runs deterministically;
  * data parallel (``torchrun`` / ``msrun``, ddpm_core/runtime/distributed.py): every rank runs this loop on its slice
    of each global batch; rank 0 alone writes the run folder, and every rank resumes from the same checkpoint;
  * one training per run folder: rank 0 holds the folder's lock from before its first check to its exit
    (``RunDir.lock``); the folder must be writable, must not be (or lie inside) ``--data``, and its file system
    must have room for the checkpoints kept and the exports, all checked before the first step; a write that
    fails later (a full disk) is one line naming the file, and the run resumes from its last checkpoint.
  * the device (``--device``) and the precision are checked by the twin's ``device`` module before anything
    else: a device that is not there, or cannot run ``--precision``, stops the command with one line and
    exit status 3, and no folder is created.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.cli import train_parser
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.contract import Devices, Distributed, Trainer
from ddpm_core.errors import Diverged, OutputError, RunError, UserError
from ddpm_core.runtime.distributed import World, launched_size
from ddpm_core.runtime.memory import require, training_need
from ddpm_core.runtime.paths import check_inside, check_space
from ddpm_core.training.datasets import DataSpec, make_stage_dir, prepare_data
from ddpm_core.training.download import download_fashion_mnist
from ddpm_core.training.run_folder import ResumePoint, RunDir, kill_point
from ddpm_core.training.settings import Settings, check_settings, run_and_settings
from ddpm_core.training.tape import (
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


def train_main(argv: Sequence[str] | None, prog: str, framework: str,
               open_data: Callable[[DataSpec, int], Any], make_trainer: Callable[..., Trainer],
               dist: Distributed, devices: Devices) -> int:
    """``python -m ddpm_<twin>.train``: parse, prepare the data, build or restore the trainer, run the loop.
    ``dist`` is the twin's ``distributed`` module (``init``, ``barrier``, ``shutdown``, ``PEER_FAILURES``):
    under ``torchrun`` / ``msrun`` this process is one rank of a data-parallel job. ``devices`` is the twin's
    ``device`` module: ``--device`` and ``--precision`` are checked before anything is written."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = train_parser(prog)
    args = parser.parse_args(argv)
    device = devices.resolve_device(args.device)
    run, settings = run_and_settings(parser, argv, args, framework)
    devices.check_precision(device, settings.precision)
    try:  # before joining: every process of the job (msrun's scheduler too) stops here at once
        World(0, launched_size()).check_batch(settings.batch_size)
    except ValueError as e:
        raise UserError(f"--batch-size: {e}") from None
    check_memory(settings, launched_size())  # before the data (a download) and before joining: every process stops
    if Path(settings.data).is_dir():
        check_inside("--resume" if args.resume else "--out", run.path, "--data", settings.data)
    world = dist.init(device)
    try:
        if world.is_main:
            run.lock(new=not args.resume)
        return _prepare(run, settings, args, open_data, make_trainer, world, dist, device)
    except dist.PEER_FAILURES as e:
        if not world.distributed:
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise RunError(f"rank {world.rank} of {world.size}: a collective operation failed ({first}): another worker "
                       f"has stopped or is unreachable; after fixing the cause, continue with --resume {run.path}") from None
    finally:
        run.unlock()
        dist.shutdown(world)


def check_memory(s: Settings, workers: int) -> None:
    """``TooLarge`` when one worker's training step cannot fit in the memory available (``ddpm_core.runtime.memory``: a
    lower bound; the data's channel count, not read yet, is taken as 1). A model that cannot be built is left to
    ``check_settings``, which names the problem."""
    try:
        cfg = dataclasses.replace(s, channels=s.channels or 1).unet_config()
    except ValueError:
        return
    batch, size = s.batch_size // workers, s.image_size
    per_worker = f" ({batch} per worker)" if workers > 1 else ""
    require(training_need(cfg, batch, size),
            f"training {cfg.short()} on batches of {s.batch_size}{per_worker} at {size}x{size}",
            "choose a smaller --dim, --dim-mults, --batch-size or --image-size")


def _prepare(run: RunDir, settings: Settings, args: Any, open_data: Callable[[DataSpec, int], Any],
             make_trainer: Callable[..., Trainer], world: World, dist: Distributed, device: str) -> int:
    """The data (downloaded once per job, staged, checked against a resumed run), the settings completed
    with its facts and checked, the folder checked (a new run) or its resume point found; then ``_start``."""
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
        check_settings(settings)
        if not args.resume:
            dist.barrier(world)  # no rank has written yet: each sees the folder as the user left it
            run.check_new(args.allow_other_files)
            dist.barrier(world)
        if world.is_main:
            run.remove_stale_temporaries()
        dist.barrier(world)
        data = open_data(spec, settings.workers)
        point = run.resume_point(make_trainer.checkpoint_ext, args.from_step) if args.resume else None
        return _start(run, settings, data, make_trainer, world, point,
                      {"device": device, "deterministic": args.deterministic})


def _start(run: RunDir, s: Settings, data: Any, make_trainer: Callable[..., Trainer], world: World,
           point: ResumePoint | None, placement: dict[str, Any]) -> int:
    """Build the trainer (on ``placement``'s device, deterministic or not); for a new run (``point`` None) only
    then write the folder, and remove it again if the run stops before completing a step; for a resumed one,
    restore ``point``. Then train."""
    lrs = s.learning_rates()
    weights = None
    if s.init_weights and (point is None or point.checkpoint is None):  # a checkpoint replaces them
        from ddpm_core.weights.files import load_weights

        weights = load_weights(s.init_weights, naming="torch", config=s.unet_config()).state
    trainer = make_trainer(s.unet_config(), s.diffusion_config(), lrs, seed=s.seed, weights=weights,
                           compile=s.compile, world=world, precision=s.precision, **placement)
    if world.is_main:
        _check_room(run, s, trainer, point, lrs)
    created = point is None and world.is_main
    progress = {"steps": 0}
    try:
        if created:
            run.create(s.to_json(), {"unet": s.unet_config().to_dict(),
                                     "diffusion": dataclasses.asdict(s.diffusion_config()),
                                     "image_size": s.image_size}, s.framework)
        start = _restore(run, trainer, point, s, world) if point is not None else 0
        return _train(run, s, data, trainer, lrs, start, world, progress)
    except Diverged as e:
        if created and run.newest() is None:  # nothing to resume, and --resume would diverge again
            run.discard()
            raise Diverged(f"{e}; {run.path} was removed") from None
        raise
    except OutputError as e:
        if created and progress["steps"] == 0:
            run.discard()
            raise
        raise OutputError(f"{e}; once it can be written, continue with --resume {run.path}") from None
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
        if trainer.lr_position() != meta["lr_position"]:  # behind the step where a float16 step was skipped
            raise RunError(f"{point.checkpoint}: the optimizer is at step {trainer.lr_position()}, not "
                           f"{meta['lr_position']}")
        if meta.get("numerics") != trainer.numerics():
            print(f"warning: the run began with {meta.get('numerics')} and continues with {trainer.numerics()}; "
                  "the losses may differ from an uninterrupted run in the last bits", file=sys.stderr)
    if world.is_main:
        if point.adopt:
            run.adopt(point, s.framework)
        run.cut_log(point.step)
    return point.step


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
    with run.log_writer() if world.is_main else contextlib.nullcontext() as log:
        for step, images in zip(range(start, end), data.batches(indices)):
            # this rank's slice of the tape's global batch: images, flips, timesteps, noise
            draws = step_draws(s.seed, step, s.batch_size, shape, s.timesteps)
            x_start = to_model_range(apply_flips(images, shard(draws.flips, r, n)) if s.flip else images)
            loss = trainer.step(x_start, shard(draws.t, r, n), shard(draws.noise, r, n))
            if world.is_main:
                log({"step": step, "epoch": step // spe, "loss": loss, "lr": lrs[step]})
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", epoch=step // spe, refresh=False)
            if not math.isfinite(loss) or loss > s.max_loss:  # the global batch's loss: every rank stops here
                bar.close()
                over = f"the loss {loss:.3g} exceeds --max-loss {s.max_loss:g}"
                raise _diverged(run, step, over if math.isfinite(loss) else f"the loss is {loss}")
            progress["steps"] += 1
            kill_point("after-step", step + 1, r)
            done = step + 1
            # checkpoint (rank 0): every --save-every steps and at the end
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
    export(run, trainer, s.unet_config(), s.diffusion_config(), s.image_size)
    workers = f", {n} workers" if world.distributed else ""
    print(f"{s.framework}: {end} steps in {run.path}{workers} (log.jsonl, checkpoints/, model{trainer.checkpoint_ext}, "
          "model.safetensors)", file=sys.stderr)
    return 0


def _check_room(run: RunDir, s: Settings, trainer: Trainer, point: ResumePoint | None, lrs: list[float]) -> None:
    """Refuse, before the first step, a run whose file system cannot hold the checkpoints it keeps at once
    (``--keep``, plus the one written before the oldest is pruned) and the two exports. A checkpoint is
    estimated as the weights and Adam's two moments, plus the learning rates MindSpore stores."""
    model = sum(v.nbytes for v in trainer.state().values())
    start, end, every = point.step if point else 0, s.end_step, s.save_every
    planned = max(0, end // every - start // every + (1 if end % every and end > start else 0))
    checkpoint = 3 * model + 4 * len(lrs) + (1 << 16)
    check_space("--out" if point is None else "--resume", run.path, min(planned, s.keep + 1) * checkpoint + 2 * model)


def _diverged(run: RunDir, step: int, what: str) -> Diverged:
    """The error that stops a run at ``step``, naming the last good checkpoint kept: the newest one from before
    ``step`` (a checkpoint after ``step`` steps holds the very weights whose loss at ``step`` diverged)."""
    records = run.records()
    good = [r for r in records if r["step"] < step]
    bad = f"{records[-1]['checkpoint']} (after {step} step(s))" if records and records[-1]["step"] == step else None
    if good:
        kept = f"the last good checkpoint, {good[-1]['checkpoint']} (after {good[-1]['step']} step(s)), is kept"
        kept += f"; {bad}, also kept, holds the weights that gave this loss" if bad else ""
    elif bad:
        kept = f"{bad} is kept, but holds the weights that gave this loss; no checkpoint from before it was written"
    else:
        kept = "no checkpoint was written"
    return Diverged(f"step {step}: {what}: training diverged and stopped (try a lower --lr); {kept}")


def _meta(s: Settings, trainer: Trainer, step: int, lrs: list[float]) -> dict[str, Any]:
    """What a checkpoint records besides the weights and the optimizer: ``_restore`` checks it."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "framework": trainer.framework,
        "step": step, "epoch": step // s.steps_per_epoch, "lr_position": trainer.lr_position(),
        "next_lr": lrs[step] if step < len(lrs) else None,
        "tape": {"version": TAPE_VERSION, "seed": s.seed, "next_step": step},
        "numerics": trainer.numerics(),
        "settings": s.to_json(),
    }


def export(run: RunDir, trainer: Trainer, cfg: UnetConfig, diffusion: DiffusionConfig, image_size: int) -> None:
    """RUN_DIR/model.{pt|ckpt} in the twin's format and RUN_DIR/model.safetensors (which also records the
    diffusion settings and the image size, so they travel with the file), via ``ddpm_core.weights``."""
    from ddpm_core.weights.files import save_weights

    state = trainer.state()
    save_weights(state, run.path / f"model{trainer.checkpoint_ext}", trainer.naming, cfg)
    save_weights(state, run.path / "model.safetensors", trainer.naming, cfg, diffusion=diffusion, image_size=image_size)
