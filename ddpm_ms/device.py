"""Where the MindSpore twin runs and in which numerics: the device a command asked for, checked before anything
is written; the mixed-precision policy of ``--precision``; the deterministic mode. Mirrors ddpm_torch/device.py.

Rules it keeps:
  * ``resolve_device`` is the one place a ``--device`` becomes MindSpore's device target
    (``mindspore.set_device``, process-wide, before the first kernel): a bad name is a ``UserError`` (exit 2),
    a target this MindSpore build cannot use is ``EnvironmentRefused`` (exit 3), and nothing falls back to the
    CPU. On GPU, TF32 is switched off; on Ascend, operators keep their float32 inputs
    (``must_keep_origin_dtype``, HF32 off): float32 means float32. Under ``msrun``, MindSpore gives each
    worker its card;
  * ``check_precision`` refuses (exit 3) a precision the device cannot run: bfloat16 everywhere but Ascend
    (``auto_mixed_precision(..., ms.bfloat16)`` fails at the first call on the CPU build, docs/porting.md);
  * ``use_deterministic`` sets ``mindspore.set_deterministic``, which MindSpore accepts once per process: a
    second, different request is refused.
"""
from __future__ import annotations

from typing import Any

import mindspore as ms
from mindspore import device_context

from ddpm_core.errors import EnvironmentRefused
from ddpm_core.runtime.amp import Policy, train_policy
from ddpm_core.runtime.devices import parse_device


def resolve_device(name: str | None, option: str = "--device") -> str:
    """``--device`` (or the harness's ``option``) checked and selected: "CPU", "GPU" or "Ascend" (None: the CPU)."""
    device = parse_device("ms", name, option)
    backend = {"CPU": device_context.cpu, "GPU": device_context.gpu, "Ascend": device_context.ascend}[device]
    try:
        available = bool(backend.is_available())
    except Exception:  # noqa: BLE001 - a backend library that is not installed raises here
        available = False
    if not available:
        raise EnvironmentRefused(f"{option} {name}: MindSpore {ms.__version__} cannot run on {device} here "
                                 f"(device_context.{device.lower()}.is_available() is False)")
    current = ms.get_context("device_target")
    if current != device:
        try:
            ms.set_device(device)
        except RuntimeError:  # the runtime already ran a kernel on another target in this process
            raise EnvironmentRefused(f"{option} {name}: MindSpore already runs on {current} in this process") from None
    if device == "GPU":
        device_context.gpu.op_precision.matmul_allow_tf32(False)
        device_context.gpu.op_precision.conv_allow_tf32(False)
    if device == "Ascend":
        device_context.ascend.op_precision.precision_mode("must_keep_origin_dtype")
        device_context.ascend.op_precision.matmul_allow_hf32(False)
        device_context.ascend.op_precision.conv_allow_hf32(False)
    return device


def check_precision(device: str, precision: str) -> Policy:
    """The ``ddpm_ms.amp`` policy of ``--precision`` on ``device`` (``auto_mixed_precision`` level "auto" in
    float16 or bfloat16; fp32: none). ``EnvironmentRefused`` where the device cannot run it."""
    if precision == "bf16" and device != "Ascend":
        raise EnvironmentRefused(f"--precision bf16: MindSpore {ms.__version__} has no bfloat16 mixed precision on "
                                 f"{device} (only on Ascend); use --precision fp16 or fp32")
    return train_policy("ms", precision)


def use_deterministic(on: bool) -> dict[str, Any]:
    """``mindspore.set_deterministic(on)`` unless it is already so; what is now set."""
    wanted = "ON" if on else "OFF"
    if ms.get_context("deterministic") != wanted:
        try:
            ms.set_deterministic(on)
        except RuntimeError:  # MindSpore accepts it once per process
            raise EnvironmentRefused(f"MindSpore's deterministic mode is already {ms.get_context('deterministic')} "
                                     f"in this process; run with --{'' if on else 'no-'}deterministic in a new "
                                     "process") from None
    return {"deterministic": ms.get_context("deterministic")}
