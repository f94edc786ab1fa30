"""The bench's Markdown: the CPU table with its notes and goals, the data-parallel table, the CUDA table.

Rule: every figure printed comes from the report's JSON (nothing is computed here but formatting), so the
Markdown and the JSON cannot disagree.
"""
from __future__ import annotations

from typing import Any

from ddpm_core.config import UnetConfig
from parity.bench.workloads import CONFIGS, T


def fmt(s: dict[str, float], digits: int = 1) -> str:
    """``median (min–max)``."""
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def opt(v: float | None, form: str) -> str:
    """``form`` of ``v``, or a dash where it was not measured."""
    return "—" if v is None else form.format(v)


def markdown(report: dict[str, Any]) -> str:
    """The CPU bench's table, its FLOP and check notes, the goals and the data-parallel table."""
    a, m, res, c = report["settings"], report["machine"], report["results"], report["parity_check"]
    loads = [v for r in res.values() for v in r["load"]]
    foreign = max(r["foreign_cores_max"] for r in res.values())
    cfg = UnetConfig.from_dict(a["model_config"])
    lines = [
        f"Measured {report['date']} on {m['cpu_model']} ({m['cores']} cores), torch {m['torch']}, MindSpore "
        f"{m['mindspore']}: batch {a['batch']}, {a['image_size']}×{a['image_size']}, Unet(dim={cfg.dim}, "
        f"channels={cfg.channels}, dim_mults={cfg.dim_mults}), T={T}. Median (min–max) of {a['repeats']} repeats, "
        f"warm-up excluded. 1-minute load average {min(loads):.2f}–{max(loads):.2f} (the bench included); other "
        f"processes used at most {foreign:.2f} cores during any measurement.", "",
        "| configuration | oneDNN ISA | train images/s | × tutorial | sample images/s (T=200) | × tutorial "
        "| warm-up (s): 1st train step / 1st sampling | peak RSS (MiB) | of peak FLOP/s: train / sample |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in res.values():
        lines.append(
            f"| {r['label']} | {r['isa'] or 'default'} | {fmt(r['train_images_per_s'])} "
            f"| {opt(r['train_vs_tutorial'], '{:.2f}×')} | {fmt(r['sample_images_per_s'], 3)} "
            f"| {opt(r['sample_vs_tutorial'], '{:.2f}×')} | {r['warmup_train_s']:.1f} / {r['warmup_sample_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {opt(r['train_fraction_of_peak'], '{:.1%}')} / "
            f"{opt(r['sample_fraction_of_peak'], '{:.1%}')} |")
    k = a["sample_steps"]
    if k < T:
        lines += ["", f"Sampling was timed over {k} of the {T} steps (a T={k} schedule: the same work per step) and "
                      f"scaled by {T}/{k}."]
    lines += ["", f"FLOPs per image: forward {m['flops_per_image_forward'] / 1e9:.3f} G (torch.utils.flop_counter on "
                  f"ddpm_torch: convolutions and matrix products), training step 3 × forward = "
                  f"{m['flops_per_image_train_step'] / 1e9:.3f} G, {T}-step sampling "
                  f"{m['flops_per_image_forward'] * T / 1e9:.1f} G. Peak: {m['peak_flops_measured'] / 1e9:.0f} GFLOP/s, "
                  f"measured (float32 2048² matmul in torch, {m['torch_threads']} threads).",
              "", "`python -m parity.check` (default, imports included): " + (
                  f"{c['wall_s']:.1f} s wall, exit code {c['exit_code']}, other processes {c['foreign_cores']:.2f} cores."
                  if c["wall_s"] is not None else c["note"] + "."),
              "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "no")
        lines.append(f"| {t['target']} | {opt(t['value'], '{:.2f}')} | {t['threshold']:g} {t['unit']} | {met} |")
    return "\n".join(lines + ["", *dp_markdown(report["data_parallel"])]) + "\n"


def dp_markdown(dp: dict[str, Any]) -> list[str]:
    """The data-parallel scaling table (or the line saying why there is none)."""
    if not dp["jobs"]:
        return [f"Data-parallel scaling: {dp['note']}."]
    lines = [f"Data-parallel scaling ({dp['note']}; efficiency = images/s(N) / (N × images/s(1)), against 1 worker "
             f"with the same threads per worker and against 1 worker on all {dp['cores']} cores; start-up = launch to "
             f"rank 0's trainer built; warm-up = the first {dp['warmup_steps']} steps, excluded):", "",
             "| configuration | workers × threads | launcher | train images/s (all workers) | per worker "
             "| efficiency: same threads / all cores | start-up / warm-up (s) | load (1 min) | other processes (cores, max) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for j in dp["jobs"]:
        lines.append(
            f"| {CONFIGS[j['config']]} | {j['workers']} × {j['threads']} | {j['launcher']} | {fmt(j['images_per_s'])} "
            f"| {j['images_per_s_per_worker']:.1f} | {opt(j['efficiency_same_threads'], '{:.2f}')} / "
            f"{opt(j['efficiency_vs_all_cores'], '{:.2f}')} | {j['startup_s']:.1f} / "
            f"{' + '.join(f'{w:.1f}' for w in j['warmup_step_s'])} | {j['load_1min']['min']:.2f}–{j['load_1min']['max']:.2f} "
            f"| {j['foreign_cores_max']:.2f} |")
    return lines
