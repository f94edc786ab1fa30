"""DDPM forward process, losses and samplers (ancestral DDPM and DDIM) in PyTorch; mirrors
ddpm_ms/diffusion.py.

Every random draw can be injected: pass ``noise``/``t``/``img`` as numpy arrays or tensors and
nothing is drawn from torch's RNG. Per-step sampling noise is one array of shape
(steps, *x.shape) in sampling order: row k is used at the k-th step (t = T-1-k for DDPM).

On a CUDA device the compiled DDPM sampler is the whole T-step loop recorded once as one CUDA graph
(``capture_graph``, ``GaussianDiffusion.ddpm_graph``): the same ``p_step`` arithmetic, one launch per loop.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
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

ArrayLike = np.ndarray | torch.Tensor


def huber_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MindSpore ``nn.SmoothL1Loss()``: beta 1.0 and reduction 'none' (PyTorch's default is 'mean')."""
    return nn.functional.smooth_l1_loss(a, b, reduction="none", beta=1.0)


def state_dtype(model: Callable) -> torch.dtype:
    """The dtype a sampler keeps its states in: the model's parameters' (float32 for the tutorial's model,
    float64 for the harness's float64 run), float32 for a model without parameters."""
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return param.dtype if param is not None else torch.float32


def check_model(model: Callable) -> None:
    """A MindSpore model given to this diffusion is a ``TypeError`` naming the fix (the model would fail
    deep inside, on a tensor of the other framework: "x is ... but the model's weights are ...")."""
    if framework_of(model) == "mindspore":
        raise TypeError(f"a MindSpore model ({type(model).__name__}) needs ddpm_ms.GaussianDiffusion; you passed it "
                        f"to ddpm_torch's (build the model with ddpm_torch.Unet, or use ddpm_ms.GaussianDiffusion)")


def l1_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.abs(a - b)


def l2_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.square(a - b)


def capture_graph(run: Callable[[], None], device: torch.device, warmup: Callable[[], None] | None = None,
                  warmup_calls: int = 2) -> Callable[[], None]:
    """``run`` recorded once as a CUDA graph on a CUDA ``device``; returns the replay. ``run`` must work on static
    tensors only: no host synchronisation (``.item()``, ``int(tensor)``), no host-to-device copy, no random draw.
    ``warmup`` (default ``run``) runs ``warmup_calls`` times first, on a side stream as capture requires, so lazy
    initialisation (cuBLAS and cuDNN handles, autograd's engine, compiled kernels) happens outside the capture;
    undoing what the warm-up changed is the caller's business. On any other device there is no graph: the
    warm-up runs and ``run`` itself is returned, the same static-buffer code path (what the CPU tests run)."""
    warmup = run if warmup is None else warmup
    if device.type != "cuda":
        for _ in range(warmup_calls):
            warmup()
        return run
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup_calls):
            warmup()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"huber": huber_loss, "l1": l1_loss,
                                                                           "l2": l2_loss}
"""Named functions, as in the MindSpore twin (where ``ms.jit`` cannot compile a lambda defined in a dict)."""


class GaussianDiffusion:
    """The schedule tables of ``config`` as tensors on ``device``, and the DDPM math over them."""

    def __init__(self, config: DiffusionConfig = TUTORIAL_DIFFUSION, device: str | torch.device = "cpu"):
        self.config = config
        self.timesteps = config.timesteps
        self.device = torch.device(device)
        self.schedule = make_schedule(config)
        for name, table in self.schedule.tables().items():
            setattr(self, name, torch.from_numpy(table).to(self.device))
        self._graph: tuple[tuple, Callable] | None = None  # p_sample_loop's last CUDA-graph loop, with its key

    def tensor(self, x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x`` (numpy or tensor) as a tensor on this diffusion's device. A read-only array (the harness's tape)
        is copied: PyTorch's tensors are writable, and sharing its memory would let a write change the tape."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x) if x.flags.writeable else np.array(x, order="C"))
        return x.to(device=self.device, dtype=dtype or x.dtype)

    def timesteps_tensor(self, t: ArrayLike, batch: int) -> torch.Tensor:
        """Validated int32 timesteps of shape (batch,)."""
        t = self.tensor(t)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"timesteps t must be integers, got {t.dtype}")
        check_same_shape("t", t.shape, (batch,))
        check_timestep_range(int(t.min()), int(t.max()), self.timesteps)
        return t.to(torch.int32)

    def extract(self, a: torch.Tensor, t: torch.Tensor, x_shape: tuple[int, ...]) -> torch.Tensor:
        """``a[t]`` reshaped to (b, 1, 1, ...) for broadcasting against ``x_shape``."""
        return a.gather(-1, t.long()).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform int32 timesteps in [0, T) from torch's RNG."""
        return torch.randint(0, self.timesteps, (batch,), generator=generator, device=self.device, dtype=torch.int32)

    def q_sample(self, x_start: ArrayLike, t: ArrayLike, noise: ArrayLike | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        x_start = self.tensor(x_start)
        t = self.timesteps_tensor(t, x_start.shape[0])
        noise = torch.randn_like(x_start) if noise is None else self.tensor(noise, x_start.dtype)
        check_same_shape("noise", noise.shape, x_start.shape)
        return self.noised(x_start, t, noise)

    def p_losses(self, model: nn.Module, x_start: ArrayLike, t: ArrayLike, noise: ArrayLike | None = None,
                 loss_type: str | None = None) -> torch.Tensor:
        """Mean over the batch of (per-element loss(noise, model(x_t, t)) * p2_weight[t])."""
        check_model(model)
        return self.loss(model, *self.checked(x_start, t, noise), loss_type)

    def checked(self, x_start: ArrayLike, t: ArrayLike,
                noise: ArrayLike | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A training batch checked and as tensors on this device: x_start, int32 timesteps of shape (batch,), and
        noise of x_start's shape and dtype (drawn when None)."""
        x_start = self.tensor(x_start)
        noise = torch.randn_like(x_start) if noise is None else self.tensor(noise, x_start.dtype)
        t = self.timesteps_tensor(t, x_start.shape[0])
        check_same_shape("noise", noise.shape, x_start.shape)
        return x_start, t, noise

    def noised(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``q_sample`` on validated tensors; pure tensor math (jit-safe, no checks)."""
        return (self.extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                + self.extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

    def loss(self, model: nn.Module, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, loss_type: str | None = None) -> torch.Tensor:
        """``p_losses`` on validated tensors; pure tensor math (jit-safe, no checks)."""
        predicted_noise = model(self.noised(x_start, t, noise), t)
        loss = LOSSES[loss_type or self.config.loss_type](noise, predicted_noise)
        loss = loss.reshape(loss.shape[0], -1)
        loss = loss * self.extract(self.p2_loss_weight, t, loss.shape)
        return loss.mean()

    def p_mean(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Mean of p(x_{t-1} | x_t) from the model's noise prediction; pure tensor math (no checks)."""
        betas_t = self.extract(self.betas, t, x.shape)
        sqrt_one_minus_alphas_cumprod_t = self.extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape)
        sqrt_recip_alphas_t = self.extract(self.sqrt_recip_alphas, t, x.shape)
        return sqrt_recip_alphas_t * (x - betas_t * model(x, t) / sqrt_one_minus_alphas_cumprod_t)

    def p_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """mean + sqrt(posterior_variance_t) * noise for a batch of (possibly different) timesteps; pure tensor
        math (no checks). posterior_variance[0] is exactly 0, so rows at t = 0 get the mean alone,
        bit for bit what ``p_sample`` returns at t_index 0."""
        return self.p_mean(model, x, t) + torch.sqrt(self.extract(self.posterior_variance, t, x.shape)) * noise

    @torch.no_grad()
    def p_sample(self, model: nn.Module, x: ArrayLike, t: ArrayLike, t_index: int,
                 noise: ArrayLike | None = None) -> torch.Tensor:
        """One ancestral step x_t -> x_{t-1}; at t_index 0 the mean alone."""
        check_model(model)
        x = self.tensor(x)
        t = self.timesteps_tensor(t, x.shape[0])
        model_mean = self.p_mean(model, x, t)
        if t_index == 0:
            return model_mean
        posterior_variance_t = self.extract(self.posterior_variance, t, x.shape)
        noise = torch.randn_like(x) if noise is None else self.tensor(noise, x.dtype)
        return model_mean + torch.sqrt(posterior_variance_t) * noise

    def ddim_step(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor, sqrt_alphas_cumprod: torch.Tensor,
                  sqrt_one_minus_alphas_cumprod: torch.Tensor, sqrt_alphas_cumprod_prev: torch.Tensor,
                  dir_coef: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """One DDIM step with this step's plan coefficients (0-d tensors); ``noise`` None adds nothing.
        Pure tensor math (no checks)."""
        eps = model(x, t)
        x0 = (x - sqrt_one_minus_alphas_cumprod * eps) / sqrt_alphas_cumprod
        x = sqrt_alphas_cumprod_prev * x0 + dir_coef * eps
        if noise is not None:
            x = x + sigma * noise
        return x

    def compiled(self, kind: str, model: nn.Module) -> Callable:
        """``p_step`` (kind "ddpm") or ``ddim_step`` with noise (kind "ddim") for ``model``, the mirror of the
        MindSpore twin's ``ms.jit`` graphs. Not compiled here: eager PyTorch is already fast on CPU and
        ``torch.compile`` needs a C++ toolchain; the same step functions run eagerly, so ``compiled=True``
        runs the same arithmetic in both twins (on CUDA the DDPM loop of these steps is one graph: ``ddpm_graph``)."""
        if kind == "ddpm":
            return lambda x, t, noise: self.p_step(model, x, t, noise)
        if kind == "ddim":
            return lambda x, t, a, s, a_prev, d, sigma, noise: self.ddim_step(model, x, t, a, s, a_prev, d, sigma, noise)
        raise ValueError(f"kind must be 'ddpm' or 'ddim', got {kind!r}")

    @torch.no_grad()
    def p_sample_loop(self, model: nn.Module, shape: tuple[int, ...], img: ArrayLike | None = None,
                      noise: ArrayLike | None = None, progress: bool = False,
                      compiled: bool = False) -> list[np.ndarray]:
        """All T states x_{T-1}, ..., x_0 (as the tutorial: the starting noise itself is not included).

        ``compiled=True`` runs every step through ``p_step`` (the MindSpore twin's compiled path; eager on the
        CPU, same results); on a CUDA device the whole loop as one CUDA graph (``ddpm_graph``, kept for the next
        call with the same model, mode, shape and storage of parameters, buffers and tables; no progress bar).
        The default runs ``p_sample``."""
        check_model(model)
        shape = tuple(shape)
        img = torch.randn(shape, device=self.device) if img is None else self.tensor(img, state_dtype(model))
        check_same_shape("img", img.shape, shape)
        if noise is not None:
            noise = self.tensor(noise, img.dtype)
            check_noise_sequence(noise.shape, self.timesteps, shape)
        if compiled and self.device.type == "cuda":
            tensors = list(model.parameters()) + list(model.buffers()) if isinstance(model, nn.Module) else []
            tensors += [getattr(self, name) for name in self.schedule.tables()]  # the graph reads these where they are
            key = (id(model), model.training if isinstance(model, nn.Module) else None, shape, img.dtype,
                   tuple(a.data_ptr() for a in tensors))
            if self._graph is None or self._graph[0] != key:
                self._graph = None  # the old graph's memory goes before the new one is captured
                self._graph = (key, self.ddpm_graph(model, shape, img.dtype))
            return list(self._graph[1](img, noise).cpu().numpy())
        states = []
        steps = range(self.timesteps - 1, -1, -1)
        step = self.compiled("ddpm", model) if compiled else None
        for k, i in enumerate(tqdm(steps, desc="sampling loop time step", total=self.timesteps, disable=not progress)):
            t = torch.full((shape[0],), i, dtype=torch.int32, device=self.device)
            if step is not None:
                step_noise = torch.randn_like(img) if noise is None else noise[k]
                img = step(img, t, step_noise)
            else:
                img = self.p_sample(model, img, t, i, None if noise is None else noise[k])
            states.append(img)
        return list(torch.stack(states).cpu().numpy())

    def ddpm_graph(self, model: Callable, shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                   step: Callable | None = None) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
        """The whole DDPM loop for ``model`` at ``shape``, T steps of ``p_step`` (or of ``step(x, t, noise)``, e.g.
        the same under autocast), recorded once as one CUDA graph (``capture_graph``; warm-up: one step):
        ``run(img, noise) -> states``, every state x_{T-1} .. x_0 as one (T, *shape) tensor on this device, from
        x_T = ``img`` with ``noise`` the (T, *shape) per-step noise in sampling order (None: one fresh draw on the
        device per call, not the eager loop's per-step draws). Inputs are copied into static buffers; the states
        are the graph's output buffer, overwritten by the next call. The graph reads ``model``'s parameters where
        they are: in-place changes are seen, replaced storage is not. On a device without CUDA graphs the same
        static-buffer loop runs as it is (bit for bit ``p_sample_loop(compiled=True)``; tests/parity/test_bench_cuda.py)."""
        step = step or (lambda x, t, n: self.p_step(model, x, t, n))
        x_T = torch.zeros(shape, dtype=dtype, device=self.device)
        noise_in = torch.zeros((self.timesteps, *shape), dtype=dtype, device=self.device)
        states = torch.zeros_like(noise_in)
        ts = [torch.full((shape[0],), i, dtype=torch.int32, device=self.device) for i in range(self.timesteps - 1, -1, -1)]

        def loop() -> None:
            x = x_T
            for k, t in enumerate(ts):
                x = step(x, t, noise_in[k])
                states[k].copy_(x)

        with torch.no_grad():
            replay = capture_graph(loop, self.device, warmup=lambda: step(x_T, ts[0], noise_in[0]))

        def run(img: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
            x_T.copy_(img)
            if noise is None:
                noise_in.normal_()
            else:
                noise_in.copy_(noise)
            with torch.no_grad():
                replay()
            return states

        return run

    @torch.no_grad()
    def ddim_sample_loop(self, model: nn.Module, shape: tuple[int, ...], steps: int, eta: float = 0.0,
                         img: ArrayLike | None = None, noise: ArrayLike | None = None,
                         progress: bool = False, compiled: bool = False) -> list[np.ndarray]:
        """DDIM (Song et al. 2021) over ``steps`` evenly spaced timesteps; eta=0 is deterministic.
        ``compiled=True`` runs every step through ``compiled("ddim", model)`` (eager here, see ``compiled``)."""
        plan = ddim_plan(self.config, steps, eta)
        coef = {name: self.tensor(getattr(plan, name)) for name in DDIM_COEFS}
        check_model(model)
        shape = tuple(shape)
        img = torch.randn(shape, device=self.device) if img is None else self.tensor(img, state_dtype(model))
        check_same_shape("img", img.shape, shape)
        if noise is not None:
            noise = self.tensor(noise, img.dtype)
            check_noise_sequence(noise.shape, plan.steps, shape)
        states = []
        step = self.compiled("ddim", model) if compiled else None
        for k in tqdm(range(plan.steps), desc="DDIM", disable=not progress):
            t = torch.full((shape[0],), int(plan.t[k]), dtype=torch.int32, device=self.device)
            step_noise = None
            if plan.sigma[k] > 0:
                step_noise = torch.randn_like(img) if noise is None else noise[k]
            if step is not None:
                zeros = torch.zeros_like(img) if step_noise is None else step_noise
                img = step(img, t, *(coef[n][k] for n in DDIM_COEFS), zeros)
            else:
                img = self.ddim_step(model, img, t, *(coef[n][k] for n in DDIM_COEFS), step_noise)
            states.append(img)
        return list(torch.stack(states).cpu().numpy())
