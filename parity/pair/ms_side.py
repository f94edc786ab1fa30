"""A MindSpore port behind numpy for a pair: its parameters, cell tree, recorded forward passes (PyNative, where
hooks fire), single-cell replay and layer settings in the pair vocabulary.

Rules it keeps: arrays cross as copies; floating inputs go in as float32 and integer inputs keep their dtype;
weights are loaded strictly and in place; the device is set up by ``parity.env.setup_mindspore`` (a missing one is
``EnvironmentRefused``, exit 3); an op without a kernel on it is ``KernelMissing`` (exit 3) naming the op and the
innermost cell that was running, never a silent fallback; the SPEC's shims (its stand-ins for such ops) are
entered around every call into MindSpore and left after it, so nothing outside a run sees them.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ddpm_core.runtime.environment import pin_isa

pin_isa()  # before MindSpore's first CPU kernel (as ddpm_ms/__init__ does)

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from ddpm_core.errors import EnvironmentRefused, UserError, WeightsError, type_and_first_sentence  # noqa: E402
from ddpm_core.weights.mapping import Tensor  # noqa: E402
from parity.env import setup_mindspore  # noqa: E402
from parity.pair.calls import CallRecorder, CallTree, UserCodeError, flatten, module_text  # noqa: E402
from parity.pair.modules import ModuleInfo  # noqa: E402
from parity.pair.settings import ACTIVATIONS  # noqa: E402
from parity.sides.ms_settings import ms_settings  # noqa: E402

_VOCABULARY = {"Dense": "Linear", "SequentialCell": "Sequential", "CellList": "ModuleList",
               "Conv2dTranspose": "ConvTranspose2d"}
"""MindSpore layer names -> PyTorch's, so paired layers have one kind."""
_ENGINE_KINDS = ("Conv2d", "ConvTranspose2d", "Linear", "GroupNorm", "GELU", "Softmax", "LogSoftmax", "LayerNorm")
_DROPOUTS = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d")
_NO_KERNEL = (re.compile(r"[Tt]he kernel (\w+) unregistered"), re.compile(r"[Uu]nsupported op \[?(\w+)\]?"),
              re.compile(r"(\w+) (?:is )?not (?:registered|supported) on (?:CPU|GPU|Ascend)"))
"""What MindSpore says when an op has no kernel on the device (2.10: ``The kernel Baddbmm unregistered.``)."""


class KernelMissing(EnvironmentRefused):
    """An op of the port has no kernel on the chosen MindSpore device."""


def kind_of(cell: nn.Cell) -> str:
    """The nearest MindSpore layer class of ``cell`` in PyTorch's words (``Dense`` -> ``Linear``), else its own
    class name."""
    for cls in type(cell).__mro__:
        if cls.__module__.startswith("mindspore.") and cls.__name__ not in ("Cell", "Cell_"):
            return _VOCABULARY.get(cls.__name__, cls.__name__)
        if cls.__module__.startswith("mindspore."):
            break
    return type(cell).__name__


def _two(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _pool(c: nn.Cell) -> dict[str, Any]:
    mode = str(getattr(c, "pad_mode", "VALID")).upper()
    if mode == "SAME":
        pad: Any = "same"
    elif mode == "PAD":
        h, w = _two(c.padding)[-2:]
        pad = (h, h, w, w)
    else:
        pad = (0, 0, 0, 0)
    s = {"kernel_size": _two(c.kernel_size)[-2:], "stride": _two(c.stride)[-2:], "padding": pad}
    return s if mode != "SAME" else {**s, "dilation": (1, 1)}


def read_settings(c: nn.Cell, kind: str) -> tuple[str, dict[str, Any]] | None:
    """(kind, settings) in the pair vocabulary (parity.pair.settings), or None for a cell without one."""
    if kind.startswith("BatchNorm"):
        return kind, {"eps": float(c.eps), "momentum": float(c.momentum)}  # MindSpore keeps 1 - its argument
    if kind in ("MaxPool2d", "AvgPool2d"):
        return kind, _pool(c)
    if kind == "Conv1d":
        mode = str(c.pad_mode).lower()
        pad = tuple(c.padding[-2:]) if mode == "pad" else (0, 0) if mode == "valid" else "same"
        return kind, {"in_channels": c.in_channels, "out_channels": c.out_channels, "kernel_size": c.kernel_size[-1],
                      "stride": c.stride[-1], "dilation": c.dilation[-1], "groups": c.group,
                      "bias": bool(c.has_bias), "padding": pad}
    if kind in _DROPOUTS:
        return kind, {"p": float(c.p)} if hasattr(c, "p") else {}
    if kind == "Embedding":
        return kind, {"padding_idx": c.padding_idx}
    if kind == "LeakyReLU":
        return kind, {"negative_slope": float(c.alpha)}
    if kind in _ENGINE_KINDS:
        try:
            return kind, ms_settings(c)[1]
        except AttributeError:  # a layer of the same name outside mindspore.nn (mint): no reader
            return None
    return (kind, {}) if kind in ACTIVATIONS else None


def _missing_kernel(e: BaseException) -> str | None:
    text = str(e)
    return next((m.group(1) for p in _NO_KERNEL for m in [p.search(text)] if m), None)


class MsPairSide:
    """One MindSpore model of a pair, run op by op (PyNative) on ``device`` ("CPU", "GPU", "Ascend")."""

    framework = "ms"
    label = "MindSpore"

    def __init__(self, model: nn.Cell, device: str = "CPU", shims: Sequence[Any] = ()):
        self.info = setup_mindspore(device)
        self.shims = list(shims)
        ms.set_context(mode=ms.PYNATIVE_MODE)
        self.device = device
        self.model = model
        self.model.set_train(False)
        self._cells = dict(model.cells_and_names())
        self._params = dict(model.parameters_and_names())

    # ------------------------------------------------------------ structure and weights
    def tensors(self) -> list[Tensor]:
        out = []
        for name, p in self._params.items():
            owner = name.rsplit(".", 1)[0] if "." in name else ""
            cell = self._cells.get(owner)
            out.append(Tensor(name, tuple(p.shape), owner, kind_of(cell) if cell is not None else "?"))
        return out

    def tree(self) -> list[ModuleInfo]:
        owned: dict[str, list[str]] = {}
        for t in self.tensors():
            owned.setdefault(t.owner, []).append(t.name)
        return [ModuleInfo(path, kind_of(c), tuple(f"{path}.{n}" if path else n for n in c.name_cells()),
                           tuple(owned.get(path, ()))) for path, c in self._cells.items()]

    def state(self) -> dict[str, np.ndarray]:
        return {n: np.array(p.asnumpy(), copy=True) for n, p in self._params.items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Strict and in place: every parameter present with its shape (``WeightsError`` naming each one)."""
        problems = [f"missing: {n}" for n in self._params if n not in state]
        problems += [f"unexpected: {n}" for n in state if n not in self._params]
        problems += [f"shape {n}: {tuple(p.shape)} vs {np.shape(state[n])}" for n, p in self._params.items()
                     if n in state and tuple(p.shape) != np.shape(state[n])]
        if problems:
            raise WeightsError(problems, "the converted weights do not fit the MindSpore model")
        for n, p in self._params.items():
            p.set_data(ms.Tensor(np.array(state[n], copy=True), p.dtype))

    # ------------------------------------------------------------ running
    @staticmethod
    def _tensor(a: np.ndarray | None) -> Any:
        if a is None:
            return None
        a = np.array(a, copy=True)
        return ms.Tensor(a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a)

    @staticmethod
    def numpy(x: Any) -> np.ndarray:
        return np.array(x.asnumpy(), copy=True)

    def _place(self, rec: CallRecorder | None, where: str) -> tuple[str, str]:
        """Where a failure happened, for a kernel message and for a user-code one: the innermost cell running (a
        forward pass), else ``where`` (a cell path, or words)."""
        cell = (rec.active() if rec is not None else None) or where
        if cell not in self._cells:
            return cell, cell
        kinds = {cell: kind_of(self._cells[cell])}
        return f"cell `{cell or '(root)'}` ({kinds[cell]})", module_text("MindSpore", cell, kinds)

    def _run(self, fn: Any, rec: CallRecorder | None, where: str) -> Any:
        try:
            with contextlib.ExitStack() as stack:
                for shim in self.shims:
                    stack.enter_context(shim)
                return fn()
        except (UserError, EnvironmentRefused):
            raise
        except Exception as e:  # noqa: BLE001 - a missing kernel, else a failure of the user's code: named
            op = _missing_kernel(e) if isinstance(e, RuntimeError) else None
            place, named = self._place(rec, where)
            if op is not None:
                raise KernelMissing(f"MindSpore has no {self.device} kernel for {op}, in {place}; pass a shim of "
                                    f"standard ops in the SPEC") from None
            raise UserCodeError(f"{named}: {type_and_first_sentence(e)}") from e

    def forward(self, args: Sequence[np.ndarray], record: bool = False) -> tuple[tuple, CallTree | None]:
        """The model's outputs on ``args`` (flattened to numpy), and the call tree when ``record``. The hooks run
        either way: copying each cell's output waits for its ops (PyNative runs them asynchronously), so a missing
        kernel is raised, and named, inside the cell that launched it."""
        rec = CallRecorder({id(c): p for p, c in self._cells.items()},
                           {id(c): kind_of(c) for c in self._cells.values()}, self.numpy)
        handles = []
        for c in self._cells.values():
            handles.append(c.register_forward_pre_hook(rec.pre))
            handles.append(c.register_forward_hook(rec.post))
        try:
            out = self._run(lambda: self.model(*(self._tensor(a) for a in args)), rec, "")
        finally:
            for h in handles:
                h.remove()
        return flatten(out, self.numpy), (rec.tree() if record else None)

    def run_module(self, path: str, inputs: tuple) -> tuple:
        """Cell ``path`` alone on recorded inputs (numpy), numpy outputs."""
        out = self._run(lambda: self._cells[path](*(self._tensor(a) for a in inputs)), None, path)
        return flatten(out, self.numpy)

    def train_step(self, args: Sequence[np.ndarray], loss: Callable[[Any], Any],
                   make_optimizer: Callable[[list], Any] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """``loss(model(*args))``, its gradient for every trainable parameter by name (``ms.value_and_grad``), and
        the parameters after one step of ``make_optimizer(parameters)`` on those gradients when given."""
        params = self.model.trainable_params()
        names = {id(p): n for n, p in self._params.items()}
        fn = ms.value_and_grad(lambda *xs: loss(self.model(*xs)), None, params)
        where = "the training step on MindSpore (the model, the SPEC's loss or optimizers)"
        value, grads = self._run(lambda: fn(*(self._tensor(a) for a in args)), None, where)
        by_name = {names[id(p)]: self.numpy(g) for p, g in zip(params, grads)}
        after = None
        if make_optimizer is not None:
            self._run(lambda: make_optimizer(params)(tuple(grads)), None, where)
            after = {names[id(p)]: self.numpy(p) for p in params}
        return self.numpy(value), by_name, after

    def run_step(self, step: Callable[..., Any], x: np.ndarray, t: int, noise: np.ndarray) -> np.ndarray:
        """One step of a SPEC's loop (parity.pair.loop) on this side: ``step(model, x, t, noise)``, numpy out."""
        return self._run(lambda: self.numpy(step(self.model, self._tensor(x), int(t), self._tensor(noise))), None,
                         f"the SPEC's step() at t={t}")

    def settings(self, path: str) -> tuple[str, dict[str, Any]] | None:
        c = self._cells[path]
        return read_settings(c, kind_of(c))

    @contextlib.contextmanager
    def train_mode(self) -> Iterator[None]:
        """Training mode with every dropout off, restored to eval mode afterwards."""
        self.model.set_train(True)
        for c in self._cells.values():
            if kind_of(c) in _DROPOUTS:
                c.set_train(False)
        try:
            yield
        finally:
            self.model.set_train(False)

