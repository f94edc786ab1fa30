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

from ddpm_core.errors import EnvironmentRefused, UserError, type_and_first_sentence
from ddpm_core.weights.mapping import Tensor
from parity.env import setup_torch
from parity.pair.calls import CallRecorder, CallTree, flatten, module_text, user_code
from parity.pair.modules import ModuleInfo
from parity.sides.torch_settings import torch_settings

_ENGINE_KINDS = ("Conv2d", "ConvTranspose2d", "Linear", "GroupNorm", "GELU", "Softmax", "LogSoftmax", "LayerNorm")
RECOMPILE_LIMIT = 64
"""Recompilations of one function a compiled side allows before it refuses (dynamo's default, 8, then runs eagerly)."""
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


def _refusing(compiled: Callable[..., Any], backend: str) -> Callable[..., Any]:
    """``compiled``, with a backend that cannot compile here (inductor without a C++ compiler) turned into
    ``EnvironmentRefused`` (exit 3) naming the backend."""
    def run(*args: Any) -> Any:
        try:  # guard on hooks: a run with the recording hooks is compiled anew, not served the graph without them;
            # past the recompile limit dynamo would run the module eagerly without a word: raise instead
            with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False, recompile_limit=RECOMPILE_LIMIT,
                                            fail_on_recompile_limit_hit=True):
                return compiled(*args)
        except torch._dynamo.exc.BackendCompilerFailed as e:
            raise EnvironmentRefused(f"torch.compile's {backend} backend cannot compile here: "
                                     f"{type_and_first_sentence(e.inner_exception)}") from None
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            raise EnvironmentRefused(f"torch.compile recompiled one function more than {RECOMPILE_LIMIT} times (input "
                                     "sizes x eval/training x recording hooks); give fewer input sizes") from None
    return run


class TorchPairSide:
    """One PyTorch model of a pair (``dtype`` float32 normally, float64 for the arbiter); the model is moved to the
    device and dtype in place and put in eval mode."""

    framework = "torch"

    def __init__(self, model: nn.Module, device: str = "cpu", dtype: torch.dtype = torch.float32, label: str = "",
                 compile: str | None = None, autocast: str | None = None):
        self.info = setup_torch(device)
        self.device, self.dtype = torch.device(device), dtype
        self.model = model.to(device=self.device, dtype=dtype).eval()
        self.label = label or ("PyTorch" if device == "cpu" else f"PyTorch ({device})")
        self._modules = dict(self.model.named_modules(remove_duplicate=True))
        self.backend, self.autocast = compile, autocast
        self._compiled: dict[str, Callable[..., Any]] = {}
        self.graph_breaks = 0
        """module path -> its ``torch.compile``d callable (the root first; others when replayed alone)"""

    def _callable(self, path: str) -> Callable[..., Any]:
        """Module ``path`` as this side runs it: eager, or compiled with the side's backend (once per module)."""
        if self.backend is None:
            return self._modules[path]
        if path not in self._compiled:
            try:
                compiled = torch.compile(self._modules[path], backend=self.backend)
            except Exception as e:  # noqa: BLE001 - dynamo's InvalidBackend and friends: the user's option
                raise UserError(f"torch.compile(backend={self.backend!r}): {type_and_first_sentence(e)}") from None
            self._compiled[path] = _refusing(compiled, self.backend)
        return self._compiled[path]

    def _precision(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` to the side's dtype, or nothing."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.autocast))

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

    def float64(self, arbiter: Callable[[nn.Module], nn.Module] | None = None) -> "TorchPairSide":
        """A float64 copy of this model on the CPU: the arbiter; ``arbiter(model64)`` (a SPEC's) may return it with
        code that casts to float32 whatever the model's dtype replaced."""
        model = copy.deepcopy(self.model).cpu().to(torch.float64)
        if arbiter is not None:
            with user_code(lambda: "the SPEC's arbiter()"):
                model = arbiter(model)
        return TorchPairSide(model, "cpu", torch.float64, "PyTorch float64")

    # ------------------------------------------------------------ running
    def _tensor(self, a: np.ndarray | None) -> Any:
        if a is None:
            return None
        t = torch.as_tensor(np.array(a, copy=True))
        return t.to(self.device, self.dtype if t.is_floating_point() else t.dtype)

    @staticmethod
    def numpy(x: torch.Tensor) -> np.ndarray:
        """A copy; bfloat16 and float16 (autocast) widened exactly to float32."""
        x = x.detach().cpu()
        return (x.float() if x.dtype in (torch.bfloat16, torch.float16) else x).numpy().copy()

    def forward(self, args: Sequence[np.ndarray], record: bool = False) -> tuple[tuple, CallTree | None]:
        """The model's outputs on ``args`` (flattened to numpy), and the call tree when ``record``. A compiled side
        returns the outputs of the whole model compiled without hooks (what a user runs), and records the tree in a
        second run whose hooks break the graph at every module boundary (``note``)."""
        if record and self.backend is not None:
            from torch._dynamo.utils import counters

            start = self.state() if self.model.training else None  # a training-mode pass updates buffers once
            before = sum(counters["graph_break"].values())
            _, tree = self._forward(args, True)
            self.graph_breaks += sum(counters["graph_break"].values()) - before
            if start is not None:
                self.load(start)
            out, _ = self._forward(args, False)
            return out, tree
        return self._forward(args, record)

    def note(self) -> str:
        """What a reader must know about how this side ran ('' for an eager float32 side)."""
        if self.backend is None:
            return ""
        return (f"{self.label}: the outputs rows are the whole model compiled with {self.backend} as one graph; the "
                f"module records that localise come from a second run with a hook at every module boundary, where "
                f"dynamo breaks the graph ({self.graph_breaks} graph break(s) so far), so each module between two "
                f"hooks is compiled alone; a difference that only fusion across modules makes is seen in the outputs "
                f"and cannot be placed in a module")

    def _forward(self, args: Sequence[np.ndarray], record: bool) -> tuple[tuple, CallTree | None]:
        rec = CallRecorder({id(m): p for p, m in self._modules.items()},
                           {id(m): kind_of(m) for m in self._modules.values()}, self.numpy)
        handles = []
        if record:
            # Under torch.compile the hooks run eagerly (dynamo breaks the graph at each): every module call is
            # recorded with the values the compiled code computed, each region between two hooks one graph.
            pre, post = (rec.pre, rec.post) if self.backend is None else \
                (torch._dynamo.disable(rec.pre), torch._dynamo.disable(rec.post))
            for m in self._modules.values():
                handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
        try:
            with torch.no_grad(), self._precision(), user_code(lambda: self._where(rec.active())):
                out = self._callable("")(*(self._tensor(a) for a in args))
        finally:
            for h in handles:
                h.remove()
        return flatten(out, self.numpy), (rec.tree() if record else None)

    def _where(self, path: str | None) -> str:
        return module_text(self.label, path, {p: kind_of(m) for p, m in self._modules.items()})

    def run_module(self, path: str, inputs: tuple) -> tuple:
        """Module ``path`` alone on recorded inputs (numpy), numpy outputs."""
        with torch.no_grad(), self._precision():
            return flatten(self._callable(path)(*(self._tensor(a) for a in inputs)), self.numpy)

    def train_step(self, args: Sequence[np.ndarray], loss: Callable[[Any], Any],
                   make_optimizer: Callable[[list], Any] | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """``loss(model(*args))``, its gradient for every parameter by name, and the parameters after one step of
        ``make_optimizer(parameters)`` when given (None otherwise)."""
        params = dict(self.model.named_parameters())
        for p in params.values():
            p.grad = None
        with user_code(lambda: f"the training step on {self.label} (the model, the SPEC's loss or optimizers)"):
            with self._precision():
                value = loss(self._callable("")(*(self._tensor(a) for a in args)))
            value.backward()
            grads = {n: self.numpy(p.grad) for n, p in params.items() if p.grad is not None}
            after = None
            if make_optimizer is not None:
                make_optimizer(list(params.values())).step()
                after = {n: self.numpy(p) for n, p in params.items()}
        return self.numpy(value), grads, after

    def run_step(self, step: Callable[..., Any], x: np.ndarray, t: int, noise: np.ndarray) -> np.ndarray:
        """One step of a SPEC's loop (parity.pair.loop) on this side: ``step(model, x, t, noise)``, numpy out."""
        with torch.no_grad(), user_code(lambda: f"the SPEC's step() at t={t} on {self.label}"):
            return self.numpy(step(self.model, self._tensor(x), int(t), self._tensor(noise)))

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

