"""Device setup that makes a fair float32 comparison possible, and the environment fingerprint.

Rules:
  * A requested device that is not there raises ``EnvironmentRefused`` (exit code 3); nothing falls
    back to another device silently.
  * On CUDA, TF32 is switched off for the run (matmul and cuDNN, float32 matmul precision
    "highest"); on a MindSpore GPU, TF32 is switched off too; on Ascend, the precision mode is
    "must_keep_origin_dtype" and HF32 is off. What was set is recorded in the fingerprint.
  * Each framework is imported only when its setup function is called, so ``record``/``compare``
    import only the framework they run; a missing one is ``ddpm_core.runtime.frameworks.MissingFramework``.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Any

from ddpm_core.runtime.environment import ISA_VARIABLE, THREADS_VARIABLE, pin_isa
from ddpm_core.runtime.frameworks import require


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
    """Check ``device`` exists and select it (``ddpm_torch.device.resolve_device``: TF32 off on CUDA), set
    float32 matmuls to full precision and the thread count; return what was set."""
    torch = require("torch")
    from ddpm_torch.device import resolve_device

    resolved = resolve_device(device, "--torch-device")
    info: dict[str, Any] = {"device": device}
    if resolved != "cpu":
        info["device_name"] = torch.cuda.get_device_name(resolved)
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
    """Check ``device`` exists and select it (``ddpm_ms.device.resolve_device``: float32 kept on accelerators),
    set the thread count; return what was set."""
    pin_isa()  # before MindSpore's first CPU kernel (as ddpm_ms/__init__ does)
    ms = require("mindspore")
    from mindspore import device_context as dc

    from ddpm_ms.device import resolve_device

    device = resolve_device(device, "--ms-device")
    info: dict[str, Any] = {"device": device}
    if device == "GPU":
        info.update({"tf32_matmul": False, "tf32_conv": False})
    if device == "Ascend":
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

