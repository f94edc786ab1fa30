"""Which frameworks this test process can import, and how a test says which ones it needs.

On a host with one framework (docs/hosts.md) the suite runs every test of that framework and skips the rest:

  * ``@needs("torch")``, ``@needs("torch", "mindspore")`` (a marker; also as ``pytestmark`` of a module, and
    on a ``pytest.param``), ``need(...)`` (a call: in a fixture, in a test, or at a module's top before its
    framework imports) or ``framework("torch.nn")`` (``need`` and import) skip a test whose frameworks this
    Python cannot import. The reason names each missing framework: ``-ra`` (pyproject's addopts) prints it
    in the summary. A test that imports a framework without saying so fails where it is missing.
  * Only an absent framework skips (``import torch`` raising ``ModuleNotFoundError`` for ``torch`` itself). One
    that is installed but fails to import (a broken build, a missing shared library) raises its own error in
    each test that needs it: a broken install must not test less without anyone noticing.
  * ``--require-frameworks torch,torchvision,mindspore`` or ``DDPM_PARITY_REQUIRE=...`` makes pytest stop at
    start-up, exit status 4, when a named framework cannot be imported (tests/conftest.py): CI installs both
    frameworks and sets it (.ci/run), so there a missing framework fails instead of skipping.

Framework names are top-level modules, as in ``ddpm_core.runtime.frameworks.EXTRAS``; ``ms`` stands for ``mindspore``.
"""
from __future__ import annotations

import functools
import importlib
from types import ModuleType

import pytest

from ddpm_core.runtime.frameworks import EXTRAS

REQUIRE_VARIABLE = "DDPM_PARITY_REQUIRE"
ALIASES = {"ms": "mindspore"}
TWINS = ("torch", "ms")
TWIN_FRAMEWORK = {"torch": "torch", "ms": "mindspore"}
"""a twin's name (``ddpm_<name>``) -> the framework its model, diffusion and adapter need."""
PROGRAM_FRAMEWORKS = {"torch": ("torch", "torchvision"), "ms": ("mindspore",)}
"""a twin's name -> what its programs (train, sample, noise_strip and their data loaders) need."""

needs = pytest.mark.needs
"""``@needs("torch", "mindspore")``: skip unless each of these frameworks imports here."""
PROGRAM_TWINS = [pytest.param(t, marks=needs(*PROGRAM_FRAMEWORKS[t]), id=t) for t in TWINS]
"""Each twin's name as a parameter of a test that runs its programs (``ddpm_<twin>.train``, ``.sample``, in this
process or a child): ``@pytest.mark.parametrize("twin", PROGRAM_TWINS)`` skips a twin whose programs cannot run."""


def canonical(framework: str) -> str:
    """``mindspore`` for ``ms``; a name ``EXTRAS`` does not know is a ``ValueError``."""
    name = ALIASES.get(framework, framework)
    if name not in EXTRAS:
        raise ValueError(f"unknown framework {framework!r}: expected one of {', '.join([*EXTRAS, *ALIASES])}")
    return name


@functools.lru_cache(maxsize=None)
def missing(framework: str) -> str | None:
    """Why ``framework`` cannot be imported here (``ModuleNotFoundError``'s message), or None when it imports.
    Any other import failure propagates."""
    name = canonical(framework)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return str(e)
    return None


def available(framework: str) -> bool:
    return missing(framework) is None


def skip_reason(frameworks: tuple[str, ...]) -> str | None:
    """The skip reason for a test that needs ``frameworks``, or None when all of them import."""
    gone = [canonical(f) for f in frameworks if missing(f)]
    if not gone:
        return None
    labels = " and ".join(EXTRAS[f][0] for f in gone)
    return (f"needs {labels}, which this Python cannot import ({'; '.join(missing(f) for f in gone)}): "
            f"a one-framework host (docs/hosts.md)")


def need(*frameworks: str) -> None:
    """Skip the calling test, fixture or module (at its top) unless each of ``frameworks`` imports."""
    reason = skip_reason(frameworks)
    if reason:  # reported at the test's own line (pytest's flag for skip markers), not this one
        raise pytest.skip.Exception(reason, allow_module_level=True, _use_item_location=True)


def framework(module: str) -> ModuleType:
    """``need`` the framework ``module`` belongs to (its top-level name), then import it:
    ``torch = framework("torch")``, ``msnn = framework("mindspore.nn")`` inside a test."""
    need(module.split(".")[0])
    return importlib.import_module(module)


def recording_twin() -> str:
    """The twin that records a golden file for a test whose subject is framework-neutral (the golden reader, the
    writers): ``torch`` (the quicker) where PyTorch imports, else ``ms``; skips the caller where neither does."""
    here = [twin for twin in TWINS if available(TWIN_FRAMEWORK[twin])]
    if not here:
        need(*TWIN_FRAMEWORK.values())  # skips, naming both
    return here[0]


def required(option: str) -> tuple[str, ...]:
    """The frameworks a ``--require-frameworks`` / ``DDPM_PARITY_REQUIRE`` value names."""
    return tuple(canonical(f.strip()) for f in option.split(",") if f.strip())
