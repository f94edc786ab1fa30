"""``python -m ddpm_torch.train --data DIR --out RUN_DIR``: the tutorial's training in PyTorch; mirrors
ddpm_ms/train.py.

The loop, the run folder and the options are shared (``ddpm_core.training.loop``, ``ddpm_core.cli``); this file
holds what is PyTorch's own: the ``Trainer`` (model, ``MindSporeAdam`` over the tutorial's
``cosine_decay_lr`` list, one training step), its checkpoint file, and ``train_steps`` for training
parity. Nothing here draws from torch's RNG except the seeded initial weights (drawn on the CPU, then moved:
the same weights on every device). The model, its optimizer state and every batch live on the trainer's
device; a checkpoint holds CPU tensors only, so it resumes on any device (``ddpm_torch.device``).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_core.cli import exit_after_main, run_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import RunError
from ddpm_core.runtime.amp import train_loss_scale
from ddpm_core.runtime.distributed import World
from ddpm_core.training.loop import CHECKPOINT_FORMAT, train_main
from ddpm_core.training.settings import checkpoint_mismatch
from ddpm_core.training.tape import shard
from ddpm_torch import device as devices
from ddpm_torch import distributed
from ddpm_torch.adapter import Adapter
from ddpm_torch.amp import apply_policy
from ddpm_torch.data import open_data
from ddpm_torch.diffusion import GaussianDiffusion
from ddpm_torch.optim import make_optimizer, make_train_step
from ddpm_torch.unet import Unet


def compile_model(model: nn.Module, compile: str) -> nn.Module:
    """``--compile`` "on": ``torch.compile(model)``; "auto"/"off": the eager model (fast already on CPU)."""
    return torch.compile(model) if compile == "on" else model


class Trainer:
    """The U-Net, its diffusion, MindSpore's Adam rule over the per-step learning rates, and one step.

    ``weights`` (PyTorch names) replaces the seeded initialisation (``torch.manual_seed(seed)``). ``device``
    (as ``device.resolve_device`` returns it) holds the model, the optimizer state and every batch;
    ``precision`` ("fp32", "bf16", "fp16") runs the forward pass under ``torch.autocast`` with float32 weights,
    fp16 with the fixed loss scale ``ddpm_core.runtime.amp.DEFAULT_LOSS_SCALE``; ``deterministic`` as
    ``device.use_deterministic``."""

    framework = "torch"
    naming = "torch"
    checkpoint_ext = ".pt"

    def __init__(self, unet_config: UnetConfig, diffusion_config: DiffusionConfig, lrs: Sequence[float],
                 seed: int = 0, weights: dict[str, np.ndarray] | None = None, compile: str = "off",
                 world: World = World(), device: str = "cpu", precision: str = "fp32", deterministic: bool = True):
        self.deterministic = devices.use_deterministic(deterministic)
        torch.manual_seed(seed)
        self.device, self.precision = torch.device(device), precision
        self.model = Unet.from_config(unet_config).to(self.device)
        if weights is not None:
            Adapter(device).load(self.model, weights)
        apply_policy(self.model, devices.check_precision(device, precision))
        self.diffusion = GaussianDiffusion(diffusion_config, self.device)
        self.optimizer = make_optimizer(self.model, list(lrs))
        self.compile, self.world = compile, world
        self._step = self._make_step()

    def _make_step(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray], torch.Tensor]:
        """On one CUDA device in float32 (not under ``--compile on``), the whole step as one CUDA graph
        (``make_train_step(cuda_graph=True)``, the same update rule); else eager or compiled."""
        graph = (self.device.type == "cuda" and not self.world.distributed and self.compile != "on"
                 and self.precision == "fp32")
        return make_train_step(compile_model(self.model, self.compile), self.diffusion, self.optimizer, world=self.world,
                               loss_scale=train_loss_scale(self.precision), cuda_graph=graph)

    def step(self, x_start: np.ndarray, t: np.ndarray, noise: np.ndarray) -> float:
        return float(self._step(x_start, t, noise))

    def lr_position(self) -> int:
        return self.optimizer.global_step

    def numerics(self) -> dict[str, Any]:
        """What decides the last bits of a step on CPU: the library, oneDNN's instruction set, the threads."""
        return {"torch": str(torch.__version__), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                "threads": torch.get_num_threads(), "workers": self.world.size, "device": str(self.device),
                "deterministic": self.deterministic["deterministic_algorithms"]}

    def state(self) -> dict[str, np.ndarray]:
        """The model's weights, PyTorch names, copied."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def save_checkpoint(self, path: Path, meta: dict[str, Any]) -> None:
        """Model, optimizer, RNG state and ``meta``, as CPU tensors (loadable on any device);
        ``torch.save``'s zip holds a CRC-32 of each member."""
        torch.save(devices.on_cpu({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                   "torch_rng_state": torch.get_rng_state(), "meta": meta}), path)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
            meta = state["meta"]
        except Exception as e:  # noqa: BLE001 - a damaged zip or pickle raises many types
            raise RunError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("framework") != self.framework:
            raise RunError(f"{path}: not a {self.framework} training checkpoint of this project")
        mismatch = checkpoint_mismatch(path, {n: tuple(v.shape) for n, v in state["model"].items()},
                                       {n: tuple(v.shape) for n, v in self.model.state_dict().items()})
        if mismatch:
            raise mismatch
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng_state"])
        self._step = self._make_step()
        return meta


def train_steps(unet_config: UnetConfig, diffusion_config: DiffusionConfig, weights: dict[str, np.ndarray],
                x_starts: np.ndarray, ts: np.ndarray, noises: np.ndarray,
                lrs: Sequence[float], compile: str = "off", world: World = World(),
                device: str = "cpu") -> tuple[list[float], dict[str, np.ndarray]]:
    """Train from ``weights`` (PyTorch names) on a given tape: step k uses ``x_starts[k]`` (in [-1, 1]),
    ``ts[k]``, ``noises[k]`` and learning rate ``lrs[k]``. Returns the loss of every step and the final
    weights (PyTorch names, copied); ``compile`` as ``--compile``, ``device`` as the ``Trainer``'s. In a data-parallel job (``world``) every rank passes
    the whole tape and computes its slice of each batch (``ddpm_core.training.tape.shard``); the losses are the global batch's. The same function in ddpm_ms/train.py is its parity twin."""
    trainer = Trainer(unet_config, diffusion_config, lrs, weights=weights, compile=compile, world=world, device=device)
    r, n = world.rank, world.size
    losses = [trainer.step(shard(x, r, n), shard(t, r, n), shard(e, r, n)) for x, t, e in zip(x_starts, ts, noises)]
    return losses, trainer.state()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: train_main(a, "python -m ddpm_torch.train", "torch", open_data, Trainer, distributed,
                                         devices), argv)


if __name__ == "__main__":
    exit_after_main(main())
