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

from ddpm_core.distributed import World
from ddpm_torch import distributed
from ddpm_torch.diffusion import ArrayLike, GaussianDiffusion


class MindSporeAdam(torch.optim.Optimizer):
    """Adam with MindSpore's update rule; ``lr`` is a float or a per-global-step list (the last entry is
    reused past its end)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float | Sequence[float] = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.lr_list = np.asarray([lr] if np.isscalar(lr) else list(lr), dtype=np.float32)
        if self.lr_list.size == 0 or not np.all(np.isfinite(self.lr_list)) or np.any(self.lr_list < 0):
            raise ValueError("lr must be a non-negative float or a non-empty list of them")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0) or eps <= 0:
            raise ValueError(f"need 0 <= betas < 1 and eps > 0, got betas={betas}, eps={eps}")
        super().__init__(params, dict(betas=betas, eps=eps))
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
        lr = torch.tensor(self.current_lr(), dtype=torch.float32)
        self.global_step += 1
        for group in self.param_groups:
            beta1, beta2 = (torch.tensor(b, dtype=torch.float32) for b in group["betas"])
            self.beta1_power = self.beta1_power * beta1
            self.beta2_power = self.beta2_power * beta2
            lr_t = lr * torch.sqrt(1 - self.beta2_power) / (1 - self.beta1_power)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                m, v, g = state["m"], state["v"], p.grad
                m.add_((g - m) * (1 - beta1.to(p.device)))
                v.add_((g * g - v) * (1 - beta2.to(p.device)))
                p.sub_(lr_t.to(p.device) * m / (torch.sqrt(v) + group["eps"]))
        return loss


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
                    loss_type: str | None = None, channels_last: bool = True, world: World = World(),
                    loss_scale: float = 1.0) -> Callable[[ArrayLike, ArrayLike, ArrayLike], torch.Tensor]:
    """``step(x_start, t, noise) -> loss``: forward, loss, backward and one optimizer update.

    In a data-parallel job (``world``, see ddpm_torch/distributed.py) each rank passes its slice of the global
    batch: ``DistributedDataParallel`` averages the gradients over the ranks in the backward pass, every rank
    applies the same update, and the loss returned is the ranks' mean (the global batch's loss).

    ``channels_last=True`` first moves ``model``'s weights to channels-last (NHWC strides, the same values, the same
    Parameter objects, so the optimizer is unaffected): every convolution and its gradients then run oneDNN's
    NHWC kernels, measured faster than NCHW for this U-Net on CPU (docs/performance.md). ``channels_last=False``:
    NCHW, as built. The two agree to float32 rounding (tests/parity/test_bench.py).

    ``loss_scale`` (a fixed loss scale, for float16 activations under autocast): the backward pass runs on
    loss x scale, the gradients are divided by it, and a step whose gradients are not all finite is skipped
    (as MindSpore's loss-scaled training cells do); 1 (the default) changes nothing."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
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
