"""``python -m parity.bench.fastcheck --device cuda``: the torch twin's GPU fast paths keep parity, checked on the
device they run on with nothing but PyTorch (a GPU host without MindSpore can run it; ``parity.check record``
there gives MindSpore's host a golden file to compare).

From seeded initial weights (``parity.engine.initial``) and the seeded tape (``parity.engine.tape``):
  * training, K steps at the learning rates ``LRS``: each fast path in ``TRAIN_PATHS`` (Adam as foreach ops; the
    whole step as one CUDA graph, NCHW and channels-last) against the twin's reference step (eager, NCHW, Adam
    one parameter at a time, float32, TF32 off): the losses under the table's ``loss`` entry and the weight
    change w_K - w_0 under ``adam``, for the device's class (provisional on a GPU). A path whose weights did
    not move by ``MOVED`` fails: such a comparison proves nothing. Every path's weight change against the same
    K steps in float64 is reported (information);
  * sampling, the whole T-step DDPM loop with the tape's noise: ``p_sample_loop(compiled=True)`` (on CUDA the loop
    as one CUDA graph) against the eager loop (``compiled=False``) under the table's ``ddpm_trajectory`` entry,
    and the first ``PREFIX_STEPS`` states of both against the twin in float64 under the machine-relative gate of
    parity.check (k x this run's float32 rounding of the noise prediction: ``parity.engine.threeway.anchored``).
Exit 0 when every row passes, 1 when one fails (the table says which), 2 for bad options, 3 when the device is
not there. ``--json`` gets every figure (atomically).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any, Sequence

import numpy as np

from ddpm_core.config import TUTORIAL_UNET, DiffusionConfig, read_unet_config
from ddpm_core.errors import EXIT_ENVIRONMENT, UserError
from ddpm_core.runtime.atomic import atomic_write_bytes

TRAIN_PATHS: dict[str, tuple[dict[str, bool], bool | None]] = {
    # name -> (make_train_step keywords, MindSporeAdam foreach); the first is the reference
    "reference": ({"channels_last": False}, False),
    "foreach": ({"channels_last": False}, True),
    "graph": ({"channels_last": False, "cuda_graph": True}, None),
    "graph_channels_last": ({"channels_last": True, "cuda_graph": True}, None),
}
LRS = (1e-3, 5e-4, 2e-4)
MOVED = 1e-4
"""K steps at ``LRS`` move some weight by more than this, or the training comparison proves nothing."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parity.bench.fastcheck", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--config", default=TUTORIAL_UNET.to_json(), help="UnetConfig fields as JSON text or a JSON file")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=200)
    p.add_argument("--train-steps", type=int, default=3, help=f"training steps K (default 3; lr {', '.join(map(str, LRS))}, "
                                                               "then the last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write every figure here (atomically)")
    return p


def _train(side: Any, state: dict, cfg: Any, diffusion: Any, tape: dict, path: str) -> tuple[list[float], dict]:
    from ddpm_torch.optim import make_optimizer, make_train_step

    kwargs, foreach = TRAIN_PATHS[path]
    model = side.load_model(state, cfg)
    optimizer = make_optimizer(model, list(LRS))
    optimizer.foreach = foreach
    step = make_train_step(model, diffusion, optimizer, **kwargs)
    dtype = np.float64 if side.dtype == np.float64 else np.float32
    losses = [float(step(x.astype(dtype), t, n.astype(dtype)))
              for x, t, n in zip(tape["train_x0"], tape["train_t"], tape["train_noise"])]
    return losses, side.state(model)


def check(args: argparse.Namespace) -> dict[str, Any]:
    """Every row (see the module docstring) and the figures around them."""
    from parity.engine.checks.base import PREFIX_STEPS
    from parity.engine.initial import initial_weights
    from parity.engine.rows import outputs_row
    from parity.engine.tape import TapeSpec, make_tape
    from parity.engine.threeway import anchored, prediction_rounding
    from parity.engine.tolerances import device_class
    from parity.sides.torch import TorchSide

    cfg = args.config
    state = initial_weights(cfg, args.seed)
    diffusion_cfg = DiffusionConfig(timesteps=args.timesteps)
    tape = {k: np.array(v) for k, v in make_tape(TapeSpec(  # writable copies (torch warns on read-only arrays)
        args.seed, args.batch, cfg.channels, args.image_size, args.timesteps, args.train_steps,
        ddim_steps=min(20, args.timesteps))).items()}
    dev = device_class(args.device, "CPU")
    s32, s64 = TorchSide(args.device), TorchSide(args.device, dtype=np.float64)
    d32, d64 = s32.diffusion(diffusion_cfg), s64.diffusion(diffusion_cfg)
    rows, info, timings = [], {}, {}

    t0 = time.perf_counter()
    trained = {path: _train(s32, state, cfg, d32, tape, path) for path in TRAIN_PATHS}
    timings["train_s"] = time.perf_counter() - t0
    _, w64 = _train(s64, state, cfg, d64, tape, "reference")
    change = lambda w: {n: np.asarray(w[n], np.float64) - state[n] for n in state}  # noqa: E731
    ref_losses, ref_weights = trained["reference"]
    for path, (losses, weights) in trained.items():
        moved = max(float(np.max(np.abs(v))) for v in change(weights).values())
        info[f"train/{path}"] = {"losses": losses, "moved_max_abs": moved,
                                 "weight_change_vs_float64_max_abs": max(
                                     float(np.max(np.abs(a - b))) for a, b in zip(change(weights).values(),
                                                                                   change(w64).values()))}
        if path == "reference":
            continue
        rows.append(outputs_row(f"train {path}: losses vs reference", "loss", np.float32(losses),
                                np.float32(ref_losses), dev))
        row = outputs_row(f"train {path}: w_K - w_0 vs reference", "adam", change(weights), change(ref_weights), dev)
        if moved <= MOVED:
            row.note = f"the weights moved by {moved:.1e} <= {MOVED:g}: nothing was tested"
            row.summary.members[0].problem = row.note
        rows.append(row)

    t0 = time.perf_counter()
    model32, model64 = s32.load_model(state, cfg).eval(), s64.load_model(state, cfg).eval()
    shape, x_T, noise = tape["x_T"].shape, tape["x_T"], tape["ddpm_noise"]
    eager = np.stack(d32.p_sample_loop(model32, shape, img=x_T, noise=noise, compiled=False))
    fast = np.stack(d32.p_sample_loop(model32, shape, img=x_T, noise=noise, compiled=True))
    timings["sample_s"] = time.perf_counter() - t0
    f64 = np.stack(d64.p_sample_loop(model64, shape, img=x_T.astype(np.float64), noise=noise.astype(np.float64)))
    rows.append(outputs_row("sample: compiled loop vs eager loop", "ddpm_trajectory", fast, eager, dev))
    preds = {f"predict/t={int(t)}": (s32.predict(model32, x, np.full(len(x), t, np.int32)),
                                     s64.predict(model64, x, np.full(len(x), t, np.int32)))
             for t, x in zip(tape["pred_t"], tape["pred_x"])}
    rounding = prediction_rounding({k: v[0] for k, v in preds.items()}, {k: v[1] for k, v in preds.items()})
    p = min(PREFIX_STEPS, args.timesteps)
    a = anchored("ddpm_trajectory", f"sample/first {p} states", fast[:p], eager[:p], f64[:p], f64[:p], rounding, dev,
                 ("the compiled loop", "the eager loop"))
    info["sample/vs_float64"] = {"compiled_max_abs": a.err_torch, "eager_max_abs": a.err_ms, "states": p,
                                 "rounding": None if rounding is None else rounding.to_dict(),
                                 "machine_relative_tolerance": a.tolerance.limits()}
    rows.append(_anchored_row(f"sample: first {p} states vs float64 (compiled and eager)", a))
    return {"rows": rows, "info": info, "timings_s": timings}


def _anchored_row(label: str, a: Any) -> Any:
    """A row holding the two comparisons of ``a`` against float64 (compiled loop first, then eager)."""
    from parity.engine.compare import Summary
    from parity.engine.rows import Row

    a.torch.name, a.ms.name = "compiled loop vs float64", "eager loop vs float64"
    return Row(label, "ddpm_trajectory", Summary(label, [a.torch, a.ms]),
               note=f"machine-relative gate: atol {a.tolerance.atol:.1e}, rel L2 {a.tolerance.max_rel_l2:.1e}")


def table(rows: Sequence[Any]) -> str:
    """One line per row: passed or FAILED, the worst max abs and relative L2, and the first failure."""
    lines = []
    for r in rows:
        s = r.summary
        bad = s.first_failure
        lines.append(f"{'ok    ' if r.passed else 'FAILED'} {r.label}: max abs {s.figure('max_abs'):.2e}, rel L2 "
                     f"{s.figure('rel_l2'):.2e}" + (f"; {bad.describe()}" if bad else "") + (f" ({r.note})" if r.note else ""))
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from ddpm_core.errors import EnvironmentRefused
    from parity.bench.cuda_run import device_info
    from parity.env import setup_torch

    p = build_parser()
    args = p.parse_args(argv)
    try:
        args.config = read_unet_config(args.config, "--config")
    except UserError as e:
        p.error(str(e))
    if min(args.batch, args.timesteps, args.train_steps) < 1 or args.image_size % args.config.size_multiple:
        p.error(f"--batch, --timesteps and --train-steps must be >= 1 and --image-size a multiple of "
                f"{args.config.size_multiple}")
    t0 = time.perf_counter()
    try:
        setup_torch(args.device)  # TF32 off
    except ValueError as e:
        p.error(str(e))
    except EnvironmentRefused as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    out = check(args)
    rows = out.pop("rows")
    passed = bool(rows) and all(r.passed for r in rows)
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "passed": passed,
              "settings": {**{k: v for k, v in vars(args).items() if k not in ("json", "config")},
                           "config": args.config.to_dict(), "lrs": list(LRS)},
              "device": device_info(args.device), "rows": [r.to_dict() for r in rows], **out,
              "wall_s": time.perf_counter() - t0}
    print(table(rows), end="")
    print(f"fast paths {'keep' if passed else 'BREAK'} parity on {report['device']['name']} ({args.device})")
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(report, indent=2) + "\n").encode())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
