"""The MindSpore side of a parity run: the ddpm_ms twin behind numpy in / numpy out.

Same interface as ``parity.side_torch.TorchSide``. Rules: inputs come from the tape (never
MindSpore's RNG); weights arrive PyTorch-named and go through ``ddpm_core.weights.torch_to_ms``;
every array returned is an explicit copy (``Tensor.asnumpy()`` can share memory with a Parameter,
so a snapshot taken before an optimizer step would otherwise change under the caller); gradients
and states are returned under PyTorch names. ``compiled=True`` runs the samplers' steps through the
twin's ``ms.jit`` graphs (compiled once per run and shape); localisation always runs PyNative,
where forward hooks fire.
"""
from __future__ import annotations

import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # before MindSpore's first CPU kernel

import inspect  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

import numpy as np  # noqa: E402
from mindspore import Tensor, nn  # noqa: E402

import ddpm_ms  # noqa: E402
from ddpm_core.config import DiffusionConfig, UnetConfig  # noqa: E402
from ddpm_core.naming import unet_parameters  # noqa: E402
from ddpm_core.weights import WeightsError, torch_to_ms  # noqa: E402
from ddpm_ms.optim import loss_and_grads, make_optimizer, make_train_step  # noqa: E402
from parity.side_common import Record, to_tuple  # noqa: E402


def snapshot(x: Tensor) -> np.ndarray:
    """A numpy copy of ``x`` that no later in-place update of ``x`` can change."""
    return np.array(x.asnumpy(), copy=True)


class MsSide:
    name = "ms"
    label = "MindSpore"

    def __init__(self, device: str = "CPU", compiled: bool = True, progress: bool = False, chunk: int = 32):
        self.device = device
        self.compiled = compiled
        self.progress = progress
        self.chunk = chunk
        self._diffusions: dict[DiffusionConfig, ddpm_ms.GaussianDiffusion] = {}

    # ------------------------------------------------------------ model and weights
    def build(self, cfg: UnetConfig) -> nn.Cell:
        model = ddpm_ms.Unet.from_config(cfg)
        model.set_train(False)
        return model

    def config(self, model: nn.Cell) -> UnetConfig:
        return model.config

    def _ms_to_torch_names(self, model: nn.Cell) -> dict[str, str]:
        return {s.ms_name: s.torch_name for s in unet_parameters(self.config(model))}

    def load(self, model: nn.Cell, state: dict[str, np.ndarray]) -> None:
        """PyTorch-named ``state`` -> ``torch_to_ms`` -> every Parameter, strictly (names and shapes),
        copied in place."""
        ms_state = torch_to_ms(state, self.config(model))
        params = {p.name: p for p in model.get_parameters()}
        problems = [f"missing in the model: {n}" for n in ms_state if n not in params]
        problems += [f"not in the converted weights: {n}" for n in params if n not in ms_state]
        problems += [f"shape mismatch: {n}: model {tuple(params[n].shape)}, weights {v.shape}"
                     for n, v in ms_state.items() if n in params and tuple(params[n].shape) != v.shape]
        if problems:
            raise WeightsError(problems, "the MindSpore model's parameters do not match the converted weights")
        for n, v in ms_state.items():  # in place: compiled steps of this model stay valid (see GaussianDiffusion.compiled)
            params[n].copy_(Tensor(np.array(v, dtype=np.float32, copy=True)))

    def state(self, model: nn.Cell) -> dict[str, np.ndarray]:
        """Every parameter, PyTorch-named, copied."""
        names = self._ms_to_torch_names(model)
        return {names.get(p.name, p.name): snapshot(p) for p in model.get_parameters()}

    def diffusion(self, cfg: DiffusionConfig) -> ddpm_ms.GaussianDiffusion:
        """One diffusion per config for this side, so its compiled steps (cached per model) are reused by
        later runs on the same model object; weights are read when a graph runs, not when it compiles."""
        if cfg not in self._diffusions:
            self._diffusions[cfg] = ddpm_ms.GaussianDiffusion(cfg)
        return self._diffusions[cfg]

    @staticmethod
    def tensor(a: np.ndarray) -> Tensor:
        return Tensor(np.array(a, copy=True))

    @staticmethod
    def numpy(x: Tensor) -> np.ndarray:
        return snapshot(x)

    # ------------------------------------------------------------ forward, loss, gradients, optimizer
    def predict(self, model: nn.Cell, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.numpy(model(self.tensor(x), self.tensor(t)))

    def loss(self, model: nn.Cell, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
             loss_type: str) -> np.ndarray:
        return self.numpy(diffusion.p_losses(model, x0, t, noise, loss_type))

    def loss_and_grads(self, model: nn.Cell, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray,
                       loss_type: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        loss, grads = loss_and_grads(model, diffusion, x0, t, noise, loss_type)
        names = self._ms_to_torch_names(model)
        return self.numpy(loss), {names.get(n, n): self.numpy(g) for n, g in grads.items()}

    def adam(self, model: nn.Cell, diffusion: Any, batches: Sequence[tuple[np.ndarray, ...]], lrs: Sequence[float],
             loss_type: str, rule: str = "mindspore",
             first_grads: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
        """The state after each training step of the twin's ``make_train_step`` with ``nn.Adam``;
        ``first_grads`` (PyTorch-named, the first batch's gradient at these weights) makes step 1 the
        optimizer update alone."""
        if rule != "mindspore":
            raise ValueError("the MindSpore side has only MindSpore's Adam rule")
        optimizer = make_optimizer(model, [float(v) for v in lrs])
        # op by op: the compiled training step (``fast=True`` where the twin has it) costs tens of seconds
        # to compile, far more than the few steps here
        plain = {"fast": False} if "fast" in inspect.signature(make_train_step).parameters else {}
        step = make_train_step(model, diffusion, optimizer, loss_type, **plain)
        names = self._ms_to_torch_names(model)
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
    def ddpm(self, model: nn.Cell, diffusion: Any, x_T: np.ndarray, noise: np.ndarray) -> np.ndarray:
        states = diffusion.p_sample_loop(model, x_T.shape, img=x_T, noise=noise, progress=self.progress,
                                         compiled=self.compiled)
        return np.stack(states)

    def ddpm_one_step(self, model: nn.Cell, diffusion: Any, xs: np.ndarray, ts: np.ndarray,
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

    def ddim(self, model: nn.Cell, diffusion: Any, x_T: np.ndarray, steps: int, eta: float,
             noise: np.ndarray) -> np.ndarray:
        states = diffusion.ddim_sample_loop(model, x_T.shape, steps, eta, img=x_T, noise=noise,
                                            progress=self.progress, compiled=self.compiled)
        return np.stack(states)

    # ------------------------------------------------------------ diffusion-math probes (toy model)
    @staticmethod
    def toy_model() -> Callable:
        """eps(x, t) = 0.9 x + 0.001 t: no U-Net, so the diffusion math is checked alone."""
        return lambda x, t: x * 0.9 + t.astype(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    def probe_q_sample(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.q_sample(x0, t, noise))

    def probe_p_sample(self, diffusion: Any, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.numpy(diffusion.p_sample(self.toy_model(), x, t, 1, noise))

    def probe_loss(self, diffusion: Any, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return self.numpy(diffusion.p_losses(self.toy_model(), x0, t, noise, loss_type))

    def probe_ddpm_loop(self, diffusion: Any, x: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.p_sample_loop(self.toy_model(), x.shape, img=x, noise=noise))

    def probe_ddim_loop(self, diffusion: Any, x: np.ndarray, steps: int, eta: float, noise: np.ndarray) -> np.ndarray:
        return np.stack(diffusion.ddim_sample_loop(self.toy_model(), x.shape, steps, eta, img=x, noise=noise))

    # ------------------------------------------------------------ localisation
    def modules(self, model: nn.Cell) -> dict[str, nn.Cell]:
        return dict(model.cells_and_names())

    def capture(self, model: nn.Cell, x: np.ndarray, t: np.ndarray) -> list[Record]:
        """Every cell call's inputs and output during ``model(x, t)`` (PyNative), in the order calls finish."""
        records: list[Record] = []
        names = {id(c): n for n, c in model.cells_and_names()}
        calls: dict[str, int] = {}

        def hook(cell: nn.Cell, args: tuple, output: Any) -> None:
            name = names[id(cell)]
            k = calls[name] = calls.get(name, -1) + 1
            records.append(Record(name, k, type(cell).__name__, to_tuple(args, self.numpy), to_tuple(output, self.numpy)))

        handles = [c.register_forward_hook(hook) for _, c in model.cells_and_names()]
        try:
            model(self.tensor(x), self.tensor(t))
        finally:
            for h in handles:
                h.remove()
        return records

    def run_module(self, cell: nn.Cell, inputs: tuple) -> tuple:
        """``cell(*inputs)`` on numpy inputs (None kept), numpy outputs (PyNative)."""
        out = cell(*(None if a is None else self.tensor(a) for a in inputs))
        return to_tuple(out, self.numpy)

    def settings(self, cell: nn.Cell) -> tuple[str, dict[str, Any]]:
        from parity.settings import ms_settings

        return ms_settings(cell)

    def parameters_of(self, cell: nn.Cell) -> dict[str, np.ndarray]:
        return {n.rsplit(".", 1)[-1]: snapshot(p) for n, p in cell.parameters_and_names(expand=False)}

