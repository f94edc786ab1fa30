"""Which pip extra brings each framework, and the one message a missing framework gives.

A host may hold one framework only (PyTorch on a CUDA host, MindSpore on an Ascend host: docs/hosts.md):
``pip install ddpm-parity[torch]`` or ``ddpm-parity[mindspore]``; ``[all]`` brings both. Code that needs a
framework imports it through ``require``, so that a missing one is a ``MissingFramework`` whose message is
one line naming the extra to install; uncaught (``python -m ddpm_torch.train`` on a host without PyTorch
fails while importing the package, before any ``main`` runs) it is printed as ``error: <message>`` with
exit status 2 and no traceback. A framework that is installed but fails to import (a broken build) keeps
its own error and traceback: only an absent module is turned into this message.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from ddpm_core.errors import EXIT_USER_ERROR, MissingFramework

EXTRAS = {"torch": ("PyTorch", "torch"), "torchvision": ("torchvision", "torch"),
          "mindspore": ("MindSpore", "mindspore")}
"""top-level module -> (what it is called, the ddpm-parity extra that installs it)."""


def missing_message(module: str) -> str:
    """The one line for a missing ``module`` (a key of ``EXTRAS``)."""
    label, extra = EXTRAS[module]
    return (f"{label} is not installed in this Python ({sys.executable}): pip install 'ddpm-parity[{extra}]', "
            f"or your platform's own {label} build (docs/hosts.md)")


def _hook(exc_type: type, exc: BaseException, tb: object) -> None:
    if issubclass(exc_type, MissingFramework):
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    _previous_hook(exc_type, exc, tb)


_previous_hook = sys.excepthook


def framework_of(obj: object) -> str | None:
    """``"torch"`` or ``"mindspore"`` when ``obj``'s class comes from that framework (an ``nn.Module``, a
    ``Cell``, a tensor), judged by the modules its classes are defined in, so nothing is imported; else None."""
    for cls in type(obj).__mro__:
        top = cls.__module__.split(".")[0]
        if top in ("torch", "mindspore"):
            return top
    return None


def require(module: str) -> ModuleType:
    """Import ``module`` (``torch``, ``torchvision``, ``mindspore`` or a submodule of one) and return it;
    ``MissingFramework`` if its framework is not installed. Other import errors propagate unchanged."""
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != top or top not in EXTRAS:
            raise
        global _previous_hook
        if sys.excepthook is not _hook:
            _previous_hook, sys.excepthook = sys.excepthook, _hook
        raise MissingFramework(missing_message(top), name=top) from None
