"""Makes the modules named in ``DDPM_PARITY_BLOCK`` (comma-separated top-level names, e.g. ``mindspore`` or
``torch,torchvision``) look uninstalled, in this process and in every Python process it starts.

Python imports ``sitecustomize`` at start-up from the first folder on ``sys.path`` that holds one; with this
folder on ``PYTHONPATH`` and the variable set (``tests/one_framework.py`` sets both), each Python started
with that environment, children and grandchildren included, behaves as on a host without those frameworks.
A meta-path finder placed first raises ``ModuleNotFoundError`` (``name`` the top-level module) for each
blocked module and its submodules: what ``import torch`` raises where PyTorch is not installed; and
``importlib.util.find_spec`` answers None for them, as it does there (libraries probe with it: mindone asks
whether torchvision is installed before it imports its optional loaders).
"""
from __future__ import annotations

import importlib.util
import os
import sys

VARIABLE = "DDPM_PARITY_BLOCK"


class Blocker:
    """``sys.meta_path`` finder that makes ``blocked`` modules look uninstalled."""

    def __init__(self, blocked: tuple[str, ...]):
        self.blocked = blocked

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        top = name.split(".")[0]
        if top in self.blocked:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)


def blocked_here() -> tuple[str, ...]:
    """The modules ``DDPM_PARITY_BLOCK`` names (empty when it is unset)."""
    return tuple(m for m in os.environ.get(VARIABLE, "").split(",") if m)


def probing(blocked: tuple[str, ...], find_spec=importlib.util.find_spec):  # type: ignore[no-untyped-def]
    """``importlib.util.find_spec`` answering None for ``blocked`` modules and their submodules (not installed)."""
    def probe(name: str, package: str | None = None) -> object:
        absolute = importlib.util.resolve_name(name, package) if name.startswith(".") else name
        return None if absolute.split(".")[0] in blocked else find_spec(name, package)
    return probe


if __name__ == "sitecustomize" and blocked_here():  # at start-up; not when a test imports the class
    sys.meta_path.insert(0, Blocker(blocked_here()))
    importlib.util.find_spec = probing(blocked_here())
