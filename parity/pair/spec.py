"""A SPEC file: the Python file a user writes to describe a pair for ``python -m parity.pair SPEC.py``.

A SPEC defines ``torch_model()``, ``ms_model()`` and ``inputs()`` (a list; each item a numpy array or a tuple of
them, the model's positional arguments), and optionally ``name_map`` (a mapping, see ddpm_core.weights.mapping),
``devices`` (``{"torch": "cpu", "ms": "CPU"}``), ``loss(outputs)`` (a training step is then compared) and
``optimizers`` (``{"torch": make, "ms": make}``, ``make(parameters)`` returning that framework's optimizer) and
``tolerances`` (``{"pair_output": {"k": 20}}``: the machine-relative rules, parity.pair.judge.with_overrides);
``shims`` (context managers parity.pair enters around every call into the port: the user's stand-ins for ops
without a kernel, each listed in the report), ``arbiter(model64)`` (given the float64 copy of the PyTorch model,
returns the model to run as the arbiter: for code that casts to float32 whatever the model's dtype),
``step(model, x, t, noise)`` and ``loop`` (a stochastic loop, parity.pair.loop). Any entry but ``loss``,
``arbiter`` and ``step`` may be a function; it is called with the ``--set`` options it declares as parameters
(``def ms_model(maxpool="same")`` takes ``--set maxpool=pad``); ``step`` gets the options its parameters after
the first four declare, bound once.

``other`` (or ``--other``, which wins): ``"compile[:BACKEND]"``, ``"autocast[:DTYPE]"`` or both comma-separated
(``parity.pair.variants``): the other side is then the SPEC's ``torch_model()`` built a second time and run that way;
``ms_model()`` is not built (it need not exist) and ``name_map`` is not used (the names are the same).

Rules it keeps: the file is imported as a module of its own (never ``exec`` over our globals); every problem with
it (no such file, an exception while importing or calling it, a missing or wrong entry, an option no entry takes)
is ``UserError`` naming the SPEC and the entry (exit 2), except a package it imports that is not installed, which
is ``EnvironmentRefused`` (exit 3) naming the package.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

from ddpm_core.errors import EnvironmentRefused, UserError, type_and_first_sentence

REQUIRED = ("torch_model", "ms_model", "inputs")
OPTIONAL = ("name_map", "devices", "optimizers", "tolerances", "shims", "loop")
OTHER = "other"
"""The entry (and ``--other``) that makes the other side the PyTorch model compiled or under autocast."""
PORT_ONLY = ("shims",)
"""Entries of the port alone: not built when ``ms_model`` is skipped (a PyTorch host's ``--record``)."""
PASSED_AS_IS = ("loss", "arbiter", "step")
"""Entries that are functions of the run, not of the options: never called while loading."""


@dataclass
class Spec:
    """A loaded SPEC: the built models, the inputs, the name map and devices, and where it came from."""

    path: Path
    torch_model: Any
    ms_model: Any
    inputs: list[Any]
    name_map: Mapping[str, Any] = field(default_factory=dict)
    devices: Mapping[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    module: ModuleType | None = None
    loss: Any = None
    optimizers: Mapping[str, Any] = field(default_factory=dict)
    tolerances: Mapping[str, Any] = field(default_factory=dict)
    other: Mapping[str, str] = field(default_factory=dict)
    """TorchVariant's arguments when the other side is the PyTorch model compiled / under autocast, else empty"""
    shims: list[Any] = field(default_factory=list)
    arbiter: Any = None
    step: Any = None
    loop: Mapping[str, Any] = field(default_factory=dict)


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it is JSON (``3``, ``true``, ``[1, 2]``), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise UserError(f"--set {text!r}: expected KEY=VALUE with KEY a Python name")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _import(path: Path) -> ModuleType:
    if not path.is_file():
        raise UserError(f"SPEC {path}: no such file")
    name = f"parity_pair_spec_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise UserError(f"SPEC {path}: not a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module
    _guard(path, "import", lambda: loader_spec.loader.exec_module(module))  # type: ignore[union-attr]
    return module


def _guard(path: Path, what: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except ModuleNotFoundError as e:
        raise EnvironmentRefused(f"SPEC {path.name} needs the package {e.name!r}, which is not installed "
                                 f"(pip install 'ddpm-parity[pairs]' installs the examples' packages)") from None
    except (UserError, EnvironmentRefused):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's code is a bad SPEC, said in one line
        raise UserError(f"SPEC {path.name}: {what} failed: {type_and_first_sentence(e)}") from e


def _call(path: Path, name: str, entry: Any, options: Mapping[str, Any], used: set[str]) -> Any:
    if not callable(entry):
        return entry
    params = inspect.signature(entry).parameters
    kwargs = {k: v for k, v in options.items() if k in params}
    used.update(kwargs)
    return _guard(path, f"{name}()", lambda: entry(**kwargs))


def _other(path: Path, text: Any) -> dict[str, str]:
    from parity.pair.variants import parse_other

    if not isinstance(text, str):
        raise UserError(f"SPEC {path.name}: other must be a string such as 'compile' or 'autocast:bfloat16'")
    try:
        return parse_other(text)
    except ValueError as e:
        raise UserError(str(e)) from None


def load_spec(path: str | Path, options: Mapping[str, Any] | None = None, other: str | None = None,
              skip: tuple[str, ...] = ()) -> Spec:
    """Import the SPEC at ``path`` and build everything it describes (see the module docstring); ``other`` is
    ``--other`` (it replaces the SPEC's ``other`` entry); ``skip`` names model entries not to build (None in the
    Spec): a two-host run builds only its own framework's model (``parity.pair.golden``), and without ``ms_model``
    neither its ``shims``."""
    path = Path(path)
    options = dict(options or {})
    module = _import(path)
    used: set[str] = set()
    if other is None and hasattr(module, OTHER):
        other = _call(path, OTHER, getattr(module, OTHER), options, used)
    variant = _other(path, other) if other else {}
    if variant and skip:
        raise UserError(f"SPEC {path.name}: its other side is PyTorch ({other}); --record / --compare put a PyTorch "
                        "host and a MindSpore host apart")
    required = tuple(n for n in REQUIRED if not (variant and n == "ms_model") and n not in skip)
    missing = [n for n in required if not callable(getattr(module, n, None))]
    if missing:
        raise UserError(f"SPEC {path.name}: missing {', '.join(n + '()' for n in missing)} "
                        f"(a SPEC defines {', '.join(n + '()' for n in required)})")
    skip = (*skip, *PORT_ONLY) if "ms_model" in skip else skip
    for n in skip:  # their options still count as taken
        if callable(getattr(module, n, None)):
            used.update(k for k in options if k in inspect.signature(getattr(module, n)).parameters)
    built = {n: _call(path, n, getattr(module, n), options, used) for n in required}
    built.update({n: None for n in skip if n in REQUIRED})
    if variant:
        from parity.pair.variants import TorchVariant

        built["ms_model"] = TorchVariant(_call(path, "torch_model", module.torch_model, options, used), **variant)
    extra = {n: _call(path, n, getattr(module, n), options, used) for n in OPTIONAL
             if hasattr(module, n) and n not in skip}
    step = _bind_step(path, getattr(module, "step", None), options, used)
    unknown = sorted(set(options) - used)
    if unknown:
        raise UserError(f"SPEC {path.name}: no entry takes the option(s) {', '.join(unknown)}")
    if not isinstance(built["inputs"], (list, tuple)) or not built["inputs"]:
        raise UserError(f"SPEC {path.name}: inputs() must return a non-empty list of numpy arrays "
                        f"(or tuples of them), got {type(built['inputs']).__name__}")
    name_map = {} if variant else extra.get("name_map") or {}
    devices = extra.get("devices") or {}
    optimizers = extra.get("optimizers") or {}
    tolerances = extra.get("tolerances") or {}
    for n, v in (("name_map", name_map), ("devices", devices), ("optimizers", optimizers), ("tolerances", tolerances)):
        if not isinstance(v, Mapping):
            raise UserError(f"SPEC {path.name}: {n} must be a mapping, got {type(v).__name__}")
    loss, arbiter = getattr(module, "loss", None), getattr(module, "arbiter", None)
    if loss is not None and not callable(loss):
        raise UserError(f"SPEC {path.name}: loss must be a function of the model's outputs")
    if arbiter is not None and not callable(arbiter):
        raise UserError(f"SPEC {path.name}: arbiter must be a function of the float64 PyTorch model")
    shims = list(extra.get("shims") or [])
    if any(not (hasattr(s, "__enter__") and hasattr(s, "__exit__")) for s in shims):
        raise UserError(f"SPEC {path.name}: shims must be a list of context managers (each entered around every "
                        f"call into the port)")
    loop = extra.get("loop") or {}
    if not isinstance(loop, Mapping) or (step is None) != (not loop):
        raise UserError(f"SPEC {path.name}: a stochastic loop needs both step(model, x, t, noise) and loop "
                        f"(a mapping with 'timesteps')")
    return Spec(path, built["torch_model"], built["ms_model"], list(built["inputs"]), name_map, devices, options,
                module, loss, optimizers, tolerances, other=variant, shims=shims, arbiter=arbiter, step=step,
                loop=loop)


def _bind_step(path: Path, step: Any, options: Mapping[str, Any], used: set[str]) -> Any:
    """The SPEC's ``step(model, x, t, noise, ...)`` with the options its later parameters declare bound."""
    if step is None:
        return None
    if not callable(step) or len(inspect.signature(step).parameters) < 4:
        raise UserError(f"SPEC {path.name}: step must be a function step(model, x, t, noise)")
    later = list(inspect.signature(step).parameters)[4:]
    kwargs = {k: v for k, v in options.items() if k in later}
    used.update(kwargs)
    return functools.partial(step, **kwargs) if kwargs else step
