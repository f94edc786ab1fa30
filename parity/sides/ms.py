"""The MindSpore side of a parity run: the ddpm_ms twin behind numpy in / numpy out
(``ddpm_core.contract.Side``; model building, loading and capture come from the twin's adapter).

Same interface as ``parity.sides.torch.TorchSide``. Rules: inputs come from the tape (never
MindSpore's RNG); weights arrive PyTorch-named and go through ``ddpm_core.weights.converter.torch_to_ms``;
every array returned is an explicit copy; gradients and states are returned under PyTorch names.
``compiled=True`` runs the samplers' steps through the twin's ``ms.jit`` graphs (compiled once per
run and shape); localisation always runs PyNative, where forward hooks fire.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from mindspore import Tensor, nn

import ddpm_ms
from ddpm_core.config import DiffusionConfig
from ddpm_core.schedules import DDIM_COEFS, DDIMPlan
from ddpm_ms.adapter import Adapter
from ddpm_ms.optim import loss_and_grads, make_optimizer, make_train_step
from parity.sides.shared import SharedCalls


class MsSide(SharedCalls[nn.Cell, ddpm_ms.GaussianDiffusion], Adapter):
    loss_scale = 1.0  # the fixed loss scale of gradients and training steps (parity.precision sets it)

    def __init__(self, device: str = "CPU", compiled: bool = True, progress: bool = False, chunk: int = 32,
                 composed_ops: bool = False):
        super().__init__(composed_ops)
        self.device = device
        self.compiled = compiled
        self.progress = progress
        self.chunk = chunk
        self._diffusions: dict[DiffusionConfig, ddpm_ms.GaussianDiffusion] = {}

    @classmethod
    def of(cls, model: nn.Cell, **options: Any) -> "MsSide":
        """The side for ``model``, on the device MindSpore's context runs it on (a cell has no device of its own)."""
        import mindspore as ms

        return cls(ms.get_context("device_target"), **options)

    # ------------------------------------------------------------ model and weights
    def config(self, model: nn.Cell) -> Any:
        return model.config

    def float64(self, model: nn.Cell) -> None:
        """None: MindSpore's CPU and Ascend builds have no float64 convolution, so this side has no float64 run."""
        return None

    def diffusion(self, cfg: DiffusionConfig) -> ddpm_ms.GaussianDiffusion:
        """One diffusion per config for this side, so its compiled steps (cached per model) are reused by
        later runs on the same model object; weights are read when a graph runs, not when it compiles."""
        if cfg not in self._diffusions:
            self._diffusions[cfg] = ddpm_ms.GaussianDiffusion(cfg)
        return self._diffusions[cfg]

    # ------------------------------------------------------------ forward, loss, gradients, optimizer
    def predict(self, model: nn.Cell, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.forward(model, x, t)

    def loss(self, model: nn.Cell, diffusion: ddpm_ms.GaussianDiffusion, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray:
        return self.numpy(diffusion.p_losses(model, x0, t, noise, loss_type))

    def loss_and_grads(self, model: nn.Cell, diffusion: ddpm_ms.GaussianDiffusion, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                       loss_type: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_grads(model, diffusion, x0, t, noise, loss_type, self.loss_scale)
        names = self.torch_names(model)
        return self.numpy(loss), {names.get(n, n): self.numpy(g) for n, g in grads.items()}

    def adam(self, model: nn.Cell, diffusion: ddpm_ms.GaussianDiffusion, batches: Sequence[tuple[np.ndarray, ...]], lrs: Sequence[float],
             loss_type: str, rule: str = "mindspore",
             first_grads: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """The state after each training step of the twin's ``make_train_step`` with ``nn.Adam``;
        ``first_grads`` (PyTorch-named, the first batch's gradient at these weights) makes step 1 the
        optimizer update alone."""
        if rule != "mindspore":
            raise ValueError("the MindSpore side has only MindSpore's Adam rule")
        optimizer = make_optimizer(model, [float(v) for v in lrs])
        # op by op: the compiled training step costs tens of seconds to compile, far more than the few steps here
        step = make_train_step(model, diffusion, optimizer, loss_type, compiled=False, loss_scale=self.loss_scale)
        names = self.torch_names(model)
        states = []
        for k, (x0, t, noise) in enumerate(batches):
            if k == 0 and first_grads is not None:
                optimizer(tuple(self.tensor(first_grads[names.get(p.name, p.name)]) for p in optimizer.parameters))
            else:
                step(x0, t, noise)
            states.append(self.state(model))
        model.set_train(False)
        return states

    # ------------------------------------------------------------ samplers
    def ddpm_one_step(self, model: nn.Cell, diffusion: ddpm_ms.GaussianDiffusion, xs: np.ndarray, ts: np.ndarray,
                      noise: np.ndarray) -> np.ndarray:
        """One ``p_step`` from each given state: xs (N, B, ...), ts (N,), noise (N, B, ...) -> (N, B, ...).
        Compiled: one step per call through the sampler's own graph (same shape, no new compile);
        PyNative: ``chunk`` steps batched into one call."""
        n, b = xs.shape[:2]
        chunk = 1 if self.compiled else self.chunk
        step = diffusion.compiled("ddpm", model) if self.compiled else (lambda x, t, z: diffusion.p_step(model, x, t, z))
        out = []
        for lo in range(0, n, chunk):
            hi = min(n, lo + chunk)
            x = self.tensor(xs[lo:hi].reshape(-1, *xs.shape[2:]))
            t = self.tensor(np.repeat(ts[lo:hi], b).astype(np.int32))
            z = self.tensor(noise[lo:hi].reshape(-1, *xs.shape[2:]))
            out.append(self.numpy(step(x, t, z)).reshape(hi - lo, b, *xs.shape[2:]))
        return np.concatenate(out)

    def ddim_step(self, model: nn.Cell, diffusion: ddpm_ms.GaussianDiffusion, x: np.ndarray, plan: DDIMPlan, k: int,
                  noise: np.ndarray | None) -> np.ndarray:
        """Step ``k`` of ``plan`` from ``x`` (the plan's float32 coefficients as 0-d tensors)."""
        c0, c1, c2, c3, c4 = (Tensor(getattr(plan, name)[k]) for name in DDIM_COEFS)
        t = self.tensor(np.full(len(x), int(plan.t[k]), np.int32))
        return self.numpy(diffusion.ddim_step(model, self.tensor(x), t, c0, c1, c2, c3, c4,
                                              None if noise is None else self.tensor(noise)))

    # ------------------------------------------------------------ diffusion-math probes (toy model)
    @staticmethod
    def toy_model() -> Callable:
        """eps(x, t) = 0.9 x + 0.001 t: no U-Net, so the diffusion math is checked alone."""
        return lambda x, t: x * 0.9 + t.astype(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    # ------------------------------------------------------------ localisation
    def settings(self, cell: nn.Cell) -> tuple[str, dict[str, Any]]:
        from parity.sides.ms_settings import ms_settings

        return ms_settings(cell)
