"""Adam as MindSpore applies it, the loss-and-gradient function and the training step; mirrors
ddpm_ms/optim.py.

MindSpore's ``nn.Adam`` (kernel ``Adam``) is not ``torch.optim.Adam``: it folds both bias
corrections into the learning rate and adds eps to the *uncorrected* sqrt(v) (TF style):
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t);  w -= lr_t * m / (sqrt(v) + eps)
whereas PyTorch divides by (sqrt(v / (1 - beta2^t)) + eps). Early in training, when v is tiny,
the two differ by far more than rounding. ``MindSporeAdam`` follows MindSpore's rule in float32,
with the learning rate given as one float or as MindSpore's per-global-step list.
"""
from __future__ import annotations

import copy
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ddpm_core.runtime.distributed import World
from ddpm_torch import distributed
from ddpm_torch.diffusion import ArrayLike, GaussianDiffusion, capture_graph

FOREACH: dict[str, bool] = {"cpu": False, "cuda": True}
"""``MindSporeAdam.update`` per device type, foreach or one parameter at a time (bit-identical either way). CPU:
one at a time (foreach measured no faster, 25 against 22 ms a step, docs/performance.md). CUDA: foreach, one
launch per op for all parameters instead of one per parameter and op (chosen, not yet measured apart)."""
CHANNELS_LAST: dict[str, bool] = {"cpu": True, "cuda": False}
"""``make_train_step``'s memory format per device type, from measurements (docs/performance.md): CPU channels-last
(oneDNN's NHWC depthwise kernels: 1.3x); CUDA NCHW (channels-last measured 0.90x at batch 16 on an H200; the
batch sweep of ``python -m parity.bench --device cuda --batches ...`` decides it at the filling batch)."""


class MindSporeAdam(torch.optim.Optimizer):
    """Adam with MindSpore's update rule; ``lr`` is a float or a per-global-step list (the last entry is
    reused past its end).

    A step is two parts: ``advance`` (the float32 scalars on the host: the global step, the beta powers, lr_t) and
    ``update`` (the element-wise rule on the moments and weights, on the parameters' device). ``foreach``: True
    runs ``update`` as ``torch._foreach_*`` ops (one launch per op for all parameters), False one parameter at a
    time, None (default) per device (``FOREACH``); the two are bit-identical (tests/twins/test_optim.py)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float] = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, foreach: bool | None = None):
        self.lr_list = np.asarray([lr] if np.isscalar(lr) else list(lr), dtype=np.float32)
        if self.lr_list.size == 0 or not np.all(np.isfinite(self.lr_list)) or np.any(self.lr_list < 0):
            raise ValueError("lr must be a non-negative float or a non-empty list of them")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0) or eps <= 0:
            raise ValueError(f"need 0 <= betas < 1 and eps > 0, got betas={betas}, eps={eps}")
        super().__init__(params, dict(betas=betas, eps=eps))
        self.foreach = foreach
        self.global_step = 0
        self.beta1_power = torch.ones((), dtype=torch.float32)
        self.beta2_power = torch.ones((), dtype=torch.float32)

    def current_lr(self) -> float:
        return float(self.lr_list[min(self.global_step, self.lr_list.size - 1)])

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["mindspore_adam"] = {"global_step": self.global_step, "beta1_power": self.beta1_power.clone(),
                                "beta2_power": self.beta2_power.clone()}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = copy.deepcopy(dict(state_dict))  # never alias another optimizer's moments
        extra = state_dict.pop("mindspore_adam")
        super().load_state_dict(state_dict)
        self.global_step = int(extra["global_step"])
        self.beta1_power = extra["beta1_power"].to(torch.float32).clone()
        self.beta2_power = extra["beta2_power"].to(torch.float32).clone()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = closure() if closure is not None else None
        for group, lr_t in zip(self.param_groups, self.advance()):
            self.update(group, lr_t)
        return loss

    @staticmethod
    def betas(group: dict) -> tuple[np.float32, np.float32]:
        """``group``'s beta1 and beta2 in float32, as ``nn.Adam`` holds them (numpy scalars: no torch op, so
        ``update`` runs no host-side tensor op inside a CUDA graph's capture)."""
        beta1, beta2 = group["betas"]
        return np.float32(beta1), np.float32(beta2)

    def advance(self) -> list[float]:
        """One step of the scalar schedule, in float32 on the host as ``nn.Adam`` computes it: for each parameter
        group lr_t = lr[global_step] * sqrt(1 - beta2^t) / (1 - beta1^t), as a Python float holding the float32
        value exactly; the global step and the beta powers move on."""
        lr = torch.tensor(self.current_lr(), dtype=torch.float32)
        self.global_step += 1
        out = []
        for group in self.param_groups:
            beta1, beta2 = (torch.tensor(b) for b in self.betas(group))
            self.beta1_power = self.beta1_power * beta1
            self.beta2_power = self.beta2_power * beta2
            out.append(float(lr * torch.sqrt(1 - self.beta2_power) / (1 - self.beta1_power)))
        return out

    def moments(self, params: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first and second moments of ``params`` (zeros, created on first use)."""
        for p in params:
            if not self.state[p]:
                self.state[p]["m"] = torch.zeros_like(p)
                self.state[p]["v"] = torch.zeros_like(p)
        return [self.state[p]["m"] for p in params], [self.state[p]["v"] for p in params]

    @torch.no_grad()
    def update(self, group: dict, lr_t: float | torch.Tensor) -> None:
        """MindSpore's rule on the parameters of ``group`` that have a gradient, element by element in their dtype:
            m += (g - m)(1 - beta1);  v += (g^2 - v)(1 - beta2);  w -= lr_t m / (sqrt(v) + eps)
        ``lr_t`` may be a 0-d tensor on the parameters' device (the CUDA-graph step sets it before each replay)."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        ms, vs = self.moments(params)
        grads, eps = [p.grad for p in params], group["eps"]
        one_minus_beta1, one_minus_beta2 = (float(np.float32(1) - b) for b in self.betas(group))  # float32 values
        if self.foreach if self.foreach is not None else FOREACH.get(params[0].device.type, False):
            d = torch._foreach_sub(grads, ms)
            torch._foreach_mul_(d, one_minus_beta1)
            torch._foreach_add_(ms, d)
            d = torch._foreach_mul(grads, grads)
            torch._foreach_sub_(d, vs)
            torch._foreach_mul_(d, one_minus_beta2)
            torch._foreach_add_(vs, d)
            denominator = torch._foreach_sqrt(vs)
            torch._foreach_add_(denominator, eps)
            d = torch._foreach_mul(ms, lr_t)
            torch._foreach_div_(d, denominator)
            torch._foreach_sub_(params, d)
            return
        for p, g, m, v in zip(params, grads, ms, vs):
            m.add_((g - m) * one_minus_beta1)
            v.add_((g * g - v) * one_minus_beta2)
            p.sub_(lr_t * m / (torch.sqrt(v) + eps))


def make_optimizer(model: nn.Module, lr: float | Sequence[float], rule: str = "mindspore") -> torch.optim.Optimizer:
    """Adam over ``model``'s parameters with MindSpore's defaults (betas 0.9/0.999, eps 1e-8).
    ``rule="torch"`` gives ``torch.optim.Adam`` (a scalar lr) for comparison."""
    if rule == "mindspore":
        return MindSporeAdam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if rule == "torch":
        if not np.isscalar(lr):
            raise ValueError("rule='torch' takes a scalar learning rate")
        return torch.optim.Adam(model.parameters(), lr=float(lr), betas=(0.9, 0.999), eps=1e-8)
    raise ValueError(f"rule must be 'mindspore' or 'torch', got {rule!r}")


def loss_and_grads(model: nn.Module, diffusion: GaussianDiffusion, x_start: ArrayLike, t: ArrayLike,
                   noise: ArrayLike, loss_type: str | None = None,
                   loss_scale: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss and its gradient for every parameter, by PyTorch parameter name. ``loss_scale``: the
    backward pass runs on loss x scale and the gradients are divided by it (a fixed loss scale, for float16
    activations under autocast; 1 changes nothing)."""
    model.zero_grad(set_to_none=True)
    loss = diffusion.p_losses(model, x_start, t, noise, loss_type)
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    grads = {name: p.grad.detach() / loss_scale if loss_scale != 1.0 else p.grad.detach().clone()
             for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


def unscaled_finite(model: nn.Module, scaled_loss: torch.Tensor, loss_scale: float) -> bool:
    """Backward on ``scaled_loss``, every gradient divided by ``loss_scale``; whether all are finite."""
    scaled_loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    for g in grads:
        g.div_(loss_scale)
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def make_train_step(model: nn.Module, diffusion: GaussianDiffusion, optimizer: torch.optim.Optimizer,
                    loss_type: str | None = None, channels_last: bool | None = None, world: World = World(),
                    loss_scale: float = 1.0,
                    cuda_graph: bool = False) -> Callable[[ArrayLike, ArrayLike, ArrayLike], torch.Tensor]:
    """``step(x_start, t, noise) -> loss``: forward, loss, backward and one optimizer update.

    In a data-parallel job (``world``, see ddpm_torch/distributed.py) each rank passes its slice of the global
    batch: ``DistributedDataParallel`` averages the gradients over the ranks in the backward pass, every rank
    applies the same update, and the loss returned is the ranks' mean (the global batch's loss).

    ``channels_last=True`` first moves ``model``'s weights to channels-last (NHWC strides, the same values, the same
    Parameter objects, so the optimizer is unaffected): every convolution and its gradients then run NHWC kernels,
    measured faster than NCHW for this U-Net on CPU (docs/performance.md). ``channels_last=False``: NCHW, as built.
    None (default): per device type, ``CHANNELS_LAST``. The two agree to float32 rounding (tests/parity/test_bench.py).

    ``loss_scale`` (a fixed loss scale, for float16 activations under autocast): the backward pass runs on
    loss x scale, the gradients are divided by it, and a step whose gradients are not all finite is skipped
    (as MindSpore's loss-scaled training cells do); 1 (the default) changes nothing.

    ``cuda_graph=True``: the whole step recorded once as a CUDA graph and replayed (``graphed_train_step``); one
    process, ``loss_scale`` 1 and a ``MindSporeAdam`` only (``ValueError`` otherwise)."""
    device = next(model.parameters()).device
    if channels_last if channels_last is not None else CHANNELS_LAST.get(device.type, False):
        model.to(memory_format=torch.channels_last)
    if cuda_graph:
        if world.distributed or loss_scale != 1.0 or not isinstance(optimizer, MindSporeAdam):
            raise ValueError("cuda_graph=True needs one process (no data parallelism), loss_scale 1 and a "
                             "MindSporeAdam optimizer")
        return graphed_train_step(model, diffusion, optimizer, loss_type)
    forward = distributed.data_parallel(model, world)

    def step(x_start: ArrayLike, t: ArrayLike, noise: ArrayLike) -> torch.Tensor:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = diffusion.p_losses(forward, x_start, t, noise, loss_type)
        if loss_scale == 1.0:
            loss.backward()
            optimizer.step()
        elif unscaled_finite(model, loss * loss_scale, loss_scale):
            optimizer.step()
        return distributed.mean(loss.detach(), world)

    return step


def graphed_train_step(model: nn.Module, diffusion: GaussianDiffusion, optimizer: MindSporeAdam,
                       loss_type: str | None = None,
                       warmup_steps: int = 2) -> Callable[[ArrayLike, ArrayLike, ArrayLike], torch.Tensor]:
    """``step(x_start, t, noise) -> loss`` with forward, loss, backward and the ``MindSporeAdam`` update recorded as
    one CUDA graph (``diffusion.capture_graph``) per input shape, and replayed per call: one launch a step.

    Rules it keeps:
      * the arithmetic of ``make_train_step``'s eager step: the same ``diffusion.loss`` and ``MindSporeAdam.update``
        on the same tensors; only how the kernels are launched changes;
      * inputs are checked as ``p_losses`` checks them (``diffusion.checked``), then copied into static buffers;
      * the host computes each step's scalars (``MindSporeAdam.advance``: ``global_step``, the beta powers and
        ``state_dict`` stay what eager training gives) and writes lr_t into a device scalar the graph reads;
      * capturing needs ``warmup_steps`` real steps first; they are undone (weights and moments restored, also
        when capture fails), so every call trains exactly one step. Capture happens on the first call with a new
        input shape; each shape keeps its own graph (and its memory);
      * the loss returned is a fresh tensor; the moments live in the optimizer's state as always.
    On a device without CUDA graphs the same static-buffer step runs without a graph (what the CPU tests run).
    A model replaced in storage after capture (``.to()``, ``load_state_dict`` of the optimizer) needs a new step;
    in-place changes (``load_state_dict`` of the model, ``copy_``) are seen."""
    device = next(model.parameters()).device
    params = [p for group in optimizer.param_groups for p in group["params"]]
    lr_ts = [torch.zeros((), dtype=torch.float32, device=device) for _ in optimizer.param_groups]
    graphs: dict[tuple, tuple[Callable[[], None], tuple[torch.Tensor, ...], dict]] = {}

    def build(inputs: tuple[torch.Tensor, ...]) -> tuple[Callable[[], None], tuple[torch.Tensor, ...], dict]:
        static = tuple(torch.zeros(a.shape, dtype=a.dtype, device=device) for a in inputs)
        out: dict[str, torch.Tensor] = {}

        def run() -> None:
            optimizer.zero_grad(set_to_none=True)  # backward then writes fresh gradients, never accumulates
            loss = diffusion.loss(model, *static, loss_type)
            loss.backward()
            for group, lr_t in zip(optimizer.param_groups, lr_ts):
                optimizer.update(group, lr_t)
            out["loss"] = loss.detach()

        ms, vs = optimizer.moments(params)  # the graph updates these tensors in place
        saved = [a.detach().clone() for a in (*params, *ms, *vs)]
        try:
            replay = capture_graph(run, device, warmup_calls=warmup_steps)
        finally:
            with torch.no_grad():
                for a, b in zip((*params, *ms, *vs), saved):
                    a.copy_(b)
        return replay, static, out

    def step(x_start: ArrayLike, t: ArrayLike, noise: ArrayLike) -> torch.Tensor:
        inputs = diffusion.checked(x_start, t, noise)
        model.train()
        key = tuple((tuple(a.shape), a.dtype) for a in inputs)
        if key not in graphs:
            graphs[key] = build(inputs)
        replay, static, out = graphs[key]
        for buffer, value in zip(static, inputs):
            buffer.copy_(value)
        for buffer, value in zip(lr_ts, optimizer.advance()):
            buffer.fill_(value)
        replay()
        return out["loss"].clone()

    return step
