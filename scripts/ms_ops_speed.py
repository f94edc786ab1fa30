"""``python scripts/ms_ops_speed.py [--ops gelu,groupnorm,dwconv] [--repeats 7] [--ms-threads N]``: the hot operators
of the tutorial U-Net (docs/performance.md, "Profiles") timed side by side in one process: PyTorch's kernel, MindSpore's
native kernel and MindSpore's formulations from primitive ops, each inside an ``ms.jit`` graph, forward alone and
forward + backward, on the tutorial's shapes (batch 16, 28x28). Prints ms per call (median of ``--repeats``,
interleaved), each row's ratio to PyTorch and to MindSpore's native kernel, the largest difference from the native
kernel's output, the CPU model and the foreign load.

Not part of CI (a minute or two on 2 cores). ``--ms-threads`` sets MindSpore's CPU kernel pool
(``device_context.cpu.op_tuning.threads_num``, settable once per process); PyTorch gets ``--torch-threads``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mindspore import nn, ops  # noqa: E402

from ddpm_ms import layers  # noqa: E402

BATCH = 16


def cpu_model() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def timed(fn: Callable[[], object], sync: Callable[[object], object]) -> float:
    t0 = time.perf_counter()
    sync(fn())
    return time.perf_counter() - t0


def ms_case(fwd: Callable, params: list[ms.Parameter], x: np.ndarray, grad: bool) -> Callable[[], object]:
    """A compiled MindSpore callable: ``fwd(x)`` or its value and gradients with respect to x and ``params``."""
    xt = ms.Tensor(x)
    if not grad:
        graph = ms.jit(fwd)
        return lambda: graph(xt)
    def total(a):
        return fwd(a).sum()

    g = ms.value_and_grad(total, 0, params or None)
    graph = ms.jit(g)
    if params:
        return lambda: graph(xt)[1][0]  # the input's gradient (the parameters' are computed too)
    return lambda: graph(xt)[1]


def torch_case(fwd: Callable, x: np.ndarray, grad: bool) -> Callable[[], object]:
    xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    if not grad:
        def run():
            with torch.no_grad():
                return fwd(xt)
        return run
    xg = xt.clone().requires_grad_(True)

    def run_grad():
        xg.grad = None
        y = fwd(xg).sum()
        y.backward()
        return xg.grad
    return run_grad


def ms_sync(out: ms.Tensor) -> np.ndarray:
    return out.asnumpy()


def tanh_gelu(x: ms.Tensor) -> ms.Tensor:
    """GELU's tanh form from primitive ops (MindSpore's CPU tanh is itself an approximation)."""
    return 0.5 * x * (1.0 + ops.tanh(layers.GELU_TANH_COEF * (x + layers.GELU_CUBIC * x * x * x)))


class DenseDepthwise(nn.Cell):
    """A depthwise convolution as one full convolution whose weight is ``conv``'s, block-diagonal (C x C x k x k)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        c = conv.in_channels
        self.mask = ms.Tensor(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1))

    def construct(self, x):
        return ops.conv2d(x, self.conv.weight * self.mask, pad_mode="pad", padding=self.conv.padding)


def cases(op: str, rng: np.random.Generator) -> tuple[np.ndarray, Callable, dict[str, tuple[Callable, list]]]:
    """(input, torch forward, {name: (MindSpore forward, its parameters)}) for one operator."""
    if op == "gelu":
        x = rng.standard_normal((BATCH, 56, 28, 28)).astype(np.float32)
        return x, lambda a: torch.nn.functional.gelu(a, approximate="tanh"), {
            "ms native ops.gelu": (layers.gelu(), []),
            "ms composed, sigmoid form (ComposedGELU)": (layers.ComposedGELU(approximate=True), []),
            "ms composed, tanh form": (tanh_gelu, []),
        }
    if op == "groupnorm":
        c = 56
        x = rng.standard_normal((BATCH, c, 28, 28)).astype(np.float32)
        native = layers.group_norm(1, c)
        composed = layers.ComposedGroupNorm(1, c, eps=layers.GROUP_NORM_EPS, affine=True)
        tnorm = torch.nn.GroupNorm(1, c, eps=1e-5)
        return x, tnorm, {"ms native nn.GroupNorm": (native, list(native.trainable_params())),
                          "ms composed GroupNorm": (composed, list(composed.trainable_params()))}
    if op == "dwconv":
        c = 28
        x = rng.standard_normal((BATCH, c, 28, 28)).astype(np.float32)
        native = nn.Conv2d(c, c, 7, padding=3, group=c, pad_mode="pad", has_bias=False)
        dense = DenseDepthwise(native)
        tconv = torch.nn.Conv2d(c, c, 7, padding=3, groups=c, bias=False).to(memory_format=torch.channels_last)
        return x, tconv, {"ms native Conv2d(group=C)": (native, [native.weight]),
                          "ms dense conv, block-diagonal weight": (dense, [native.weight])}
    raise SystemExit(f"unknown op {op!r}")


def model_runs(steps: int) -> dict[str, dict[str, Callable[[], object]]]:
    """{pass: {implementation: callable}}: the tutorial U-Net's sampling step (one compiled DDPM step, batch
    16) and its training step (forward, loss, gradients, Adam), PyTorch channels-last against ``ddpm_ms``
    compiled with MindSpore's kernels and with ``composed_ops``."""
    import ddpm_ms
    import ddpm_torch
    from ddpm_core.config import TUTORIAL_DIFFUSION, TUTORIAL_UNET
    from ddpm_ms.optim import make_optimizer as ms_adam, make_train_step as ms_step
    from ddpm_torch.optim import make_optimizer as torch_adam, make_train_step as torch_step

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, 28, 28)).astype(np.float32)
    noise = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, TUTORIAL_DIFFUSION.timesteps, BATCH).astype(np.int32)
    lrs = [1e-4] * (steps + 10)
    torch.manual_seed(0)
    tm = ddpm_torch.Unet.from_config(TUTORIAL_UNET)
    td = ddpm_torch.GaussianDiffusion(TUTORIAL_DIFFUSION)
    t_train = torch_step(tm, td, torch_adam(tm, lrs))
    xt, nt, tt = torch.from_numpy(x), torch.from_numpy(noise), torch.from_numpy(t.astype(np.int64))

    def t_sample():
        with torch.no_grad():
            return td.p_step(tm, xt, tt, nt)

    runs: dict[str, dict[str, Callable[[], object]]] = {
        "sampling step": {"torch channels-last": t_sample},
        "training step": {"torch channels-last": lambda: t_train(x, t, noise)},
    }
    for name, composed in (("ms compiled, MindSpore's kernels", False), ("ms compiled, composed_ops", True)):
        ms.set_seed(0)
        model = ddpm_ms.Unet.from_config(TUTORIAL_UNET, composed_ops=composed)
        diffusion = ddpm_ms.GaussianDiffusion(TUTORIAL_DIFFUSION)
        sample = diffusion.compiled("ddpm", model)
        train = ms_step(model, diffusion, ms_adam(model, lrs))
        xm, nm, tm_ = ms.Tensor(x), ms.Tensor(noise), ms.Tensor(t)
        runs["sampling step"][name] = (lambda f=sample, a=xm, b=tm_, c=nm: f(a, b, c).asnumpy())
        runs["training step"][name] = (lambda f=train: f(x, t, noise).asnumpy())
    return runs


def time_models(repeats: int) -> None:
    """Wall and process CPU seconds per call of ``model_runs``, interleaved, medians; ratios to torch."""
    runs = model_runs(repeats + 2)
    print()
    print("| model pass | implementation | wall s/call | CPU s/call | wall x torch | wall x ms kernels |")
    print("|---|---|---|---|---|---|")
    for kind, impls in runs.items():
        for fn in impls.values():
            fn()  # warm-up and compilation
        wall: dict[str, list[float]] = {n: [] for n in impls}
        cpu: dict[str, list[float]] = {n: [] for n in impls}
        for _ in range(repeats):
            for n, fn in impls.items():
                c0, w0 = time.process_time(), time.perf_counter()
                fn()
                wall[n].append(time.perf_counter() - w0)
                cpu[n].append(time.process_time() - c0)
        w = {n: statistics.median(v) for n, v in wall.items()}
        base = w[next(n for n in impls if n.startswith("ms"))]
        for n in impls:
            rel = "" if n.startswith("torch") else f"{base / w[n]:.2f}"
            print(f"| {kind} | {n} | {w[n]:.3f} | {statistics.median(cpu[n]):.3f} | "
                  f"{w[n] / w['torch channels-last']:.2f} | {rel} |")


def proc_busy() -> tuple[float, float]:
    """(all cores' busy jiffies, this process's jiffies) from /proc."""
    f = open("/proc/stat").readline().split()[1:]
    busy = sum(int(v) for v in f) - int(f[3]) - int(f[4])
    st = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    return busy, int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default="gelu,groupnorm,dwconv", help="operators to time ('' for none)")
    p.add_argument("--model", action="store_true", help="also time the whole U-Net's sampling and training steps")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--ms-threads", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=2)
    args = p.parse_args()
    ms.set_context(mode=ms.PYNATIVE_MODE)
    if args.ms_threads:
        ms.device_context.cpu.op_tuning.threads_num(args.ms_threads)
    torch.set_num_threads(args.torch_threads)
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); torch {torch.__version__} ({args.torch_threads} threads), "
          f"MindSpore {ms.__version__} (threads_num {args.ms_threads or 'default'}); batch {BATCH}; "
          f"ms per call, median of {args.repeats}")
    hz = os.sysconf("SC_CLK_TCK")
    b0, s0, w0 = *proc_busy(), time.time()
    print("| op | pass | implementation | ms/call | x torch | x ms native | max abs diff vs ms native |")
    print("|---|---|---|---|---|---|---|")
    for op in filter(None, args.ops.split(",")):
        x, tfwd, msimpl = cases(op, rng)
        for grad in (False, True):
            runs: dict[str, tuple[Callable, Callable]] = {"torch": (torch_case(tfwd, x, grad), lambda o: o)}
            for name, (fwd, params) in msimpl.items():
                runs[name] = (ms_case(fwd, params, x, grad), ms_sync)
            outs = {name: sync(fn()) for name, (fn, sync) in runs.items()}  # warm-up, compile
            times: dict[str, list[float]] = {name: [] for name in runs}
            for _ in range(args.repeats):
                for name, (fn, sync) in runs.items():
                    times[name].append(timed(fn, sync))
            med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
            ref_name = next(iter(msimpl))
            ref = np.asarray(outs[ref_name])
            for name in runs:
                diff = "" if name == "torch" else f"{float(np.abs(np.asarray(outs[name]) - ref).max()):.2e}"
                native = "" if name == "torch" else f"{med[ref_name] / med[name]:.2f}"
                print(f"| {op} | {'fwd+bwd' if grad else 'fwd'} | {name} | {med[name]:.2f} | "
                      f"{med[name] / med['torch']:.2f} | {native} | {diff} |")
    if args.model:
        time_models(args.repeats)
    b1, s1, w1 = *proc_busy(), time.time()
    foreign = ((b1 - b0) - (s1 - s0)) / hz / (w1 - w0)
    print(f"foreign cores (other processes, mean over the run): {foreign:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
