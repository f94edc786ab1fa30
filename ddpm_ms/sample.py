"""``python -m ddpm_ms.sample --weights PATH --n 64 --out samples.png --gif denoise.gif``; mirrors
ddpm_torch/sample.py.

Weights in any format ``ddpm_core.weights`` reads (a model trained by either twin); the noise of sample i
depends on (seed, i) only, so both twins draw the same samples from the same weights (``ddpm_core.sampling``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ddpm_core.cli import run_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.sampling import Denoise, sample_main
from ddpm_ms import device as devices
from ddpm_ms.adapter import load_model
from ddpm_ms.diffusion import GaussianDiffusion


def make_denoiser(state: dict[str, np.ndarray], cfg: UnetConfig, diffusion_config: DiffusionConfig, sampler: str,
                  steps: int, eta: float, compile: str, progress: bool, device: str = "CPU",
                  composed_ops: bool = False) -> Denoise:
    """``--compile`` auto/on: every sampling step runs as one ``ms.jit`` graph (the diffusion's
    ``compiled=True``); off: op by op (PyNative). ``composed_ops``: the U-Net's GELU and GroupNorm from
    primitive ops (``Unet(composed_ops=True)``). ``device``: MindSpore's device target, for the whole process
    (``device.resolve_device``)."""
    devices.resolve_device(device)
    model = load_model(state, cfg, composed_ops)
    diffusion = GaussianDiffusion(diffusion_config)
    compiled = compile != "off"

    def denoise(start: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if sampler == "ddpm":
            states = diffusion.p_sample_loop(model, start.shape, img=start, noise=noise, progress=progress,
                                             compiled=compiled)
        else:
            states = diffusion.ddim_sample_loop(model, start.shape, steps, eta, img=start, noise=noise,
                                                progress=progress, compiled=compiled)
        return np.stack(states)

    return denoise


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: sample_main(a, "python -m ddpm_ms.sample", "ms", make_denoiser, devices), argv)


if __name__ == "__main__":
    raise SystemExit(main())
