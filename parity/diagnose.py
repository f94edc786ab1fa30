"""The diagnosis of a failed parity run: where it parts and which twin is wrong, in words.

Rules it keeps: it adds to a finished report (findings, diagnoses, a weights row's culprit) and never changes a
row's verdict; it reads failing rows by their check (``parity.engine.checks.check_of``), so it names checks as
the registry does; it runs the live models only where they are given (``compare`` has one side and a golden file).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddpm_core.contract import Side, State
from ddpm_core.reference.side import ReferenceSide
from parity.engine.checks import REGISTRY, check_of
from parity.engine.localise import localise, localise_against_reference
from parity.engine.probes import Oracle, diagnose
from parity.engine.report import Report
from parity.engine.rows import Row
from parity.engine.suite import RunSpec
from parity.engine.tolerances import tolerance

Live = tuple[Side[Any, Any], Any, Side[Any, Any], Any]
"""(PyTorch side, its model, MindSpore side, its model)"""


def _failed(report: Report) -> dict[str, list[Row]]:
    """The failing gating rows by the name of the check that made them ("" for the missing-outputs row)."""
    out: dict[str, list[Row]] = {}
    for row in report.failures:
        check = check_of(row.output)
        out.setdefault("" if check is None else check.name, []).append(row)
    return out


def _localise(report: Report, failed: Mapping[str, list[Row]], tape: Mapping[str, np.ndarray], spec: RunSpec,
              live: Live, device: str, weights: State | None) -> None:
    """The first diverging module on a prediction input (the first failing one, else t = pred_t[1]), and each
    twin's first module that leaves the float64 specification (run on ``weights``, if given)."""
    side_t, model_t, side_m, model_m = live
    ts = [int(t) for t in tape["pred_t"]]
    bad = [r.label for r in failed.get("predict", [])]
    k = next((i for i, t in enumerate(ts) if f"prediction t={t}" in bad), min(1, len(ts) - 1))
    x, t = tape["pred_x"][k], np.full(spec.tape.batch, ts[k], np.int32)
    finding = localise(side_t, model_t, side_m, model_m, x, t, tolerance("module", "float32", device))
    if weights is not None:
        reference = ReferenceSide()
        rec_ref = reference.capture(reference.load_model(weights, spec.unet), x, t)
        for words in localise_against_reference(side_t.capture(model_t, x, t), side_m.capture(model_m, x, t),
                                                rec_ref, tolerance("module", "float32", device)):
            report.diagnoses.append(f"against the float64 specification: {words}")
    if finding is not None:
        report.findings.append(finding)
    elif set(failed) <= {"grad", "adam"}:
        report.diagnoses.append(f"every module of the U-Net agrees on the prediction input (t={ts[k]}): the "
                                "difference is in the backward pass or the optimizer")
    else:
        report.diagnoses.append(f"every module of the U-Net agrees on the prediction input (t={ts[k]}): the "
                                "difference is outside the network's forward pass")


def _diffusion_math(report: Report, row: Row, outputs: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
                    tape: Mapping[str, np.ndarray], spec: RunSpec) -> None:
    """Each twin whose diffusion math (the probes) is off, against the numpy oracle, in words where it can."""
    oracle = Oracle(spec.diffusion)
    expected = oracle.expected(tape, spec.loss_types, spec.tape.ddim_steps, spec.ddim_etas)
    for member in [m for m in row.summary.members if not m.passed][:3]:
        name, want = member.name, expected.get(member.name)
        got = [out.get(f"probe/{name}") for out in outputs]
        if want is None or any(g is None for g in got):
            continue
        dev = [float(np.max(np.abs(np.asarray(g, np.float64) - want))) for g in got]
        for label, g, d in zip(("PyTorch", "MindSpore"), got, dev):
            if d >= 0.1 * max(dev):
                words = diagnose(name, g, oracle, tape) or f"max abs {max(dev):.2e} from the numpy oracle"
                report.diagnoses.append(f"{label} diffusion math, {name}: {words}")


def explain(report: Report, outputs: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
            tape: Mapping[str, np.ndarray], spec: RunSpec, live: Live | None, device: str,
            weights: State | None = None) -> None:
    """On failure: the first diverging module (forward hooks, on the ``live`` models), each twin's first module
    that leaves the float64 specification (run on ``weights``, if given), and the diffusion math against its
    oracle; with no live models (``compare``), the rows alone."""
    failed = _failed(report)
    through_network = {c.name for c in REGISTRY if c.network}
    if (set(failed) & through_network or report.settings) and live is not None:
        _localise(report, failed, tape, spec, live, device, weights)
    if "probes" in failed:
        _diffusion_math(report, failed["probes"][0], outputs, tape, spec)
    one_step = next((r for r in failed.get("ddpm", []) if r.output == "ddpm_one_step"), None)
    if one_step is not None and not report.findings and not report.diagnoses:
        first = one_step.summary.first_failure
        report.diagnoses.append(f"DDPM one step: {first.describe() if first else one_step.label} while the "
                                "predictions agree: look at the sampler step (coefficients, per-step noise)")


def blame_weights(report: Report, source: Mapping[str, np.ndarray], out_t: Mapping[str, np.ndarray],
                  out_m: Mapping[str, np.ndarray]) -> None:
    """A failing weights row blames the one twin whose weights, read back, are not the source weights."""
    row = next((r for r in report.rows if r.output == "weights" and not r.passed), None)
    if row is None:
        return
    differs = [name for name, out in (("torch", out_t), ("ms", out_m))
               if any(f"weights/{k}" not in out or not np.array_equal(out[f"weights/{k}"], v) for k, v in source.items())]
    if len(differs) == 1:
        row.culprit = differs[0]
