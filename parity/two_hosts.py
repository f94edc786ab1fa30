"""The two-host path: ``record`` runs one twin and writes a golden file; ``compare`` runs the other twin
against it and judges both with the float64 specification, as the one-process check does.

Rules it keeps:
  * ``compare`` computes the float64 specification (``ddpm_core.reference``, numpy, no framework) from the
    golden file's weights and tape, so its rows carry ``err_torch`` / ``err_ms`` and blame; where the PyTorch
    twin is the live one it also runs in float64 here, for the float64 logic row;
  * each recording host measures its own float32 rounding the way the one-process check does (the PyTorch
    twin's float32 predictions against its own float64 run, on the recording device) and stores it in the
    golden file; a MindSpore host cannot (no float64 convolution on its CPU or Ascend builds), and a file
    recorded before the field existed has none: the tolerance table's measured ``HOST_ROUNDING`` entry for
    that host stands in. The gates are ``RELATIVE``'s k times the larger of the two hosts' rounding, at
    least the floors; never a twin's error against the specification;
  * every output the recorded spec implies is compared, or the run fails.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ddpm_core.contract import Side
from parity.diagnose import blame_weights, explain
from parity.engine.anchor import Float64, anchor_outputs
from parity.engine.checks import ANCHORED
from parity.engine.golden import Golden, save_golden
from parity.engine.initial import weights_hash
from parity.engine.report import SIDE_LABELS, Report
from parity.engine.suite import RunSpec, compare_outputs, implied_outputs, pair_followed, run_follower, run_side
from parity.engine.tape import make_tape, tape_hash
from parity.engine.threeway import Rounding, prediction_rounding
from parity.engine.tolerances import RELATIVE, device_class, host_rounding
from parity.runner import describe_run, require_results
from parity.sides.anchor import float64_anchor


def measure_rounding(side: Side[Any, Any], model: Any, tape: dict, spec: RunSpec, outputs: dict) -> Rounding | None:
    """This host's float32 rounding: the side's float32 predictions on the tape against its own float64 run on
    the same device (the one-process check's measure); None for a side with no float64 run (MindSpore: no
    float64 convolution, the table stands in) or a spec with no anchored output."""
    twin64 = side.float64(model) if set(ANCHORED) & set(spec.checks) else None
    if twin64 is None:
        return None
    only = dataclasses.replace(spec, checks=("predict",))
    side64, model64 = twin64
    f64 = anchor_outputs(Float64(side64, model64, side64.diffusion(spec.diffusion)), tape, only)
    f32 = {k: v for k, v in outputs.items() if k.startswith("predict/")} or \
        anchor_outputs(Float64(side, model, side.diffusion(spec.diffusion)), tape, only)
    return prediction_rounding(f32, f64)


def record_golden(side: Side, weights: dict[str, np.ndarray], spec: RunSpec, path: str | os.PathLike,
                  environment: dict, model: Any = None) -> tuple[dict, int, list[str]]:
    """Run one side on ``spec`` from ``weights`` (PyTorch names), measure this host's float32 rounding, and save
    the outputs, the tape, the weights and the rounding to the golden file ``path`` (``python -m parity.check
    record``); returns (the file's manifest, how many outputs it holds, the outputs holding a NaN or an inf).
    ``model``: run this model of ``side`` as it is instead of one built from ``weights`` (a planted bug stays)."""
    model = side.load_model(weights, spec.unet) if model is None else model
    tape = make_tape(spec.tape)
    timings: dict[str, float] = {}
    outputs = run_side(side, model, side.diffusion(spec.diffusion), tape, spec, timings)
    rounding = measure_rounding(side, model, tape, spec, outputs)
    if rounding is not None:
        rounding = {**rounding.to_dict(), "how": f"PyTorch float32 against its float64 run on {side.device}"}
    extra = {"timings_s": timings, "rounding": rounding}
    manifest = save_golden(path, side.name, spec, tape, weights, outputs, environment, extra)
    return manifest, len(outputs), [k for k, v in outputs.items() if not np.isfinite(v).all()]


def _host(framework: str, device: str, recorded: dict | None, measured: Rounding | None,
          where: str) -> tuple[Rounding, str]:
    """(a host's rounding, how it was obtained): recorded in the golden file, measured here, or the table's."""
    label = f"{SIDE_LABELS[framework]} on {device} ({where})"
    if recorded is not None:
        return Rounding(float(recorded["max_abs"]), float(recorded["rel_l2"])), f"{label}: measured there"
    if measured is not None:
        return measured, f"{label}: measured here"
    h = host_rounding(framework, device)
    why = "no float64 convolution there" if framework == "ms" else "the golden file carries no measurement"
    return Rounding(h.max_abs, h.rel_l2), f"{label}: {'provisional ' if h.provisional else ''}table entry, {why}"


def two_host_rounding(golden: Golden, live_side: Side, live: dict, anchor: dict, devices: dict[str, str]
                      ) -> tuple[Rounding, str]:
    """The rounding the compare gates scale with: the larger, figure by figure, of the recording host's and this
    host's; and a line saying where each came from."""
    measured_here = prediction_rounding(live, anchor["torch64"]) if anchor.get("torch64") else None
    rec, rec_how = _host(golden.framework, devices[golden.framework], golden.manifest.get("rounding"), None,
                         "the recording host")
    here, here_how = _host(live_side.name, devices[live_side.name], None, measured_here, "this host")
    both = Rounding(max(rec.max_abs, here.max_abs), max(rec.rel_l2, here.rel_l2))
    k = RELATIVE["prediction"].k
    return both, (f"gates: {k:g} x the larger float32 rounding of the two hosts, max abs {both.max_abs:.2e} / rel L2 "
                  f"{both.rel_l2:.2e}: {rec_how}: {rec.max_abs:.2e} / {rec.rel_l2:.2e}; {here_how}: "
                  f"{here.max_abs:.2e} / {here.rel_l2:.2e}")


def compare_golden(golden: Golden, side: Side, environment: dict, model: Any = None) -> Report:
    """Run ``side`` (the framework the golden file was not recorded with) on the golden file's spec, weights and
    tape, and compare it with the recorded outputs as ``check_models`` compares two live sides: the
    teacher-forced steps, the float64 specification's rows (and the float64 logic row where PyTorch is the
    live side), machine-relative gates from both hosts' rounding (``python -m parity.check compare``).
    ``settings`` is left out: it needs both frameworks. ``model``: run this model of ``side`` as it is instead of
    one built from the golden file's weights (a planted bug stays)."""
    golden.check_compared_with(side.name)
    spec = golden.spec()
    model = side.load_model(golden.weights, spec.unet) if model is None else model
    timings: dict[str, float] = {}
    anchor = (lambda: float64_anchor(golden.weights, spec, side, model)) if set(ANCHORED) & set(spec.checks) else None
    live, followed, anchored = run_follower(side, model, side.diffusion(spec.diffusion), golden.tape, spec, anchor,
                                            lambda: golden.outputs, timings)
    recorded_env = golden.manifest.get("environment", {})
    live_torch = side.name == "torch"
    a, b = (live, golden.outputs) if live_torch else (golden.outputs, live)
    here, there = SIDE_LABELS[side.name], f"{SIDE_LABELS[golden.framework]} (golden file)"
    sides = (here, there) if live_torch else (there, here)
    devices = {"torch": str(side.device) if live_torch else recorded_env.get("torch_setup", {}).get("device", "cpu"),
               "ms": recorded_env.get("mindspore_setup", {}).get("device", "CPU") if live_torch else str(side.device)}
    one_step = pair_followed(followed, golden.outputs, live_torch,
                             f"{here} stepping from {SIDE_LABELS[golden.framework]}'s recorded states")
    rounding, how = two_host_rounding(golden, side, live, anchored, devices)
    device = device_class(devices["torch"], devices["ms"])
    report = Report(describe_run(spec).replace("parity.check:", "parity.check compare:"), spec.to_dict(),
                    tape_hash(golden.tape), weights_hash(golden.weights), environment, timings=timings, mode="compare")
    report.spec["checks"] = [c for c in spec.checks if c != "settings"]
    pred_t = golden.tape["pred_t"]
    implied = (implied_outputs(spec, "torch", pred_t), implied_outputs(spec, "ms", pred_t))
    report.rows = compare_outputs(a, b, spec, device, one_step, anchored, implied, sides,
                                  rounding if anchored else None)
    report.notes = [*golden.notes, *([how] if anchored else [])]
    report.environment["two_host_rounding"] = {"rounding": rounding.to_dict(), "how": how}
    require_results(report)
    blame_weights(report, golden.weights, a, b)
    if not report.passed:
        explain(report, (a, b), golden.tape, spec, None, device)
    return report
