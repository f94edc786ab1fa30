"""Beta schedules and every table derived from them, computed once in float64 numpy and cast
to float32 once, so both twins index identical buffers.

The tutorial computes the same tables in float32 numpy (``linspace(...).astype(float32)`` and
then float32 arithmetic); the float64 path differs from it by at most a few float32 ulps,
identically for both twins (see docs/porting.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ddpm_core.config import DiffusionConfig


def linear_beta_schedule(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The tutorial's (and DDPM's) schedule: betas evenly spaced from beta_start to beta_end."""
    return np.linspace(beta_start, beta_end, timesteps, dtype=np.float64)


def quadratic_beta_schedule(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Betas whose square roots are evenly spaced."""
    return np.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=np.float64) ** 2


def sigmoid_beta_schedule(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Betas following a sigmoid over [-6, 6], scaled to [beta_start, beta_end]."""
    x = np.linspace(-6.0, 6.0, timesteps, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal (2021): alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas clipped to [1e-4, 0.9999]."""
    x = np.linspace(0, timesteps, timesteps + 1, dtype=np.float64)
    alphas_cumprod = np.cos(((x / timesteps) + s) / (1 + s) * np.pi * 0.5) ** 2
    alphas_cumprod = alphas_cumprod / alphas_cumprod[0]
    betas = 1 - (alphas_cumprod[1:] / alphas_cumprod[:-1])
    return np.clip(betas, 0.0001, 0.9999)


def beta_schedule(cfg: DiffusionConfig) -> np.ndarray:
    """The float64 betas of ``cfg``."""
    if cfg.schedule == "cosine":
        return cosine_beta_schedule(cfg.timesteps)
    fn = {"linear": linear_beta_schedule, "quadratic": quadratic_beta_schedule, "sigmoid": sigmoid_beta_schedule}
    return fn[cfg.schedule](cfg.timesteps, cfg.beta_start, cfg.beta_end)


@dataclass(frozen=True)
class DiffusionSchedule:
    """Per-timestep tables of length T (float32), named after their formulas."""

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    sqrt_recip_alphas: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    p2_loss_weight: np.ndarray

    @property
    def timesteps(self) -> int:
        return int(self.betas.shape[0])

    def tables(self) -> dict[str, np.ndarray]:
        """Every table by name, for a twin to turn into framework tensors."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def derive_tables(betas: np.ndarray, p2_gamma: float = 0.0, p2_k: float = 1.0) -> dict[str, np.ndarray]:
    """Every float64 table the tutorial derives from ``betas``."""
    betas = np.asarray(betas, dtype=np.float64)
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    return {
        "betas": betas,
        "alphas": alphas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": alphas_cumprod_prev,
        "sqrt_recip_alphas": np.sqrt(1.0 / alphas),
        "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
        "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        "p2_loss_weight": (p2_k + alphas_cumprod / (1.0 - alphas_cumprod)) ** -p2_gamma,
    }


def make_schedule(cfg: DiffusionConfig) -> DiffusionSchedule:
    """All tables of ``cfg`` in float64, cast to float32 once."""
    tables = derive_tables(beta_schedule(cfg), cfg.p2_loss_weight_gamma, cfg.p2_loss_weight_k)
    return DiffusionSchedule(**{k: v.astype(np.float32) for k, v in tables.items()})


@dataclass(frozen=True)
class DDIMPlan:
    """The DDIM timestep subsequence and its per-step coefficients (float32), in sampling order.

    Step k goes from ``t[k]`` to ``t_prev[k]`` (-1 means the clean image):
    x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t);
    x_prev = sqrt(a_prev) x0 + dir_coef * eps + sigma * noise.
    """

    t: np.ndarray
    t_prev: np.ndarray
    sqrt_alphas_cumprod: np.ndarray
    sqrt_one_minus_alphas_cumprod: np.ndarray
    sqrt_alphas_cumprod_prev: np.ndarray
    dir_coef: np.ndarray
    sigma: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.t.shape[0])


DDIM_COEFS = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_alphas_cumprod_prev", "dir_coef", "sigma")
"""The ``DDIMPlan`` fields one DDIM step takes, in the order every implementation's ``ddim_step`` takes them."""


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """``steps`` distinct timesteps from T-1 down to 0, evenly spaced (descending, int64)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= timesteps:
        raise ValueError(f"DDIM steps must be an integer in [1, {timesteps}], got {steps!r}")
    seq = np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64)
    return seq[::-1].copy()


def ddim_plan(cfg: DiffusionConfig, steps: int, eta: float = 0.0) -> DDIMPlan:
    """Coefficients of a DDIM sampler with ``steps`` steps and stochasticity ``eta`` (Song et al. 2021, eq. 12/16)."""
    if not eta >= 0.0:
        raise ValueError(f"DDIM eta must be >= 0, got {eta!r}")
    abar = derive_tables(beta_schedule(cfg))["alphas_cumprod"]
    t = ddim_timesteps(cfg.timesteps, steps)
    t_prev = np.concatenate([t[1:], [-1]])
    a_t = abar[t]
    a_prev = np.where(t_prev >= 0, abar[np.maximum(t_prev, 0)], 1.0)
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    dir_coef = np.sqrt(np.clip(1 - a_prev - sigma**2, 0.0, None))
    f32 = np.float32
    return DDIMPlan(
        t=t,
        t_prev=t_prev,
        sqrt_alphas_cumprod=np.sqrt(a_t).astype(f32),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1 - a_t).astype(f32),
        sqrt_alphas_cumprod_prev=np.sqrt(a_prev).astype(f32),
        dir_coef=dir_coef.astype(f32),
        sigma=sigma.astype(f32),
    )


def cosine_decay_lr(min_lr: float, max_lr: float, total_step: int, step_per_epoch: int, decay_epoch: int) -> list[float]:
    """MindSpore's ``nn.cosine_decay_lr`` list: one learning rate per global step, constant within an
    epoch, cosine-decayed per epoch (the tutorial: ``min_lr=1e-7, max_lr=1e-4``)."""
    if not 0.0 <= min_lr < max_lr:
        raise ValueError(f"need 0 <= min_lr < max_lr, got {min_lr}, {max_lr}")
    for name, value in (("total_step", total_step), ("step_per_epoch", step_per_epoch), ("decay_epoch", decay_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    delta = 0.5 * (max_lr - min_lr)
    return [min_lr + delta * (1 + math.cos(math.pi * min(i // step_per_epoch, decay_epoch) / decay_epoch))
            for i in range(total_step)]
