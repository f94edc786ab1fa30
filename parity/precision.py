"""``python -m parity.check --precision fp16``: both twins under mixed precision, each judged against float64.

Rule: the twins are driven exactly as the float32 run drives them (``parity.suite.run_side`` through the
sides' public methods), with their models put under a named policy by the twins' own ``amp`` modules
(PyTorch ``torch.autocast``, MindSpore ``amp.auto_mixed_precision`` at ``--ms-amp``) and the fixed loss scale
``ddpm_core.runtime.amp.DEFAULT_LOSS_SCALE`` for gradients and training steps. Every row compares each twin with a
float64 reference on the same inputs: the noise predictions and the losses with the specification
(``ddpm_core.reference``, through ``parity.engine.anchor``), the gradients and the Adam steps with the PyTorch twin
run in float64 (the specification has no backward pass; the ``float64 logic`` row holds that twin to the
specification on the forward outputs). A row passes only if
  * each twin's error (relative L2 against float64) is within the precision's budget
    (``parity.engine.tolerances``, ``(output, "float16", device)``), and
  * the two errors are of the same size: the larger over the smaller, each counted at least at the
    rule's floor, is at most ``AMP_RATIO`` (msprobe's rule: <= 2 passes).
The cross difference (twin against twin) is reported, not gated: it follows from the two errors. A failing
row names the twin whose error is larger by more than ``BLAME_RATIO`` (or the one alone over budget), and
the localisation names the first module where that twin's error leaves the other's by that ratio.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from ddpm_core.runtime.amp import DEFAULT_LOSS_SCALE, Policy
from parity.engine.anchor import Float64, anchor_outputs
from parity.engine.compare import Comparison, Summary, compare
from parity.engine.localise import localise_against_reference
from parity.engine.report import Report
from parity.engine.checks.adam import RULES, parameter_changes
from parity.engine.rows import Row
from parity.engine.suite import RunSpec, run_side
from parity.engine.tape import make_tape, tape_hash
from parity.engine.tolerances import AMP_RATIO, BLAME_RATIO, TOLERANCES, Tolerance, tolerance

PRECISION_CHECKS = ("predict", "loss", "grad", "adam")
PRECISIONS = {"fp16": "float16"}


@dataclass
class Judged:
    """One row's errors against float64: each twin's comparison (its ``rel_l2`` is the error), the ratio rule."""

    tolerance: Tolerance
    torch: Comparison
    ms: Comparison
    ratio_bound: float
    floor: float

    @property
    def err_torch(self) -> float:
        return self.torch.rel_l2

    @property
    def err_ms(self) -> float:
        return self.ms.rel_l2

    @property
    def ratio(self) -> float:
        """The larger error over the smaller, each counted at least at ``floor``."""
        a, b = max(self.err_torch, self.floor), max(self.err_ms, self.floor)
        return max(a, b) / min(a, b)

    @property
    def passed(self) -> bool:
        return self.torch.passed and self.ms.passed and self.ratio <= self.ratio_bound

    @property
    def blame(self) -> str | None:
        """The twin farther from float64 by more than ``BLAME_RATIO``, else the one alone over budget, else None."""
        a, b = max(self.err_torch, self.floor), max(self.err_ms, self.floor)
        if b > BLAME_RATIO * a:
            return "ms"
        if a > BLAME_RATIO * b:
            return "torch"
        if self.torch.passed != self.ms.passed:
            return "ms" if self.torch.passed else "torch"
        return None

    def to_dict(self) -> dict:
        return {"err_torch": self.err_torch, "err_ms": self.err_ms, "ratio": self.ratio,
                "ratio_bound": self.ratio_bound, "ratio_floor": self.floor, "blame": self.blame,
                "torch_vs_float64": self.torch.to_dict(), "ms_vs_float64": self.ms.to_dict(),
                "budget": self.tolerance.limits()}


def _flat(out: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    """One output (``key``) or every output under a group prefix (``key`` ending in "/"), as one float64 vector."""
    names = sorted(k for k in out if (k.startswith(key) if key.endswith("/") else k == key))
    return np.concatenate([np.ravel(np.asarray(out[k], np.float64)) for k in names]) if names else None


def judged_row(label: str, output: str, a: np.ndarray, m: np.ndarray, ref: np.ndarray, dtype: str, device: str) -> Row:
    """The row of one output: PyTorch ``a`` and MindSpore ``m`` each against the float64 ``ref`` under the
    budget, the ratio rule, and the cross difference (reported; its limits are the two budgets added)."""
    budget = tolerance(output, dtype, device)
    rule = AMP_RATIO[(output, dtype)]
    j = Judged(budget, compare("PyTorch vs float64", a, ref, budget), compare("MindSpore vs float64", m, ref, budget),
               rule.bound, rule.floor * budget.max_rel_l2)
    cross_tol = replace(budget, atol=2 * budget.atol, max_rel_l2=2 * budget.max_rel_l2, min_cosine=-1.0, gate=False)
    row = Row(label, output, Summary(label, [compare("PyTorch vs MindSpore", a, m, cross_tol)]), gate=True,
              note="cross difference reported; gated: each twin against float64 and their ratio")
    row.anchor = j
    return row


def _compared(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``out`` with its Adam states as parameter changes (``parameter_changes``), everything else as it is."""
    return {**{k: v for k, v in out.items() if k.split("/")[0] not in RULES.values()}, **parameter_changes(out)}


def reference_outputs(side_t: Any, model_t: Any, weights: Mapping[str, np.ndarray], spec: RunSpec,
                      tape: Mapping[str, np.ndarray], timings: dict) -> dict[str, np.ndarray]:
    """Float64 outputs: predictions and losses of the specification, gradients and Adam steps of the PyTorch
    twin in float64 (a copy of ``model_t`` driven through the same side methods, at loss scale 1), and that
    twin's forward outputs for the float64 logic row (``torch64/...``)."""
    from ddpm_core.reference.side import ReferenceSide

    t0 = time.perf_counter()
    reference = ReferenceSide()
    ref = dict(anchor_outputs(Float64(reference, reference.load_model(weights, spec.unet),
                                      reference.diffusion(spec.diffusion)), tape, spec))
    side64, model64 = side_t.float64(model_t)
    diffusion64 = side64.diffusion(spec.diffusion)
    ref.update({f"torch64/{k}": v for k, v in anchor_outputs(Float64(side64, model64, diffusion64), tape, spec).items()})
    timings["reference/spec"] = round(time.perf_counter() - t0, 3)
    wanted = tuple(c for c in ("grad", "adam") if c in spec.checks)
    if wanted:
        ref.update(run_side(side64, model64, diffusion64, tape, replace(spec, checks=wanted), timings))
    timings["reference/total"] = round(time.perf_counter() - t0, 3)
    return ref


def precision_rows(out_t: Mapping[str, np.ndarray], out_m: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray],
                   spec: RunSpec, dtype: str, device: str) -> list[Row]:
    """Every row of a precision run, in the float32 run's order, then the float64 logic row."""
    a, m, r = _compared(out_t), _compared(out_m), _compared(ref)
    rows = []
    for key in [k for k in r if k.startswith("predict/")]:
        rows.append(judged_row(f"prediction {key.split('/')[1]}", "prediction", a[key], m[key], r[key], dtype, device))
    for lt in spec.loss_types if "loss" in spec.checks else ():
        key = f"loss/{lt}"
        rows.append(judged_row(f"loss {lt}", "loss", a[key], m[key], r[key], dtype, device))
    if "grad" in spec.checks:
        n = sum(k.startswith("grad/") for k in r)
        rows.append(judged_row(f"gradients ({n} tensors)", "grad", _flat(a, "grad/"), _flat(m, "grad/"), _flat(r, "grad/"), dtype, device))
    for k in range(1, spec.tape.train_steps + 1) if "adam" in spec.checks else ():
        key = f"adam/step{k}/"
        rows.append(judged_row(f"Adam step {k}: MindSporeAdam vs nn.Adam", "adam", _flat(a, key), _flat(m, key),
                               _flat(r, key), dtype, device))
    logic = [compare(k.split("/", 1)[1], v, r[k.split("/", 1)[1]], tolerance("logic", "float64", "cpu"))
             for k, v in r.items() if k.startswith("torch64/") and k.split("/", 1)[1] in r]
    if logic:
        rows.append(Row("float64 logic (PyTorch float64 vs spec)", "logic", Summary("float64 logic", logic),
                        note="the float64 reference of gradients and Adam steps is the specification's twin",
                        culprit="torch"))
    return rows


def localise_precision(report: Report, sides: tuple[Any, Any], nets: tuple[Any, Any], amps: tuple[Any, Any],
                       weights: Mapping[str, np.ndarray], spec: RunSpec, tape: Mapping[str, np.ndarray],
                       dtype: str, device: str) -> None:
    """On a failure with a blamed twin: the first module (PyTorch's finishing order) on a prediction input
    where that twin's error against the specification exceeds the module budget and the other twin's by
    ``BLAME_RATIO``."""
    from ddpm_core.reference.side import ReferenceSide

    blamed = {r.blame for r in report.failures if r.blame}
    if not blamed:
        return
    ts = [int(t) for t in tape["pred_t"]]
    x, t = tape["pred_x"][0], np.full(spec.tape.batch, ts[0], np.int32)
    reference = ReferenceSide()
    rec_ref = reference.capture(reference.load_model(weights, spec.unet), x, t)
    recs = [side.capture(amp.backbone(net), x, t) for side, net, amp in zip(sides, nets, amps)]
    names = {"torch": "PyTorch", "ms": "MindSpore"}
    for words in localise_against_reference(*recs, rec_ref, tolerance("module", dtype, device), min_ratio=BLAME_RATIO):
        if any(words.split(": ", 1)[1].startswith(names[b]) for b in blamed):
            report.diagnoses.append(f"against the float64 specification (t={ts[0]}): {words}")


def check_precision(sides: tuple[Any, Any], models: tuple[Any, Any], weights: Mapping[str, np.ndarray],
                    spec: RunSpec, policies: tuple[Policy, Policy], declared: str = "float16",
                    loss_scale: float = DEFAULT_LOSS_SCALE, device: str = "cpu", environment: dict | None = None,
                    title: str = "") -> Report:
    """The precision run on two float32 models holding ``weights`` (PyTorch-named): PyTorch under
    ``policies[0]``, MindSpore under ``policies[1]``, judged with the budgets of the ``declared`` dtype
    (a policy run lower than declared fails). ``ddpm_ms.amp.UnsupportedPolicy`` where MindSpore cannot apply
    its policy to the model."""
    import ddpm_ms.amp as ms_amp
    import ddpm_torch.amp as torch_amp
    from parity.engine.initial import weights_hash

    side_t, side_m = sides
    model_t, model_m = models
    spec = replace(spec, checks=tuple(c for c in PRECISION_CHECKS if c in spec.checks))
    tape, timings = make_tape(spec.tape), {}
    ref = reference_outputs(side_t, model_t, weights, spec, tape, timings)
    net_m = ms_amp.apply_policy(model_m, policies[1])
    net_t = torch_amp.apply_policy(model_t, policies[0])
    t0 = time.perf_counter()
    outs = []
    for side, net in ((side_t, net_t), (side_m, net_m)):
        side.loss_scale = loss_scale
        try:
            outs.append(run_side(side, net, side.diffusion(spec.diffusion), tape, spec, timings))
        finally:
            side.loss_scale = 1.0
    timings["total"] = round(time.perf_counter() - t0, 3)
    report = Report(title or f"parity.check --precision: PyTorch {policies[0].label}, MindSpore {policies[1].label}",
                    {**spec.to_dict(), "precision": {"declared": declared, "torch": vars(policies[0]),
                                                     "ms": vars(policies[1]), "loss_scale": loss_scale}},
                    tape_hash(tape), weights_hash(weights), environment or {}, timings=timings)
    report.rows = precision_rows(outs[0], outs[1], ref, spec, declared, device)
    if not report.passed:
        localise_precision(report, sides, (net_t, net_m), (torch_amp, ms_amp), weights, spec, tape, declared, device)
    return report


def cmd_precision(args: Any, cfg: Any, state: Mapping[str, np.ndarray], source: str, spec: RunSpec) -> Report:
    """``python -m parity.check --precision fp16 [--ms-amp LEVEL]``: both twins in this process (the torch
    device's autocast; MindSpore's ``amp`` at LEVEL), judged against float64. ``EnvironmentRefused`` (exit 3)
    where MindSpore cannot apply LEVEL to the model, or a GPU/Ascend run that has no measured budget."""
    from ddpm_core.errors import EnvironmentRefused
    from parity.env import fingerprint, setup_mindspore, setup_torch
    from parity.engine.tolerances import device_class

    dtype = PRECISIONS[args.precision]
    device = device_class(args.torch_device, args.ms_device)
    if ("prediction", dtype, device) not in TOLERANCES:
        raise EnvironmentRefused(f"--precision {args.precision} has no measured budget on {device} (only "
                                 f"{sorted({k[2] for k in TOLERANCES if k[1] == dtype})}): measure it first "
                                 "(docs/harness.md, \"--precision fp16\")")
    torch_info = setup_torch(args.torch_device, args.threads or 1)
    ms_info = setup_mindspore(args.ms_device, args.threads or 1)
    import ddpm_ms.amp as ms_amp
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    sides = (TorchSide(args.torch_device), MsSide(args.ms_device))
    models = tuple(side.load_model(state, cfg) for side in sides)
    env = fingerprint(torch_info, ms_info, False)  # no sampler runs here: every MindSpore call is op by op
    env["weights_source"] = source
    policies = (Policy("torch", "autocast", dtype), Policy("ms", args.ms_amp, dtype))
    from parity.runner import describe_run

    title = describe_run(spec) + f"\nprecision {dtype}: PyTorch {policies[0].label} ({args.torch_device}), " \
                                 f"MindSpore {policies[1].label} ({args.ms_device}); loss scale {DEFAULT_LOSS_SCALE:g}"
    try:
        return check_precision(sides, models, state, spec, policies, dtype, device=device, environment=env, title=title)
    except ms_amp.UnsupportedPolicy as e:
        raise EnvironmentRefused(str(e)) from None
