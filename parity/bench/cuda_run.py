"""The CUDA bench's run and report: each configuration of ``parity.bench.cuda`` measured in turn, then
images/s, ratios to eager, the share of the GPU's peak, where ``torch.compile`` pays, and the Markdown.

Rule: ``run_cuda`` refuses (``ddpm_core.errors.EnvironmentRefused``) before it measures anything when the device is
not there; ``measure`` takes any device, so the tests run it on the CPU with a tiny model.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import platform
import sys
import time
from typing import Any, Sequence

from parity.bench.cuda import CUDA_CONFIGS, build, measure_peaks, synchronize
from parity.bench.markdown import fmt, opt
from parity.bench.orchestrate import stats
from parity.bench.workloads import T, flops_per_image


def _timed(device: str, fn: Any, arg: int) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    fn(arg)
    synchronize(device)
    return time.perf_counter() - t0


def measure_point(name: str, args: argparse.Namespace, device: str, batch: int, train_steps: int,
                  sample_steps: int) -> dict[str, Any]:
    """One configuration at one batch: build, one timed warm-up training step and sampling loop (compiles and
    captures happen here), then ``--repeats`` timings of ``train_steps`` steps and of a ``sample_steps`` loop;
    with peak device memory (CUDA only). The figures are raw seconds; ``summarise`` turns them into rates."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    work = build(name, args.model_config, batch, args.image_size, device)
    r: dict[str, Any] = {"label": CUDA_CONFIGS[name].label, "peak_dtype": CUDA_CONFIGS[name].peak_dtype,
                         "batch": batch, "train_steps": train_steps, "sample_steps": sample_steps,
                         "setup_s": time.perf_counter() - t0, "train_s": [], "sample_s": []}
    r["warmup_train_s"] = None if work.train is None else _timed(device, work.train, 1)
    r["warmup_sample_s"] = None if work.sample is None else _timed(device, work.sample, sample_steps)
    for _ in range(args.repeats):
        if work.train is not None:
            r["train_s"].append(_timed(device, work.train, train_steps))
        if work.sample is not None:
            r["sample_s"].append(_timed(device, work.sample, sample_steps))
    r["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    del work
    gc.collect()
    return r


def measure(configs: Sequence[str], args: argparse.Namespace, device: str) -> dict[str, dict[str, Any]]:
    """Every configuration in turn at ``--batch``, ``--train-steps`` and ``--sample-steps`` (``measure_point``)."""
    return {name: measure_point(name, args, device, args.batch, args.train_steps, args.sample_steps)
            for name in configs}


def rates(r: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """One point's images/s (training: batch x steps / s; sampling: batch / (s x T / k)) and fraction of the peak
    of its compute type, added to ``r``."""
    b, k, fwd = r["batch"], r["sample_steps"], machine["flops_per_image_forward"]
    peak = machine["peak_flops"][r["peak_dtype"]]
    r["train_images_per_s"] = stats([b * r["train_steps"] / s for s in r["train_s"]]) if r["train_s"] else None
    r["sample_images_per_s"] = stats([b / (s * T / k) for s in r["sample_s"]]) if r["sample_s"] else None
    for kind, flops in (("train", 3 * fwd), ("sample", fwd * T)):
        ips = r[f"{kind}_images_per_s"]
        r[f"{kind}_fraction_of_peak"] = None if ips is None else ips["median"] * flops / peak
    return r


def break_even_images(extra_warmup_s: float, ips_base: float, ips_new: float) -> float | None:
    """Images after which a path with ``extra_warmup_s`` more warm-up and ``ips_new`` images/s has caught up with
    one at ``ips_base``; None if it never does (not faster)."""
    saved = 1 / ips_base - 1 / ips_new
    return max(0.0, extra_warmup_s) / saved if saved > 0 else None


def summarise(results: dict[str, dict[str, Any]], machine: dict[str, Any]) -> dict[str, Any]:
    """``rates`` of every configuration, their ratios to eager, and ``torch.compile``'s break-even against
    channels-last."""
    for r in results.values():
        rates(r, machine)
    for r in results.values():
        for kind in ("train", "sample"):
            ips, base = r[f"{kind}_images_per_s"], results.get("eager", {}).get(f"{kind}_images_per_s")
            r[f"{kind}_vs_eager"] = None if ips is None or base is None else ips["median"] / base["median"]
    for kind in ("train", "sample"):
        c, cl = results.get("compile"), results.get("channels_last")
        value = None
        if c and cl and c[f"{kind}_images_per_s"] and cl[f"{kind}_images_per_s"]:
            value = break_even_images(c[f"warmup_{kind}_s"] - cl[f"warmup_{kind}_s"],
                                      cl[f"{kind}_images_per_s"]["median"], c[f"{kind}_images_per_s"]["median"])
        for r in results.values():
            r.setdefault("compile_break_even_images", {})[kind] = value if r is c else None
    return results


def device_info(device: str) -> dict[str, Any]:
    """The device's name, and on CUDA its compute capability, memory and the CUDA/cuDNN versions."""
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "python": sys.version.split()[0],
                            "platform": platform.platform()}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=p.total_memory / 2**30,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        from parity.bench.load import cpu_info

        info["name"] = cpu_info()["cpu_model"]
    return info


def machine_figures(args: argparse.Namespace, device: str, peak_n: int | None = None) -> dict[str, Any]:
    """FLOPs per image (forward; a training step is 3 x forward) and the measured peak of every compute type
    (``peak_n``-sized matmuls; default 8192 on CUDA, 512 on the CPU, where a dry run only needs the code path)."""
    forward = flops_per_image(args.model_config, args.batch, args.image_size)
    n = peak_n or (8192 if device.startswith("cuda") else 512)
    return {"flops_per_image_forward": forward, "flops_per_image_train_step": 3 * forward,
            "peak_flops": measure_peaks(device, n)}


def prepare(args: argparse.Namespace) -> str:
    """The torch device the GPU bench runs on (``--torch-device``), set up: ``EnvironmentRefused`` (one line) when
    a CUDA device is not there."""
    from parity.env import setup_torch

    device = args.torch_device
    if device.startswith("cuda"):
        setup_torch(device)
    return device


def header(args: argparse.Namespace, device: str) -> dict[str, Any]:
    """The report's date, settings and device."""
    settings = {k: getattr(args, k) for k in ("batch", "train_steps", "sample_steps", "repeats", "image_size",
                                              "configs")}
    settings.update(device="cuda", torch_device=device, model_config=args.model_config.to_dict())
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "settings": settings,
            "device": device_info(device)}


def run_cuda(args: argparse.Namespace, peak_n: int | None = None) -> dict[str, Any]:
    """The whole CUDA bench at one batch on ``--torch-device`` (refused when it is not there): the report."""
    device = prepare(args)
    machine = machine_figures(args, device, peak_n)
    return {**header(args, device), "machine": machine,
            "results": summarise(measure(args.configs, args, device), machine)}


def measured_line(report: dict[str, Any], batches: str) -> str:
    """What a CUDA bench report measured, on what: the first line of its Markdown (``batches``: "batch 16", ...)."""
    a, d = report["settings"], report["device"]
    cfg = a["model_config"]
    return (f"Measured {report['date']} on {d['name']} (torch {d['torch']}"
            + (f", CUDA {d['cuda']}, cuDNN {d['cudnn']}" if d.get("cuda") else "") + f"): {batches}, "
            f"{a['image_size']}×{a['image_size']}, Unet(dim={cfg['dim']}, channels={cfg['channels']}, "
            f"dim_mults={tuple(cfg['dim_mults'])}), T={T}. Median (min–max) of {a['repeats']} repeats, warm-up "
            "excluded.")


def cuda_markdown(report: dict[str, Any]) -> str:
    """The CUDA bench's table and its notes."""
    a, m, res = report["settings"], report["machine"], report["results"]
    peaks = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in m["peak_flops"].items())
    lines = [measured_line(report, f"batch {a['batch']}"), "",
             "| configuration | train images/s | sample images/s (T=200) | × eager: train / sample "
             "| warm-up (s): 1st train step / 1st sampling | peak memory (MiB) | of peak: train / sample |",
             "|---|---|---|---|---|---|---|"]
    for r in res.values():
        lines.append(
            f"| {r['label']} | {fmt(r['train_images_per_s']) if r['train_images_per_s'] else '— (as channels-last)'} "
            f"| {fmt(r['sample_images_per_s'], 2) if r['sample_images_per_s'] else '— (as eager)'} "
            f"| {opt(r['train_vs_eager'], '{:.2f}×')} / {opt(r['sample_vs_eager'], '{:.2f}×')} "
            f"| {opt(r['warmup_train_s'], '{:.1f}')} / {opt(r['warmup_sample_s'], '{:.1f}')} "
            f"| {opt(r['peak_memory_mib'], '{:.0f}')} "
            f"| {opt(r['train_fraction_of_peak'], '{:.2%}')} / {opt(r['sample_fraction_of_peak'], '{:.2%}')} "
            f"({r['peak_dtype']}) |")
    k = a["sample_steps"]
    if k < T:
        lines += ["", f"Sampling was timed over {k} of the {T} steps (a T={k} schedule) and scaled by {T}/{k}."]
    lines += ["", f"FLOPs per image: forward {m['flops_per_image_forward'] / 1e9:.3f} G, training step 3 × forward. "
                  f"Peak TFLOP/s, measured (matmul): {peaks}."]
    even = res.get("compile", {}).get("compile_break_even_images")
    if even:
        says = {kind: ("never (not faster)" if v is None else f"after {v:,.0f} images") for kind, v in even.items()}
        lines += ["", f"torch.compile against channels-last pays back its warm-up: training {says['train']}, "
                      f"sampling {says['sample']}."]
    return "\n".join(lines) + "\n"
