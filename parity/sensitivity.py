"""``python -m parity.sensitivity``: plant bugs of decreasing size in either twin at run time and print which
gate of ``parity.check`` catches each (the float32 cross comparison, a twin against the float64
specification, the float64 logic gate, or none) and which twin is blamed.

``--two-hosts`` does the same on the two-host path: for each bug one twin records a golden file and the other
compares with it (``parity.two_hosts``), in both directions (PyTorch records and MindSpore compares, as a CUDA
host and an Ascend host would; then the reverse, where the float64 logic row exists).

A benchmark, not a test: each planted bug is one in-process run on a small U-Net (dim 8, 8x8, T=10), so a
table takes a few minutes on 2 cores. The bugs are undone after each run. The table (Markdown) is all that goes
to stdout; the time taken goes to stderr.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, Callable, Iterator

from ddpm_core.config import DiffusionConfig, UnetConfig

CFG = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
DIFF = DiffusionConfig(timesteps=10)
CHECKS = ("weights", "predict", "loss", "ddpm", "ddim", "probes", "reference")


@contextlib.contextmanager
def _setattr(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _norm_eps(twin: str, kind: str, factor: float) -> Callable:
    def plant(models: tuple[Any, Any], sides: tuple[Any, Any]) -> contextlib.AbstractContextManager:
        import ddpm_ms.layers
        import ddpm_torch.layers

        module = ddpm_torch.layers if twin == "torch" else ddpm_ms.layers
        name = "GROUP_NORM_EPS" if kind == "GroupNorm" else "LAYER_NORM_EPS"
        if kind == "LayerNorm":
            return _setattr(module, name, getattr(module, name) * factor)
        stack = contextlib.ExitStack()  # GroupNorm's eps lives in each module
        model = models[0] if twin == "torch" else models[1]
        cells = model.modules() if twin == "torch" else (c for _, c in model.cells_and_names())
        for m in cells:
            if type(m).__name__ == "GroupNorm":
                stack.enter_context(_setattr(m, "eps", m.eps * factor))
        return stack
    return plant


def _exact_gelu(twin: str) -> Callable:
    def plant(models: tuple[Any, Any], sides: tuple[Any, Any]) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        if twin == "torch":
            for m in models[0].modules():
                if type(m).__name__ == "GELU":
                    stack.enter_context(_setattr(m, "approximate", "none"))
        else:
            for _, m in models[1].cells_and_names():
                if type(m).__name__ == "GELU":
                    stack.enter_context(_setattr(m, "approximate", "none"))
        return stack
    return plant


def _weight(twin: str, delta: float) -> Callable:
    def plant(models: tuple[Any, Any], sides: tuple[Any, Any]) -> contextlib.AbstractContextManager:
        name = "downs.1.0.net.1.weight"
        side, model = (sides[0], models[0]) if twin == "torch" else (sides[1], models[1])
        state = side.state(model)
        nudged = dict(state)
        nudged[name] = state[name].copy()
        nudged[name][0, 0, 0, 0] += delta
        side.load(model, nudged)
        stack = contextlib.ExitStack()
        stack.callback(side.load, model, state)
        return stack
    return plant


def _table(name: str, rel: float) -> Callable:
    """One entry (t = T/2) of a PyTorch schedule table off by ``rel``, relatively."""
    def plant(models: tuple[Any, Any], sides: tuple[Any, Any]) -> contextlib.AbstractContextManager:
        diffusion = sides[0].diffusion(DIFF)
        table = getattr(diffusion, name)
        old = table.clone()
        table[DIFF.timesteps // 2] *= 1 + rel
        stack = contextlib.ExitStack()
        stack.callback(table.copy_, old)
        return stack
    return plant


def bugs() -> list[tuple[str, str, Callable]]:
    """(description, twin, plant) from large to small."""
    out = []
    for twin in ("torch", "ms"):
        for f in (10.0, 2.0, 1.2):
            out.append((f"GroupNorm eps x{f:g}", twin, _norm_eps(twin, "GroupNorm", f)))
        out.append(("LayerNorm eps x1.2", twin, _norm_eps(twin, "LayerNorm", 1.2)))
        out.append(("exact (erf) GELU instead of tanh", twin, _exact_gelu(twin)))
        out.append(("one weight nudged by 1e-5", twin, _weight(twin, 1e-5)))
    for rel in (1e-4, 1e-5, 1e-6, 1e-7):
        out.append((f"sqrt_recip_alphas[T/2] off by {rel:g}", "torch", _table("sqrt_recip_alphas", rel)))
    out.append(("posterior_variance[T/2] x2 (wrong posterior variance)", "torch", _table("posterior_variance", 1.0)))
    return out


def caught_by(report: Any) -> str:
    """The gates that failed: 'fp32 cross', 'vs spec', 'float64 logic', 'diffusion-math probes', or 'none'."""
    gates = []
    rows = [r for r in report.rows if r.gate]
    if any(not r.summary.passed for r in rows if r.output not in ("logic", "diffusion_math")):
        gates.append("fp32 cross")
    if any(r.anchor is not None and not r.anchor.passed for r in rows):
        gates.append("vs spec")
    if any(r.output == "logic" and not r.passed for r in rows):
        gates.append("float64 logic")
    if any(r.output == "diffusion_math" and not r.passed for r in rows):
        gates.append("diffusion-math probes")
    return ", ".join(gates) or "none"


def _two_hosts(recorder: str, models: tuple[Any, Any], sides: tuple[Any, Any], weights: dict) -> Any:
    """Record a golden file with ``recorder`` ("torch" or "ms") and compare the other twin with it; the report."""
    import tempfile
    from pathlib import Path

    from parity.api import make_spec
    from parity.engine.golden import load_golden
    from parity.two_hosts import compare_golden, record_golden

    spec = make_spec(CFG, DIFF, image_size=8, ddim_steps=5, checks=[c for c in CHECKS if c != "reference"])
    rec, live = (0, 1) if recorder == "torch" else (1, 0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "golden.npz"
        record_golden(sides[rec], weights, spec, path, {}, model=models[rec])
        return compare_golden(load_golden(path), sides[live], {}, model=models[live])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--two-hosts", action="store_true",
                        help="record with one twin and compare with the other, both directions")
    args = parser.parse_args(argv)
    from parity.api import check_models
    from parity.env import setup_mindspore, setup_torch
    from parity.engine.initial import initial_weights
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    setup_torch("cpu", 1)
    setup_mindspore("CPU", 1)
    sides = (TorchSide(), MsSide())
    weights = initial_weights(CFG, 0)
    models = (sides[0].build(CFG), sides[1].build(CFG))
    for side, model in zip(sides, models):
        side.load(model, weights)
        side.compiled = False
    runs = [("torch", "ms"), ("ms", "torch")] if args.two_hosts else [("both", "")]
    print("| planted bug | in | " + ("recorded by | " if args.two_hosts else "") +
          "caught by | blamed | err torch | err ms (worst anchored row) |")
    print("|---|---|" + ("---|" if args.two_hosts else "") + "---|---|---|---|")
    for recorder, _ in runs:
        for label, twin, plant in [("none (control)", "-", lambda m, s: contextlib.nullcontext()), *bugs()]:
            t0 = time.perf_counter()
            with plant(models, sides):
                if args.two_hosts:
                    report = _two_hosts(recorder, models, sides, weights)
                else:
                    report = check_models(*models, diffusion=DIFF, image_size=8, ddim_steps=5, checks=CHECKS,
                                          sides=sides, weights=weights, compiled=False)
            anchored = [r for r in report.rows if r.anchor is not None]
            worst = max(anchored, key=lambda r: max(r.anchor.err_torch, r.anchor.err_ms))
            blamed = sorted({r.blame for r in report.failures if r.blame}) or ["-"]
            who = f"{'PyTorch' if recorder == 'torch' else 'MindSpore'} | " if args.two_hosts else ""
            print(f"| {label} | {twin} | {who}{caught_by(report)} | {', '.join(blamed)} | {worst.anchor.err_torch:.1e} | "
                  f"{worst.anchor.err_ms:.1e} |", flush=True)
            print(f"{label}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
