"""``python -m parity.measure``: measure the twins' errors over many seeds and configurations, the
evidence behind parity/engine/tolerances.py.

    python -m parity.measure --seeds 0-19 --configs tiny,small,resnet --json measured.json

For every output of the tolerance table it prints the worst figures over all runs (max abs, the atol
needed at the table's rtol, relative L2, 1 - cosine) next to the current limits and the margin
(limit / worst). Rule: a limit is set to 10-50x the worst measured value, never from hope; the
planted-bug tests prove the limits still catch real bugs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

from ddpm_core.config import TUTORIAL_UNET, DiffusionConfig, UnetConfig

CONFIGS = {
    "tutorial": (TUTORIAL_UNET, DiffusionConfig(), 28),
    "tiny": (UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=10), 8),
    "small": (UnetConfig(dim=16, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=20), 16),
    "resnet": (UnetConfig(dim=16, channels=1, dim_mults=(1, 2), use_convnext=False), DiffusionConfig(timesteps=20), 16),
    "rgb-cosine": (UnetConfig(dim=12, channels=3, dim_mults=(1, 2, 4)), DiffusionConfig(timesteps=30, schedule="cosine"), 16),
}
FIGURES = ("max_abs", "atol_needed", "rel_l2", "one_minus_cos")


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def _worst(acc: dict, output: str, fig: dict) -> None:
    w = acc.setdefault(output, {k: 0.0 for k in FIGURES})
    for k in FIGURES:
        w[k] = max(w[k], fig.get(k) or 0.0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m parity.measure", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0-4", help="e.g. 0-19 or 0,3,7")
    p.add_argument("--configs", default="tiny,small,resnet", help=f"comma-separated from {', '.join(CONFIGS)}")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("GLOG_v", "3")
    import numpy as np

    from parity.api import check_models, make_spec
    from parity.env import setup_mindspore, setup_torch
    from parity.engine.initial import initial_weights
    from parity.engine.localise import module_errors
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide
    from parity.engine.tape import make_tape
    from parity.engine.tolerances import tolerance

    setup_torch("cpu", 1)
    setup_mindspore("CPU", 1)
    side_t, side_m = TorchSide(), MsSide()
    worst: dict[str, dict] = {}
    runs = []
    for name in args.configs.split(","):
        cfg, dcfg, size = CONFIGS[name]
        model_t, model_m = side_t.build(cfg), side_m.build(cfg)
        for seed in _seeds(args.seeds):
            w = initial_weights(cfg, seed)
            side_t.load(model_t, w)
            side_m.load(model_m, w)
            t0 = time.perf_counter()
            r = check_models(model_t, model_m, diffusion=dcfg, seed=seed, image_size=size, sides=(side_t, side_m))
            for row in r.rows:
                for m in row.summary.members:
                    checked = math.isfinite(m.tolerance.max_rel_l2)  # aggregates only where they are checked
                    _worst(worst, row.output, {"max_abs": m.max_abs, "atol_needed": m.atol_needed / m.scale,
                                               "rel_l2": m.rel_l2 if checked else None,
                                               "one_minus_cos": None if m.cosine is None or not checked else 1.0 - m.cosine})
            tape = make_tape(make_spec(cfg, dcfg, seed, 2, size).tape)
            x, t = tape["pred_x"][1], np.full(2, int(tape["pred_t"][1]), np.int32)
            for e in module_errors(side_t, model_t, side_m, model_m, x, t, tolerance("module")):
                _worst(worst, "module", {"max_abs": e["max_abs"], "atol_needed": e["atol_needed"], "rel_l2": e["rel_l2"],
                                         "one_minus_cos": None if e["cosine"] is None else 1.0 - e["cosine"]})
            runs.append({"config": name, "seed": seed, "passed": r.passed, "seconds": round(time.perf_counter() - t0, 1)})
            print(f"{name} seed {seed}: {'pass' if r.passed else 'FAIL'} ({runs[-1]['seconds']} s)", file=sys.stderr, flush=True)
            if not r.passed:
                print(r.verdict(), file=sys.stderr, flush=True)
    print(f"{'output':<18}{'max abs':>10}{'atol need':>11}{'rel L2':>10}{'1-cos':>10}   limits atol/relL2/1-cos   margins")
    for output, w in worst.items():
        tol = tolerance(output)
        lim = (tol.atol, tol.max_rel_l2, 1.0 - tol.min_cosine)
        got = (w["atol_needed"], w["rel_l2"], w["one_minus_cos"])
        margin = " ".join("-" if g == 0 else f"{lv / g:7.1f}x" for lv, g in zip(lim, got))
        print(f"{output:<18}{w['max_abs']:>10.1e}{w['atol_needed']:>11.1e}{w['rel_l2']:>10.1e}{w['one_minus_cos']:>10.1e}"
              f"   {lim[0]:.0e}/{lim[1]:.0e}/{lim[2]:.0e}   {margin}")
    if args.json:
        from ddpm_core.runtime.atomic import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps({"worst": worst, "runs": runs}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
