"""The diffusion-math probes both sides run the same way: the twin's diffusion driven by its toy noise
model (``toy_model``: eps(x, t) = 0.9 x + 0.001 t, no U-Net), so the DDPM/DDIM math is checked alone
(``parity.engine.probes`` compares them with the float64 oracle). Framework-neutral: a side supplies
``toy_model`` and ``numpy``."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np


class ToyModelProbes:
    toy_model: Callable[[], Callable]
    numpy: Callable[[Any], np.ndarray]

    def probe_q_sample(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.q_sample(x0, t, noise))

    def probe_p_sample(self, diffusion: Any, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.p_sample(self.toy_model(), x, t, 1, noise))

    def probe_loss(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return self.numpy(diffusion.p_losses(self.toy_model(), x0, t, noise, loss_type))

    def probe_ddpm_loop(self, diffusion: Any, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.p_sample_loop(self.toy_model(), x.shape, img=x, noise=noise))

    def probe_ddim_loop(self, diffusion: Any, x: np.ndarray, steps: int, eta: float, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.ddim_sample_loop(self.toy_model(), x.shape, steps, eta, img=x, noise=noise))
