"""``python -m ddpm_ms.sample --weights PATH --n 64 --out samples.png --gif denoise.gif``; mirrors
ddpm_torch/sample.py.

Weights in any format ``ddpm_core.weights`` reads (a model trained by either twin); the noise of sample i
depends on (seed, i) only, so both twins draw the same samples from the same weights (``ddpm_core.sampling``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mindspore import Tensor

from ddpm_core.cli import run_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.sampling import Denoise, sample_main
from ddpm_core.weights import torch_to_ms
from ddpm_ms.diffusion import GaussianDiffusion
from ddpm_ms.unet import Unet


def load_model(state: dict[str, np.ndarray], cfg: UnetConfig) -> Unet:
    """``Unet(cfg)`` holding ``state`` (PyTorch names, converted strictly), in eval mode."""
    model = Unet.from_config(cfg)
    ms_state = torch_to_ms(state, cfg)
    for p in model.get_parameters():
        p.set_data(Tensor(np.array(ms_state[p.name], dtype=np.float32)))
    model.set_train(False)
    return model


def make_denoiser(state: dict[str, np.ndarray], cfg: UnetConfig, diffusion_config: DiffusionConfig, sampler: str,
                  steps: int, eta: float, jit: str, progress: bool) -> Denoise:
    """--jit auto/on: every sampling step runs as one ``ms.jit`` graph (the diffusion's ``compiled=True``)."""
    model = load_model(state, cfg)
    diffusion = GaussianDiffusion(diffusion_config)
    graph = jit != "off"

    def denoise(start: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if sampler == "ddpm":
            states = diffusion.p_sample_loop(model, start.shape, img=start, noise=noise, progress=progress,
                                             compiled=graph)
        else:
            states = diffusion.ddim_sample_loop(model, start.shape, steps, eta, img=start, noise=noise,
                                                progress=progress, compiled=graph)
        return np.stack(states)

    return denoise


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: sample_main(a, "python -m ddpm_ms.sample", "ms", make_denoiser), argv)


if __name__ == "__main__":
    raise SystemExit(main())
