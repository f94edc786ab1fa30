"""DDPM forward process, losses and samplers (ancestral DDPM and DDIM) in MindSpore; mirrors
ddpm_torch/diffusion.py.

Every random draw can be injected: pass ``noise``/``t``/``img`` as numpy arrays or tensors and
nothing is drawn from MindSpore's RNG. Per-step sampling noise is one array of shape
(steps, *x.shape) in sampling order: row k is used at the k-th step (t = T-1-k for DDPM).
"""
from __future__ import annotations

from typing import Callable

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from tqdm.auto import tqdm

from ddpm_core.config import (
    TUTORIAL_DIFFUSION,
    DiffusionConfig,
    check_noise_sequence,
    check_same_shape,
    check_timestep_range,
)
from ddpm_core.runtime.frameworks import framework_of
from ddpm_core.schedules import DDIM_COEFS, ddim_plan, make_schedule

ArrayLike = np.ndarray | Tensor
FLOAT_DTYPES = (ms.float16, ms.bfloat16, ms.float32, ms.float64)
_SMOOTH_L1 = nn.SmoothL1Loss(beta=1.0, reduction="none")


def huber_loss(a: Tensor, b: Tensor) -> Tensor:
    """The tutorial's ``nn.SmoothL1Loss()``: beta 1.0 and reduction 'none', passed explicitly."""
    return _SMOOTH_L1(a, b)


def state_dtype(model: Callable) -> ms.Type:
    """The dtype a sampler keeps its states in: the model's parameters' (float32 for the tutorial's model),
    float32 for a model without parameters."""
    param = next(model.get_parameters(), None) if isinstance(model, nn.Cell) else None
    return param.dtype if param is not None else ms.float32


def check_model(model: Callable) -> None:
    """A PyTorch model given to this diffusion is a ``TypeError`` naming the fix (the model would fail
    deep inside, on a tensor of the other framework: "x is ... but the model's weights are ...")."""
    if framework_of(model) == "torch":
        raise TypeError(f"a PyTorch model ({type(model).__name__}) needs ddpm_torch.GaussianDiffusion; you passed it "
                        f"to ddpm_ms's (build the model with ddpm_ms.Unet, or use ddpm_torch.GaussianDiffusion)")


def l1_loss(a: Tensor, b: Tensor) -> Tensor:
    return ops.abs(a - b)


def l2_loss(a: Tensor, b: Tensor) -> Tensor:
    return ops.square(a - b)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"huber": huber_loss, "l1": l1_loss, "l2": l2_loss}
"""Named functions, not lambdas: ``ms.jit`` reads a function's source to compile it, and the source line of a
lambda inside this dict does not parse on its own (``loss`` runs inside the compiled training step)."""


class GaussianDiffusion:
    """The schedule tables of ``config`` as float32 tensors, and the DDPM math over them."""

    def __init__(self, config: DiffusionConfig = TUTORIAL_DIFFUSION):
        self.config = config
        self.timesteps = config.timesteps
        self.schedule = make_schedule(config)
        for name, table in self.schedule.tables().items():
            setattr(self, name, Tensor(table))

    def tensor(self, x: ArrayLike, dtype: ms.Type | None = None) -> Tensor:
        """``x`` (numpy or tensor) as a tensor."""
        t = Tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
        return t if dtype is None or t.dtype == dtype else t.astype(dtype)

    def timesteps_tensor(self, t: ArrayLike, batch: int) -> Tensor:
        """Validated int32 timesteps of shape (batch,)."""
        t = self.tensor(t)
        if t.dtype in FLOAT_DTYPES or t.dtype == ms.bool_:
            raise ValueError(f"timesteps t must be integers, got {t.dtype}")
        check_same_shape("t", t.shape, (batch,))
        check_timestep_range(int(t.min()), int(t.max()), self.timesteps)
        return t.astype(ms.int32)

    def extract(self, a: Tensor, t: Tensor, x_shape: tuple[int, ...]) -> Tensor:
        """``a[t]`` reshaped to (b, 1, 1, ...) for broadcasting against ``x_shape``."""
        return a.gather(t, -1).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))

    def sample_timesteps(self, batch: int, seed: int | None = None) -> Tensor:
        """Uniform int32 timesteps in [0, T) from MindSpore's RNG."""
        return ops.randint(0, self.timesteps, (batch,), seed=seed, dtype=ms.int32)

    def q_sample(self, x_start: ArrayLike, t: ArrayLike, noise: ArrayLike | None = None) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        x_start = self.tensor(x_start)
        t = self.timesteps_tensor(t, x_start.shape[0])
        noise = ops.standard_normal(x_start.shape).astype(x_start.dtype) if noise is None else self.tensor(noise, x_start.dtype)
        check_same_shape("noise", noise.shape, x_start.shape)
        return self.noised(x_start, t, noise)

    def p_losses(self, model: nn.Cell, x_start: ArrayLike, t: ArrayLike, noise: ArrayLike | None = None,
                 loss_type: str | None = None) -> Tensor:
        """Mean over the batch of (per-element loss(noise, model(x_t, t)) * p2_weight[t])."""
        check_model(model)
        return self.loss(model, *self.checked(x_start, t, noise), loss_type)

    def checked(self, x_start: ArrayLike, t: ArrayLike, noise: ArrayLike | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """A training batch checked and as tensors: x_start, int32 timesteps of shape (batch,), and noise of
        x_start's shape and dtype (drawn when None)."""
        x_start = self.tensor(x_start)
        noise = ops.standard_normal(x_start.shape).astype(x_start.dtype) if noise is None else self.tensor(noise, x_start.dtype)
        t = self.timesteps_tensor(t, x_start.shape[0])
        check_same_shape("noise", noise.shape, x_start.shape)
        return x_start, t, noise

    def noised(self, x_start: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """``q_sample`` on validated tensors; pure tensor math (jit-safe, no checks)."""
        return (self.extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def loss(self, model: nn.Cell, x_start: Tensor, t: Tensor, noise: Tensor, loss_type: str | None = None) -> Tensor:
        """``p_losses`` on validated tensors; pure tensor math (jit-safe, no checks)."""
        predicted_noise = model(self.noised(x_start, t, noise), t)
        loss = LOSSES[loss_type or self.config.loss_type](noise, predicted_noise)
        loss = loss.reshape(loss.shape[0], -1)
        loss = loss * self.extract(self.p2_loss_weight, t, loss.shape)
        return loss.mean()

    def p_mean(self, model: nn.Cell, x: Tensor, t: Tensor) -> Tensor:
        """Mean of p(x_{t-1} | x_t) from the model's noise prediction; pure tensor math (jit-safe, no checks)."""
        betas_t = self.extract(self.betas, t, x.shape)
        sqrt_one_minus_alphas_cumprod_t = self.extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
        sqrt_recip_alphas_t = self.extract(self.sqrt_recip_alphas, t, x.shape)
        return sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)

    def p_step(self, model: nn.Cell, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """mean + sqrt(posterior_variance_t) * noise for a batch of (possibly different) timesteps; pure tensor
        math (jit-safe, no checks). posterior_variance[0] is exactly 0, so rows at t = 0 get the mean alone,
        bit for bit what ``p_sample`` returns at t_index 0."""
        return self.p_mean(model, x, t) + ops.sqrt(self.extract(self.posterior_variance, t, x.shape)) * noise

    def p_sample(self, model: nn.Cell, x: ArrayLike, t: ArrayLike, t_index: int,
                 noise: ArrayLike | None = None) -> Tensor:
        """One ancestral step x_t -> x_{t-1}; at t_index 0 the mean alone."""
        check_model(model)
        x = self.tensor(x)
        t = self.timesteps_tensor(t, x.shape[0])
        model_mean = self.p_mean(model, x, t)
        if t_index == 0:
            return model_mean
        posterior_variance_t = self.extract(self.posterior_variance, t, x.shape)
        noise = ops.standard_normal(x.shape).astype(x.dtype) if noise is None else self.tensor(noise, x.dtype)
        return model_mean + ops.sqrt(posterior_variance_t) * noise

    def ddim_step(self, model: nn.Cell, x: Tensor, t: Tensor, sqrt_alphas_cumprod: Tensor,
                  sqrt_one_minus_alphas_cumprod: Tensor, sqrt_alphas_cumprod_prev: Tensor, dir_coef: Tensor,
                  sigma: Tensor, noise: Tensor | None = None) -> Tensor:
        """One DDIM step with this step's plan coefficients (0-d tensors); ``noise`` None adds nothing.
        Pure tensor math (jit-safe, no checks)."""
        eps = model(x, t)
        x0 = (x - sqrt_one_minus_alphas_cumprod * eps) / sqrt_alphas_cumprod
        x = sqrt_alphas_cumprod_prev * x0 + dir_coef * eps
        if noise is not None:
            x = x + sigma * noise
        return x

    def compiled(self, kind: str, model: nn.Cell) -> Callable:
        """``p_step`` (kind "ddpm") or ``ddim_step`` with noise (kind "ddim") for ``model`` as one ``ms.jit``
        graph, cached per (kind, model): MindSpore compiles once per input shape and jit object, so one
        compiled step serves every step of every loop on this diffusion.

        Weights updated in place (optimizer steps, ``Parameter.copy_``) are read when the graph runs. A
        parameter whose storage is replaced (``set_data``, ``load_param_into_net``) is not: MindSpore 2.10's
        graph keeps the old storage, so the cache key includes every parameter's data pointer and such a
        change compiles a fresh graph instead of sampling with stale weights."""
        cache = self.__dict__.setdefault("_compiled", {})
        storage = tuple(p.data_ptr() for p in model.get_parameters())
        key = (kind, id(model))
        if key not in cache or cache[key][1] != storage:
            if kind == "ddpm":
                def step(x, t, noise):
                    return self.p_step(model, x, t, noise)
            elif kind == "ddim":
                def step(x, t, a, s, a_prev, d, sigma, noise):
                    return self.ddim_step(model, x, t, a, s, a_prev, d, sigma, noise)
            else:
                raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")
            cache[key] = (model, storage, ms.jit(step))
        return cache[key][2]

    def p_sample_loop(self, model: nn.Cell, shape: tuple[int, ...], img: ArrayLike | None = None,
                      noise: ArrayLike | None = None, progress: bool = False,
                      compiled: bool = False) -> list[np.ndarray]:
        """All T states x_{T-1}, ..., x_0 (as the tutorial: the starting noise itself is not included).

        ``compiled=True`` runs every step through one ``ms.jit`` graph of ``p_step`` (compiled on the first
        step, about 10x faster per step on CPU); the default runs ``p_sample`` op by op (PyNative)."""
        check_model(model)
        shape = tuple(shape)
        img = ops.standard_normal(shape).astype(ms.float32) if img is None else self.tensor(img, state_dtype(model))
        check_same_shape("img", img.shape, shape)
        if noise is not None:
            noise = self.tensor(noise, img.dtype)
            check_noise_sequence(noise.shape, self.timesteps, shape)
        states = []
        steps = range(self.timesteps - 1, -1, -1)
        step = self.compiled("ddpm", model) if compiled else None
        for k, i in enumerate(tqdm(steps, desc="sampling loop time step", total=self.timesteps, disable=not progress)):
            t = ops.fill(ms.int32, (shape[0],), i)
            if step is not None:
                step_noise = ops.standard_normal(shape).astype(img.dtype) if noise is None else noise[k]
                img = step(img, t, step_noise)
            else:
                img = self.p_sample(model, img, t, i, None if noise is None else noise[k])
            states.append(img)
        return list(ops.stack(states).asnumpy().copy())

    def ddim_sample_loop(self, model: nn.Cell, shape: tuple[int, ...], steps: int, eta: float = 0.0,
                         img: ArrayLike | None = None, noise: ArrayLike | None = None,
                         progress: bool = False, compiled: bool = False) -> list[np.ndarray]:
        """DDIM (Song et al. 2021) over ``steps`` evenly spaced timesteps; eta=0 is deterministic.
        ``compiled=True`` runs every step through one ``ms.jit`` graph of ``ddim_step``."""
        plan = ddim_plan(self.config, steps, eta)
        coef = {name: Tensor(getattr(plan, name)) for name in DDIM_COEFS}
        check_model(model)
        shape = tuple(shape)
        img = ops.standard_normal(shape).astype(ms.float32) if img is None else self.tensor(img, state_dtype(model))
        check_same_shape("img", img.shape, shape)
        if noise is not None:
            noise = self.tensor(noise, img.dtype)
            check_noise_sequence(noise.shape, plan.steps, shape)
        states = []
        step = self.compiled("ddim", model) if compiled else None
        for k in tqdm(range(plan.steps), desc="DDIM", disable=not progress):
            t = ops.fill(ms.int32, (shape[0],), int(plan.t[k]))
            step_noise = None
            if plan.sigma[k] > 0:
                step_noise = ops.standard_normal(shape).astype(img.dtype) if noise is None else noise[k]
            if step is not None:
                zeros = ops.zeros(shape, img.dtype) if step_noise is None else step_noise
                img = step(img, t, *(coef[n][k] for n in DDIM_COEFS), zeros)
            else:
                img = self.ddim_step(model, img, t, *(coef[n][k] for n in DDIM_COEFS), step_noise)
            states.append(img)
        return list(ops.stack(states).asnumpy().copy())
