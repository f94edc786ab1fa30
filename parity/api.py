"""The Python API for users' own test suites: compare a PyTorch twin and a MindSpore twin that hold the
same weights, get the report, or assert parity.

    report = parity.check_models(torch_model, ms_model, seed=0, batch=2)
    parity.assert_parity(torch_model, ms_model)   # AssertionError carrying report.text()

Rules: the models are ``ddpm_torch.Unet`` / ``ddpm_ms.Unet`` (or subclasses; anything with the same
``config``, parameter names and call signature); their weights are compared first and are left as
found (the optimizer check restores them). Everything random comes from the tape (parity.engine.tape).
This is the same code path as ``python -m parity.check``.
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig
from ddpm_core.reference.side import ReferenceSide
from parity.engine.anchor import Anchor, wants_anchor
from parity.engine.initial import weights_hash
from parity.engine.localise import localise, localise_against_reference
from parity.engine.probes import Oracle, diagnose
from parity.engine.report import Report
from parity.engine.settings import check_settings
from parity.engine.suite import (
    CHECKS,
    RunSpec,
    Row,
    compare_outputs,
    implied_outputs,
    outputs_row,
    run_side,
    teacher_forced,
)
from parity.engine.tape import TapeSpec, make_tape, tape_hash
from parity.engine.tolerances import device_class, tolerance


def default_image_size(size_multiple: int) -> int:
    """The tutorial's 28, rounded up to a multiple the U-Net accepts."""
    return int(math.ceil(28 / size_multiple) * size_multiple)


def make_spec(unet: Any, diffusion: DiffusionConfig = TUTORIAL_DIFFUSION, seed: int = 0, batch: int = 2,
              image_size: int | None = None, train_steps: int = 3, ddim_steps: int = 20,
              ddim_etas: Sequence[float] = (0.0, 0.5), pred_timesteps: Sequence[int] | None = None,
              checks: Sequence[str] = CHECKS) -> RunSpec:
    """A validated ``RunSpec`` (``ValueError`` naming the problem otherwise)."""
    if not checks:
        raise ValueError(f"no checks to run: name at least one of {', '.join(CHECKS)}")
    size = image_size or default_image_size(unet.size_multiple)
    if size % unet.size_multiple:
        raise ValueError(f"image size {size} is not a multiple of {unet.size_multiple} (dim_mults={unet.dim_mults})")
    tape = TapeSpec(seed, batch, unet.channels, size, diffusion.timesteps, train_steps, min(ddim_steps, diffusion.timesteps),
                    None if pred_timesteps is None else tuple(int(t) for t in pred_timesteps))
    return RunSpec(unet, diffusion, tape, tuple(checks), tuple(float(e) for e in ddim_etas))


def _device_of(torch_model: Any) -> str:
    p = next(torch_model.parameters(), None)
    return str(p.device) if p is not None else "cpu"


def explain(report: Report, outputs: tuple[dict, dict], tape: dict, spec: RunSpec, side_t: Any, model_t: Any,
            side_m: Any, model_m: Any, device: str, weights: dict[str, np.ndarray] | None = None) -> None:
    """On failure: the first diverging module (forward hooks), each twin's first module that leaves the float64
    specification (run on ``weights``, if given), and the diffusion math against its oracle."""
    failed = {r.output for r in report.failures}
    forward_outputs = {"weights", "prediction", "loss", "grad", "adam", "ddpm_one_step", "ddpm_trajectory",
                       "ddim_trajectory"}
    if (failed & forward_outputs or report.settings) and model_t is not None:
        ts = [int(t) for t in tape["pred_t"]]
        bad = [r.label for r in report.failures if r.output == "prediction"]
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
        elif failed <= {"grad", "adam"}:
            report.diagnoses.append(f"every module of the U-Net agrees on the prediction input (t={ts[k]}): the "
                                    "difference is in the backward pass or the optimizer")
        else:
            report.diagnoses.append(f"every module of the U-Net agrees on the prediction input (t={ts[k]}): the "
                                    "difference is outside the network's forward pass")
    math_row = next((r for r in report.failures if r.output == "diffusion_math"), None)
    if math_row is not None:
        oracle = Oracle(spec.diffusion)
        expected = oracle.expected(tape, spec.loss_types, spec.tape.ddim_steps, spec.ddim_etas)
        for member in [m for m in math_row.summary.members if not m.passed][:3]:
            name, want = member.name, expected.get(member.name)
            got = [out.get(f"probe/{name}") for out in outputs]
            if want is None or any(g is None for g in got):
                continue
            dev = [float(np.max(np.abs(np.asarray(g, np.float64) - want))) for g in got]
            sides = [label for label, d in zip(("PyTorch", "MindSpore"), dev) if d >= 0.1 * max(dev)]
            for label in sides:
                g = got[0] if label == "PyTorch" else got[1]
                words = diagnose(name, g, oracle, tape) or f"max abs {max(dev):.2e} from the numpy oracle"
                report.diagnoses.append(f"{label} diffusion math, {name}: {words}")
    one_step = next((r for r in report.failures if r.output == "ddpm_one_step"), None)
    if one_step is not None and not report.findings and not report.diagnoses:
        report.diagnoses.append(f"DDPM one step: {one_step.summary.first_failure.describe()} while the predictions "
                                "agree: look at the sampler step (coefficients, per-step noise)")


def check_models(torch_model: Any, ms_model: Any, *, diffusion: DiffusionConfig = TUTORIAL_DIFFUSION, seed: int = 0,
                 batch: int = 2, image_size: int | None = None, train_steps: int = 3, ddim_steps: int = 20,
                 ddim_etas: Sequence[float] = (0.0, 0.5), pred_timesteps: Sequence[int] | None = None,
                 checks: Sequence[str] = CHECKS, compiled: bool = True, progress: bool = False,
                 environment: dict | None = None, title: str | None = None, spec: RunSpec | None = None,
                 worker: bool = False, sides: tuple[Any, Any] | None = None,
                 weights: dict[str, np.ndarray] | None = None) -> Report:
    """Run every check on two models holding the same weights; return the ``Report`` (never raises
    for a numeric mismatch; ``ValueError`` for a bad configuration).

    ``checks`` picks a subset of ``parity.engine.suite.CHECKS``; ``compiled=False`` runs the samplers
    op by op instead of through their compiled steps (``ms.jit`` graphs in MindSpore); ``worker=True`` runs the PyTorch side in a
    process of its own alongside MindSpore, rebuilt from ``torch_model.config`` and its weights (only for
    an unmodified ``ddpm_torch.Unet``: the CLI's case); ``sides`` (a ``TorchSide``, ``MsSide`` pair) lets
    repeated calls on the same model objects reuse MindSpore's compiled steps; ``spec`` overrides the
    individual run options; ``weights`` ({PyTorch name: array}) are the weights both models were loaded
    from, which the float64 specification runs on (default: the PyTorch model's, as read back)."""
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    cfg = torch_model.config
    if getattr(ms_model, "config", None) != cfg:
        raise ValueError(f"the models differ in configuration: PyTorch {cfg}, MindSpore {getattr(ms_model, 'config', None)}")
    spec = spec or make_spec(cfg, diffusion, seed, batch, image_size, train_steps, ddim_steps, ddim_etas,
                             pred_timesteps, checks)
    import mindspore as ms

    tdev, mdev = _device_of(torch_model), ms.get_context("device_target")
    device = device_class(tdev, mdev)
    if sides is None:  # pass the same sides to later calls to reuse MindSpore's compiled steps
        sides = (TorchSide(tdev), MsSide(mdev))
    side_t, side_m = sides
    for side in sides:
        side.compiled, side.progress = compiled, progress
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tape = make_tape(spec.tape)
    if environment is None:
        from parity.env import fingerprint

        environment = fingerprint({"device": tdev}, {"device": mdev}, compiled)
    state_t = side_t.state(torch_model)
    pool = None
    if worker:  # started first, so that its imports and PyTorch's work overlap MindSpore's
        from parity.sides.worker import TorchWorker

        pool = TorchWorker(spec, state_t, tape_hash(tape), tdev, threads=1, compiled=compiled)
    report = Report(title or describe_run(spec), spec.to_dict(), tape_hash(tape), weights_hash(state_t), environment,
                    timings=timings)
    try:
        if "settings" in spec.checks:
            report.settings, report.settings_pairs = check_settings(side_t, torch_model, side_m, ms_model)
            timings["settings"] = round(time.perf_counter() - t0, 3)
        d_t, d_m = side_t.diffusion(spec.diffusion), side_m.diffusion(spec.diffusion)
        out_t, out_m, stepped, anchor = _run_both(side_t, torch_model, d_t, side_m, ms_model, d_m, tape, spec, timings,
                                                  pool, state_t if weights is None else weights)
    finally:
        if pool is not None:
            pool.close()
    one_step = None
    if stepped is not None:
        one_step = (stepped, out_m["ddpm/trajectory"], "PyTorch stepping from MindSpore's states")
    implied = tuple(implied_outputs(spec, name, tape["pred_t"]) for name in ("torch", "ms"))
    report.rows = compare_outputs(out_t, out_m, spec, device, one_step, anchor, implied)
    require_results(report)
    if weights is not None:
        blame_weights(report, weights, out_t, out_m)
    if not report.passed:
        explain(report, (out_t, out_m), tape, spec, side_t, torch_model, side_m, ms_model, device,
                state_t if weights is None else weights)
    timings["total"] = round(time.perf_counter() - t0, 3)
    return report


def require_results(report: Report) -> None:
    """A ``ValueError`` unless something was compared (a gating row, or the settings of module pairs): a run
    that compared nothing must fail, never pass."""
    if not any(r.gate for r in report.rows) and not report.settings_pairs:
        checks = ", ".join(report.spec.get("checks", [])) or "none"
        raise ValueError(f"nothing was compared (checks: {checks}); a parity run that compares nothing cannot pass")


def _run_both(side_t: Any, model_t: Any, d_t: Any, side_m: Any, model_m: Any, d_m: Any, tape: dict, spec: RunSpec,
              timings: dict, worker: Any, weights: dict[str, np.ndarray]) -> tuple[dict, dict, np.ndarray | None, dict]:
    """Both sides' outputs, PyTorch's teacher-forced steps from MindSpore's trajectory and the float64 anchor
    (``parity.engine.anchor``): in this process one after the other, or with PyTorch and the anchor in ``worker``
    (a ``parity.sides.worker.TorchWorker``) meanwhile."""
    if worker is None:
        out_m = run_side(side_m, model_m, d_m, tape, spec, timings)
        out_t = run_side(side_t, model_t, d_t, tape, spec, timings)
        stepped, anchor = None, {}
        if "ddpm" in spec.checks:
            t1 = time.perf_counter()
            stepped = teacher_forced(side_t, model_t, d_t, tape, out_m["ddpm/trajectory"])
            timings["torch/teacher_forced"] = round(time.perf_counter() - t1, 3)
        if wants_anchor(spec):
            anc = Anchor(model_t, weights, spec)
            anc.before(tape)
            anc.after(tape, out_m.get("ddpm/trajectory"))
            timings.update(anc.timings)
            anchor = anc.outputs
        return out_t, out_m, stepped, anchor
    sent: list[bool] = []

    def send(trajectory: np.ndarray) -> None:
        sent.append(True)
        worker.send_trajectory(trajectory)

    try:
        out_m = run_side(side_m, model_m, d_m, tape, spec, timings, send)
    finally:
        if "ddpm" in spec.checks and not sent:
            worker.send_trajectory(None)  # release the worker
    t1 = time.perf_counter()
    out_t, stepped, anchor = worker.result()
    timings.update(worker.timings)
    timings["waited_for_torch_worker"] = round(time.perf_counter() - t1, 3)
    return out_t, out_m, stepped, anchor


def blame_weights(report: Report, source: dict[str, np.ndarray], out_t: dict, out_m: dict) -> None:
    """A failing weights row blames the one twin whose weights, read back, are not the source weights."""
    row = next((r for r in report.rows if r.output == "weights" and not r.passed), None)
    if row is None:
        return
    differs = [name for name, out in (("torch", out_t), ("ms", out_m))
               if any(f"weights/{k}" not in out or not np.array_equal(out[f"weights/{k}"], v) for k, v in source.items())]
    if len(differs) == 1:
        row.culprit = differs[0]


def describe_run(spec: RunSpec) -> str:
    u, d, t = spec.unet, spec.diffusion, spec.tape
    return (f"parity.check: Unet(dim={u.dim}, channels={u.channels}, dim_mults={u.dim_mults}"
            f"{'' if u.use_convnext else ', use_convnext=False'}), T={d.timesteps} {d.schedule}, {d.loss_type} loss; "
            f"batch {t.batch}, {t.image_size}x{t.image_size}, seed {t.seed}")


def assert_parity(torch_model: Any, ms_model: Any, **options: Any) -> Report:
    """``check_models`` and raise ``AssertionError(report.text())`` unless everything passes."""
    report = check_models(torch_model, ms_model, **options)
    if not report.passed:
        raise AssertionError(report.text())
    return report


def assert_close(label: str, a: Any, b: Any, output: str, device: str = "cpu") -> Row:
    """``a`` against the reference ``b`` (arrays, or ``{name: array}``) under the tolerance table's entry for
    ``output``, compared as ``python -m parity.check`` compares it; ``AssertionError`` naming the first
    failing tensor, its figures and the limits otherwise. A comparison of nothing fails."""
    row = outputs_row(label, output, a, b, device)
    if not row.summary.members:
        raise AssertionError(f"{label}: nothing was compared")
    if not row.passed:
        bad = [m for m in row.summary.members if not m.passed]
        raise AssertionError(f"{label} ({output} tolerance, {len(bad)} of {len(row.summary.members)} failing): "
                             f"{bad[0].describe()}")
    return row
