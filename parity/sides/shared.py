"""The side calls that are the same code for both twins (framework-neutral: a side supplies ``numpy``,
``toy_model``, ``compiled`` and ``progress``): the whole sampling loops, and the diffusion-math probes, which
drive the twin's diffusion with its toy noise model (eps(x, t) = 0.9 x + 0.001 t, no U-Net) so the DDPM/DDIM
math is checked alone (``parity.engine.probes`` compares them with the float64 oracle)."""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

import numpy as np

from ddpm_core.contract import M, TwinDiffusion

D = TypeVar("D", bound=TwinDiffusion)


class SharedCalls(Generic[M, D]):
    numpy: Callable[[Any], np.ndarray]
    toy_model: Callable[[], Callable]
    compiled: bool
    progress: bool

    # ------------------------------------------------------------ whole sampling loops
    def ddpm(self, model: M, diffusion: D, x_T: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Every state of the DDPM loop from ``x_T`` with the tape's per-step noise: (T, B, ...)."""
        return np.stack(diffusion.p_sample_loop(model, x_T.shape, img=x_T, noise=noise, progress=self.progress,
                                                compiled=self.compiled))

    def ddim(self, model: M, diffusion: D, x_T: np.ndarray, steps: int, eta: float,
             noise: np.ndarray) -> np.ndarray:
        """Every state of the DDIM loop from ``x_T``: (steps, B, ...)."""
        return np.stack(diffusion.ddim_sample_loop(model, x_T.shape, steps, eta, img=x_T, noise=noise,
                                                   progress=self.progress, compiled=self.compiled))

    # ------------------------------------------------------------ diffusion-math probes (toy model)
    def probe_q_sample(self, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.q_sample(x0, t, noise))

    def probe_p_sample(self, diffusion: D, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.p_sample(self.toy_model(), x, t, 1, noise))

    def probe_loss(self, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return self.numpy(diffusion.p_losses(self.toy_model(), x0, t, noise, loss_type))

    def probe_ddpm_loop(self, diffusion: D, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.p_sample_loop(self.toy_model(), x.shape, img=x, noise=noise))

    def probe_ddim_loop(self, diffusion: D, x: np.ndarray, steps: int, eta: float, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.ddim_sample_loop(self.toy_model(), x.shape, steps, eta, img=x, noise=noise))
