"""``python -m ddpm_torch.sample --weights PATH --n 64 --out samples.png --gif denoise.gif``; mirrors
ddpm_ms/sample.py.

Weights in any format ``ddpm_core.weights`` reads (a model trained by either twin); the noise of sample i
depends on (seed, i) only, so both twins draw the same samples from the same weights (``ddpm_core.sampling``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ddpm_core.cli import run_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.sampling import Denoise, sample_main
from ddpm_torch import device as devices
from ddpm_torch.adapter import load_model
from ddpm_torch.diffusion import GaussianDiffusion
from ddpm_torch.train import compile_model


def make_denoiser(state: dict[str, np.ndarray], cfg: UnetConfig, diffusion_config: DiffusionConfig, sampler: str,
                  steps: int, eta: float, compile: str, progress: bool, device: str = "cpu") -> Denoise:
    """``--compile`` on: the U-Net through ``torch.compile``; auto/off: eager. The sampling steps run
    through the diffusion's step functions either way (``compiled=True``, eager in PyTorch). The model, the
    start and the per-step noise live on ``device``; the states come back as numpy."""
    model = compile_model(load_model(state, cfg, device), compile)
    diffusion = GaussianDiffusion(diffusion_config, device)

    def denoise(start: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if sampler == "ddpm":
            states = diffusion.p_sample_loop(model, start.shape, img=start, noise=noise, progress=progress,
                                             compiled=True)
        else:
            states = diffusion.ddim_sample_loop(model, start.shape, steps, eta, img=start, noise=noise,
                                                progress=progress, compiled=True)
        return np.stack(states)

    return denoise


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: sample_main(a, "python -m ddpm_torch.sample", "torch", make_denoiser, devices), argv)


if __name__ == "__main__":
    raise SystemExit(main())
