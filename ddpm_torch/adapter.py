"""The PyTorch twin behind numpy (``ddpm_core.contract.TwinAdapter``): the twin's one load path.

``train``, ``sample``, the parity side, the tests and the bench all build and load models here, so
"PyTorch-named weights into this twin" is written once. Mirrors ddpm_ms/adapter.py.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from ddpm_core.config import UnetConfig
from ddpm_core.contract import Record, Recorder, State, to_tuple
from ddpm_torch.unet import Unet


class Adapter:
    """``ddpm_torch`` numpy in, numpy out, on ``device``. With ``dtype`` set (float64 for the anchor), the
    model is built in that dtype and float arrays are converted to it; otherwise arrays keep their dtype."""

    name = "torch"
    label = "PyTorch"

    def __init__(self, device: str = "cpu", dtype: np.dtype | type | None = None):
        self.device = torch.device(device)
        self.dtype = None if dtype is None else np.dtype(dtype)

    def build(self, cfg: UnetConfig) -> nn.Module:
        """``Unet(cfg)`` with this framework's seeded initialisation, in eval mode."""
        model = Unet.from_config(cfg).to(self.device)
        if self.dtype == np.float64:
            model.double()
        return model.eval()

    def load(self, model: nn.Module, state: Mapping[str, np.ndarray]) -> None:
        """Strict: every key present, none extra, every shape equal (``load_state_dict`` checks all);
        the values are copied into the existing parameters."""
        dtype = self.dtype or np.float32
        model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=dtype, copy=True)) for k, v in state.items()},
                              strict=True)

    def load_model(self, state: Mapping[str, np.ndarray], cfg: UnetConfig) -> nn.Module:
        """``Unet(cfg)`` holding ``state`` (PyTorch names, strict), in eval mode."""
        model = self.build(cfg)
        self.load(model, state)
        return model

    def state(self, model: nn.Module) -> State:
        """Every parameter, PyTorch-named, copied."""
        return {name: self.numpy(p) for name, p in model.named_parameters()}

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        """A tensor on this device (a copy); float arrays in this adapter's dtype when it has one."""
        a = np.asarray(a)
        dtype = self.dtype if self.dtype is not None and a.dtype.kind == "f" else a.dtype
        return torch.from_numpy(np.array(a, dtype=dtype, copy=True)).to(self.device)

    @staticmethod
    def numpy(x: torch.Tensor) -> np.ndarray:
        x = x.detach()  # numpy has no bfloat16: such a tensor (an autocast activation) comes back as float32
        return (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy().copy()

    def forward(self, model: nn.Module, x: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
        with torch.no_grad():
            return self.numpy(model(self.tensor(x), None if t is None else self.tensor(t)))

    @staticmethod
    def modules(model: nn.Module) -> dict[str, nn.Module]:
        return dict(model.named_modules())

    def capture(self, model: nn.Module, x: np.ndarray, t: np.ndarray) -> list[Record]:
        """Every module call's inputs and output during ``model(x, t)``, in the order calls finish."""
        recorder = Recorder({id(m): n for n, m in model.named_modules()}, self.numpy)
        handles = [m.register_forward_hook(recorder.hook) for m in model.modules()]
        try:
            self.forward(model, x, t)
        finally:
            for h in handles:
                h.remove()
        return recorder.records

    def run_module(self, module: nn.Module, inputs: tuple) -> tuple:
        """``module(*inputs)`` on numpy inputs (None kept), numpy outputs."""
        with torch.no_grad():
            out = module(*(None if a is None else self.tensor(a) for a in inputs))
        return to_tuple(out, self.numpy)

    def parameters_of(self, module: nn.Module) -> State:
        """The module's own parameters (not its children's), by their short names."""
        return {n: self.numpy(p) for n, p in module.named_parameters(recurse=False)}


def load_model(state: Mapping[str, np.ndarray], cfg: UnetConfig, device: str = "cpu") -> nn.Module:
    """``Unet(cfg)`` holding ``state`` (PyTorch names, strict), in eval mode, on ``device``."""
    return Adapter(device).load_model(state, cfg)

