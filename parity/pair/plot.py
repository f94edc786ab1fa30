"""The depth plot: each side's error against float64, module call by module call in the order calls ended (the data flow), with
the first divergence marked, so a porter sees where the port leaves the float32 floor.

Rules it keeps: matplotlib is optional; asking for a plot without it is ``EnvironmentRefused`` (exit 3) before any
work; the PNG is written atomically; one panel per input (the failing ones first, at most four).
"""
from __future__ import annotations

import math
from pathlib import Path

from ddpm_core.errors import EnvironmentRefused
from ddpm_core.runtime.atomic import atomic_write
from parity.pair.report import PairReport

MAX_PANELS = 4


def require_matplotlib() -> None:
    """Refuse at once (exit 3) when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise EnvironmentRefused("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None


def plot_depth(report: PairReport, path: str | Path) -> None:
    """Write the depth plot of ``report`` to ``path`` (PNG)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = sorted(report.inputs, key=lambda r: r.passed)[:MAX_PANELS]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 3.2 * len(chosen)), squeeze=False)
    floor = 1e-9
    for ax, r in zip(axes[:, 0], chosen):
        xs = list(range(len(r.depth)))
        for key, label in (("err_torch", report.torch_label), ("err_other", report.other_label)):
            ys = [max(row[key], floor) if math.isfinite(row[key]) else float("nan") for row in r.depth]
            ax.semilogy(xs, ys, marker=".", linewidth=1, label=f"{label} vs float64")
        d = r.divergence
        if d is not None:
            key = d.torch_module if d.call == 0 else f"{d.torch_module}#{d.call}"
            at = next((i for i, row in enumerate(r.depth) if row["module"] == key), None)
            if at is not None:
                ax.axvline(at, color="red", linestyle="--", linewidth=1)
                ax.annotate(f"first divergence: {d.torch_module or '(root)'} ({d.kind}), {d.blame}",
                            (at, ax.get_ylim()[1]), textcoords="offset points", xytext=(4, -12), color="red", fontsize=8)
        ax.set_title(f"{report.name}: {r.label()} - {'pass' if r.passed else 'FAIL'}", fontsize=9)
        ax.set_xlabel("module call, in the order calls ended (data flow: a layer before the block around it)")
        ax.set_ylabel("relative L2 error vs float64")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
