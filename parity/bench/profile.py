"""``python -m parity.bench --device cuda --profile PATH``: where the time of a training step and of a sampling
loop goes, kernel by kernel. For each configuration in ``--configs`` at ``--batch``: build, warm up (one step,
one loop: compiles and captures stay out), then ``torch.profiler`` over ``--train-steps`` training steps and,
apart, one ``--sample-steps`` sampling loop; PATH gets, per configuration and part, the top kernels by device time
(on the CPU: the top operators by CPU time), with calls, total and share.

Rule: the numbers are the profiler's own (kernel time as CUPTI records it, CUDA-graph replays included);
nothing here is a throughput (the profiler slows the host), so the bench's tables stay the figures to quote.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from parity.bench.cuda import CUDA_CONFIGS, build, synchronize

TOP = 25


def _device_time(evt: Any) -> float:
    """An averaged event's self device time in µs (the attribute was renamed from ``self_cuda_time_total``)."""
    return float(getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0.0) or 0.0)


def top_table(events: Any, cuda: bool, top: int = TOP) -> list[str]:
    """The top ``top`` kernels by self device time (``cuda``) or operators by self CPU time, as Markdown rows."""
    rows = []
    for evt in events:
        us = _device_time(evt) if cuda else float(evt.self_cpu_time_total)
        if us > 0 and (not cuda or str(getattr(evt, "device_type", "")).endswith("CUDA")):
            rows.append((us, evt.key, evt.count))
    rows.sort(reverse=True)
    total = sum(us for us, _, _ in rows) or 1.0
    what = "kernel" if cuda else "operator"
    lines = [f"| {what} | calls | total (ms) | share | per call (µs) |", "|---|---|---|---|---|"]
    for us, name, count in rows[:top]:
        short = name if len(name) <= 120 else name[:117] + "..."
        lines.append(f"| `{short}` | {count} | {us / 1e3:.2f} | {us / total:.1%} | {us / max(count, 1):.1f} |")
    lines.append(f"| all {len(rows)} {what}s | | {total / 1e3:.2f} | 100% | |")
    return lines


def _profiled(device: str, run: Callable[[], Any]) -> tuple[Any, float]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    synchronize(device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        run()
        synchronize(device)
    return prof.key_averages(), time.perf_counter() - t0


def profile_configs(args: argparse.Namespace, device: str) -> str:
    """The profile text of every configuration in ``--configs`` (see the module docstring)."""
    cuda = device.startswith("cuda")
    out = [f"# Top {'kernels by device' if cuda else 'operators by CPU'} time, batch {args.batch}, "
           f"{args.train_steps} training steps and one {args.sample_steps}-step sampling loop per configuration "
           f"(device {device})", ""]
    for name in args.configs:
        work = build(name, args.model_config, args.batch, args.image_size, device)
        parts = [("training", work.train, args.train_steps), ("sampling", work.sample, args.sample_steps)]
        for part, fn, n in parts:
            if fn is None:
                continue
            fn(1 if part == "training" else n)  # warm-up
            events, wall = _profiled(device, lambda: fn(n))
            out += [f"## {name}: {part} ({CUDA_CONFIGS[name].label}), {wall:.3f} s under the profiler", "",
                    *top_table(events, cuda), ""]
        del work
    return "\n".join(out)
