"""The DDPM math of the tutorial in float64 numpy: the forward process, the training losses, one
ancestral step, the ancestral sampling loop and DDIM, the specification ddpm_torch/diffusion.py and
ddpm_ms/diffusion.py are held to.

The tables are the values the twins index: ``ddpm_core.schedules.make_schedule`` (float64 formulas cast
to float32 once), upcast to float64; the DDIM coefficients likewise come from ``ddim_plan``. Everything
computed from them here is float64. Nothing is drawn at random: every noise array comes from the caller.

``model`` is any callable (x float64 (b, ...), t int (b,)) -> eps float64, e.g. a ``ReferenceUnet``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ddpm_core.config import (
    TUTORIAL_DIFFUSION,
    DiffusionConfig,
    check_noise_sequence,
    check_same_shape,
    check_timestep_range,
)
from ddpm_core.schedules import DDIM_COEFS, DDIMPlan, ddim_plan, make_schedule

Model = Callable[[np.ndarray, np.ndarray], np.ndarray]



def huber_loss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The tutorial's ``nn.SmoothL1Loss()``: beta 1.0, reduction 'none' (per element):
    0.5 d^2 where |d| < 1, else |d| - 0.5."""
    d = np.abs(a - b)
    return np.where(d < 1.0, 0.5 * d * d, d - 0.5)


def l1_loss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b)


def l2_loss(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.square(a - b)


LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"huber": huber_loss, "l1": l1_loss, "l2": l2_loss}


class ReferenceDiffusion:
    """The tables of ``config`` (float64 copies of the twins' float32 tables) and the DDPM math over them."""

    def __init__(self, config: DiffusionConfig = TUTORIAL_DIFFUSION):
        self.config = config
        self.timesteps = config.timesteps
        self.tables = {name: table.astype(np.float64) for name, table in make_schedule(config).tables().items()}

    def extract(self, name: str, t: np.ndarray, ndim: int) -> np.ndarray:
        """``tables[name][t]`` shaped (b, 1, ..., 1) to broadcast against a (b, ...) array of ``ndim`` axes."""
        return self.tables[name][t].reshape(len(t), *(1,) * (ndim - 1))

    def ddim_plan(self, steps: int, eta: float = 0.0) -> DDIMPlan:
        """``ddim_plan(config, steps, eta)`` with its float32 coefficients upcast to float64."""
        plan = ddim_plan(self.config, steps, eta)
        return dataclasses.replace(plan, **{name: getattr(plan, name).astype(np.float64) for name in DDIM_COEFS})

    # ------------------------------------------------------------ inputs
    def _timesteps(self, t: np.ndarray, batch: int) -> np.ndarray:
        t = np.asarray(t)
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"timesteps t must be integers, got {t.dtype}")
        check_same_shape("t", t.shape, (batch,))
        check_timestep_range(int(t.min()), int(t.max()), self.timesteps)
        return t.astype(np.int64)

    @staticmethod
    def _float64(name: str, a: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if shape is not None:
            check_same_shape(name, a.shape, shape)
        return a

    # ------------------------------------------------------------ training
    def q_sample(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        x0 = self._float64("x0", x0)
        t = self._timesteps(t, len(x0))
        noise = self._float64("noise", noise, x0.shape)
        return (self.extract("sqrt_alphas_cumprod", t, x0.ndim) * x0
                + self.extract("sqrt_one_minus_alphas_cumprod", t, x0.ndim) * noise)

    def p_losses(self, model: Model, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                 loss_type: str | None = None) -> np.float64:
        """mean over (b, every element) of loss(noise, model(x_t, t)) * p2_loss_weight[t], the loss taken per
        element (``loss_type``: huber, l1 or l2; the config's by default)."""
        loss_fn = LOSSES[loss_type or self.config.loss_type]
        t = self._timesteps(t, len(np.asarray(x0)))
        noise = self._float64("noise", noise, np.shape(x0))
        predicted = model(self.q_sample(x0, t, noise), t)
        loss = loss_fn(noise, predicted).reshape(len(t), -1)  # (b, elements)
        loss = loss * self.extract("p2_loss_weight", t, 2)
        return np.float64(loss.mean())

    # ------------------------------------------------------------ ancestral sampling
    def p_mean(self, model: Model, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Mean of p(x_{t-1} | x_t): 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps(x_t, t))."""
        x = self._float64("x", x)
        t = self._timesteps(t, len(x))
        eps = model(x, t)
        return self.extract("sqrt_recip_alphas", t, x.ndim) * (
            x - self.extract("betas", t, x.ndim) * eps / self.extract("sqrt_one_minus_alphas_cumprod", t, x.ndim))

    def p_step(self, model: Model, x: np.ndarray, t: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """x_{t-1} = mean + sqrt(posterior_variance_t) noise, per row (rows may have different t).
        posterior_variance[0] is exactly 0, so rows at t = 0 get the mean alone, as the twins' ``p_step``;
        ``noise=None`` returns the mean alone (the tutorial's ``p_sample`` at t_index 0 draws no noise)."""
        mean = self.p_mean(model, x, t)
        if noise is None:
            return mean
        t = self._timesteps(t, len(mean))
        noise = self._float64("noise", noise, mean.shape)
        return mean + np.sqrt(self.extract("posterior_variance", t, mean.ndim)) * noise

    def p_sample_loop(self, model: Model, x_T: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Every state x_{T-1}, ..., x_0 as one (T, b, ...) array (the starting x_T not included, as the
        tutorial). ``noise`` (T, b, ...): row k is the noise of the k-th step (t = T-1-k); the last row is
        not used (the last step returns the mean)."""
        x = self._float64("x_T", x_T)
        noise = self._float64("noise", noise)
        check_noise_sequence(noise.shape, self.timesteps, x.shape)
        states = []
        for k, i in enumerate(range(self.timesteps - 1, -1, -1)):
            x = self.p_step(model, x, np.full(len(x), i), noise[k] if i > 0 else None)
            states.append(x)
        return np.stack(states)

    # ------------------------------------------------------------ DDIM
    def ddim_step(self, model: Model, x: np.ndarray, t: int, plan: DDIMPlan, k: int,
                  noise: np.ndarray | None) -> np.ndarray:
        """Step ``k`` of ``plan`` (Song et al. 2021, eq. 12) from x at timestep ``t = plan.t[k]``:
        x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t);  x_prev = sqrt(a_prev) x0 + dir_coef eps (+ sigma noise)."""
        x = self._float64("x", x)
        eps = model(x, np.full(len(x), t))
        x0 = (x - plan.sqrt_one_minus_alphas_cumprod[k] * eps) / plan.sqrt_alphas_cumprod[k]
        x = plan.sqrt_alphas_cumprod_prev[k] * x0 + plan.dir_coef[k] * eps
        if noise is not None:  # float64 first: numpy 1.x would round a float64 scalar times float32 noise to float32
            x = x + plan.sigma[k] * self._float64("noise", noise, x.shape)
        return x

    def ddim_sample_loop(self, model: Model, x_T: np.ndarray, steps: int, eta: float,
                         noise: np.ndarray) -> np.ndarray:
        """Every DDIM state as one (steps, b, ...) array. ``noise`` (steps, b, ...): row k is added (times
        sigma_k) at step k where sigma_k > 0; with eta = 0 every sigma is 0 and the noise is not used."""
        plan = self.ddim_plan(steps, eta)
        x = self._float64("x_T", x_T)
        noise = self._float64("noise", noise)
        check_noise_sequence(noise.shape, plan.steps, x.shape)
        states = []
        for k in range(plan.steps):
            x = self.ddim_step(model, x, int(plan.t[k]), plan, k, noise[k] if plan.sigma[k] > 0 else None)
            states.append(x)
        return np.stack(states)
