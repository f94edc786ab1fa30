"""One parity run of two live sides: the orchestrator behind ``parity.check_models`` and ``python -m parity.check``.

Rules it keeps:
  * the sequence is written once: the checks that need both live models (settings), MindSpore's side (the
    leader), the PyTorch side as the follower (``parity.engine.suite.run_follower``: its outputs, the float64
    anchor, the steps from MindSpore's outputs), in this process or in the PyTorch worker process, which runs
    the same function; then the rows, the weights' blame, and the diagnosis of a failure (``parity.diagnose``);
  * every device comes from its side (``side.device``), never from a framework's global state;
  * the float64 anchor is the specification (``ddpm_core.reference``) and, where the PyTorch side offers one,
    that side in float64 (``Side.float64``);
  * a run that compared nothing is a ``ValueError``, never a pass.
"""
from __future__ import annotations

import time
from typing import Any

from ddpm_core.contract import Side, State
from parity.diagnose import blame_weights, explain
from parity.engine.anchor import wants_anchor
from parity.engine.checks import REGISTRY
from parity.engine.initial import weights_hash
from parity.engine.report import Report
from parity.engine.suite import RunSpec, compare_outputs, implied_outputs, leads, pair_followed, run_follower, run_side
from parity.engine.tape import make_tape, tape_hash
from parity.engine.tolerances import device_class
from parity.sides.anchor import float64_anchor


def describe_run(spec: RunSpec) -> str:
    """The report's title: the model, the diffusion and the tape of ``spec``."""
    u, d, t = spec.unet, spec.diffusion, spec.tape
    return (f"parity.check: Unet(dim={u.dim}, channels={u.channels}, dim_mults={u.dim_mults}"
            f"{'' if u.use_convnext else ', use_convnext=False'}), T={d.timesteps} {d.schedule}, {d.loss_type} loss; "
            f"batch {t.batch}, {t.image_size}x{t.image_size}, seed {t.seed}")


def require_results(report: Report) -> None:
    """A ``ValueError`` unless something was compared (a gating row, or the settings of module pairs): a run
    that compared nothing must fail, never pass."""
    if not any(r.gate for r in report.rows) and not report.settings_pairs:
        checks = ", ".join(report.spec.get("checks", [])) or "none"
        raise ValueError(f"nothing was compared (checks: {checks}); a parity run that compares nothing cannot pass")


def run_check(sides: tuple[Side[Any, Any], Side[Any, Any]], models: tuple[Any, Any], spec: RunSpec,
              weights: State | None = None, environment: dict | None = None, title: str | None = None,
              worker: bool = False) -> Report:
    """Run ``spec`` on the PyTorch side and model (``sides[0]``, ``models[0]``) against MindSpore's; return the
    ``Report`` (never raises for a numeric mismatch). ``weights`` ({PyTorch name: array}) are the weights both
    models were loaded from: the specification runs on them and a weights row that differs from them is blamed
    (default: PyTorch's, as read back, and no weights blame). ``worker=True`` runs the PyTorch side in a process
    of its own, rebuilt from ``spec.unet`` and its weights (an unmodified ``ddpm_torch.Unet`` only)."""
    (side_t, side_m), (model_t, model_m) = sides, models
    device = device_class(str(side_t.device), str(side_m.device))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tape = make_tape(spec.tape)
    state_t = side_t.state(model_t)
    source = state_t if weights is None else weights
    pool = None
    if worker:  # started first, so that its imports and PyTorch's work overlap MindSpore's
        from parity.sides.worker import TorchWorker

        pool = TorchWorker(spec, state_t, tape_hash(tape), str(side_t.device), threads=1, compiled=side_t.compiled)
    report = Report(title or describe_run(spec), spec.to_dict(), tape_hash(tape), weights_hash(state_t),
                    environment or {}, timings=timings)
    try:
        for check in REGISTRY:
            if check.name in spec.checks:
                found = check.live(side_t, model_t, side_m, model_m)
                if found is not None:
                    report.settings, report.settings_pairs = found
                    timings[check.name] = round(time.perf_counter() - t0, 3)
        d_t, d_m = side_t.diffusion(spec.diffusion), side_m.diffusion(spec.diffusion)
        lead: dict[str, Any] = {}
        try:
            out_m = run_side(side_m, model_m, d_m, tape, spec, timings,
                             lead.update if pool is None else pool.send_lead)
        finally:
            if pool is not None and leads(spec) and not pool.sent:
                pool.send_lead(None)  # release the worker
        if pool is None:
            anchor = (lambda: float64_anchor(source, spec, side_t, model_t)) if wants_anchor(spec) else None
            out_t, followed, anchored = run_follower(side_t, model_t, d_t, tape, spec, anchor, lambda: lead, timings)
        else:
            t1 = time.perf_counter()
            out_t, followed, anchored = pool.result()
            timings.update(pool.timings)
            timings["waited_for_torch_worker"] = round(time.perf_counter() - t1, 3)
    finally:
        if pool is not None:
            pool.close()
    implied = tuple(implied_outputs(spec, name, tape["pred_t"]) for name in ("torch", "ms"))
    report.rows = compare_outputs(out_t, out_m, spec, device,
                                  pair_followed(followed, out_m, True, "PyTorch stepping from MindSpore's states"),
                                  anchored, implied)
    require_results(report)
    if weights is not None:
        blame_weights(report, weights, out_t, out_m)
    if not report.passed:
        explain(report, (out_t, out_m), tape, spec, (side_t, model_t, side_m, model_m), device, source)
    timings["total"] = round(time.perf_counter() - t0, 3)
    return report
