"""Where the PyTorch twin runs and in which numerics: the device a command asked for, checked before anything
is written; the mixed-precision policy of ``--precision``; the deterministic mode. Mirrors ddpm_ms/device.py.

Rules it keeps:
  * ``resolve_device`` is the one place a ``--device`` becomes a device: a bad name is a ``UserError`` (exit 2),
    a CUDA device that is not there is ``EnvironmentRefused`` (exit 3), and nothing falls back to the CPU.
    Under ``torchrun``, ``cuda`` is each worker's own GPU (``cuda:LOCAL_RANK``), selected with
    ``torch.cuda.set_device``; on CUDA, TF32 is switched off (float32 means float32: TF32 rounds
    convolutions 500x worse, docs/training.md);
  * ``check_precision`` refuses (exit 3) a precision the device cannot run: every one on the CPU
    (``torch.autocast("cpu")`` runs float16 and bfloat16), bfloat16 on CUDA only where the GPU has it natively
    (``torch.cuda.is_bf16_supported(including_emulation=False)``: compute capability 8.0 or newer);
  * ``use_deterministic`` switches PyTorch's deterministic algorithms and cuDNN's deterministic kernels on or
    off; ``CUBLAS_WORKSPACE_CONFIG`` (ddpm_core.runtime.environment) is set first, before any cuBLAS handle exists;
  * ``on_cpu`` copies a checkpoint's tensors to the CPU, so no saved file names a device.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from ddpm_core.errors import EnvironmentRefused, UserError
from ddpm_core.runtime.amp import Policy, train_policy
from ddpm_core.runtime.devices import parse_device
from ddpm_core.runtime.distributed import launched_by
from ddpm_core.runtime.environment import CUBLAS_VARIABLE, pin_cublas_workspace


def resolve_device(name: str | None, option: str = "--device") -> str:
    """``--device`` (or the harness's ``option``) checked and selected: ``"cpu"`` or ``"cuda:N"`` (None: the CPU)."""
    device = parse_device("torch", name, option)
    if device == "cpu":
        return device
    if not torch.cuda.is_available():
        raise EnvironmentRefused(f"{option} {name}: no CUDA device is available to PyTorch {torch.__version__} "
                                 f"(torch.cuda.is_available() is False; CUDA build: {torch.version.cuda or 'no'})")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched_by() == "torchrun" else 1
    if device == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0")) if launched_by() == "torchrun" else 0
    elif local > 1:
        raise UserError(f"{option} {name} would put all {local} workers of this machine on one GPU; give {option} "
                        "cuda: each worker then takes the GPU of its local rank")
    else:
        index = int(device.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise EnvironmentRefused(f"{option} {name}: cuda:{index} requested, but only {count} CUDA device(s) are visible")
    torch.cuda.set_device(index)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return f"cuda:{index}"


def check_precision(device: str, precision: str) -> Policy:
    """The ``ddpm_torch.amp`` policy of ``--precision`` on ``device`` (``torch.autocast`` in bfloat16 or float16;
    fp32: none). ``EnvironmentRefused`` where the device cannot run it."""
    if precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise EnvironmentRefused(f"--precision bf16: {torch.cuda.get_device_name(device)} has no native bfloat16 "
                                 "(compute capability below 8.0); use --precision fp16 or fp32")
    return train_policy("torch", precision)


def use_deterministic(on: bool) -> dict[str, Any]:
    """PyTorch's deterministic algorithms and cuDNN's deterministic kernels on or off (cuDNN's autotuner off
    either way); what is now set."""
    if on:
        pin_cublas_workspace()
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = False
    return {"deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cublas_workspace_config": os.environ.get(CUBLAS_VARIABLE)}


def on_cpu(obj: Any) -> Any:
    """``obj`` (tensors inside dicts, lists and tuples) with every tensor copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj
