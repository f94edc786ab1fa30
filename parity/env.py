"""Device setup that makes a fair float32 comparison possible, and the environment fingerprint.

Rules:
  * A requested device that is not there raises ``EnvironmentRefused`` (exit code 3); nothing falls
    back to another device silently.
  * On CUDA, TF32 is switched off for the run (matmul and cuDNN, float32 matmul precision
    "highest"); on a MindSpore GPU, TF32 is switched off too; on Ascend, the precision mode is
    "must_keep_origin_dtype" and HF32 is off. What was set is recorded in the fingerprint.
  * Each framework is imported only when its setup function is called, so ``record``/``compare``
    import only the framework they run; a missing one is ``ddpm_core.frameworks.MissingFramework``.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

from ddpm_core.environment import ISA_VARIABLE, THREADS_VARIABLE, pin_isa
from ddpm_core.errors import EnvironmentRefused
from ddpm_core.frameworks import require

MS_DEVICES = ("CPU", "GPU", "Ascend")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setup_torch(device: str = "cpu", threads: int | None = None) -> dict[str, Any]:
    """Check ``device`` exists, switch TF32 off, set the thread count; return what was set."""
    torch = require("torch")

    if not (device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"--torch-device must be cpu, cuda or cuda:N, got {device!r}")
    info: dict[str, Any] = {"device": device}
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EnvironmentRefused(f"torch device {device} requested, but torch.cuda.is_available() is False "
                                     f"(torch {torch.__version__})")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise EnvironmentRefused(f"torch device {device} requested, but only {torch.cuda.device_count()} "
                                     "CUDA device(s) are visible")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        info["device_name"] = torch.cuda.get_device_name(index)
    torch.set_float32_matmul_precision("highest")
    if threads:
        torch.set_num_threads(threads)
    info.update({
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    })
    return info


def setup_mindspore(device: str = "CPU", threads: int | None = None) -> dict[str, Any]:
    """Check ``device`` exists, keep float32 on accelerators, set the thread count; return what was set."""
    pin_isa()  # before MindSpore's first CPU kernel (as ddpm_ms/__init__ does)
    ms = require("mindspore")
    from mindspore import device_context as dc

    if device not in MS_DEVICES:
        raise ValueError(f"--ms-device must be one of {', '.join(MS_DEVICES)}, got {device!r}")
    module = {"CPU": dc.cpu, "GPU": dc.gpu, "Ascend": dc.ascend}[device]
    try:
        available = bool(module.is_available())
    except Exception:  # noqa: BLE001 - a missing backend library raises here
        available = False
    if not available:
        raise EnvironmentRefused(f"MindSpore device {device} requested, but it is not available in this "
                                 f"MindSpore {ms.__version__} installation")
    current = ms.get_context("device_target")
    if current != device:
        try:
            ms.set_device(device)
        except RuntimeError:  # the runtime already ran a kernel on another device in this process
            raise EnvironmentRefused(f"MindSpore already runs on {current} in this process; run the check in a "
                                     f"fresh process to use {device}") from None
    info: dict[str, Any] = {"device": device}
    if device == "GPU":
        dc.gpu.op_precision.matmul_allow_tf32(False)
        dc.gpu.op_precision.conv_allow_tf32(False)
        info.update({"tf32_matmul": False, "tf32_conv": False})
    if device == "Ascend":
        dc.ascend.op_precision.precision_mode("must_keep_origin_dtype")
        dc.ascend.op_precision.matmul_allow_hf32(False)
        dc.ascend.op_precision.conv_allow_hf32(False)
        info.update({"ascend_precision_mode": "must_keep_origin_dtype", "hf32_matmul": False, "hf32_conv": False})
    info["runtime_num_threads"] = ms.get_context("runtime_num_threads")
    if threads:
        try:  # settable once per process, before the first kernel; MindSpore offers no getter
            dc.cpu.op_tuning.threads_num(threads)
            info["op_threads"] = threads
        except RuntimeError as e:
            info["op_threads_note"] = f"{threads} requested, not applied: {e}"
    return info


def fingerprint(torch_info: dict | None, ms_info: dict | None, compiled: bool | None) -> dict[str, Any]:
    """Versions, devices, precision flags, thread counts and CPU: enough to reproduce a number."""
    import numpy as np

    fp: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        ISA_VARIABLE: os.environ.get(ISA_VARIABLE),
        THREADS_VARIABLE: os.environ.get(THREADS_VARIABLE),
    }
    if torch_info is not None:
        import torch

        fp["torch"] = torch.__version__
        fp["torch_cuda"] = torch.version.cuda
        fp["torch_setup"] = dict(torch_info)
    if ms_info is not None:
        import mindspore as ms

        fp["mindspore"] = ms.__version__
        fp["mindspore_setup"] = dict(ms_info)
        fp["mindspore_mode"] = ("PyNative, sampling steps compiled with ms.jit" if compiled
                                else "PyNative (op by op)")
    return fp


# ---------------------------------------------------------------- the versions the tolerances hold on
MEASURED_VERSIONS: dict[tuple[str, str], str] = {
    ("2.14.1", "2.10.0"): "the tolerance table was set from this pair (docs/harness.md)",
    ("2.14.1", "2.7.2"): "scripts/version_matrix.py, 2026-11-27: compare in both directions passed",
    ("2.13.0", "2.10.0"): "scripts/version_matrix.py, 2026-11-27: compare in both directions passed",
    ("2.13.0", "2.7.2"): "scripts/version_matrix.py, 2026-11-27: parity.check in one process and compare in both "
                         "directions passed",
    ("2.11.0", "2.10.0"): "2026-12-04: compare in both directions passed (torch 2.11.0+cu130 on the CPU, numpy 2.4.6), "
                          "as did the H200's CUDA goldens (docs/hosts.md)",
}
"""(PyTorch release, MindSpore release) -> how it was measured. A pair is listed only once the twins' errors
were measured on it and fit ``parity.engine.tolerances``; scripts/version_matrix.py measures others (docs/hosts.md)."""


def _release(version: str) -> str:
    """``2.13.0+cpu`` -> ``2.13.0``: a build's local label does not change its numerics."""
    return version.split("+", 1)[0]


def unmeasured_note(environment: dict[str, Any]) -> str | None:
    """One line for a report whose (PyTorch, MindSpore) pair is not in ``MEASURED_VERSIONS``, else None.

    ``environment`` is a report's fingerprint; for ``compare`` the other side's version comes from its golden file."""
    golden = environment.get("golden", {}).get("environment", {})
    torch_v, ms_v = environment.get("torch") or golden.get("torch"), environment.get("mindspore") or golden.get("mindspore")
    if not torch_v or not ms_v or (_release(torch_v), _release(ms_v)) in MEASURED_VERSIONS:
        return None
    known = "; ".join(f"PyTorch {t} / MindSpore {m}" for t, m in MEASURED_VERSIONS)
    return (f"note: the tolerances were not measured on PyTorch {torch_v} / MindSpore {ms_v} (measured on: {known}; "
            "docs/hosts.md): a failure may come from the versions, not from the port")

