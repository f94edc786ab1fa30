"""The per-step random tape of training: which examples, which flips, which timesteps and which noise
step ``s`` uses, as a pure function of (seed, s), drawn in numpy.

Why a function of (seed, step) and not a running generator:
  * resume is exact: the state to restore is the step number alone;
  * both twins draw nothing from their own RNGs while training, so the same seed feeds PyTorch and
    MindSpore the same batches, flips, t and noise (training parity);
  * data-parallel ranks can each compute the same global batch and keep their slice (``shard``).

Layout of the draws (changing it changes every run; bump ``TAPE_VERSION`` if you do):
  * epoch e's order: ``default_rng([seed, 0, e]).permutation(n)``; step s takes the
    ``s % steps_per_epoch``-th run of ``batch`` indices of epoch ``s // steps_per_epoch`` (the remainder
    of an epoch is dropped, like the tutorial's ``drop_remainder=True``);
  * step s's draws from ``default_rng([seed, 1, s])`` in this order: flips ``random(B) < 0.5``,
    t ``integers(0, T, B)``, noise ``standard_normal((B, C, H, W), float32)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

TAPE_VERSION = 1
_PERMUTATION, _DRAWS = 0, 1


def steps_per_epoch(examples: int, batch: int) -> int:
    """Whole batches per epoch (the remainder is dropped); a ``ValueError`` if there is not one."""
    if examples < batch:
        raise ValueError(f"the data holds {examples} examples, fewer than one batch of {batch}")
    return examples // batch


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, examples: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the examples (read-only)."""
    order = np.random.default_rng([seed, _PERMUTATION, epoch]).permutation(examples)
    order.setflags(write=False)
    return order


def batch_indices(seed: int, step: int, examples: int, batch: int) -> np.ndarray:
    """The example indices of global step ``step`` (int64, shape (batch,))."""
    spe = steps_per_epoch(examples, batch)
    epoch, k = divmod(step, spe)
    return epoch_order(seed, epoch, examples)[k * batch:(k + 1) * batch].copy()


@dataclass(frozen=True)
class StepDraws:
    """Step ``step``'s random draws for the whole global batch."""

    step: int
    flips: np.ndarray  # (B,) bool: flip example b horizontally
    t: np.ndarray  # (B,) int32 in [0, T)
    noise: np.ndarray  # (B, C, H, W) float32


def step_draws(seed: int, step: int, batch: int, shape: tuple[int, int, int], timesteps: int) -> StepDraws:
    rng = np.random.default_rng([seed, _DRAWS, step])
    flips = rng.random(batch) < 0.5
    t = rng.integers(0, timesteps, batch).astype(np.int32)
    noise = rng.standard_normal((batch, *shape), dtype=np.float32)
    return StepDraws(step, flips, t, noise)


def apply_flips(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """``images`` (B, C, H, W) with the rows where ``flips`` is true mirrored left-right (a new array)."""
    out = np.array(images, dtype=np.float32, copy=True)
    out[flips] = out[flips][..., ::-1]
    return out


def to_model_range(images01: np.ndarray) -> np.ndarray:
    """The tutorial's ``lambda t: (t * 2) - 1``: [0, 1] -> [-1, 1], float32."""
    return (np.asarray(images01, dtype=np.float32) * 2 - 1).astype(np.float32)


def shard(array: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s contiguous slice of a global batch (first axis) split over ``world`` ranks."""
    if not 0 <= rank < world or array.shape[0] % world:
        raise ValueError(f"cannot split a batch of {array.shape[0]} over {world} ranks (rank {rank})")
    per = array.shape[0] // world
    return array[rank * per:(rank + 1) * per]


def tape_arrays(seed: int, steps: range, examples: int, batch: int, shape: tuple[int, int, int],
                timesteps: int) -> dict[str, np.ndarray]:
    """The tape of ``steps`` stacked: ``indices`` (S, B), ``flips`` (S, B), ``t`` (S, B), ``noise`` (S, B, C, H, W)."""
    draws = [step_draws(seed, s, batch, shape, timesteps) for s in steps]
    return {
        "indices": np.stack([batch_indices(seed, s, examples, batch) for s in steps]),
        "flips": np.stack([d.flips for d in draws]),
        "t": np.stack([d.t for d in draws]),
        "noise": np.stack([d.noise for d in draws]),
    }
