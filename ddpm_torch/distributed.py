"""Joining a ``torchrun`` job and the collectives training needs; mirrors ddpm_ms/distributed.py.

``torchrun --nproc_per_node N -m ddpm_torch.train ...`` starts N processes with ``RANK``/``WORLD_SIZE`` set;
``init`` joins them with ``torch.distributed`` (gloo on CPU, nccl on CUDA) and the training step wraps the
model in ``DistributedDataParallel``, which averages the gradients over the ranks during the backward pass.
Outside a launcher everything here is a no-op on ``World()``.
"""
from __future__ import annotations

import datetime
import warnings

import torch
import torch.distributed as dist
from torch import nn

from ddpm_core.runtime.distributed import World, launched_by, timeout_s

PEER_FAILURES: tuple[type[BaseException], ...] = (dist.DistBackendError, dist.DistNetworkError)
"""What a collective raises here when another rank has died or stopped answering."""


def init(device: str = "cpu") -> World:
    """This process's ``World``: joins the ``torchrun`` job (once) when there is one of 2+ processes."""
    if launched_by() != "torchrun":
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s()))
    world = World(dist.get_rank(), dist.get_world_size(), "torchrun")
    if not world.distributed:
        dist.destroy_process_group()
    return world


def barrier(world: World) -> None:
    """Every rank waits here for all the others."""
    if world.distributed:
        dist.barrier()


def mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a tensor over the ranks (a new tensor; ``value`` itself outside a job)."""
    if not world.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world.size


def data_parallel(model: nn.Module, world: World) -> nn.Module:
    """``DistributedDataParallel(model)`` in a job (rank 0's weights are broadcast to all), else ``model``."""
    if not world.distributed:
        return model
    device = next(model.parameters()).device
    # A channels-last 1x1 kernel's gradient may come back with contiguous strides (both describe the same
    # memory order); DDP then copies it into its bucket and warns about the speed, once per such weight.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
