"""Sampling and the forward-diffusion strip, framework-neutral: which config, which noise, which chunks,
which pictures. Each twin's ``sample.py`` / ``noise_strip.py`` supplies only the model and the math.

Rules it keeps:
  * sample i depends on (seed, i) only (``ddpm_core.images.sample_noise``), so ``--n``, ``--batch-size``
    and the framework do not change it: the same weights and seed give the same samples in both twins,
    up to float rounding;
  * the config comes from, in order: ``--config``, the weights file's own metadata (safetensors), a
    ``config.json`` beside the weights (a run folder's, also for ``checkpoints/*``), else the tutorial's;
    the diffusion settings likewise, and ``--timesteps``/``--schedule`` may not contradict recorded ones;
  * the output paths are checked before any sampling, so a bad ``--out`` costs nothing: each must be
    writable and another file than every input (the weights, their config and manifest) and than each other
    (``ddpm_core.paths``); the ``--npy`` file's size is known, so its free space is checked too; then
    ``--device`` (the twin's ``device.resolve_device``: a missing device is one line, exit 3), before any
    weights are read.
"""
from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.atomic import atomic_write
from ddpm_core.cli import noise_strip_parser, sample_parser
from ddpm_core.config import (
    TUTORIAL_DIFFUSION,
    ConfigFile,
    DiffusionConfig,
    UnetConfig,
    read_config,
    resolve_diffusion,
)
from ddpm_core.contract import Devices
from ddpm_core.datasets import check_image_files
from ddpm_core.errors import DataError, UserError
from ddpm_core.images import (
    sample_noise,
    save_gif,
    save_grid,
    save_png,
    strip_noise,
    tile,
    to_uint8,
)
from ddpm_core.integrity import manifest_sidecar
from ddpm_core.paths import check_outputs, check_space

DDIM_DEFAULT_STEPS = 50
CHUNK_BYTES = 1 << 30
"""Per chunk of samples, the per-step noise and the returned states together stay under this."""


def find_config(weights: Path) -> Path | None:
    """config.json beside the weights, or beside the run folder of a ``checkpoints/`` file."""
    for folder in (weights.parent, weights.parent.parent if weights.parent.name == "checkpoints" else None):
        if folder is not None and (folder / "config.json").is_file():
            return folder / "config.json"
    return None


@dataclasses.dataclass(frozen=True)
class Resolved:
    state: dict[str, np.ndarray]  # PyTorch names
    unet: UnetConfig
    diffusion: DiffusionConfig
    image_size: int


def resolve(args: Any) -> Resolved:
    """The weights and every config ``sample`` needs, with the command line's overrides."""
    from ddpm_core.weights import load_weights

    weights = Path(args.weights)
    inline = bool(args.config) and args.config.lstrip().startswith("{")
    found = args.config if args.config else find_config(weights)
    given = read_config(found, "--config" if args.config else "config") if found else ConfigFile(None)
    unet, diffusion, image_size = given.unet, given.diffusion, given.image_size
    loaded = load_weights(weights, naming="torch", config=unet)
    source = "--config" if inline else str(found)
    if loaded.diffusion is not None:
        if diffusion is not None and diffusion != loaded.diffusion:
            raise UserError(f"{source} gives {diffusion.short()}, but {weights} records {loaded.diffusion.short()}")
        diffusion, source = loaded.diffusion, str(weights)
    flags = {"--timesteps": ("timesteps", args.timesteps), "--schedule": ("schedule", args.schedule)}
    if diffusion is None and args.timesteps is None and args.schedule is None:
        print(f"note: no diffusion settings are recorded with {weights} (nor in a config.json beside it); sampling "
              f"with the tutorial's {TUTORIAL_DIFFUSION.short()}: pass --timesteps/--schedule if it was trained otherwise",
              file=sys.stderr)
    try:
        diffusion = resolve_diffusion(diffusion, source, flags)
    except ValueError as e:
        raise UserError(str(e)) from None
    size = args.image_size or image_size or loaded.config.dim  # the tutorial trains at image_size == dim
    if size % loaded.config.size_multiple:
        raise UserError(f"--image-size {size} is not a multiple of {loaded.config.size_multiple} for this model")
    return Resolved(loaded.state, loaded.config, diffusion, size)


def weights_inputs(weights: str) -> list[tuple[str, Path | str | None]]:
    """The files ``sample`` reads beside ``--weights``: its config.json and its manifest sidecar."""
    return [("--weights", weights), ("the config beside --weights", find_config(Path(weights))),
            ("the manifest of --weights", manifest_sidecar(weights))]


def chunk_size(requested: int, steps: int, shape: tuple[int, int, int]) -> int:
    per_sample = 2 * (steps + 1) * int(np.prod(shape)) * 4
    return max(1, min(requested, CHUNK_BYTES // per_sample))


Denoise = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(x_T (b, C, H, W), per-step noise (steps, b, C, H, W)) -> states (steps, b, C, H, W), denoising order."""


def generate(denoise: Denoise, n: int, seed: int, steps: int, shape: tuple[int, int, int], batch_size: int,
             keep: Sequence[int] = ()) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``n`` samples (n, C, H, W), sample i from ``sample_noise(seed, i)`` whatever the chunking, and the
    whole denoising (x_T first, (steps + 1, C, H, W)) of each sample in ``keep``."""
    chunk = chunk_size(batch_size, steps, shape)
    finals, kept = [], {}
    for first in range(0, n, chunk):
        idx = range(first, min(n, first + chunk))
        drawn = [sample_noise(seed, i, steps, shape) for i in idx]
        start = np.stack([d[0] for d in drawn])
        noise = np.stack([d[1] for d in drawn], axis=1)
        states = np.asarray(denoise(start, noise))
        finals.append(states[-1])
        for j, i in enumerate(idx):
            if i in keep:
                kept[i] = np.concatenate([start[None, j], states[:, j]])
    return np.concatenate(finals), kept


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``array`` as float32 in a .npy file, atomically."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array, np.float32))

    atomic_write(path, write)


def sample_main(argv: Sequence[str] | None, prog: str, framework: str,
                make_denoiser: Callable[..., Denoise], devices: Devices) -> int:
    """``python -m ddpm_<twin>.sample``: a grid PNG of ``--n`` samples and a GIF of the chosen ones, on
    ``--device`` (``devices``: the twin's ``device`` module)."""
    args = sample_parser(prog).parse_args(argv)
    check_outputs([("--out", args.out), ("--npy", args.npy), ("--gif", args.gif)],
                  [*weights_inputs(args.weights), ("--config", args.config)])
    device = devices.resolve_device(args.device)
    r = resolve(args)
    unet, diffusion = r.unet, r.diffusion
    if args.sampler == "ddpm":
        if args.steps not in (None, diffusion.timesteps):
            raise UserError(f"--sampler ddpm takes all T={diffusion.timesteps} steps; use --sampler ddim for --steps {args.steps}")
        steps = diffusion.timesteps
    else:
        steps = args.steps or min(DDIM_DEFAULT_STEPS, diffusion.timesteps)
        if steps > diffusion.timesteps:
            raise UserError(f"--steps {steps} exceeds T={diffusion.timesteps}")
        if not args.eta >= 0:
            raise UserError(f"--eta must be >= 0, got {args.eta}")
    bad = [i for i in args.gif_index if not 0 <= i < args.n]
    if args.gif and bad:
        raise UserError(f"--gif-index {','.join(map(str, bad))} outside the {args.n} samples")
    shape = (unet.channels, r.image_size, r.image_size)
    if args.npy:
        check_space("--npy", args.npy, args.n * int(np.prod(shape)) * 4 + 128)
    denoise = make_denoiser(r.state, unet, diffusion, args.sampler, steps, args.eta, args.compile, not args.no_progress,
                            device)
    samples, gif_states = generate(denoise, args.n, args.seed, steps, shape, args.batch_size,
                                   args.gif_index if args.gif else ())
    save_grid(args.out, samples, args.scale)
    print(f"{framework}: {args.n} samples ({args.sampler}, {steps} steps, seed {args.seed}) -> {args.out}", file=sys.stderr)
    if args.npy:
        save_npy(args.npy, samples)
        print(f"{framework}: the {args.n} samples as float32 {samples.shape} -> {args.npy}", file=sys.stderr)
    if args.gif:
        frames = save_gif(args.gif, np.stack([gif_states[i] for i in args.gif_index], axis=1), args.gif_frames, args.scale)
        print(f"{framework}: denoising of sample(s) {','.join(map(str, args.gif_index))}, {frames} frames -> {args.gif}",
              file=sys.stderr)
    return 0


LoadImage = Callable[[str, int], np.ndarray]
"""(path, size) -> (3, size, size) float32 in [0, 1], read by the framework's transforms."""


def noise_strip_main(argv: Sequence[str] | None, prog: str, framework: str, load_image: LoadImage,
                     make_q_sample: Callable[[DiffusionConfig, str], Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]],
                     devices: Devices) -> int:
    """``python -m ddpm_<twin>.noise_strip IMAGE``: the image at each ``--t``, side by side (the tutorial's figure),
    computed on ``--device``."""
    args = noise_strip_parser(prog).parse_args(argv)
    check_outputs([("--out", args.out)], [("IMAGE", args.image)])
    device = devices.resolve_device(args.device)
    try:
        diffusion = DiffusionConfig(timesteps=args.timesteps, schedule=args.schedule)
    except ValueError as e:
        raise UserError(str(e)) from None
    bad = [t for t in args.t if not 0 <= t < diffusion.timesteps]
    if bad:
        raise UserError(f"--t {','.join(map(str, bad))} outside [0, {diffusion.timesteps})")
    path = Path(args.image)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    check_image_files([str(path)])
    x01 = load_image(str(path), args.image_size)
    x_start = (x01 * 2 - 1).astype(np.float32)[None]
    q_sample = make_q_sample(diffusion, device)
    noisy = [q_sample(x_start, np.array([t], np.int32), strip_noise(args.seed, k, x_start.shape[1:]))[0]
             for k, t in enumerate(args.t)]
    save_png(args.out, tile(to_uint8(np.stack(noisy)), len(noisy), args.scale))
    print(f"{framework}: {path} at t = {','.join(map(str, args.t))} -> {args.out}", file=sys.stderr)
    return 0
