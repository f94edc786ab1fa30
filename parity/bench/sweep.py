"""The batch sweep of the CUDA bench (``--batches 16,32,...,2048``): for each configuration, the batch that fills
the GPU for training and for sampling, with images/s and the fraction of the compute type's measured peak at
every batch tried, and the goals of issue 24.

Rules:
  * configurations one after the other (in ``--configs`` order), batches in increasing order; a configuration
    stops at its first batch that runs out of device memory or fails (both recorded, with the error's first
    line), and once a batch improves neither training nor sampling images/s by ``--sweep-gain`` over every
    smaller batch (saturated: the batch before filled the GPU);
  * the work per measurement follows the batch: ``train_steps`` = ``--sweep-images`` / batch steps (at least 2,
    at most ``--train-steps``), sampling a T=k schedule with k = ``--sweep-sample-images`` / batch (at least
    ``MIN_SAMPLE_STEPS``, at most ``--sample-steps``), scaled to T=200 as everywhere in the bench;
  * ``--budget-s``: no new measurement starts after that many seconds; what was not measured says so;
  * ``on_point`` receives the report after every measurement, so a run stopped from outside keeps what it had.
"""
from __future__ import annotations

import argparse
import gc
import math
import time
from typing import Any, Callable

from parity.bench.cuda import CUDA_CONFIGS
from parity.bench.cuda_run import header, machine_figures, measure_point, measured_line, prepare, rates
from parity.bench.markdown import fmt, opt
from parity.bench.workloads import T

MIN_SAMPLE_STEPS = 10
TARGETS = (  # (goal, what is measured, threshold, unit): the Done-when of issue 24
    ("bfloat16 training at its best batch", "train_images_per_s", "bfloat16", 12000.0, "images/s"),
    ("float32 (TF32 off) training at its best batch", "train_fraction_of_peak", "float32", 0.30, "of the float32 peak"),
    ("bfloat16 sampling at its best batch", "sample_images_per_s", "bfloat16", 400.0, "images/s"),
)
GRAPH_SAMPLING_TARGET = 8.0  # the graphed loop against eager, batch 16, T=200


def plan(batch: int, args: argparse.Namespace) -> tuple[int, int]:
    """(training steps, sampling steps) per measurement at ``batch``."""
    train = max(2, min(args.train_steps, math.ceil(args.sweep_images / batch)))
    sample = max(min(MIN_SAMPLE_STEPS, args.sample_steps), min(args.sample_steps, math.ceil(args.sweep_sample_images / batch)))
    return train, sample


def _gained(r: dict[str, Any], best: dict[str, float], gain: float) -> bool:
    """Whether ``r`` beats the best smaller batch by ``gain`` in training or sampling (True for the first)."""
    if not best:
        return True
    return any(r[f"{k}_images_per_s"] is not None and r[f"{k}_images_per_s"]["median"] > gain * best.get(k, 0.0)
               for k in ("train", "sample"))


def _free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def run_sweep(args: argparse.Namespace, on_point: Callable[[dict[str, Any]], None] = lambda report: None,
              peak_n: int | None = None) -> dict[str, Any]:
    """The sweep on ``--torch-device`` (refused when a CUDA device is not there): the report."""
    import torch

    start = time.perf_counter()
    device = prepare(args)
    report = {**header(args, device), "machine": machine_figures(args, device, peak_n), "sweep": {}}
    report["settings"].update(batches=args.batches, sweep_images=args.sweep_images,
                              sweep_sample_images=args.sweep_sample_images, sweep_gain=args.sweep_gain,
                              budget_s=args.budget_s)
    for name in args.configs:
        points: dict[str, dict[str, Any]] = {}
        report["sweep"][name] = {"label": CUDA_CONFIGS[name].label, "peak_dtype": CUDA_CONFIGS[name].peak_dtype,
                                 "points": points, "stopped": "after the largest batch"}
        best: dict[str, float] = {}
        for batch in args.batches:
            if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
                report["sweep"][name]["stopped"] = f"out of time (--budget-s {args.budget_s:g}) before batch {batch}"
                break
            error = None
            try:
                r = rates(measure_point(name, args, device, batch, *plan(batch, args)), report["machine"])
            except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
                why = "out of memory" if isinstance(e, torch.cuda.OutOfMemoryError) else "failed"
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                error = (why, f"{why}: {type(e).__name__}: {first}")
            _free(device)  # after the except clause: its traceback no longer holds the tensors
            if error is not None:
                points[str(batch)] = {"batch": batch, "error": error[1]}
                report["sweep"][name]["stopped"] = f"{error[0]} at batch {batch}"
                on_point(summarise_sweep(report))
                break
            points[str(batch)] = r
            gained = _gained(r, best, args.sweep_gain)
            for k in ("train", "sample"):
                if r[f"{k}_images_per_s"] is not None:
                    best[k] = max(best.get(k, 0.0), r[f"{k}_images_per_s"]["median"])
            on_point(summarise_sweep(report))
            if not gained:
                report["sweep"][name]["stopped"] = (f"saturated at batch {batch} (no {args.sweep_gain:g}x gain over "
                                                    f"the smaller batches)")
                break
    report["wall_s"] = time.perf_counter() - start
    return summarise_sweep(report)


def summarise_sweep(report: dict[str, Any]) -> dict[str, Any]:
    """Each configuration's best batch for training and for sampling, ratios to eager at the same batch, and
    the goals of issue 24 (``targets``)."""
    sweep = report["sweep"]
    eager = sweep.get("eager", {}).get("points", {})
    for entry in sweep.values():
        measured = [r for r in entry["points"].values() if "error" not in r]
        entry["best"] = {}
        for kind in ("train", "sample"):
            rated = [r for r in measured if r[f"{kind}_images_per_s"] is not None]
            top = max(rated, key=lambda r: r[f"{kind}_images_per_s"]["median"], default=None)
            entry["best"][kind] = None if top is None else {
                "batch": top["batch"], "images_per_s": top[f"{kind}_images_per_s"]["median"],
                "fraction_of_peak": top[f"{kind}_fraction_of_peak"], "peak_memory_mib": top["peak_memory_mib"]}
        for r in measured:
            for kind in ("train", "sample"):
                base = eager.get(str(r["batch"]), {}).get(f"{kind}_images_per_s")
                ips = r[f"{kind}_images_per_s"]
                r[f"{kind}_vs_eager"] = None if ips is None or base is None else ips["median"] / base["median"]
    report["targets"] = targets(sweep)
    graph = sweep.get("graph", {})
    best = (graph.get("best") or {}).get("sample")
    at = lambda batch: (graph["points"].get(str(batch)) or {}).get("sample_vs_eager")  # noqa: E731
    report["graph_sampling_vs_eager"] = {"batch_16": at(16) if graph else None,
                                         "best_batch": None if best is None else best["batch"],
                                         "at_best_batch": None if best is None else at(best["batch"])}
    return report


def targets(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 24's goals: the best over the configurations of the named compute type, each at its best batch; and
    the graphed sampling loop against eager at batch 16 with the full T=200 loop. None where not measured."""
    out = []
    for goal, key, dtype, threshold, unit in TARGETS:
        kind = key.split("_")[0]
        values = [(r[key]["median"] if isinstance(r[key], dict) else r[key], name, r["batch"])
                  for name, e in sweep.items() if e["peak_dtype"] == dtype
                  for r in e["points"].values() if "error" not in r and r[key] is not None]
        value, name, batch = max(values, default=(None, None, None), key=lambda v: v[0])
        out.append({"target": goal, "kind": kind, "value": value, "config": name, "batch": batch,
                    "threshold": threshold, "unit": unit, "met": None if value is None else value >= threshold})
    g, e = (sweep.get(n, {}).get("points", {}).get("16") for n in ("graph", "eager"))
    full = g and e and "error" not in g and "error" not in e and g["sample_steps"] == e["sample_steps"] == T
    value = g["sample_images_per_s"]["median"] / e["sample_images_per_s"]["median"] if full else None
    out.append({"target": f"sampling, batch 16, T={T}: graphed loop (graph) over eager", "kind": "sample",
                "value": value, "config": "graph", "batch": 16, "threshold": GRAPH_SAMPLING_TARGET, "unit": "×",
                "met": None if value is None else value >= GRAPH_SAMPLING_TARGET})
    return out


def sweep_markdown(report: dict[str, Any]) -> str:
    """The best batch per configuration, every point measured, and the goals."""
    a, m, sweep = report["settings"], report["machine"], report["sweep"]
    peaks = ", ".join(f"{k} {v / 1e12:.1f}" for k, v in m["peak_flops"].items())
    lines = [measured_line(report, f"batches {', '.join(map(str, a['batches']))}")
             + f" Training: {a['sweep_images']:g} images per measurement "
             f"(2 to {a['train_steps']} steps); sampling: a T=k schedule, k = {a['sweep_sample_images']:g} / batch "
             f"({min(MIN_SAMPLE_STEPS, a['sample_steps'])} to {a['sample_steps']}), scaled by {T}/k.", "",
             "| configuration | train: best batch | images/s | of peak | sample: best batch | images/s (T=200) "
             "| of peak | stopped |", "|---|---|---|---|---|---|---|---|"]
    for e in sweep.values():
        cells = []
        for kind in ("train", "sample"):
            b = e["best"][kind]
            cells += (["—"] * 3 if b is None else
                      [str(b["batch"]), f"{b['images_per_s']:.1f}", f"{b['fraction_of_peak']:.2%} ({e['peak_dtype']})"])
        lines.append(f"| {e['label']} | " + " | ".join(cells) + f" | {e['stopped']} |")
    lines += ["", "| configuration | batch | train images/s | sample images/s (T=200) | × eager at this batch: train "
                  "/ sample | warm-up (s): train / sample | peak memory (MiB) | of peak: train / sample |",
              "|---|---|---|---|---|---|---|---|"]
    for e in sweep.values():
        for r in e["points"].values():
            if "error" in r:
                lines.append(f"| {e['label']} | {r['batch']} | {r['error']} | | | | | |")
                continue
            sample = "—" if r["sample_images_per_s"] is None else f"{fmt(r['sample_images_per_s'], 2)} (k={r['sample_steps']})"
            lines.append(
                f"| {e['label']} | {r['batch']} | {fmt(r['train_images_per_s']) if r['train_images_per_s'] else '—'} "
                f"| {sample} "
                f"| {opt(r['train_vs_eager'], '{:.2f}×')} / {opt(r['sample_vs_eager'], '{:.2f}×')} "
                f"| {opt(r['warmup_train_s'], '{:.1f}')} / {opt(r['warmup_sample_s'], '{:.1f}')} "
                f"| {opt(r['peak_memory_mib'], '{:.0f}')} | {opt(r['train_fraction_of_peak'], '{:.2%}')} / "
                f"{opt(r['sample_fraction_of_peak'], '{:.2%}')} |")
    g = report["graph_sampling_vs_eager"]
    lines += ["", f"Sampling, the graphed loop (graph) over eager at the same batch: batch 16 {opt(g['batch_16'], '{:.2f}×')}; "
                  f"graph's best sampling batch ({opt(g['best_batch'], '{}')}) {opt(g['at_best_batch'], '{:.2f}×')}."]
    lines += ["", f"FLOPs per image: forward {m['flops_per_image_forward'] / 1e9:.3f} G, training step 3 × forward. "
                  f"Peak TFLOP/s, measured (matmul): {peaks}.", "", "| goal (issue 24) | measured | where | goal | met |",
              "|---|---|---|---|---|"]
    for t in report["targets"]:
        value = opt(t["value"], "{:.2%}" if t["unit"].startswith("of ") else "{:,.1f}")
        where = "—" if t["config"] is None else f"{t['config']}, batch {t['batch']}"
        goal = f"{t['threshold']:.0%} {t['unit']}" if t["unit"].startswith("of ") else f"{t['threshold']:g} {t['unit']}"
        lines.append(f"| {t['target']} | {value} | {where} | {goal} | {'—' if t['met'] is None else 'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"
