"""Pictures from model-range arrays: the sample grid, the denoising GIF and the forward-diffusion strip,
written with Pillow through ``ddpm_core.runtime.atomic``; and the per-sample noise both samplers start from.

Conventions: arrays are (N, C, H, W) float in [-1, 1] (the model's range), C is 1 or 3; the tutorial's
reverse transform ``(t + 1) / 2 * 255`` then ``astype(uint8)`` is applied after clipping to [-1, 1]
(the tutorial does not clip, so its uint8 cast wraps out-of-range values around).
"""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from ddpm_core.runtime.atomic import atomic_write

PAD = 2
GIF_FRAME_MS = 60
GIF_HOLD_MS = 2000


def to_uint8(x: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (..., C, H, W) -> uint8 (..., H, W, C)."""
    x = np.clip(np.asarray(x, dtype=np.float32), -1.0, 1.0)
    u8 = ((x + 1.0) / 2.0 * 255.0).astype(np.uint8)
    return np.moveaxis(u8, -3, -1)


def tile(images: np.ndarray, cols: int, scale: int = 1, pad: int = PAD) -> np.ndarray:
    """uint8 (N, H, W, C) -> one (rows*(H*scale+pad)+pad, cols*(W*scale+pad)+pad, C) image on black."""
    n, h, w, c = images.shape
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    rows = math.ceil(n / cols)
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = images[i]
    return out


def grid_columns(n: int) -> int:
    return math.ceil(math.sqrt(n))


def grid_size(n: int, height: int, width: int, scale: int = 1, cols: int | None = None) -> tuple[int, int]:
    """(width, height) in pixels of ``tile`` for n images of height x width."""
    cols = cols or grid_columns(n)
    rows = math.ceil(n / cols)
    return cols * (width * scale + PAD) + PAD, rows * (height * scale + PAD) + PAD


def _pil(array_hwc: np.ndarray) -> Image.Image:
    return Image.fromarray(array_hwc[..., 0] if array_hwc.shape[-1] == 1 else array_hwc)


def save_png(path: str | os.PathLike, image_hwc: np.ndarray) -> None:
    atomic_write(path, lambda tmp: _pil(image_hwc).save(tmp, format="PNG"))


def save_grid(path: str | os.PathLike, samples: np.ndarray, scale: int = 1, cols: int | None = None) -> None:
    """(N, C, H, W) in [-1, 1] -> a PNG grid, ``cols`` wide (default: square-ish)."""
    save_png(path, tile(to_uint8(samples), cols or grid_columns(len(samples)), scale))


def gif_frame_indices(states: int, frames: int) -> np.ndarray:
    """``frames`` evenly spaced indices into ``states`` states, always the first and the last, ascending."""
    return np.unique(np.round(np.linspace(0, states - 1, min(frames, states))).astype(np.int64))


def save_gif(path: str | os.PathLike, states: np.ndarray, frames: int, scale: int = 1) -> int:
    """``states`` (S, N, C, H, W) in [-1, 1], in denoising order -> an animated GIF of ``frames`` of them
    (subsampled evenly, the first and last kept), the N images side by side; the last frame is held for
    ``GIF_HOLD_MS``. Returns the number of frames written."""
    idx = gif_frame_indices(states.shape[0], frames)
    pictures = [_pil(tile(to_uint8(states[i]), states.shape[1], scale)) for i in idx]
    durations = [GIF_FRAME_MS] * (len(pictures) - 1) + [GIF_HOLD_MS]

    def write(tmp):
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=durations,
                         loop=0, optimize=False, disposal=1)

    atomic_write(path, write)
    return len(pictures)


def sample_noise(seed: int, index: int, steps: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index``'s starting noise x_T (C, H, W) and its per-step noise (steps, C, H, W), float32, from
    ``default_rng([seed, 2, index])``: sample i is the same whatever --n and --batch-size, in both twins."""
    rng = np.random.default_rng([seed, 2, index])
    start = rng.standard_normal(shape, dtype=np.float32)
    return start, rng.standard_normal((steps, *shape), dtype=np.float32)


def strip_noise(seed: int, column: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The noise of column ``column`` of the forward-diffusion strip (1, C, H, W), from ``default_rng([seed, 3, column])``."""
    return np.random.default_rng([seed, 3, column]).standard_normal((1, *shape), dtype=np.float32)
