"""The tutorial's optimizer, the loss-and-gradient function and the training step; mirrors
ddpm_torch/optim.py.

``nn.Adam`` is MindSpore's own (eps added to the uncorrected sqrt(v), see ddpm_torch/optim.py);
its hyper-parameters are passed explicitly so a changed default cannot move the numbers.

The compiled training step (``compiled=True``, the default) is one ``ms.jit`` graph of forward, loss,
gradients and the ``nn.Adam`` update; ``compiled=False`` runs the same functions op by op (PyNative), as the
tutorial does. Both validate their inputs before any graph runs, and agree to float32 rounding
(tests/parity/test_bench.py); docs/performance.md has the measurements.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Iterator, Sequence

import mindspore as ms
from mindspore import Tensor, amp, nn, ops

from ddpm_core.config import check_same_shape
from ddpm_core.runtime.distributed import World
from ddpm_ms import distributed
from ddpm_ms.diffusion import ArrayLike, GaussianDiffusion

JIT_LEVEL = "O0"
"""``ms.jit`` level of the compiled training step: "O1" (operator fusion) measured no faster on CPU and
compiles longer (docs/performance.md)."""


FUSED_SPARSE_ADAM_NOTICE = "'FusedSparseAdam' is deprecated"
"""MindSpore 2.8+ logs "'FusedSparseAdam' is deprecated from version 2.8.0 ..." whenever ``nn.Adam`` builds
that sparse-gradient primitive, which a dense U-Net never runs: ``make_optimizer`` leaves that one line out."""


@contextlib.contextmanager
def without_notice(text: str) -> Iterator[None]:
    """MindSpore's log without the records that hold ``text`` while the block runs; every other line passes."""
    get_logger = getattr(ms.log, "_get_logger", None)  # MindSpore's own logger (not a public name)
    logger = get_logger() if get_logger else None
    if not isinstance(logger, logging.Logger):
        yield
        return

    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def make_optimizer(model: nn.Cell, lr: float | Sequence[float]) -> nn.Adam:
    """The tutorial's ``nn.Adam(unet_model.trainable_params(), learning_rate=lr)``, defaults explicit."""
    learning_rate = float(lr) if isinstance(lr, (int, float)) else [float(v) for v in lr]
    with without_notice(FUSED_SPARSE_ADAM_NOTICE):
        return nn.Adam(model.trainable_params(), learning_rate=learning_rate, beta1=0.9, beta2=0.999, eps=1e-8,
                       use_locking=False, use_nesterov=False, weight_decay=0.0)


def loss_and_grads(model: nn.Cell, diffusion: GaussianDiffusion, x_start: ArrayLike, t: ArrayLike,
                   noise: ArrayLike, loss_type: str | None = None,
                   loss_scale: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """The training loss and its gradient for every trainable parameter, by MindSpore parameter name. ``loss_scale``:
    the gradients are taken of loss x scale and divided by it (a fixed loss scale, for float16 activations under
    ``amp``; 1 changes nothing)."""
    x_start, noise = diffusion.tensor(x_start, ms.float32), diffusion.tensor(noise, ms.float32)
    t = diffusion.timesteps_tensor(t, x_start.shape[0])
    params = model.trainable_params()

    def forward(x, tt, n):
        return diffusion.p_losses(model, x, tt, n, loss_type)

    if loss_scale == 1.0:
        loss, grads = ms.value_and_grad(forward, None, params)(x_start, t, noise)
    else:
        (_, loss), grads = ms.value_and_grad(scaled(forward, loss_scale), None, params, has_aux=True)(x_start, t, noise)
        grads = tuple(g / loss_scale for g in grads)
    return loss, {p.name: g for p, g in zip(params, grads)}


def scaled(forward: Callable, loss_scale: float) -> Callable:
    """``forward`` returning (loss x ``loss_scale``, loss): its gradient is taken of the first only."""

    def run(*args):
        loss = forward(*args)
        return loss * loss_scale, loss

    return run


def make_train_step(model: nn.Cell, diffusion: GaussianDiffusion, optimizer: nn.Optimizer,
                    loss_type: str | None = None, compiled: bool = True, world: World = World(),
                    loss_scale: float = 1.0) -> Callable[[ArrayLike, ArrayLike, ArrayLike], Tensor]:
    """``step(x_start, t, noise) -> loss``: forward, loss, gradients and one optimizer update (the tutorial's
    ``train_step``).

    In a data-parallel job (``world``, see ddpm_ms/distributed.py) each rank passes its slice of the global
    batch: ``nn.DistributedGradReducer`` averages the gradients over the ranks before ``nn.Adam`` applies
    them, so every rank makes the same update, and the loss returned is the ranks' mean (the global batch's loss).

    ``compiled=True``: the four as one ``ms.jit`` graph, compiled on the first call and reused while the input
    shapes stay the same (compiling costs tens of seconds for the tutorial's U-Net on CPU, so a run of a few
    steps is quicker with ``compiled=False``). A parameter updated in place (``copy_``, ``assign_value``) is seen by
    the graph; one whose storage is replaced (``set_data``, ``load_param_into_net``, as when resuming) is not:
    MindSpore 2.10's graph would go on training the old storage, so such a change compiles a fresh graph.
    ``compiled=False``: op by op (PyNative). A ``model`` that is not an ``nn.Cell`` (e.g. a forward already wrapped
    in ``ms.jit``) always takes the op-by-op step.

    ``loss_scale`` (a fixed loss scale, for float16 activations under ``amp``): the gradients are taken of
    loss x scale and divided by it, and a step whose gradients are not all finite leaves the weights and
    ``nn.Adam`` untouched (as MindSpore's loss-scaled training cells do); 1 (the default) changes nothing."""

    def forward(x, tt, n):
        return diffusion.loss(model, x, tt, n, loss_type)

    unscaled = loss_scale == 1.0
    grad_fn = ms.value_and_grad(forward if unscaled else scaled(forward, loss_scale), None, optimizer.parameters,
                                has_aux=not unscaled)
    reducer = distributed.grad_reducer(optimizer.parameters, world)

    def train(x, tt, n):
        loss, grads = grad_fn(x, tt, n)
        if not unscaled:
            loss = loss[1]
            grads = tuple([g / loss_scale for g in grads])
        if reducer is not None:
            grads = reducer(grads)
        loss = distributed.mean(loss, world)
        if unscaled:
            return ops.depend(loss, optimizer(grads))
        if amp.all_finite(grads):
            loss = ops.depend(loss, optimizer(grads))
        return loss

    graphs: dict[str, Any] = {}

    def run(x: Tensor, tt: Tensor, n: Tensor) -> Tensor:
        if not (compiled and isinstance(model, nn.Cell)):
            return train(x, tt, n)
        storage = tuple(p.data_ptr() for p in optimizer.get_parameters())  # model weights and Adam's state
        if graphs.get("storage") != storage:
            graphs.update(storage=storage, graph=ms.jit(train, jit_level=JIT_LEVEL))
        return graphs["graph"](x, tt, n)

    def step(x_start: ArrayLike, t: ArrayLike, noise: ArrayLike) -> Tensor:
        model.set_train()
        x = diffusion.tensor(x_start, ms.float32)
        noise = diffusion.tensor(noise, ms.float32)
        check_same_shape("noise", noise.shape, x.shape)
        return run(x, diffusion.timesteps_tensor(t, x.shape[0]), noise)

    return step
