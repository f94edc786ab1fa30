"""The typed seams between the floors: what each twin implements once, and what the parity harness drives.

Three implementations meet these contracts: ``ddpm_torch`` and ``ddpm_ms`` (each through its
``adapter`` module, the twin's one load path), and the float64 specification
``ddpm_core.reference.side.ReferenceSide`` (inference only: it has no gradients). Everything crossing
a seam is numpy: weights are ``{PyTorch name: ndarray}``, inputs come from a caller's tape (never a
framework RNG), every array returned is a fresh copy.

Importing this module imports neither framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from ddpm_core.config import DiffusionConfig, UnetConfig

State = dict[str, np.ndarray]
"""Weights by PyTorch parameter name (``ddpm_core.weights.naming`` maps them to MindSpore's)."""

M = TypeVar("M")
"""The model type of an implementation (``torch.nn.Module``, ``mindspore.nn.Cell``, the specification's model)."""
D = TypeVar("D")
"""The diffusion type of an implementation (each twin's ``GaussianDiffusion``, the specification's)."""


@dataclass
class Record:
    """One call of one module: its structural name, which call it was, its class, inputs and outputs
    (numpy copies only, so the records of different implementations can be compared after the runs)."""

    name: str
    call: int
    kind: str
    inputs: tuple
    outputs: tuple

    @property
    def key(self) -> str:
        return self.name if self.call == 0 else f"{self.name}#{self.call}"


def to_tuple(value: Any, to_numpy: Callable[[Any], np.ndarray]) -> tuple:
    """A module's args or output as a flat tuple of numpy arrays (None and non-tensors kept as None)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    out: list[np.ndarray | None] = []
    for v in items:
        if isinstance(v, (tuple, list)):
            out.extend(to_tuple(v, to_numpy))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out.append(None)
        else:
            out.append(to_numpy(v))
    return tuple(out)


class Recorder:
    """Builds ``Record``s from forward hooks, numbering repeated calls of one module; framework-neutral
    (each adapter registers ``hook`` with its framework and passes its own ``to_numpy``)."""

    def __init__(self, names: Mapping[int, str], to_numpy: Callable[[Any], np.ndarray]):
        self.names, self.to_numpy = names, to_numpy
        self.records: list[Record] = []
        self._calls: dict[str, int] = {}

    def hook(self, module: Any, args: tuple, output: Any) -> None:
        name = self.names[id(module)]
        k = self._calls[name] = self._calls.get(name, -1) + 1
        self.records.append(Record(name, k, type(module).__name__, to_tuple(args, self.to_numpy),
                                   to_tuple(output, self.to_numpy)))


@runtime_checkable
class TwinAdapter(Protocol[M]):
    """One framework's U-Net behind numpy (``ddpm_torch.adapter.Adapter``, ``ddpm_ms.adapter.Adapter``).

    ``load`` is the twin's only way in for weights: strict (every name present, none extra, every shape
    equal), copied in place so compiled graphs of the model stay valid."""

    name: str
    label: str

    def build(self, cfg: UnetConfig) -> M: ...
    def load(self, model: M, state: Mapping[str, np.ndarray]) -> None: ...
    def load_model(self, state: Mapping[str, np.ndarray], cfg: UnetConfig) -> M: ...
    def state(self, model: M) -> State: ...
    def tensor(self, a: np.ndarray) -> Any: ...
    def numpy(self, x: Any) -> np.ndarray: ...
    def forward(self, model: M, x: np.ndarray, t: np.ndarray | None = None) -> np.ndarray: ...
    def modules(self, model: M) -> dict[str, Any]: ...
    def capture(self, model: M, x: np.ndarray, t: np.ndarray) -> list[Record]: ...
    def run_module(self, module: Any, inputs: tuple) -> tuple: ...
    def parameters_of(self, module: Any) -> State: ...


class TwinDiffusion(Protocol):
    """The calls of a twin's ``GaussianDiffusion`` the parity sides drive alike (``parity.sides.shared``); arrays
    go in as numpy, tensors of the twin's framework come out (the loops return numpy states)."""

    def q_sample(self, x_start: Any, t: Any, noise: Any = ...) -> Any: ...
    def p_sample(self, model: Any, x: Any, t: Any, t_index: int, noise: Any = ...) -> Any: ...
    def p_losses(self, model: Any, x_start: Any, t: Any, noise: Any = ..., loss_type: str | None = ...) -> Any: ...
    def p_sample_loop(self, model: Any, shape: tuple[int, ...], img: Any = ..., noise: Any = ...,
                      progress: bool = ..., compiled: bool = ...) -> list[np.ndarray]: ...
    def ddim_sample_loop(self, model: Any, shape: tuple[int, ...], steps: int, eta: float = ..., img: Any = ...,
                         noise: Any = ..., progress: bool = ..., compiled: bool = ...) -> list[np.ndarray]: ...


@runtime_checkable
class InferenceSide(Protocol[M, D]):
    """What a parity comparison needs from an implementation that runs the model and the samplers
    (both twins' sides, and the float64 specification)."""

    name: str
    label: str

    def load_model(self, state: Mapping[str, np.ndarray], cfg: UnetConfig) -> M: ...
    def state(self, model: M) -> State: ...
    def diffusion(self, cfg: DiffusionConfig) -> D: ...
    def predict(self, model: M, x: np.ndarray, t: np.ndarray) -> np.ndarray: ...
    def loss(self, model: M, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray: ...
    def ddpm_one_step(self, model: M, diffusion: D, xs: np.ndarray, ts: np.ndarray,
                      noise: np.ndarray) -> np.ndarray: ...
    def ddim_step(self, model: M, diffusion: D, x: np.ndarray, plan: Any, k: int,
                  noise: np.ndarray | None) -> np.ndarray: ...
    def capture(self, model: M, x: np.ndarray, t: np.ndarray) -> list[Record]: ...


@runtime_checkable
class Side(InferenceSide[M, D], Protocol[M, D]):
    """A twin's full parity side: inference, gradients, the optimizer, whole sampling loops, the
    diffusion-math probes and per-module replay for localisation (``parity.sides.torch``, ``parity.sides.ms``).
    ``device`` is where it runs (``str()`` gives the framework's own word): the only source of a run's device."""

    device: Any
    compiled: bool
    progress: bool

    def build(self, cfg: UnetConfig) -> M: ...
    def load(self, model: M, state: Mapping[str, np.ndarray]) -> None: ...
    def loss_and_grads(self, model: M, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                       loss_type: str) -> tuple[np.ndarray, State]: ...
    def adam(self, model: M, diffusion: D, batches: Sequence[tuple[np.ndarray, ...]], lrs: Sequence[float],
             loss_type: str, rule: str = ..., first_grads: State | None = ...) -> list[State]: ...
    def ddpm(self, model: M, diffusion: D, x_T: np.ndarray, noise: np.ndarray) -> np.ndarray: ...
    def ddim(self, model: M, diffusion: D, x_T: np.ndarray, steps: int, eta: float,
             noise: np.ndarray) -> np.ndarray: ...
    def toy_model(self) -> Callable: ...
    def probe_q_sample(self, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray: ...
    def probe_p_sample(self, diffusion: D, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray: ...
    def probe_loss(self, diffusion: D, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                   loss_type: str) -> np.ndarray: ...
    def probe_ddpm_loop(self, diffusion: D, x: np.ndarray, noise: np.ndarray) -> np.ndarray: ...
    def probe_ddim_loop(self, diffusion: D, x: np.ndarray, steps: int, eta: float,
                        noise: np.ndarray) -> np.ndarray: ...
    def modules(self, model: M) -> dict[str, Any]: ...
    def run_module(self, module: Any, inputs: tuple) -> tuple: ...
    def parameters_of(self, module: Any) -> State: ...
    def settings(self, module: Any) -> tuple[str, dict[str, Any]]: ...
    def float64(self, model: M) -> tuple[InferenceSide[M, D], M] | None: ...


class Trainer(Protocol):
    """What each twin's ``train.Trainer`` provides to the training loop (``ddpm_core.training.loop``)."""

    framework: str
    naming: str
    checkpoint_ext: str

    def step(self, x_start: np.ndarray, t: np.ndarray, noise: np.ndarray) -> float: ...
    def lr_position(self) -> int: ...
    def numerics(self) -> dict[str, Any]: ...
    def state(self) -> State: ...
    def save_checkpoint(self, path: Path, meta: dict[str, Any]) -> None: ...
    def load_checkpoint(self, path: Path) -> dict[str, Any]: ...


class Devices(Protocol):
    """Each twin's ``device`` module: where a command runs and in which numerics (ddpm_core.runtime.devices names them)."""

    def resolve_device(self, name: str | None, option: str = "--device") -> str: ...
    def check_precision(self, device: str, precision: str) -> Any: ...
    def use_deterministic(self, on: bool) -> dict[str, Any]: ...


class Distributed(Protocol):
    """Each twin's ``distributed`` module, as the training loop uses it (``World`` from ddpm_core.runtime.distributed)."""

    PEER_FAILURES: tuple[type[BaseException], ...]

    def init(self, device: str = ...) -> Any: ...
    def barrier(self, world: Any) -> None: ...
    def mean(self, value: Any, world: Any) -> Any: ...
    def shutdown(self, world: Any) -> None: ...
