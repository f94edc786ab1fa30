"""The tutorial's optimizer, the loss-and-gradient function and the training step; mirrors
ddpm_torch/optim.py.

``nn.Adam`` is MindSpore's own (eps added to the uncorrected sqrt(v), see ddpm_torch/optim.py);
its hyper-parameters are passed explicitly so a changed default cannot move the numbers.
"""
from __future__ import annotations

from typing import Callable, Sequence

import mindspore as ms
from mindspore import Tensor, nn

from ddpm_ms.diffusion import ArrayLike, GaussianDiffusion


def make_optimizer(model: nn.Cell, lr: float | Sequence[float]) -> nn.Adam:
    """The tutorial's ``nn.Adam(unet_model.trainable_params(), learning_rate=lr)``, defaults explicit."""
    learning_rate = float(lr) if isinstance(lr, (int, float)) else [float(v) for v in lr]
    return nn.Adam(model.trainable_params(), learning_rate=learning_rate, beta1=0.9, beta2=0.999, eps=1e-8,
                   use_locking=False, use_nesterov=False, weight_decay=0.0)


def loss_and_grads(model: nn.Cell, diffusion: GaussianDiffusion, x_start: ArrayLike, t: ArrayLike,
                   noise: ArrayLike, loss_type: str | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss and its gradient for every trainable parameter, by MindSpore parameter name."""
    x_start, noise = diffusion.tensor(x_start, ms.float32), diffusion.tensor(noise, ms.float32)
    t = diffusion.timesteps_tensor(t, x_start.shape[0])
    params = model.trainable_params()

    def forward(x, tt, n):
        return diffusion.p_losses(model, x, tt, n, loss_type)

    loss, grads = ms.value_and_grad(forward, None, params)(x_start, t, noise)
    return loss, {p.name: g for p, g in zip(params, grads)}


def make_train_step(model: nn.Cell, diffusion: GaussianDiffusion, optimizer: nn.Optimizer,
                    loss_type: str | None = None) -> Callable[[ArrayLike, ArrayLike, ArrayLike], Tensor]:
    """``step(x_start, t, noise) -> loss``: forward, loss, gradients and one optimizer update (the tutorial's
    ``train_step``)."""

    def forward(x, tt, n):
        return diffusion.p_losses(model, x, tt, n, loss_type)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=False)

    def step(x_start: ArrayLike, t: ArrayLike, noise: ArrayLike) -> Tensor:
        model.set_train()
        x = diffusion.tensor(x_start, ms.float32)
        loss, grads = grad_fn(x, diffusion.timesteps_tensor(t, x.shape[0]), diffusion.tensor(noise, ms.float32))
        optimizer(grads)
        return loss

    return step
