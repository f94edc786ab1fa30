"""``python -m ddpm_ms.train --data DIR --out RUN_DIR``: the tutorial's training in MindSpore; mirrors
ddpm_torch/train.py.

The loop, the run folder and the options are shared (``ddpm_core.training.loop``, ``ddpm_core.cli``); this file
holds what is MindSpore's own: the ``Trainer`` (model, the tutorial's ``nn.Adam`` over its
``cosine_decay_lr`` list, one training step), its checkpoint file, and ``train_steps`` for training
parity. Nothing here draws from MindSpore's RNG except the seeded initial weights. The device is MindSpore's
process-wide target (``ddpm_ms.device``); checkpoints hold host arrays and resume on any device.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ddpm_core.cli import exit_after_main, run_main
from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import RunError
from ddpm_core.runtime.amp import train_loss_scale
from ddpm_core.runtime.distributed import World
from ddpm_core.training.loop import CHECKPOINT_FORMAT, train_main
from ddpm_core.training.settings import checkpoint_mismatch
from ddpm_core.training.tape import shard
from ddpm_core.weights.converter import ms_to_torch
from ddpm_ms import device as devices
from ddpm_ms import distributed
from ddpm_ms.adapter import Adapter
from ddpm_ms.amp import apply_policy
from ddpm_ms.data import open_data
from ddpm_ms.diffusion import GaussianDiffusion
from ddpm_ms.optim import make_optimizer, make_train_step
from ddpm_ms.unet import Unet

META_KEY = "ddpm_meta"


def compiles_step(compile: str) -> bool:
    """``--compile`` "on"/"auto": the whole training step (forward, loss, gradients, ``nn.Adam``) as one
    ``ms.jit`` graph; "off": op by op (PyNative), as the tutorial runs it."""
    return compile in ("on", "auto")


class Trainer:
    """The U-Net, its diffusion, the tutorial's ``nn.Adam`` over the per-step learning rates, and one step.

    ``weights`` (PyTorch names) replaces the seeded initialisation (``ms.set_seed(seed)``). ``composed_ops``
    builds the U-Net with GELU and GroupNorm composed from primitive ops (``ddpm_ms.Unet(composed_ops=True)``):
    faster on CPU, within float32 rounding of MindSpore's kernels but not bit-identical to the tutorial's model;
    the same parameters and checkpoints either way. ``device`` is MindSpore's device target for the process
    (``device.resolve_device``); ``precision`` ("fp32", "bf16", "fp16") runs the forward pass under
    ``amp.auto_mixed_precision`` level "auto" with float32 weights, fp16 with the fixed loss scale
    ``ddpm_core.runtime.amp.DEFAULT_LOSS_SCALE``; ``deterministic`` as ``device.use_deterministic``."""

    framework = "ms"
    naming = "ms"
    checkpoint_ext = ".ckpt"

    def __init__(self, unet_config: UnetConfig, diffusion_config: DiffusionConfig, lrs: Sequence[float],
                 seed: int = 0, weights: dict[str, np.ndarray] | None = None, compile: str = "off",
                 world: World = World(), device: str = "CPU", precision: str = "fp32", deterministic: bool = True,
                 composed_ops: bool = False):
        self.device, self.precision = devices.resolve_device(device), precision
        self.deterministic = devices.use_deterministic(deterministic)
        ms.set_seed(seed)
        self.config = unet_config
        self.model = Unet.from_config(unet_config, composed_ops=composed_ops)
        if weights is not None:
            Adapter().load(self.model, weights)
        self.net = apply_policy(self.model, devices.check_precision(self.device, precision))
        self.diffusion = GaussianDiffusion(diffusion_config)
        self.optimizer = make_optimizer(self.model, list(lrs))
        self.compile, self.world = compile, world
        self._step = self._make_step()

    def _make_step(self) -> Callable[[np.ndarray, np.ndarray, np.ndarray], Tensor]:
        return make_train_step(self.net, self.diffusion, self.optimizer, compiled=compiles_step(self.compile),
                               world=self.world, loss_scale=train_loss_scale(self.precision))

    def step(self, x_start: np.ndarray, t: np.ndarray, noise: np.ndarray) -> float:
        return float(self._step(x_start, t, noise).asnumpy())

    def lr_position(self) -> int:
        return int(self.optimizer.global_step.asnumpy().reshape(-1)[0])

    def numerics(self) -> dict[str, Any]:
        """What decides the last bits of a step on CPU: the library and oneDNN's instruction set."""
        return {"mindspore": str(ms.__version__), "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                "workers": self.world.size, "device": self.device,
                "deterministic": self.deterministic["deterministic"] == "ON"}

    def state(self) -> dict[str, np.ndarray]:
        """The model's weights, MindSpore names, copied (``asnumpy`` can alias a Parameter's memory)."""
        return {p.name: np.array(p.asnumpy(), copy=True) for p in self.model.get_parameters()}

    def _saved(self) -> list[ms.Parameter]:
        """Model weights, Adam moments (``moment1.*``, ``moment2.*``), ``beta1_power``, ``beta2_power``,
        ``global_step`` (the learning-rate position) and the ``learning_rate`` list: the optimizer's parameters."""
        return list(self.optimizer.get_parameters())

    def save_checkpoint(self, path: Path, meta: dict[str, Any]) -> None:
        """Model, optimizer and ``meta``, with MindSpore's CRC-32 trailer (``crc_check=True``)."""
        named = path.with_name(path.name + ".ckpt")  # ms.save_checkpoint appends .ckpt to any other name
        partial = path.with_name(path.name + ".tmp")  # where it writes before renaming to ``named``
        try:
            ms.save_checkpoint([{"name": p.name, "data": p} for p in self._saved()], str(named),
                               append_dict={META_KEY: json.dumps(meta)}, crc_check=True)
            os.chmod(named, 0o600)  # MindSpore makes it read-only; the atomic write sets the final mode
            os.replace(named, path)
        finally:
            for f in (named, partial):  # left by a failed write (a full disk)
                if f.exists():
                    f.unlink()

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        try:
            saved = ms.load_checkpoint(str(path))
            meta = json.loads(saved.pop(META_KEY))
        except (ValueError, RuntimeError, TypeError, KeyError, OSError) as e:
            raise RunError(f"{path}: not a readable training checkpoint ({type(e).__name__}: {e})") from None
        if meta.get("format") != CHECKPOINT_FORMAT or meta.get("framework") != self.framework:
            raise RunError(f"{path}: not a {self.framework} training checkpoint of this project")
        params = self._saved()
        mismatch = checkpoint_mismatch(path, {n: tuple(v.shape) for n, v in saved.items()},
                                       {p.name: tuple(p.shape) for p in params})
        if mismatch:
            raise mismatch
        for p in params:
            p.set_data(Tensor(np.array(saved[p.name].asnumpy(), copy=True), dtype=p.dtype))
        self._step = self._make_step()
        return meta


def train_steps(unet_config: UnetConfig, diffusion_config: DiffusionConfig, weights: dict[str, np.ndarray],
                x_starts: np.ndarray, ts: np.ndarray, noises: np.ndarray,
                lrs: Sequence[float], compile: str = "off", world: World = World(), device: str = "CPU",
                composed_ops: bool = False) -> tuple[list[float], dict[str, np.ndarray]]:
    """Train from ``weights`` (PyTorch names) on a given tape: step k uses ``x_starts[k]`` (in [-1, 1]),
    ``ts[k]``, ``noises[k]`` and learning rate ``lrs[k]``. Returns the loss of every step and the final
    weights (PyTorch names, copied); ``compile`` as ``--compile``, ``device`` and ``composed_ops`` as the ``Trainer``'s. In a
    data-parallel job (``world``) every rank passes the whole tape and computes its slice of each batch
    (``ddpm_core.training.tape.shard``); the losses are the global batch's. The same function in ddpm_torch/train.py is its parity twin."""
    trainer = Trainer(unet_config, diffusion_config, lrs, weights=weights, compile=compile, world=world, device=device,
                      composed_ops=composed_ops)
    r, n = world.rank, world.size
    losses = [trainer.step(shard(x, r, n), shard(t, r, n), shard(e, r, n)) for x, t, e in zip(x_starts, ts, noises)]
    return losses, ms_to_torch(trainer.state(), unet_config)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(lambda a: train_main(a, "python -m ddpm_ms.train", "ms", open_data, Trainer, distributed,
                                         devices), argv)


if __name__ == "__main__":
    exit_after_main(main())
