"""Device and precision names, framework-neutral: what ``--device`` and ``--precision`` accept in each twin,
and the one line a misspelt or foreign name gets.

Rules:
  * each framework keeps its own names (docs/porting.md): PyTorch ``cpu``, ``cuda``, ``cuda:N``; MindSpore
    ``CPU``, ``GPU``, ``Ascend``. Case does not matter (``CUDA``, ``cpu``, ``ascend``); ``parse_device``
    returns the framework's spelling;
  * a name the framework does not know is a ``UserError`` (exit 2) saying what the framework calls it where
    the other framework's name was given (``gpu`` to PyTorch, ``cuda`` to MindSpore);
  * whether the named device is present, and whether it supports a precision, is each twin's ``device``
    module's question (``ddpm_torch/device.py``, ``ddpm_ms/device.py``): a missing one is
    ``EnvironmentRefused`` (exit 3). This module imports neither framework.
"""
from __future__ import annotations

from ddpm_core.errors import UserError

DEFAULT_DEVICE = {"torch": "cpu", "ms": "CPU"}
"""The device a command runs on without ``--device``: the CPU in both twins."""
MS_DEVICES = ("CPU", "GPU", "Ascend")
"""MindSpore's device targets (``mindspore.set_device``)."""
PRECISIONS = ("fp32", "bf16", "fp16")
"""``--precision``: float32, or mixed precision with bfloat16 / float16 activations (float32 weights)."""
DEVICE_HELP = ("PyTorch: cpu (default), cuda (under torchrun: each worker's local GPU) or cuda:N; MindSpore: CPU "
               "(default), GPU or Ascend; any case. A device that is not there stops the command at once (exit 3)")

_FOREIGN = {
    "torch": {"gpu": "PyTorch calls a CUDA GPU 'cuda' or 'cuda:N'",
              "ascend": "the PyTorch twin runs on cpu or cuda; Ascend is MindSpore's (python -m ddpm_ms...)",
              "npu": "the PyTorch twin runs on cpu or cuda; Ascend is MindSpore's (python -m ddpm_ms...)"},
    "ms": {"cuda": "MindSpore calls a CUDA GPU 'GPU'", "npu": "MindSpore calls an Ascend NPU 'Ascend'"},
}


def parse_device(framework: str, text: str | None, option: str = "--device") -> str:
    """``text`` (given as ``option``) in ``framework``'s spelling ("torch": ``cpu``, ``cuda``, ``cuda:N``; "ms": ``CPU``, ``GPU``,
    ``Ascend``); None gives ``DEFAULT_DEVICE``. ``UserError`` naming the accepted names otherwise."""
    if text is None:
        return DEFAULT_DEVICE[framework]
    name = text.strip().lower()
    if framework == "torch":
        if name in ("cpu", "cuda"):
            return name
        index = name[5:] if name.startswith("cuda:") else ""
        if index.isdigit():
            return f"cuda:{int(index)}"
        accepted = "cpu, cuda or cuda:N"
    elif framework == "ms":
        canonical = {d.lower(): d for d in MS_DEVICES}
        if name in canonical:
            return canonical[name]
        accepted = ", ".join(MS_DEVICES)
    else:
        raise ValueError(f"unknown framework {framework!r}: expected torch or ms")
    hint = _FOREIGN[framework].get(name.split(":")[0])
    raise UserError(f"{option} {text}: expected {accepted}" + (f" ({hint})" if hint else ""))
