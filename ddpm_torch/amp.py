"""Mixed precision for the PyTorch twin: a model put under a named policy, and the dtypes it runs in;
mirrors ddpm_ms/amp.py.

``apply_policy(model, Policy("torch", "autocast", "float16"))`` makes every later ``model(x, t)`` run under
``torch.autocast(device, dtype)`` and return float32 (as MindSpore's O2/O3 do with ``_OutputTo32``); the
parameters stay float32 (autocast's master weights), so names, state and optimizers are unchanged.
``observed_dtypes`` records, with forward hooks, the dtype every module call receives and returns.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_core.runtime.amp import DtypeRecord, Policy

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    """"float16", "float32", "bfloat16", ... for a torch dtype."""
    return str(dtype).replace("torch.", "")


def apply_policy(model: nn.Module, policy: Policy) -> nn.Module:
    """``model`` itself, its forward now run under ``policy`` with a float32 output. Idempotent per model:
    applying a second policy replaces the first."""
    forward = type(model).forward.__get__(model)
    if policy.full:
        model.__dict__.pop("forward", None)
        return model
    device = next(model.parameters()).device.type

    @functools.wraps(forward)
    def under_policy(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device, dtype=DTYPES[policy.dtype]):
            out = forward(*args, **kwargs)
        return out.float()

    model.forward = under_policy
    model.precision_policy = policy
    return model


def backbone(model: nn.Module) -> nn.Module:
    """The U-Net whose modules carry the structural paths (here ``model`` itself: the policy wraps no module)."""
    return model


def observed_dtypes(model: nn.Module, x: np.ndarray, t: np.ndarray) -> list[DtypeRecord]:
    """Every module call of ``model(x, t)`` (no gradient), in the order calls finish, with its dtypes."""
    net = backbone(model)
    names = {id(m): n for n, m in net.named_modules()}
    records: list[DtypeRecord] = []

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        ins = tuple(dtype_name(a.dtype) for a in args if isinstance(a, torch.Tensor) and a.is_floating_point())
        records.append(DtypeRecord(names[id(module)], type(module).__name__, ins, dtype_name(output.dtype)))

    handles = [m.register_forward_hook(hook) for m in net.modules()]
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.array(x)).to(device), torch.from_numpy(np.array(t)).to(device))
    finally:
        for h in handles:
            h.remove()
    return records
