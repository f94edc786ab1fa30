"""The MindSpore twin behind numpy (``ddpm_core.contract.TwinAdapter``): the twin's one load path.

``train``, ``sample``, the parity side, the tests and the bench all build and load models here, so
"PyTorch-named weights into this twin" is written once: through ``ddpm_core.weights.converter.torch_to_ms``
(names and layouts by the weight-mapping engine, with ``ddpm_core.weights.naming``'s table as its map).
``Tensor.asnumpy()`` can share memory with a Parameter, so every array handed out is an explicit copy.
Mirrors ddpm_torch/adapter.py.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
from mindspore import Tensor, nn

from ddpm_core.config import UnetConfig
from ddpm_core.contract import Record, Recorder, State, to_tuple
from ddpm_core.errors import WeightsError
from ddpm_core.weights.converter import torch_to_ms
from ddpm_core.weights.naming import unet_weight_map
from ddpm_ms.unet import Unet


def snapshot(x: Tensor) -> np.ndarray:
    """A numpy copy of ``x`` that no later in-place update of ``x`` can change."""
    return np.array(x.asnumpy(), copy=True)


class Adapter:
    """``ddpm_ms`` numpy in, numpy out (MindSpore picks the device from its context). ``composed_ops``
    builds ``Unet(composed_ops=True)``: GELU and GroupNorm from primitive ops (faster on CPU, not bit-identical
    to the tutorial's kernels; ddpm_torch has no counterpart, its kernels are fast)."""

    name = "ms"
    label = "MindSpore"

    def __init__(self, composed_ops: bool = False):
        self.composed_ops = composed_ops

    def build(self, cfg: UnetConfig) -> nn.Cell:
        """``Unet(cfg, composed_ops)`` with this framework's seeded initialisation, in eval mode."""
        model = Unet.from_config(cfg, composed_ops=self.composed_ops)
        model.set_train(False)
        return model

    def load(self, model: nn.Cell, state: Mapping[str, np.ndarray]) -> None:
        """PyTorch-named ``state`` -> ``torch_to_ms`` -> every Parameter, strictly (names and shapes),
        copied in place: compiled steps of this model stay valid (see ``GaussianDiffusion.compiled``)."""
        ms_state = torch_to_ms(state, model.config)
        params = {p.name: p for p in model.get_parameters()}
        problems = [f"missing in the model: {n}" for n in ms_state if n not in params]
        problems += [f"not in the converted weights: {n}" for n in params if n not in ms_state]
        problems += [f"shape mismatch: {n}: model {tuple(params[n].shape)}, weights {v.shape}"
                     for n, v in ms_state.items() if n in params and tuple(params[n].shape) != v.shape]
        if problems:
            raise WeightsError(problems, "the MindSpore model's parameters do not match the converted weights")
        for n, v in ms_state.items():
            params[n].copy_(Tensor(np.array(v, dtype=np.float32, copy=True)))

    def load_model(self, state: Mapping[str, np.ndarray], cfg: UnetConfig) -> nn.Cell:
        """``Unet(cfg)`` holding ``state`` (PyTorch names, converted strictly), in eval mode."""
        model = self.build(cfg)
        self.load(model, state)
        return model

    @staticmethod
    def torch_names(model: nn.Cell) -> dict[str, str]:
        """MindSpore parameter name -> PyTorch name, for this model's configuration."""
        return {e.ms: e.torch for e in unet_weight_map(model.config).entries}

    def state(self, model: nn.Cell) -> State:
        """Every parameter, PyTorch-named, copied."""
        names = self.torch_names(model)
        return {names.get(p.name, p.name): snapshot(p) for p in model.get_parameters()}

    @staticmethod
    def tensor(a: np.ndarray) -> Tensor:
        return Tensor(np.array(a, copy=True))

    @staticmethod
    def numpy(x: Tensor) -> np.ndarray:
        return snapshot(x)

    def forward(self, model: nn.Cell, x: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
        return self.numpy(model(self.tensor(x), None if t is None else self.tensor(t)))

    @staticmethod
    def modules(model: nn.Cell) -> dict[str, nn.Cell]:
        return dict(model.cells_and_names())

    def capture(self, model: nn.Cell, x: np.ndarray, t: np.ndarray) -> list[Record]:
        """Every cell call's inputs and output during ``model(x, t)`` (PyNative, where forward hooks fire),
        in the order calls finish."""
        recorder = Recorder({id(c): n for n, c in model.cells_and_names()}, self.numpy)
        handles = [c.register_forward_hook(recorder.hook) for _, c in model.cells_and_names()]
        try:
            self.forward(model, x, t)
        finally:
            for h in handles:
                h.remove()
        return recorder.records

    def run_module(self, cell: nn.Cell, inputs: tuple) -> tuple:
        """``cell(*inputs)`` on numpy inputs (None kept), numpy outputs (PyNative)."""
        out = cell(*(None if a is None else self.tensor(a) for a in inputs))
        return to_tuple(out, self.numpy)

    @staticmethod
    def parameters_of(cell: nn.Cell) -> State:
        """The cell's own parameters (not its children's), by their short names."""
        return {n.rsplit(".", 1)[-1]: snapshot(p) for n, p in cell.parameters_and_names(expand=False)}


def load_model(state: Mapping[str, np.ndarray], cfg: UnetConfig, composed_ops: bool = False) -> nn.Cell:
    """``Unet(cfg, composed_ops)`` holding ``state`` (PyTorch names, converted strictly), in eval mode."""
    return Adapter(composed_ops).load_model(state, cfg)
