"""The PyTorch side of a parity run: the ddpm_torch twin behind numpy in / numpy out
(``ddpm_core.contract.Side``; model building, loading and capture come from the twin's adapter).

Same interface as ``parity.sides.ms.MsSide`` (``parity.engine.suite`` drives either without knowing which).
Rules: inputs are numpy arrays from the tape (never a framework RNG); every array returned is a fresh
copy; parameters are named by their PyTorch names. ``dtype=np.float64`` gives the float64 side of the
anchor (``parity.engine.anchor``): the model, the diffusion tables and every float input in float64.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

import ddpm_torch
from ddpm_core.config import DiffusionConfig
from ddpm_core.schedules import DDIM_COEFS, DDIMPlan
from ddpm_torch.adapter import Adapter
from ddpm_torch.optim import loss_and_grads, make_optimizer, make_train_step
from parity.sides.shared import SharedCalls


class TorchSide(SharedCalls[nn.Module, ddpm_torch.GaussianDiffusion], Adapter):
    loss_scale = 1.0  # the fixed loss scale of gradients and training steps (parity.precision sets it)

    def __init__(self, device: str = "cpu", compiled: bool = True, progress: bool = False, chunk: int = 32,
                 dtype: np.dtype | type | None = None):
        super().__init__(device, dtype)
        self.compiled = compiled
        self.progress = progress
        self.chunk = chunk
        self._diffusions: dict[DiffusionConfig, ddpm_torch.GaussianDiffusion] = {}

    @classmethod
    def of(cls, model: nn.Module, **options: Any) -> "TorchSide":
        """The side for ``model``, on the device its parameters are on."""
        p = next(model.parameters(), None)
        return cls(str(p.device) if p is not None else "cpu", **options)

    # ------------------------------------------------------------ model and weights
    def config(self, model: nn.Module) -> Any:
        return model.config

    def float64(self, model: nn.Module) -> tuple["TorchSide", nn.Module]:
        """This side in float64 on the same device, and a deep copy of ``model`` in it (the float64 anchor's
        PyTorch run: a change made to ``model``, e.g. a planted bug, is kept)."""
        side = TorchSide(str(self.device), dtype=np.float64)
        return side, side.adopt(model)

    def adopt(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` in this side's dtype (a change made to ``model``, e.g. a planted bug, is kept)."""
        twin = copy.deepcopy(model)
        return (twin.double() if self.dtype == np.float64 else twin).eval()

    def diffusion(self, cfg: DiffusionConfig) -> ddpm_torch.GaussianDiffusion:
        """One diffusion per config for this side (mirrors MsSide, whose compiled steps it keeps). In float64
        the tables are the same float32 values upcast, so every op then runs in float64."""
        if cfg not in self._diffusions:
            diffusion = ddpm_torch.GaussianDiffusion(cfg, device=self.device)
            if self.dtype == np.float64:
                for name in diffusion.schedule.tables():
                    setattr(diffusion, name, getattr(diffusion, name).double())
            self._diffusions[cfg] = diffusion
        return self._diffusions[cfg]

    # ------------------------------------------------------------ forward, loss, gradients, optimizer
    def predict(self, model: nn.Module, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.forward(model, x, t)

    def loss(self, model: nn.Module, diffusion: ddpm_torch.GaussianDiffusion, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray:
        with torch.no_grad():
            return self.numpy(diffusion.p_losses(model, self.tensor(x0), self.tensor(t), self.tensor(noise), loss_type))

    def loss_and_grads(self, model: nn.Module, diffusion: ddpm_torch.GaussianDiffusion, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                       loss_type: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_grads(model, diffusion, x0, t, noise, loss_type, self.loss_scale)
        return self.numpy(loss), {name: self.numpy(g) for name, g in grads.items()}

    def adam(self, model: nn.Module, diffusion: ddpm_torch.GaussianDiffusion, batches: Sequence[tuple[np.ndarray, ...]], lrs: Sequence[float],
             loss_type: str, rule: str = "mindspore",
             first_grads: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """The state after each training step (the twin's ``make_train_step``). ``rule="torch"`` uses
        ``torch.optim.Adam`` with the same per-step learning rates. ``first_grads`` (the gradient of the
        first batch at these weights, already computed) makes step 1 the optimizer update alone."""
        optimizer = make_optimizer(model, list(lrs) if rule == "mindspore" else float(lrs[0]), rule=rule)
        step = make_train_step(model, diffusion, optimizer, loss_type, loss_scale=self.loss_scale)
        states = []
        for k, (x0, t, noise) in enumerate(batches):
            if rule == "torch":
                for group in optimizer.param_groups:
                    group["lr"] = float(lrs[min(k, len(lrs) - 1)])
            if k == 0 and first_grads is not None:
                optimizer.zero_grad(set_to_none=True)
                for name, p in model.named_parameters():
                    p.grad = self.tensor(first_grads[name])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:
                step(x0, t, noise)
            states.append(self.state(model))
        model.eval()
        return states

    # ------------------------------------------------------------ samplers
    def ddpm_one_step(self, model: nn.Module, diffusion: ddpm_torch.GaussianDiffusion, xs: np.ndarray, ts: np.ndarray,
                      noise: np.ndarray) -> np.ndarray:
        """One ``p_step`` from each given state: xs (N, B, ...), ts (N,), noise (N, B, ...) -> (N, B, ...).
        Steps are batched ``chunk`` at a time into one forward call (each step's input is known)."""
        n, b = xs.shape[:2]
        out = []
        with torch.no_grad():
            for lo in range(0, n, self.chunk):
                hi = min(n, lo + self.chunk)
                x = self.tensor(xs[lo:hi].reshape(-1, *xs.shape[2:]))
                t = self.tensor(np.repeat(ts[lo:hi], b).astype(np.int32))
                z = self.tensor(noise[lo:hi].reshape(-1, *xs.shape[2:]))
                out.append(self.numpy(diffusion.p_step(model, x, t, z)).reshape(hi - lo, b, *xs.shape[2:]))
        return np.concatenate(out)

    def ddim_step(self, model: nn.Module, diffusion: ddpm_torch.GaussianDiffusion, x: np.ndarray, plan: DDIMPlan, k: int,
                  noise: np.ndarray | None) -> np.ndarray:
        """Step ``k`` of ``plan`` from ``x`` (the plan's coefficients as 0-d tensors in this side's dtype)."""
        dtype = torch.float64 if self.dtype == np.float64 else torch.float32
        c0, c1, c2, c3, c4 = (torch.tensor(float(getattr(plan, name)[k]), dtype=dtype, device=self.device)
                              for name in DDIM_COEFS)
        t = self.tensor(np.full(len(x), int(plan.t[k]), np.int32))
        with torch.no_grad():
            return self.numpy(diffusion.ddim_step(model, self.tensor(x), t, c0, c1, c2, c3, c4,
                                                  None if noise is None else self.tensor(noise)))

    # ------------------------------------------------------------ diffusion-math probes (toy model)
    @staticmethod
    def toy_model() -> Callable:
        """eps(x, t) = 0.9 x + 0.001 t: no U-Net, so the diffusion math is checked alone."""
        return lambda x, t: x * 0.9 + t.to(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    # ------------------------------------------------------------ localisation
    def settings(self, module: nn.Module) -> tuple[str, dict[str, Any]]:
        """(kind, what the layer is configured to do) in the settings check's framework-neutral vocabulary."""
        from parity.sides.torch_settings import torch_settings

        return torch_settings(module)
