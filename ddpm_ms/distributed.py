"""Joining an ``msrun`` job and the collectives training needs; mirrors ddpm_torch/distributed.py.

``msrun --worker_num N --local_worker_num N ... python -m ddpm_ms.train ...`` starts a scheduler and N
workers (``MS_ROLE=MS_WORKER``); ``init`` joins them with ``mindspore.communication.init`` (the "mccl"
back end on CPU, HCCL on Ascend, NCCL on GPU) and sets ``ParallelMode.DATA_PARALLEL``; the training step
averages the gradients over the ranks with ``nn.DistributedGradReducer`` before ``nn.Adam`` applies them.
Outside a launcher everything here is a no-op on ``World()``.
"""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ddpm_core.runtime.distributed import World, launched_by

PEER_FAILURES: tuple[type[BaseException], ...] = ()
"""Errors to report as "another worker stopped": none. MindSpore raises a plain ``RuntimeError`` for a failed
collective and for everything else alike, so translating it would hide real errors; msrun stops the job and
names the failed worker itself (docs/distributed.md)."""


def init(device: str = "CPU") -> World:
    """This process's ``World``: joins the ``msrun`` job (once) when there is one of 2+ workers."""
    if launched_by() != "msrun":
        return World()
    from mindspore.communication import get_group_size, get_rank
    from mindspore.communication import init as init_collective

    ms.set_device(device)
    init_collective()
    world = World(get_rank(), get_group_size(), "msrun")
    if world.distributed:
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return world


def barrier(world: World) -> None:
    """Every rank waits here for all the others (an all-reduce of one number)."""
    if world.distributed:
        ops.AllReduce()(Tensor(np.ones(1, np.float32))).asnumpy()


def mean(value: Tensor, world: World) -> Tensor:
    """The mean of a tensor over the ranks (usable inside an ``ms.jit`` graph)."""
    if not world.distributed:
        return value
    return ops.AllReduce()(value) / world.size


def grad_reducer(parameters, world: World) -> nn.Cell | None:
    """``nn.DistributedGradReducer`` averaging the gradients of ``parameters`` over the ranks, or None alone."""
    if not world.distributed:
        return None
    return nn.DistributedGradReducer(parameters, mean=True, degree=world.size)


def shutdown(world: World) -> None:
    """Nothing to release: msrun's scheduler ends the job when every worker has exited."""
