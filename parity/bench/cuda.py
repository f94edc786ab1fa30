"""``python -m parity.bench --device cuda``: the torch twin on a CUDA GPU, training and full T=200 sampling
images/s for each way of running it, with warm-up, peak memory and the share of the GPU's measured peak.

Configurations (``CUDA_CONFIGS``): float32 NCHW and channels-last with TF32 off (the precision parity.check
compares at), TF32, autocast float16 (with a GradScaler) and bfloat16, the sampling step replayed as one CUDA
graph, and ``torch.compile``. Rules:
  * one process, one configuration at a time (build, warm-up timed apart, then ``--repeats`` measurements);
    the precision flags are set for each configuration before it is built; every timing ends with a
    device synchronisation;
  * the batch, timesteps and noise live on the device before timing starts (no data loading is timed);
  * every sampler runs the twin's ``GaussianDiffusion.p_step`` through one loop (``sample_loop``): only how
    a step runs changes between configurations; states are kept and copied to the host once, as the twin's
    ``p_sample_loop`` does;
  * the fraction of peak divides FLOP/s (torch.utils.flop_counter, training = 3 x forward) by the peak of
    the configuration's compute type, measured with big matmuls (``measure_peaks``);
  * ``torch.compile`` pays where its extra warm-up is won back: ``break_even_images`` says after how many
    images, against channels-last.
Without a CUDA device the command refuses in one line (exit 3), writing nothing. The builders take any
device, so everything but the CUDA graph runs on the CPU too (tests/parity/test_bench_cuda.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.bench.workloads import inputs, lrs

CUDA_CONFIGS: dict[str, tuple[str, str]] = {  # name -> (label, compute type of its peak)
    "eager": ("ddpm_torch eager (NCHW, float32, TF32 off)", "float32"),
    "channels_last": ("channels-last, float32 (TF32 off)", "float32"),
    "tf32": ("channels-last, TF32 on", "tf32"),
    "amp_fp16": ("channels-last, autocast float16 + GradScaler", "float16"),
    "amp_bf16": ("channels-last, autocast bfloat16", "bfloat16"),
    "cuda_graph": ("channels-last, float32, sampling step as one CUDA graph", "float32"),
    "compile": ("torch.compile (default mode), channels-last, float32", "float32"),
}
DEFAULT_CUDA_CONFIGS = tuple(CUDA_CONFIGS)
PEAK_DTYPES = ("float32", "tf32", "float16", "bfloat16")


@dataclass
class Workload:
    """One configuration built on a device: ``train(n)`` runs n steps, ``sample(k)`` one k-step DDPM loop;
    both return after the device has finished. ``train`` is None where it equals another configuration's."""

    name: str
    train: Callable[[int], None] | None
    sample: Callable[[int], Any]


def set_precision(name: str) -> None:
    """TF32 on for the ``tf32`` configuration, off for every other (matmul, cuDNN, float32 matmul precision)."""
    import torch

    tf32 = name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def sample_loop(step: Callable, diffusion: Any, shape: tuple[int, ...], device: str, img: Any = None,
                noise: Any = None) -> Any:
    """The DDPM loop over ``diffusion``'s T steps with ``step(x, t, noise) -> x_{t-1}`` (the twin's ``p_step``,
    however it runs): every state x_{T-1} .. x_0 stacked, on the host. ``img`` / ``noise`` (T, *shape) as
    given, else drawn on the device."""
    import torch

    img = torch.randn(shape, device=device) if img is None else img
    states = []
    for k, i in enumerate(range(diffusion.timesteps - 1, -1, -1)):
        t = torch.full((shape[0],), i, dtype=torch.int32, device=device)
        img = step(img, t, torch.randn(shape, device=device) if noise is None else noise[k])
        states.append(img)
    return torch.stack(states).cpu()


def graphed(step: Callable, shape: tuple[int, ...], device: str) -> Callable:
    """``step`` captured once as a CUDA graph over static input buffers, replayed per call (inputs copied in,
    the output cloned out). CUDA only: ``ValueError`` on any other device."""
    import torch

    if not device.startswith("cuda"):
        raise ValueError(f"cuda_graph needs a CUDA device, not {device}")
    x, n = torch.zeros(shape, device=device), torch.zeros(shape, device=device)
    t = torch.zeros((shape[0],), dtype=torch.int32, device=device)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            step(x, t, n)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step(x, t, n)

    def replay(x_in: Any, t_in: Any, n_in: Any) -> Any:
        x.copy_(x_in)
        t.copy_(t_in)
        n.copy_(n_in)
        graph.replay()
        return out.clone()

    return replay


def build(name: str, cfg: UnetConfig, batch: int, size: int, device: str) -> Workload:
    """Configuration ``name`` of ``CUDA_CONFIGS`` on ``device``: the twin's model, optimizer and diffusion."""
    import torch

    import ddpm_torch
    from ddpm_torch.optim import make_optimizer, make_train_step

    set_precision(name)
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(cfg).to(device)
    optimizer = make_optimizer(model, lrs())
    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(), device=device)
    x, t, noise = (torch.from_numpy(a).to(device) for a in inputs(batch, cfg, size))
    shape = (batch, cfg.channels, size, size)
    amp = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}.get(name)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if name in ("amp_fp16", "amp_bf16", "compile"):
        model.to(memory_format=torch.channels_last)
        forward = torch.compile(model) if name == "compile" else model
        scaler = torch.amp.GradScaler(kind, enabled=name == "amp_fp16")

        def step(x0: Any, tt: Any, eps: Any) -> Any:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(kind, dtype=amp or torch.float32, enabled=amp is not None):
                loss = diffusion.p_losses(forward, x0, tt, eps)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.detach()
    else:
        step = make_train_step(model, diffusion, optimizer, channels_last=name != "eager")

    def train(n: int) -> None:
        for _ in range(n):
            loss = step(x, t, noise)
        float(loss)  # waits for the device

    wrap = {"cuda_graph": lambda f: graphed(f, shape, device),
            "compile": lambda f: torch.compile(f, dynamic=False)}.get(name, lambda f: f)

    def step_for(schedule: Any) -> Callable:
        def p_step(xt: Any, tt: Any, eps: Any) -> Any:
            with torch.autocast(kind, dtype=amp or torch.float32, enabled=amp is not None):
                return schedule.p_step(model, xt, tt, eps)

        return wrap(p_step)

    loops: dict[int, tuple[Any, Callable]] = {}

    @torch.no_grad()
    def sample(steps: int) -> Any:
        model.eval()
        if steps not in loops:  # a T=steps schedule: the same work per step
            schedule = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=steps), device=device)
            loops[steps] = (schedule, step_for(schedule))
        schedule, run = loops[steps]
        return sample_loop(run, schedule, shape, device)

    return Workload(name, None if name == "cuda_graph" else train, sample)


def measure_peaks(device: str, n: int = 8192, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of the best of ``repeats`` n x n x n matmuls for each compute type in ``PEAK_DTYPES``."""
    import torch

    out = {}
    for label in PEAK_DTYPES:
        set_precision("tf32" if label == "tf32" else "")
        dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(label, torch.float32)
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        torch.mm(a, b)
        best = float("inf")
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            best = min(best, time.perf_counter() - t0)
        out[label] = 2 * n**3 / best
        del a, b
    set_precision("")
    return out
