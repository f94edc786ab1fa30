"""``python -m ddpm_torch.noise_strip IMAGE --out strip.png``: the tutorial's forward-diffusion figure (the image
at t = 0, 50, 100, 150, 199 side by side); mirrors ddpm_ms/noise_strip.py.

The image is read and transformed as the tutorial's cat: ``Resize(image_size, BILINEAR)``, ``CenterCrop``,
``ToTensor`` (here torchvision's), then scaled to [-1, 1]; the tutorial's random flip is left out so the
figure is reproducible.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ddpm_core.runtime.frameworks import require

require("torchvision")  # a PyTorch build of one's own may come without it: name the extra

from torchvision import transforms  # noqa: E402

from ddpm_core.cli import run_main  # noqa: E402
from ddpm_core.config import DiffusionConfig  # noqa: E402
from ddpm_core.sampling import noise_strip_main  # noqa: E402
from ddpm_torch import device as devices  # noqa: E402
from ddpm_torch.data import load_image as load_pil  # noqa: E402
from ddpm_torch.diffusion import GaussianDiffusion  # noqa: E402


def load_image(path: str, size: int) -> np.ndarray:
    """(3, size, size) float32 in [0, 1]."""
    transform = transforms.Compose([transforms.Resize(size, transforms.InterpolationMode.BILINEAR),
                                    transforms.CenterCrop(size), transforms.ToTensor()])
    return transform(load_pil(path)).numpy()


def make_q_sample(config: DiffusionConfig, device: str = "cpu") -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """``q_sample`` on ``device``, numpy in and out."""
    diffusion = GaussianDiffusion(config, device)
    return lambda x, t, noise: diffusion.q_sample(x, t, noise).cpu().numpy()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: noise_strip_main(a, "python -m ddpm_torch.noise_strip", "torch", load_image,
                                               make_q_sample, devices), argv)


if __name__ == "__main__":
    raise SystemExit(main())
