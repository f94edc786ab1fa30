"""What the CPU bench times: each configuration's training step and sampling loop, built in a worker
process that imports one framework only, and the machine figures (FLOPs per image, measured peak).

Rules: every configuration trains on the same seeded batch and learning-rate list (the tutorial's); the
tutorial baseline is ``parity.tutorial_code`` run as written; a worker answers one command at a time on
stdin with one ``MARK`` line on stdout (MindSpore may print other lines).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.runtime.environment import ISA_VARIABLE

T = 200  # the tutorial's timesteps: every throughput is for this many sampling steps
MARK = "@@bench "  # a worker's replies start with this; MindSpore may print other lines
REPO = Path(__file__).resolve().parents[2]
CONFIGS: dict[str, str] = {
    "tutorial": "tutorial as written (MindSpore PyNative)",
    "tutorial_default_isa": "tutorial as written, oneDNN default ISA",
    "ms_pynative": "ddpm_ms PyNative",
    "ms_compiled": "ddpm_ms compiled (ms.jit)",
    "ms_composed": "ddpm_ms compiled, composed_ops",
    "torch_eager": "ddpm_torch eager (NCHW)",
    "torch_channels_last": "ddpm_torch channels-last",
}
DEFAULT_CONFIGS = ("tutorial", "ms_pynative", "ms_compiled", "torch_eager", "torch_channels_last")


def inputs(batch: int, cfg: UnetConfig, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seeded training batch every configuration uses: x_start, t, noise."""
    rng = np.random.default_rng(0)
    shape = (batch, cfg.channels, size, size)
    return (rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, T, batch).astype(np.int32),
            rng.standard_normal(shape).astype(np.float32))


def lrs() -> list[float]:
    """The tutorial's learning-rate list (``cosine_decay_lr`` over its 10 epochs of 3750 steps)."""
    from ddpm_core.schedules import cosine_decay_lr

    return cosine_decay_lr(1e-7, 1e-4, 10 * 3750, 3750, 10)


def tutorial(name: str, cfg: UnetConfig, batch: int, size: int) -> tuple[Callable, Callable]:
    """The tutorial's model (rename loop included), ``nn.Adam`` over its lr list, ``train_step`` and
    ``p_sample_loop``, exactly as written."""
    import mindspore as ms
    from mindspore import nn

    from parity import tutorial_code as tut

    ms.set_seed(0)
    unet_model = tut.Unet(dim=cfg.dim, channels=cfg.channels, dim_mults=cfg.dim_mults)
    name_list = [name for name, _ in unet_model.parameters_and_names()]
    for name, item in zip(name_list, unet_model.trainable_params()):
        item.name = name
    optimizer = nn.Adam(unet_model.trainable_params(), learning_rate=lrs())

    def forward_fn(data, t, noise=None):
        return tut.p_losses(unet_model, data, t, noise)

    grad_fn = ms.value_and_grad(forward_fn, None, optimizer.parameters, has_aux=False)

    def train_step(data, t, noise):
        loss, grads = grad_fn(data, t, noise)
        optimizer(grads)
        return loss

    x, t, noise = (ms.Tensor(a) for a in inputs(batch, cfg, size))

    def train(n: int) -> None:
        for _ in range(n):
            unet_model.set_train()
            loss = train_step(x, t, noise)
        loss.asnumpy()

    def sample(steps: int) -> None:
        unet_model.set_train(False)
        tut.timesteps = steps
        tut.p_sample_loop(unet_model, (batch, cfg.channels, size, size))

    return train, sample


def twin(name: str, cfg: UnetConfig, batch: int, size: int) -> tuple[Callable, Callable]:
    """A twin's ``make_train_step`` (its fast path for ms_compiled / torch_channels_last) and ``p_sample_loop``
    (``compiled`` on the same configurations)."""
    from ddpm_core.config import DiffusionConfig

    fast = name in ("ms_compiled", "ms_composed", "torch_channels_last")
    if name.startswith("ms_"):
        import mindspore as ms

        import ddpm_ms as package
        from ddpm_ms import optim

        ms.set_seed(0)
    else:
        import torch

        import ddpm_torch as package
        from ddpm_torch import optim

        torch.manual_seed(0)
    model = package.Unet.from_config(cfg, composed_ops=True) if name == "ms_composed" else package.Unet.from_config(cfg)
    fast_path = {"channels_last": fast} if name.startswith("torch") else {"compiled": fast}
    step = optim.make_train_step(model, package.GaussianDiffusion(), optim.make_optimizer(model, lrs()), **fast_path)
    x, t, noise = inputs(batch, cfg, size)
    diffusion = functools.cache(lambda steps: package.GaussianDiffusion(DiffusionConfig(timesteps=steps)))

    def train(n: int) -> None:
        for _ in range(n):
            loss = step(x, t, noise)
        float(loss)  # MindSpore may run ahead of Python: wait for the last step

    def sample(steps: int) -> None:
        model.set_train(False) if name.startswith("ms_") else model.eval()
        diffusion(steps).p_sample_loop(model, (batch, cfg.channels, size, size), compiled=fast)

    return train, sample


def flops_per_image(cfg: UnetConfig, batch: int, size: int, device: str = "cpu") -> float:
    """FLOPs of one forward per image, counted with torch.utils.flop_counter on the torch twin (convolutions
    and matrix products). A training step is taken as 3 x forward (the backward's input and weight gradients
    each cost a forward): FlopCounterMode's own count for the backward of a grouped convolution is wrong in
    torch 2.14 (it counts a depthwise 7x7 backward as ~29 forwards)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import ddpm_torch

    x, t, _ = (torch.from_numpy(a).to(device) for a in inputs(batch, cfg, size))
    with FlopCounterMode(display=False) as fwd, torch.no_grad():
        ddpm_torch.Unet.from_config(cfg).to(device)(x, t)
    return fwd.get_total_flops() / batch


def machine(cfg: UnetConfig, batch: int, size: int) -> dict[str, Any]:
    """FLOPs per image and the machine's float32 peak (the best of twenty 2048^3 matmuls, every core)."""
    import torch

    forward = flops_per_image(cfg, batch, size)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return {"flops_per_image_forward": forward, "flops_per_image_train_step": 3 * forward,
            "peak_flops_measured": 2 * 2048**3 / best, "torch_threads": torch.get_num_threads()}


def worker(name: str, cfg: UnetConfig, batch: int, size: int) -> int:
    """Serve one configuration: build, then answer ``train N`` / ``sample K`` / ``exit`` lines on stdin."""
    import resource

    def reply(**kw: Any) -> None:
        print(MARK + json.dumps(kw), flush=True)

    t0 = time.perf_counter()
    if name == "machine":
        reply(**machine(cfg, batch, size))
        return 0
    train, sample = (tutorial if name.startswith("tutorial") else twin)(name, cfg, batch, size)
    reply(ready=time.perf_counter() - t0, isa=os.environ.get(ISA_VARIABLE))
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "exit":
            r = resource.getrusage(resource.RUSAGE_SELF)
            reply(peak_rss_mib=r.ru_maxrss / 1024, cpu_s=r.ru_utime + r.ru_stime)
            return 0
        t0 = time.perf_counter()
        (train if cmd == "train" else sample)(int(arg[0]))
        reply(seconds=time.perf_counter() - t0)
    return 1
