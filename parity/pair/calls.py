"""The call tree of one forward pass, recorded by hooks: every module call's inputs, outputs and parent call.

Rules it keeps (framework-free; each side registers ``pre`` and ``post`` as its framework's forward pre-hook and
forward hook and passes its own ``to_numpy``):
  * inputs are copied when the call starts and outputs when it ends, so an in-place op after the call (a ReLU with
    ``inplace=True``, ``out += identity``) cannot change what was recorded;
  * a module called several times gets call numbers 0, 1, ... and the key ``path#k`` (``path`` for call 0);
  * each call knows the call it ran inside (``parent``), so the tree is the real nesting of calls, not of names;
  * ``active`` is the innermost module running, so a failure inside a forward pass can name its module (outputs
    are copied before the call leaves the stack, so an asynchronous framework's error surfaces in its module);
  * an exception the user's code raises (a model's module, the SPEC's step, loss, optimizer or arbiter) becomes
    ``UserCodeError`` naming where it ran (``user_code``), the original kept as its cause.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from ddpm_core.errors import EnvironmentRefused, UserError, type_and_first_sentence


class UserCodeError(UserError):
    """An exception raised in the user's code during a pair run, named by where it ran (exit 2, one line); the
    original exception is its ``__cause__`` (``python -m parity.pair --traceback`` prints it)."""


@contextlib.contextmanager
def user_code(where: Callable[[], str]) -> Iterator[None]:
    """Run the user's code: an exception it raises (not ours: ``UserError``, ``EnvironmentRefused``) becomes
    ``UserCodeError`` with ``where()``, asked when it failed, in front of its type and first sentence."""
    try:
        yield
    except (UserError, EnvironmentRefused):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the user's code, named where it happened
        raise UserCodeError(f"{where()}: {type_and_first_sentence(e)}") from e


def module_text(framework: str, path: str | None, kinds: Mapping[str, str]) -> str:
    """A module for a message: ``MindSpore cell `block.fc1` (Dense)``, or the model itself."""
    noun = "cell" if framework == "MindSpore" else "module"
    if path is None:
        return f"the {framework} model"
    return f"{framework} {noun} `{path or '(root)'}` ({kinds.get(path, '?')})"


def flatten(value: Any, to_numpy: Callable[[Any], np.ndarray]) -> tuple:
    """A module's arguments or output as a flat tuple of numpy arrays, in order: tuples, lists and mappings (a
    model output object such as diffusers' ``BaseOutput``) are opened; None, numbers, strings and objects that are
    not tensors (``to_numpy`` raises AttributeError or TypeError) become None, so positions still line up."""
    if isinstance(value, (tuple, list)):
        return tuple(x for v in value for x in flatten(v, to_numpy))
    if isinstance(value, Mapping):
        return flatten(list(value.values()), to_numpy)
    if value is None or isinstance(value, (bool, int, float, str)):
        return (None,)
    try:
        return (to_numpy(value),)
    except (AttributeError, TypeError):
        return (None,)


@dataclass
class Call:
    """One call of one module (numpy copies only)."""

    path: str
    index: int
    kind: str
    parent: str | None
    order: int
    inputs: tuple = ()
    outputs: tuple = ()
    finished: int = -1
    """when the call ended, counted over the pass (data-flow order: a leaf before the block around it)"""

    @property
    def key(self) -> str:
        return self.path if self.index == 0 else f"{self.path}#{self.index}"


def call_key(path: str, index: int) -> str:
    return path if index == 0 else f"{path}#{index}"


@dataclass
class CallTree:
    """Calls in the order they started; ``children(key)`` in the same order."""

    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by = {c.key: c for c in self.calls}

    def get(self, key: str) -> Call | None:
        return self._by.get(key)

    def children(self, key: str) -> list[Call]:
        return [c for c in self.calls if c.parent == key]

    def root(self) -> Call | None:
        return next((c for c in self.calls if c.parent is None), None)


class CallRecorder:
    """Builds a ``CallTree`` from a framework's pre- and post-forward hooks."""

    def __init__(self, names: Mapping[int, str], kinds: Mapping[int, str], to_numpy: Callable[[Any], np.ndarray]):
        self.names, self.kinds, self.to_numpy = names, kinds, to_numpy
        self._counts: dict[str, int] = {}
        self._stack: list[Call] = []
        self._calls: list[Call] = []
        self._finished = 0

    def pre(self, module: Any, args: Any) -> None:
        path = self.names[id(module)]
        k = self._counts[path] = self._counts.get(path, -1) + 1
        parent = self._stack[-1].key if self._stack else None
        call = Call(path, k, self.kinds[id(module)], parent, len(self._calls), flatten(args, self.to_numpy))
        self._calls.append(call)
        self._stack.append(call)

    def post(self, module: Any, args: Any, output: Any) -> None:
        outputs = flatten(output, self.to_numpy)  # first: a framework that runs ops asynchronously fails here
        call = self._stack.pop()
        call.outputs, call.finished = outputs, self._finished
        self._finished += 1

    def active(self) -> str | None:
        """The innermost module path running now (None outside any)."""
        return self._stack[-1].path if self._stack else None

    def tree(self) -> CallTree:
        return CallTree(list(self._calls))
