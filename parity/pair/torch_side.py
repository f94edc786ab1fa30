"""A PyTorch model behind numpy for a pair: its tensors, module tree, recorded forward passes, single-module replay,
layer settings, and its float64 copy (the arbiter).

Rules it keeps: arrays cross as copies; floating inputs are cast to the side's dtype and integer inputs keep
theirs; the model is compared in eval mode unless ``train_mode`` says otherwise, where dropout stays off so a
training-mode pass is deterministic; the device is set up by ``parity.env.setup_torch`` (TF32 off; a missing one
is ``EnvironmentRefused``, exit 3).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from parity.sides.torch_settings import torch_settings
from parity.env import setup_torch
from parity.pair.calls import CallRecorder, CallTree, flatten
from parity.pair.mapping import Tensor
from parity.pair.modules import ModuleInfo

_ENGINE_KINDS = ("Conv2d", "ConvTranspose2d", "Linear", "GroupNorm", "GELU", "Softmax", "LogSoftmax", "LayerNorm")
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def kind_of(module: nn.Module) -> str:
    """The nearest torch.nn layer class of ``module`` (a subclass of nn.LayerNorm is a LayerNorm), else its own
    class name."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn.modules") and cls is not nn.Module:
            return cls.__name__
    return type(module).__name__


def _two(v: Any) -> tuple[int, ...]:
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def read_settings(m: nn.Module, kind: str) -> tuple[str, dict[str, Any]] | None:
    """(kind, settings) in the pair vocabulary (parity.pair.settings), or None for a layer without one."""
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return kind, {"eps": m.eps, "momentum": "cumulative" if m.momentum is None else m.momentum,
                      "affine": m.affine}
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        pad = _two(m.padding)
        s = {"kernel_size": _two(m.kernel_size), "stride": _two(m.stride or m.kernel_size),
             "padding": (pad[0], pad[0], pad[1], pad[1]), "ceil_mode": bool(m.ceil_mode)}
        if isinstance(m, nn.MaxPool2d):
            s["dilation"] = _two(m.dilation)
        return kind, s
    if isinstance(m, nn.Conv1d):
        return kind, {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": m.kernel_size[0],
                      "stride": m.stride[0], "dilation": m.dilation[0], "groups": m.groups, "bias": m.bias is not None,
                      "padding": m.padding if isinstance(m.padding, str) else (m.padding[0], m.padding[0])}
    if isinstance(m, _DROPOUTS):
        return kind, {"p": m.p}
    if isinstance(m, nn.Embedding):
        return kind, {"padding_idx": m.padding_idx}
    if isinstance(m, (nn.LeakyReLU,)):
        return kind, {"negative_slope": m.negative_slope}
    if isinstance(m, (nn.ELU, nn.CELU)):
        return kind, {"alpha": m.alpha}
    if kind in _ENGINE_KINDS:
        return kind, torch_settings(m)[1]
    from parity.pair.settings import ACTIVATIONS

    return (kind, {}) if kind in ACTIVATIONS else None


class TorchPairSide:
    """One PyTorch model of a pair (``dtype`` float32 normally, float64 for the arbiter); the model is moved to the
    device and dtype in place and put in eval mode."""

    framework = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32, label: str = ""):
        self.info = setup_torch(device)
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.label = label or ("PyTorch" if device == "cpu" else f"PyTorch ({device})")
        self._modules = dict(self.model.named_modules(remove_duplicate=True))

    # ------------------------------------------------------------ structure and weights
    def tensors(self) -> list[Tensor]:
        out = []
        for path, m in self._modules.items():
            for leaf, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
                if t is not None:
                    out.append(Tensor(f"{path}.{leaf}" if path else leaf, tuple(t.shape), path, kind_of(m)))
        return out

    def tree(self) -> list[ModuleInfo]:
        owned: dict[str, list[str]] = {}
        for t in self.tensors():
            owned.setdefault(t.owner, []).append(t.name)
        return [ModuleInfo(path, kind_of(m), tuple(f"{path}.{n}" if path else n for n, _ in m.named_children()),
                           tuple(owned.get(path, ()))) for path, m in self._modules.items()]

    def buffers(self) -> list[str]:
        """The floating buffers (running statistics): what a training-mode pass updates besides the output."""
        return [n for n, b in self.model.named_buffers() if b.is_floating_point()]

    def state(self) -> dict[str, np.ndarray]:
        sd = self.model.state_dict(keep_vars=False)
        return {n: t.detach().cpu().numpy().copy() for n, t in sd.items()}

    def load(self, state: dict[str, np.ndarray]) -> None:
        """Strict: every tensor of the model present with its shape (``WeightsError`` naming each one)."""
        from ddpm_core.errors import WeightsError

        own = self.model.state_dict()
        problems = [f"missing: {n}" for n in own if n not in state]
        problems += [f"unexpected: {n}" for n in state if n not in own]
        problems += [f"shape {n}: {tuple(own[n].shape)} vs {np.shape(state[n])}" for n in own
                     if n in state and tuple(own[n].shape) != np.shape(state[n])]
        if problems:
            raise WeightsError(problems, f"the weights do not fit the {self.label} model")
        with torch.no_grad():
            for n, t in own.items():
                t.copy_(torch.as_tensor(np.asarray(state[n])).to(t.dtype))

    def float64(self) -> "TorchPairSide":
        """A float64 copy of this model on the CPU: the arbiter."""
        return TorchPairSide(copy.deepcopy(self.model).cpu(), "cpu", torch.float64, "PyTorch float64")

    # ------------------------------------------------------------ running
    def _tensor(self, a: np.ndarray | None) -> Any:
        if a is None:
            return None
        t = torch.as_tensor(np.array(a, copy=True))
        return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

    @staticmethod
    def numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().copy()

    def forward(self, args: Sequence[np.ndarray], record: bool = False) -> tuple[tuple, CallTree | None]:
        """The model's outputs on ``args`` (flattened to numpy), and the call tree when ``record``."""
        rec = CallRecorder({id(m): p for p, m in self._modules.items()},
                           {id(m): kind_of(m) for m in self._modules.values()}, self.numpy)
        handles = []
        if record:
            for m in self._modules.values():
                handles += [m.register_forward_pre_hook(rec.pre), m.register_forward_hook(rec.post)]
        try:
            with torch.no_grad():
                out = self.model(*(self._tensor(a) for a in args))
        finally:
            for h in handles:
                h.remove()
        return flatten(out, self.numpy), (rec.tree() if record else None)

    def run_module(self, path: str, inputs: tuple) -> tuple:
        """Module ``path`` alone on recorded inputs (numpy), numpy outputs."""
        with torch.no_grad():
            return flatten(self._modules[path](*(self._tensor(a) for a in inputs)), self.numpy)

    def train_step(self, args: Sequence[np.ndarray], loss: Callable[[Any], Any],
                   make_optimizer: Callable[[list], Any] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """``loss(model(*args))``, its gradient for every parameter by name, and the parameters after one step of
        ``make_optimizer(parameters)`` when given (None otherwise)."""
        params = dict(self.model.named_parameters())
        for p in params.values():
            p.grad = None
        value = loss(self.model(*(self._tensor(a) for a in args)))
        value.backward()
        grads = {n: self.numpy(p.grad) for n, p in params.items() if p.grad is not None}
        after = None
        if make_optimizer is not None:
            make_optimizer(list(params.values())).step()
            after = {n: self.numpy(p) for n, p in params.items()}
        return self.numpy(value), grads, after

    def settings(self, path: str) -> tuple[str, dict[str, Any]] | None:
        m = self._modules[path]
        return read_settings(m, kind_of(m))

    @contextlib.contextmanager
    def train_mode(self) -> Iterator[None]:
        """Training mode with every dropout off, restored to eval mode afterwards."""
        self.model.train()
        for m in self._modules.values():
            if isinstance(m, _DROPOUTS):
                m.eval()
        try:
            yield
        finally:
            self.model.eval()

