"""The shared random tape: every random number a parity run needs, drawn once in numpy and hashed.

Rule: neither framework draws a random number during a parity run. Both twins are fed the same
tape arrays (inputs, timesteps, training noise, x_T, every per-step sampling noise), so any
difference in their outputs is a difference in their computation. The tape is a pure function of
``TapeSpec`` (numpy ``Generator(PCG64)`` seeded from ``seed``), and ``tape_hash`` is a sha256 over
the names, dtypes, shapes and little-endian bytes of the arrays, so two machines can confirm they
replayed the same tape.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from ddpm_core.schedules import ddim_timesteps
from ddpm_core.weights.digest import TAPE_FRAME, state_digest

PROBE_SHAPE = (2, 1, 2, 2)
"""Image shape of the diffusion-math probes (toy models, no U-Net): tiny, so they cost nothing."""


@dataclass(frozen=True)
class TapeSpec:
    """What the tape must cover. ``pred_timesteps`` are the prediction check's timesteps (default:
    0, T//2, T-1 and two drawn from the tape's generator)."""

    seed: int
    batch: int
    channels: int
    image_size: int
    timesteps: int
    train_steps: int = 3
    ddim_steps: int = 20
    pred_timesteps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("batch", "channels", "image_size", "timesteps", "train_steps", "ddim_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        ddim_timesteps(self.timesteps, self.ddim_steps)  # raises ValueError naming the range
        if self.pred_timesteps is not None:
            bad = [t for t in self.pred_timesteps if not 0 <= t < self.timesteps]
            if bad or not self.pred_timesteps:
                raise ValueError(f"prediction timesteps must lie in [0, {self.timesteps}), got {list(self.pred_timesteps)}")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.channels, self.image_size, self.image_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pred_timesteps"] = None if self.pred_timesteps is None else list(self.pred_timesteps)
        return d


def make_tape(spec: TapeSpec) -> dict[str, np.ndarray]:
    """Every array of the tape, float32 for values and int32 for timesteps, read-only.

    pred_t (K,), pred_x (K, B, C, H, W)      prediction inputs x_t at K timesteps
    train_x0, train_noise (A, B, C, H, W),   one training batch per Adam step; batch 0 is also the
    train_t (A, B)                           loss and gradient batch
    x_T (B, C, H, W), ddpm_noise (T, B, C, H, W), ddim_noise (D, B, C, H, W)   sampling
    probe_*                                  the diffusion-math probes' inputs (tiny shapes)
    """
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    T, shape, A = spec.timesteps, spec.shape, spec.train_steps

    def normal(*s: int) -> np.ndarray:
        return rng.standard_normal(s).astype(np.float32)

    def images(*s: int) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, s).astype(np.float32)  # data scaled to [-1, 1] as in the tutorial

    drawn = [int(v) for v in rng.integers(0, T, 2)]
    pred_t = np.asarray(spec.pred_timesteps if spec.pred_timesteps is not None else (0, T // 2, T - 1, *drawn),
                        dtype=np.int32)
    K = len(pred_t)
    tape: dict[str, np.ndarray] = {
        "pred_t": pred_t,
        "pred_x": normal(K, *shape),
        "train_x0": images(A, *shape),
        "train_t": rng.integers(0, T, (A, spec.batch)).astype(np.int32),
        "train_noise": normal(A, *shape),
        "x_T": normal(*shape),
        "ddpm_noise": normal(T, *shape),
        "ddim_noise": normal(spec.ddim_steps, *shape),
        "probe_x": normal(*PROBE_SHAPE),
        "probe_x0": images(*PROBE_SHAPE),
        "probe_noise": normal(*PROBE_SHAPE),
        "probe_step_noise": normal(T, *PROBE_SHAPE),
        "probe_t": rng.integers(0, T, PROBE_SHAPE[0]).astype(np.int32),
    }
    for a in tape.values():
        a.setflags(write=False)
    return tape


def tape_shapes(spec: TapeSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype name)}`` of every array ``make_tape(spec)`` returns, computed without drawing
    anything (a golden file's reader checks its members against it before reading them)."""
    shape, T, A = spec.shape, spec.timesteps, spec.train_steps
    K = 5 if spec.pred_timesteps is None else len(spec.pred_timesteps)
    f32 = {"pred_x": (K, *shape), "train_x0": (A, *shape), "train_noise": (A, *shape), "x_T": shape,
           "ddpm_noise": (T, *shape), "ddim_noise": (spec.ddim_steps, *shape), "probe_x": PROBE_SHAPE,
           "probe_x0": PROBE_SHAPE, "probe_noise": PROBE_SHAPE, "probe_step_noise": (T, *PROBE_SHAPE)}
    i32 = {"pred_t": (K,), "train_t": (A, spec.batch), "probe_t": (PROBE_SHAPE[0],)}
    return {**{k: (tuple(v), "float32") for k, v in f32.items()}, **{k: (v, "int32") for k, v in i32.items()}}


def tape_hash(tape: Mapping[str, np.ndarray]) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of every array, in name order."""
    return state_digest(tape, TAPE_FRAME)
