"""The PyTorch side of a parity run: the ddpm_torch twin behind numpy in / numpy out.

Same interface as ``parity.side_ms.MsSide`` (``parity.suite`` drives either without knowing which):
build/load/state, predict, loss, loss_and_grads, adam, ddpm/ddpm_one_step/ddim, the diffusion-math
probes with a toy model, and module capture/replay/settings for localisation. Rules: inputs are
numpy arrays from the tape (never a framework RNG); every array returned is a fresh copy; parameters
are named by their PyTorch names.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

import ddpm_torch
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_torch.optim import loss_and_grads, make_optimizer, make_train_step
from parity.side_common import Record, to_tuple


class TorchSide:
    name = "torch"
    label = "PyTorch"

    def __init__(self, device: str = "cpu", compiled: bool = True, progress: bool = False, chunk: int = 32):
        self.device = torch.device(device)
        self.compiled = compiled
        self.progress = progress
        self.chunk = chunk
        self._diffusions: dict[DiffusionConfig, ddpm_torch.GaussianDiffusion] = {}

    # ------------------------------------------------------------ model and weights
    def build(self, cfg: UnetConfig) -> nn.Module:
        return ddpm_torch.Unet.from_config(cfg).to(self.device).eval()

    def config(self, model: nn.Module) -> UnetConfig:
        return model.config

    def load(self, model: nn.Module, state: dict[str, np.ndarray]) -> None:
        """Strict: every key present, none extra, every shape equal (``load_state_dict`` checks all)."""
        model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in state.items()},
                              strict=True)

    def state(self, model: nn.Module) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().numpy().copy() for name, p in model.named_parameters()}

    def diffusion(self, cfg: DiffusionConfig) -> ddpm_torch.GaussianDiffusion:
        """One diffusion per config for this side (mirrors MsSide, whose compiled steps it keeps)."""
        if cfg not in self._diffusions:
            self._diffusions[cfg] = ddpm_torch.GaussianDiffusion(cfg, device=self.device)
        return self._diffusions[cfg]

    def tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, copy=True)).to(self.device)

    @staticmethod
    def numpy(x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy().copy()

    # ------------------------------------------------------------ forward, loss, gradients, optimizer
    def predict(self, model: nn.Module, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.numpy(model(self.tensor(x), self.tensor(t)))

    def loss(self, model: nn.Module, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray:
        with torch.no_grad():
            return self.numpy(diffusion.p_losses(model, x0, t, noise, loss_type))

    def loss_and_grads(self, model: nn.Module, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                       loss_type: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_grads(model, diffusion, x0, t, noise, loss_type)
        return self.numpy(loss), {name: self.numpy(g) for name, g in grads.items()}

    def adam(self, model: nn.Module, diffusion: Any, batches: Sequence[tuple[np.ndarray, ...]], lrs: Sequence[float],
             loss_type: str, rule: str = "mindspore",
             first_grads: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """The state after each training step (the twin's ``make_train_step``). ``rule="torch"`` uses
        ``torch.optim.Adam`` with the same per-step learning rates. ``first_grads`` (the gradient of the
        first batch at these weights, already computed) makes step 1 the optimizer update alone."""
        optimizer = make_optimizer(model, list(lrs) if rule == "mindspore" else float(lrs[0]), rule=rule)
        step = make_train_step(model, diffusion, optimizer, loss_type)
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
    def ddpm(self, model: nn.Module, diffusion: Any, x_T: np.ndarray, noise: np.ndarray) -> np.ndarray:
        states = diffusion.p_sample_loop(model, x_T.shape, img=x_T, noise=noise, progress=self.progress,
                                         compiled=self.compiled)
        return np.stack(states)

    def ddpm_one_step(self, model: nn.Module, diffusion: Any, xs: np.ndarray, ts: np.ndarray,
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

    def ddim(self, model: nn.Module, diffusion: Any, x_T: np.ndarray, steps: int, eta: float,
             noise: np.ndarray) -> np.ndarray:
        states = diffusion.ddim_sample_loop(model, x_T.shape, steps, eta, img=x_T, noise=noise,
                                            progress=self.progress, compiled=self.compiled)
        return np.stack(states)

    # ------------------------------------------------------------ diffusion-math probes (toy model)
    @staticmethod
    def toy_model() -> Callable:
        """eps(x, t) = 0.9 x + 0.001 t: no U-Net, so the diffusion math is checked alone."""
        return lambda x, t: x * 0.9 + t.to(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    def probe_q_sample(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.q_sample(x0, t, noise))

    def probe_p_sample(self, diffusion: Any, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.p_sample(self.toy_model(), x, t, 1, noise))

    def probe_loss(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        with torch.no_grad():
            return self.numpy(diffusion.p_losses(self.toy_model(), x0, t, noise, loss_type))

    def probe_ddpm_loop(self, diffusion: Any, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.p_sample_loop(self.toy_model(), x.shape, img=x, noise=noise))

    def probe_ddim_loop(self, diffusion: Any, x: np.ndarray, steps: int, eta: float, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.ddim_sample_loop(self.toy_model(), x.shape, steps, eta, img=x, noise=noise))

    # ------------------------------------------------------------ localisation
    def modules(self, model: nn.Module) -> dict[str, nn.Module]:
        return dict(model.named_modules())

    def capture(self, model: nn.Module, x: np.ndarray, t: np.ndarray) -> list[Record]:
        """Every module call's inputs and output during ``model(x, t)``, in the order calls finish."""
        records: list[Record] = []
        names = {id(m): n for n, m in model.named_modules()}
        calls: dict[str, int] = {}

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            name = names[id(module)]
            k = calls[name] = calls.get(name, -1) + 1
            records.append(Record(name, k, type(module).__name__, to_tuple(args, self.numpy), to_tuple(output, self.numpy)))

        handles = [m.register_forward_hook(hook) for m in model.modules()]
        try:
            with torch.no_grad():
                model(self.tensor(x), self.tensor(t))
        finally:
            for h in handles:
                h.remove()
        return records

    def run_module(self, module: nn.Module, inputs: tuple) -> tuple:
        """``module(*inputs)`` on numpy inputs (None kept), numpy outputs."""
        with torch.no_grad():
            out = module(*(None if a is None else self.tensor(a) for a in inputs))
        return to_tuple(out, self.numpy)

    def settings(self, module: nn.Module) -> tuple[str, dict[str, Any]]:
        """(kind, what the layer is configured to do) in the framework-neutral vocabulary of parity.settings."""
        from parity.settings import torch_settings

        return torch_settings(module)

    def parameters_of(self, module: nn.Module) -> dict[str, np.ndarray]:
        return {n: self.numpy(p) for n, p in module.named_parameters(recurse=False)}

