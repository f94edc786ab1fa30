"""``python -m parity.bench --device cuda``: the torch twin on a CUDA GPU, training and full T=200 sampling
images/s for each way of running it, with warm-up, peak memory and the share of the GPU's measured peak.

Configurations (``CUDA_CONFIGS``, one ``CudaConfig`` each): the memory format (NCHW, channels-last), the
numerics (float32 with TF32 off: what parity.check compares at; TF32; autocast float16 with a GradScaler or
bfloat16), how a training step runs (eager; the twin's ``make_train_step(cuda_graph=True)``: forward, backward
and Adam as one CUDA graph; ``torch.compile`` in a given mode, alone or inside that graph) and how sampling
runs (eager steps; each step one CUDA graph; the whole loop one CUDA graph: the twin's ``ddpm_graph``;
``torch.compile`` of the step). Rules:
  * one process, one configuration at a time (build, warm-up timed apart, then ``--repeats`` measurements);
    the precision flags are set for each configuration before it is built; every timing ends with a
    device synchronisation;
  * the batch, timesteps and noise live on the device before timing starts (no data loading is timed);
  * every sampler runs the twin's ``GaussianDiffusion.p_step``: ``sample_loop`` (a Python loop, each step eager,
    compiled or one CUDA graph) or ``ddpm_graph`` (the loop as one graph); only how a step runs changes; the
    states are copied to the host once, as the twin's ``p_sample_loop`` does;
  * the fraction of peak divides FLOP/s (torch.utils.flop_counter, training = 3 x forward) by the peak of
    the configuration's compute type, measured with big matmuls (``measure_peaks``);
  * ``torch.compile`` pays where its extra warm-up is won back: ``break_even_images`` says after how many
    images, against channels-last.
Without a CUDA device the command refuses in one line (exit 3), writing nothing; ``--torch-device cpu`` runs the
same code on the CPU (no CUDA graph is captured there: the static-buffer code runs as it is), for dry runs and
tests (tests/parity/test_bench_cuda.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.bench.workloads import inputs, lrs


@dataclass(frozen=True)
class CudaConfig:
    """One way of running the twin on a GPU. ``train``: "eager" (``make_train_step``), "graph" (its
    ``cuda_graph=True``), "scaled" (eager, the loss under autocast and a GradScaler, enabled for float16 only) or
    None (as another configuration);
    ``sample``: "eager" (a Python loop of eager steps), "step_graph" (each step one CUDA graph), "loop_graph"
    (``ddpm_graph``: the loop one CUDA graph), "compile" (the step through ``torch.compile``) or None;
    ``compile``: the ``torch.compile`` mode of the model (None: not compiled); ``foreach``: MindSporeAdam's
    update (None: the twin's per-device default)."""

    label: str
    peak_dtype: str
    channels_last: bool = False
    tf32: bool = False
    amp: str | None = None
    train: str | None = "eager"
    sample: str | None = "eager"
    compile: str | None = None
    foreach: bool | None = None

    @property
    def graphed(self) -> bool:
        return self.train == "graph" or self.sample in ("step_graph", "loop_graph")


_F32, _CL = "float32 (TF32 off)", "channels-last"
CUDA_CONFIGS: dict[str, CudaConfig] = {
    "eager": CudaConfig("ddpm_torch eager (NCHW, float32, TF32 off)", "float32"),
    "eager_loop_adam": CudaConfig("eager, Adam one parameter at a time, NCHW, " + _F32,
                                  "float32", foreach=False, sample=None),
    "channels_last": CudaConfig(f"{_CL}, {_F32}", "float32", channels_last=True),
    "tf32": CudaConfig(f"{_CL}, TF32 on", "tf32", channels_last=True, tf32=True),
    "amp_fp16": CudaConfig(f"{_CL}, autocast float16 + GradScaler", "float16", channels_last=True, amp="float16",
                           train="scaled"),
    "amp_bf16": CudaConfig(f"{_CL}, autocast bfloat16", "bfloat16", channels_last=True, amp="bfloat16",
                           train="scaled"),
    "cuda_graph": CudaConfig(f"{_CL}, {_F32}, sampling step as one CUDA graph", "float32", channels_last=True,
                             train=None, sample="step_graph"),
    "compile": CudaConfig(f"torch.compile (default mode), {_CL}, float32", "float32", channels_last=True,
                          train="scaled", sample="compile", compile="default"),
    "graph": CudaConfig(f"training step and sampling loop each one CUDA graph, NCHW, {_F32}", "float32",
                        train="graph", sample="loop_graph"),
    "graph_channels_last": CudaConfig(f"CUDA graphs, {_CL}, {_F32}", "float32", channels_last=True, train="graph",
                                      sample="loop_graph"),
    "graph_tf32": CudaConfig("CUDA graphs, NCHW, TF32 on", "tf32", tf32=True, train="graph", sample="loop_graph"),
    "graph_bf16": CudaConfig(f"CUDA graphs, {_CL}, autocast bfloat16", "bfloat16", channels_last=True,
                             amp="bfloat16", train="graph", sample="loop_graph"),
    "graph_bf16_nchw": CudaConfig("CUDA graphs, NCHW, autocast bfloat16", "bfloat16", amp="bfloat16",
                                  train="graph", sample="loop_graph"),
    "compile_reduce_overhead": CudaConfig(f"torch.compile mode reduce-overhead, NCHW, {_F32}", "float32",
                                          train="scaled", sample="compile", compile="reduce-overhead"),
    "compile_max_autotune": CudaConfig(f"torch.compile mode max-autotune, NCHW, {_F32}", "float32",
                                       train="scaled", sample="compile", compile="max-autotune"),
    "graph_compile": CudaConfig(f"torch.compile (max-autotune-no-cudagraphs) inside the CUDA graphs, NCHW, {_F32}",
                                "float32", train="graph", sample="loop_graph", compile="max-autotune-no-cudagraphs"),
}
CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
"""``torch.compile`` modes that replay their own CUDA graphs ("cudagraph trees"): each training step and sampling
step starts with ``torch.compiler.cudagraph_mark_step_begin()`` and a sampling step's output is cloned, as
PyTorch asks of loops that feed a graph's output back in or keep it past the next call."""
DEFAULT_CUDA_CONFIGS = ("eager", "channels_last", "tf32", "amp_fp16", "amp_bf16", "cuda_graph", "graph",
                        "graph_bf16")
PEAK_DTYPES = ("float32", "tf32", "float16", "bfloat16")


@dataclass
class Workload:
    """One configuration built on a device: ``train(n)`` runs n steps, ``sample(k)`` one k-step DDPM loop;
    both return after the device has finished. Either is None where it equals another configuration's."""

    name: str
    train: Callable[[int], None] | None
    sample: Callable[[int], Any] | None


def set_precision(tf32: bool) -> None:
    """TF32 on or off (matmul, cuDNN, float32 matmul precision)."""
    import torch

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
    """``step`` captured once as a CUDA graph over static input buffers (``capture_graph``), replayed per call
    (inputs copied in, the output cloned out); on another device the same static-buffer code without a graph."""
    import torch

    from ddpm_torch.diffusion import capture_graph

    x, n = torch.zeros(shape, device=device), torch.zeros(shape, device=device)
    t = torch.zeros((shape[0],), dtype=torch.int32, device=device)
    out: dict[str, Any] = {}

    def run() -> None:
        out["x"] = step(x, t, n)

    replay = capture_graph(run, torch.device(device), warmup_calls=3)

    def call(x_in: Any, t_in: Any, n_in: Any) -> Any:
        x.copy_(x_in)
        t.copy_(t_in)
        n.copy_(n_in)
        replay()
        return out["x"].clone()

    return call


def autocast_model(model: Any, kind: str, dtype: Any) -> Any:
    """An ``nn.Module`` wrapping ``model`` whose forward runs under autocast to ``dtype`` (no weight cache: CUDA
    graphs need it off): the same Parameter objects, so an optimizer over either trains both."""
    import torch
    from torch import nn

    class Autocast(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args: Any) -> Any:
            with torch.autocast(kind, dtype=dtype, cache_enabled=False):
                return self.inner(*args)

    return Autocast(model)


def build(name: str, cfg: UnetConfig, batch: int, size: int, device: str) -> Workload:
    """Configuration ``name`` of ``CUDA_CONFIGS`` on ``device``: the twin's model, optimizer and diffusion."""
    import torch

    import ddpm_torch
    from ddpm_torch.optim import make_optimizer, make_train_step

    c = CUDA_CONFIGS[name]
    set_precision(c.tf32)
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(cfg).to(device)
    if c.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, lrs())
    optimizer.foreach = c.foreach
    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(), device=device)
    x, t, noise = (torch.from_numpy(a).to(device) for a in inputs(batch, cfg, size))
    shape = (batch, cfg.channels, size, size)
    amp = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(c.amp or "")
    kind = "cuda" if device.startswith("cuda") else "cpu"
    forward = model if amp is None or c.train == "scaled" else autocast_model(model, kind, amp)
    if c.compile is not None:
        forward = torch.compile(forward, mode=None if c.compile == "default" else c.compile)
    trees = c.compile in CUDAGRAPH_MODES
    if c.train == "scaled":
        scaler = torch.amp.GradScaler(kind, enabled=amp == torch.float16)

        def step(x0: Any, tt: Any, eps: Any) -> Any:
            if trees:
                torch.compiler.cudagraph_mark_step_begin()
            model.train()
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(kind, dtype=amp or torch.float32, enabled=amp is not None):
                loss = diffusion.p_losses(forward, x0, tt, eps)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            return loss.detach()
    else:
        step = make_train_step(forward, diffusion, optimizer, channels_last=c.channels_last,
                               cuda_graph=c.train == "graph")

    def train(n: int) -> None:
        for _ in range(n):
            loss = step(x, t, noise)
        float(loss)  # waits for the device

    sampler = forward if c.compile is not None and c.sample == "loop_graph" else model  # compiled inside the graph

    def p_step_for(schedule: Any) -> Callable:
        def p_step(xt: Any, tt: Any, eps: Any) -> Any:
            with torch.autocast(kind, dtype=amp or torch.float32, enabled=amp is not None, cache_enabled=not c.graphed):
                return schedule.p_step(sampler, xt, tt, eps)

        return p_step

    loops: dict[int, Callable[[], Any]] = {}

    def loop_for(steps: int) -> Callable[[], Any]:
        schedule = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=steps), device=device)
        p_step = p_step_for(schedule)
        if c.sample == "loop_graph":
            run = schedule.ddpm_graph(sampler, shape, step=p_step)
            return lambda: run(torch.randn(shape, device=device)).cpu()
        wrap = {"step_graph": lambda f: graphed(f, shape, device),
                "compile": lambda f: torch.compile(f, dynamic=False,
                                                   mode=None if c.compile == "default" else c.compile)}
        run_step = wrap.get(c.sample, lambda f: f)(p_step)
        if trees:
            compiled_step = run_step

            def run_step(xt: Any, tt: Any, eps: Any) -> Any:
                torch.compiler.cudagraph_mark_step_begin()
                return compiled_step(xt, tt, eps).clone()

        return lambda: sample_loop(run_step, schedule, shape, device)

    @torch.no_grad()
    def sample(steps: int) -> Any:
        model.eval()
        if steps not in loops:  # a T=steps schedule: the same work per step
            loops[steps] = loop_for(steps)
        return loops[steps]()

    return Workload(name, None if c.train is None else train, None if c.sample is None else sample)


def measure_peaks(device: str, n: int = 8192, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of the best of ``repeats`` n x n x n matmuls (random operands) for each compute type in
    ``PEAK_DTYPES``."""
    import torch

    out = {}
    for label in PEAK_DTYPES:
        set_precision(label == "tf32")
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
    set_precision(False)
    return out
