"""``python -m ddpm_ms.noise_strip IMAGE --out strip.png``: the tutorial's forward-diffusion figure (the image
at t = 0, 50, 100, 150, 199 side by side); mirrors ddpm_torch/noise_strip.py.

The image is read and transformed as the tutorial's cat: ``Decode``, ``Resize(image_size, Inter.BILINEAR)``,
``CenterCrop``, ``ToTensor`` (MindSpore's ``vision``), then scaled to [-1, 1]; the tutorial's random flip is
left out so the figure is reproducible.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from mindspore.dataset import vision

from ddpm_core.cli import run_main
from ddpm_core.config import DiffusionConfig
from ddpm_core.sampling import noise_strip_main
from ddpm_core.training.datasets import DataError
from ddpm_ms import device as devices
from ddpm_ms.diffusion import GaussianDiffusion


def load_image(path: str, size: int) -> np.ndarray:
    """(3, size, size) float32 in [0, 1]."""
    try:
        image = vision.Decode()(np.fromfile(path, dtype=np.uint8))
    except RuntimeError:
        raise DataError(f"{path}: cannot decode image (MindSpore: the image is broken or unreadable)") from None
    for transform in (vision.Resize(size, vision.Inter.BILINEAR), vision.CenterCrop(size), vision.ToTensor()):
        image = transform(image)
    return np.asarray(image, dtype=np.float32)


def make_q_sample(config: DiffusionConfig, device: str = "CPU") -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``q_sample`` on ``device`` (MindSpore's device target, for the whole process: ``device.resolve_device``),
    numpy in and out."""
    devices.resolve_device(device)
    diffusion = GaussianDiffusion(config)
    return lambda x, t, noise: diffusion.q_sample(x, t, noise).asnumpy().copy()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: noise_strip_main(a, "python -m ddpm_ms.noise_strip", "ms", load_image,
                                               make_q_sample, devices), argv)


if __name__ == "__main__":
    raise SystemExit(main())
