"""What a parity run computes on one side, and how the two sides' outputs become compared rows.

Rule: ``run_side`` is the only code that drives a twin, through the side interface (numpy in, numpy
out), so ``check`` (both sides in one process), ``record`` and ``compare`` (one side each, across
machines) compute exactly the same outputs. Outputs are a flat ``{path: ndarray}`` (``predict/t=100``,
``grad/downs.1.0.net.1.weight``, ``ddpm/trajectory``, ...) that ``record`` saves as is. In every
comparison ``a`` is PyTorch and ``b`` MindSpore, the reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

from ddpm_core.config import LOSS_TYPES, DiffusionConfig, UnetConfig
from ddpm_core.schedules import cosine_decay_lr
from ddpm_core.weights.naming import unet_parameters
from parity.engine.compare import Comparison, Summary, compare, rms
from parity.engine.probes import probe_shapes, run_probes
from parity.engine.tape import TapeSpec
from parity.engine.threeway import Anchored, Rounding, anchor_arrays, anchored, logic_summary, prediction_rounding
from parity.engine.tolerances import Tolerance, tolerance

CHECKS = ("settings", "weights", "predict", "loss", "grad", "ddpm", "ddim", "probes", "adam", "reference")
TUTORIAL_LR = dict(min_lr=1e-7, max_lr=1e-4, total_step=10 * 3750, step_per_epoch=3750, decay_epoch=10)
"""The tutorial's ``nn.cosine_decay_lr`` arguments (Fashion-MNIST: 60000 / 16 = 3750 steps per epoch)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides what a run computes (recorded in the golden file's manifest)."""

    unet: UnetConfig
    diffusion: DiffusionConfig
    tape: TapeSpec
    checks: tuple[str, ...] = CHECKS
    ddim_etas: tuple[float, ...] = (0.0, 0.5)
    loss_types: tuple[str, ...] = LOSS_TYPES

    def __post_init__(self) -> None:
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; choose from {', '.join(CHECKS)}")
        if self.unet.channels != self.tape.channels:
            raise ValueError(f"tape has {self.tape.channels} channel(s), the model {self.unet.channels}")
        if self.tape.timesteps != self.diffusion.timesteps:
            raise ValueError(f"tape has T={self.tape.timesteps}, the diffusion T={self.diffusion.timesteps}")
        if self.tape.image_size % self.unet.size_multiple:
            raise ValueError(f"image size {self.tape.image_size} is not a multiple of {self.unet.size_multiple} "
                             f"(dim_mults={self.unet.dim_mults})")
        bad = [lt for lt in self.loss_types if lt not in LOSS_TYPES]
        if bad or not self.loss_types:
            raise ValueError(f"loss types {list(self.loss_types)}: choose from {', '.join(LOSS_TYPES)}")

    @property
    def lrs(self) -> list[float]:
        return cosine_decay_lr(**TUTORIAL_LR)[: self.tape.train_steps]

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "diffusion": vars(self.diffusion).copy(), "tape": self.tape.to_dict(),
                "checks": list(self.checks), "ddim_etas": list(self.ddim_etas), "loss_types": list(self.loss_types),
                "lrs": self.lrs}


def run_side(side: Any, model: Any, diffusion: Any, tape: Mapping[str, np.ndarray], spec: RunSpec,
             timings: dict[str, float] | None = None,
             on_trajectory: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Every output of one side for ``spec``. Leaves the model's weights as it found them.
    ``on_trajectory`` receives the DDPM trajectory as soon as it exists (the other side's teacher-forced
    check can start while this side goes on)."""
    timings = {} if timings is None else timings
    tape = {k: np.array(v) for k, v in tape.items()}  # writable copies: no side can alter the shared tape
    checks, out = spec.checks, {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[f"{side.name}/{stage}"] = round(now - clock, 3)
        clock = now

    w0 = side.state(model)
    if "weights" in checks:
        out.update({f"weights/{n}": v for n, v in w0.items()})
    if "predict" in checks:
        x, ts = tape["pred_x"], tape["pred_t"]
        k, b = x.shape[:2]
        y = side.predict(model, x.reshape(k * b, *x.shape[2:]), np.repeat(ts, b)).reshape(x.shape)
        out.update({f"predict/t={int(t)}": y[i] for i, t in enumerate(ts)})
        lap("predict")
    batch0 = (tape["train_x0"][0], tape["train_t"][0], tape["train_noise"][0])
    grads = None
    if "grad" in checks:
        loss, grads = side.loss_and_grads(model, diffusion, *batch0, spec.diffusion.loss_type)
        out["grad_loss"] = loss
        out.update({f"grad/{n}": g for n, g in grads.items()})
        lap("grad")
    if "loss" in checks:  # the training loss type's value is the one the gradient call returned
        for lt in spec.loss_types:
            same = lt == spec.diffusion.loss_type and "grad_loss" in out
            out[f"loss/{lt}"] = out["grad_loss"] if same else side.loss(model, diffusion, *batch0, lt)
        lap("loss")
    if "ddpm" in checks:
        out["ddpm/trajectory"] = side.ddpm(model, diffusion, tape["x_T"], tape["ddpm_noise"])
        if on_trajectory is not None:
            on_trajectory(out["ddpm/trajectory"])
        lap("ddpm")
    if "ddim" in checks:
        for eta in spec.ddim_etas:
            out[f"ddim/eta={eta:g}"] = side.ddim(model, diffusion, tape["x_T"], spec.tape.ddim_steps, eta,
                                                 tape["ddim_noise"])
        lap("ddim")
    if "probes" in checks:
        probes = run_probes(side, diffusion, tape, spec.diffusion, spec.loss_types, spec.tape.ddim_steps, spec.ddim_etas)
        out.update({f"probe/{n}": v for n, v in probes.items()})
        lap("probes")
    if "adam" in checks:
        batches = list(zip(tape["train_x0"], tape["train_t"], tape["train_noise"]))
        rules = ("mindspore", "torch") if side.name == "torch" else ("mindspore",)
        for rule in rules:
            prefix = "adam" if rule == "mindspore" else "adam_torch_rule"
            try:  # step 1's gradient is the one just compared (same batch, same weights): not computed twice
                states = side.adam(model, diffusion, batches, spec.lrs, spec.diffusion.loss_type, rule, grads)
            finally:
                side.load(model, w0)
            if prefix == "adam":
                out.update({f"adam/step0/{n}": v for n, v in w0.items()})
            for k, state in enumerate(states, 1):
                out.update({f"{prefix}/step{k}/{n}": v for n, v in state.items()})
        lap("adam")
    return out


def implied_outputs(spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of every output ``run_side`` computes for ``spec`` on ``framework``'s side ("torch" or
    "ms"), the prediction timesteps being the tape's ``pred_t``: what a golden file must hold and what a
    comparison must cover (the float32 outputs; computed from the spec alone, nothing drawn)."""
    checks, batch, T = spec.checks, spec.tape.shape, spec.diffusion.timesteps
    params = {p.torch_name: tuple(p.shape) for p in unet_parameters(spec.unet)}
    out: dict[str, tuple[int, ...]] = {}
    if "weights" in checks:
        out.update({f"weights/{n}": s for n, s in params.items()})
    if "predict" in checks:
        out.update({f"predict/t={int(t)}": batch for t in pred_t})
    if "grad" in checks:
        out["grad_loss"] = ()
        out.update({f"grad/{n}": s for n, s in params.items()})
    if "loss" in checks:
        out.update({f"loss/{lt}": () for lt in spec.loss_types})
    if "ddpm" in checks:
        out["ddpm/trajectory"] = (T, *batch)
    if "ddim" in checks:
        out.update({f"ddim/eta={eta:g}": (spec.tape.ddim_steps, *batch) for eta in spec.ddim_etas})
    if "probes" in checks:
        shapes = probe_shapes(spec.diffusion, spec.loss_types, spec.tape.ddim_steps, spec.ddim_etas)
        out.update({f"probe/{n}": s for n, s in shapes.items()})
    if "adam" in checks:
        for prefix in ("adam", "adam_torch_rule") if framework == "torch" else ("adam",):
            first = 0 if prefix == "adam" else 1
            for k in range(first, spec.tape.train_steps + 1):
                out.update({f"{prefix}/step{k}/{n}": s for n, s in params.items()})
    return out


def teacher_forced(side: Any, model: Any, diffusion: Any, tape: Mapping[str, np.ndarray],
                   reference: np.ndarray) -> np.ndarray:
    """One step of ``side`` from every state of the other side's trajectory ``reference`` (T, B, ...):
    row k steps from x_T (k = 0) or reference[k-1], at t = T-1-k, with the tape's noise of step k."""
    T = reference.shape[0]
    tape = {k: np.array(v) for k, v in tape.items()}
    xs = np.concatenate([tape["x_T"][None], reference[:-1]])
    return side.ddpm_one_step(model, diffusion, xs, np.arange(T - 1, -1, -1, dtype=np.int32), tape["ddpm_noise"])


@dataclass
class Row:
    """One line of the report: a label, the tolerance entry it used, its comparisons."""

    label: str
    output: str
    summary: Summary
    gate: bool = True
    note: str = ""
    steps: list[int] = field(default_factory=list)
    anchor: Any = None
    """A ``parity.engine.threeway.Anchored``: each twin against the float64 specification, the blame; None for an
    output the specification does not cover."""
    culprit: str | None = None
    """The twin a failure of this row blames when it has no anchor (the float64 logic row: PyTorch)."""

    @property
    def passed(self) -> bool:
        return self.summary.passed and (self.anchor is None or self.anchor.passed)

    @property
    def blame(self) -> str | None:
        """"torch" or "ms" for a failing row whose twin is farther from the specification, else None."""
        if self.passed:
            return None
        return self.culprit if self.anchor is None else self.anchor.blame

    def to_dict(self) -> dict:
        anchored = {"err_torch": None, "err_ms": None, "blame": None} if self.anchor is None else self.anchor.to_dict()
        return {"label": self.label, "output": self.output, "gate": self.gate, "note": self.note,
                **self.summary.to_dict(), **anchored, "blame": self.blame}


SIDES = ("PyTorch", "MindSpore")
"""How rows name ``a`` and ``b`` unless told otherwise (``compare`` names a golden file's side)."""


def pairs_row(prefix: str, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], label: str, device: str,
              output: str, gate: bool = True, note: str = "", tol: Tolerance | None = None,
              sides: tuple[str, str] = SIDES) -> Row | None:
    """One row comparing the outputs under ``prefix`` (a group if it ends in "/", else one exact key) with the
    ``output`` tolerance (or ``tol``); a tensor on one side only fails as missing; None if neither side has any.
    ``sides`` name ``a`` and ``b`` in messages."""

    def match(k: str) -> bool:  # a prefix ending in "/" groups tensors; anything else is one exact key
        return k.startswith(prefix) if prefix.endswith("/") else k == prefix

    names = [k for k in b if match(k)] + [k for k in a if match(k) and k not in b]
    if not names:
        return None
    tol = tol or tolerance(output, "float32", device)
    each = tol if tol.aggregate_over == "each" else tol.elementwise_only()
    members = []
    for n in names:
        short = n[len(prefix):] or n
        if n not in a or n not in b:
            members.append(Comparison(short, tol, problem=f"missing in {sides[0] if n not in a else sides[1]}"))
        else:
            members.append(compare(short, a[n], b[n], each, sides))
    both = [n for n in names if n in a and n in b]
    if tol.aggregate_over == "all" and both:
        members.append(compare(f"(all {len(both)} tensors)", np.concatenate([np.ravel(a[n]) for n in both]),
                               np.concatenate([np.ravel(b[n]) for n in both]), tol, sides))
    return Row(label, output, Summary(label, members), gate and tol.gate, note)


def _steps(label: str, output: str, a: np.ndarray, b: np.ndarray, names: list[str], device: str,
           note: str = "", tol: Tolerance | None = None, sides: tuple[str, str] = SIDES) -> Row:
    """One comparison per sampler step. The atol is in units of the reference state's RMS (at least 1):
    states stay ~N(0, 1) under the linear schedule, but grow ~100x in the first steps of a cosine
    schedule (beta_T = 0.9999), and their rounding errors with them."""
    tol = tol or tolerance(output, "float32", device)
    members = []
    for k in range(min(len(a), len(b))):
        scale = max(1.0, rms(b[k]))
        c = compare(names[k], a[k], b[k], replace(tol, atol=tol.atol * scale), sides)
        c.scale = scale
        members.append(c)
    if a.shape != b.shape:
        members.insert(0, compare("shape", a, b, tol, sides))
    return Row(label, output, Summary(label, members), tol.gate, note)


STEP_OUTPUTS = ("ddpm_one_step", "ddpm_trajectory", "ddim_trajectory")
"""Outputs compared per sampler step, (steps, batch, ...), with the atol in units of each state's RMS."""


def outputs_row(label: str, output: str, a: np.ndarray | Mapping[str, np.ndarray],
                b: np.ndarray | Mapping[str, np.ndarray], device: str = "cpu") -> Row:
    """``a`` against the reference ``b`` under the table's ``output`` entry, exactly as the harness compares
    that output: one array, or ``{name: array}`` (a name on one side only fails as missing); a sampler
    output (``STEP_OUTPUTS``) step by step."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("compare two arrays or two {name: array} mappings")
    if not isinstance(b, Mapping):
        a, b = np.asarray(a), np.asarray(b)
        if output in STEP_OUTPUTS:
            return _steps(label, output, a, b, [f"step {k}" for k in range(len(b))], device)
        return pairs_row(label, {label: a}, {label: b}, label, device, output)
    row = pairs_row("/", {f"/{k}": v for k, v in a.items()}, {f"/{k}": v for k, v in b.items()}, label, device,
                    output)
    return row if row is not None else Row(label, output, Summary(label, []))


def _updates(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Adam states after k steps -> the parameter change w_k - w_0 (float64, exact), step0 dropped."""
    res = {}
    for key, value in out.items():
        parts = key.split("/", 2)
        if parts[0] in ("adam", "adam_torch_rule") and len(parts) == 3 and parts[1].startswith("step"):
            if parts[1] != "step0" and f"adam/step0/{parts[2]}" in out:
                res[key] = value.astype(np.float64) - out[f"adam/step0/{parts[2]}"].astype(np.float64)
            continue
        res[key] = value
    return res


_OUTPUT_OF = {"weights": "weights", "predict": "prediction", "loss": "loss", "grad_loss": "loss", "grad": "grad",
              "adam": "adam", "adam_torch_rule": "adam_torch_rule", "ddpm": "ddpm_trajectory",
              "ddim": "ddim_trajectory", "probe": "diffusion_math"}
"""The tolerance table's output for each key of ``run_side`` (by its first part)."""


def missing_row(implied: tuple[Collection[str], Collection[str]], a: Mapping[str, np.ndarray],
                b: Mapping[str, np.ndarray], device: str, sides: tuple[str, str] = SIDES) -> Row | None:
    """A failing row naming every output the spec implies (``implied``: the keys of ``a``'s side and of ``b``'s,
    ``implied_outputs``) that a side does not have, or None: a run that compares fewer outputs than its spec
    implies never passes."""
    members = [Comparison(key, tolerance(_OUTPUT_OF[key.split("/")[0]], "float32", device), problem=f"missing in {side}")
               for keys, have, side in ((implied[0], a, sides[0]), (implied[1], b, sides[1]))
               for key in keys if key not in have]
    if not members:
        return None
    label = f"outputs the spec implies ({len(members)} missing)"
    return Row(label, "missing", Summary(label, members), note="every output the spec implies must be compared")


def compare_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], spec: RunSpec, device: str,
                    one_step: tuple[np.ndarray, np.ndarray, str] | None = None,
                    anchor: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                    implied: tuple[Collection[str], Collection[str]] | None = None,
                    sides: tuple[str, str] = SIDES, rounding: Rounding | None = None) -> list[Row]:
    """Rows for every output both sides computed. ``one_step`` = (PyTorch values, MindSpore values,
    who stepped) of the teacher-forced DDPM check; ``anchor`` = ``parity.engine.anchor.Anchor.outputs`` (the float64
    specification's outputs, and PyTorch float64's where that ran): the rows it covers are compared three ways
    under machine-relative tolerances (``parity.engine.threeway``) scaled by ``rounding`` (default: PyTorch
    float32 against its float64 run, measured here), and a float64 logic row is added where PyTorch ran in
    float64. ``implied`` (the keys each side's spec implies) adds a failing row for any that is missing;
    ``sides`` name ``a`` and ``b`` in messages."""
    T, rows = spec.diffusion.timesteps, []
    missing = None if implied is None else missing_row(implied, a, b, device, sides)
    a, b = _updates(a), _updates(b)
    if rounding is None and anchor and anchor.get("torch64"):
        rounding = prediction_rounding(a, anchor["torch64"])

    def anchor_of(key: str, output: str) -> Anchored | None:
        if not anchor:
            return None
        arrays = anchor_arrays(key, a, b, T, anchor, None if one_step is None else one_step[:2])
        return None if arrays is None else anchored(output, key, *arrays, rounding, device, sides)

    def add(row: Row | None, an: Anchored | None = None) -> None:
        if row is not None:
            row.anchor = an
            rows.append(row)

    def tol_of(an: Anchored | None) -> Tolerance | None:
        return None if an is None else an.tolerance

    add(missing)
    add(pairs_row("weights/", a, b, f"weights ({sum(k.startswith('weights/') for k in b)} tensors)", device, "weights",
                  sides=sides))
    for key in [k for k in b if k.startswith("predict/")]:
        an = anchor_of(key, "prediction")
        add(pairs_row(key, a, b, f"prediction {key.split('/')[1]}", device, "prediction", tol=tol_of(an), sides=sides),
            an)
    for lt in spec.loss_types:
        an = anchor_of(f"loss/{lt}", "loss")
        add(pairs_row(f"loss/{lt}", a, b, f"loss {lt}", device, "loss", tol=tol_of(an), sides=sides), an)
    add(pairs_row("grad/", a, b, f"gradients ({sum(k.startswith('grad/') for k in b)} tensors)", device, "grad",
                  sides=sides))
    for k in range(1, spec.tape.train_steps + 1):
        add(pairs_row(f"adam/step{k}/", a, b, f"Adam step {k}: MindSporeAdam vs nn.Adam", device, "adam",
                      note="parameter change w_k - w_0", sides=sides))
    last = spec.tape.train_steps
    if any(k.startswith(f"adam_torch_rule/step{last}/") for k in a) and any(k.startswith(f"adam/step{last}/") for k in b):
        a_torch = {f"adam/step{last}/" + k.split("/", 2)[2]: v for k, v in a.items()
                   if k.startswith(f"adam_torch_rule/step{last}/")}
        add(pairs_row(f"adam/step{last}/", a_torch, b, f"Adam step {last}: torch.optim.Adam vs nn.Adam", device,
                      "adam_torch_rule", gate=False, note="information: expected to differ (eps placement)",
                      sides=sides))
    step_names = [f"step {k} (t={T - 1 - k})" for k in range(T)]
    if one_step is not None:
        an = anchor_of("ddpm/one_step", "ddpm_one_step")
        add(_steps("DDPM one step (teacher-forced)", "ddpm_one_step", one_step[0], one_step[1], step_names, device,
                   note=one_step[2], tol=tol_of(an), sides=sides), an)
    if "ddpm/trajectory" in a and "ddpm/trajectory" in b:
        an = anchor_of("ddpm/trajectory", "ddpm_trajectory")
        add(_steps(f"DDPM trajectory ({T} steps)", "ddpm_trajectory", a["ddpm/trajectory"], b["ddpm/trajectory"],
                   step_names, device, note="free-running; drift per step in --json", tol=tol_of(an), sides=sides), an)
    for key in [k for k in b if k.startswith("ddim/") and k in a]:
        n, an = b[key].shape[0], anchor_of(key, "ddim_trajectory")
        add(_steps(f"DDIM {key.split('/')[1]} ({n} steps)", "ddim_trajectory", a[key], b[key],
                   [f"step {k}" for k in range(n)], device, tol=tol_of(an), sides=sides), an)
    add(pairs_row("probe/", a, b, "diffusion math (toy model)", device, "diffusion_math", sides=sides))
    logic = logic_summary(rows, "float64 logic (PyTorch float64 vs spec)")
    if logic.members:
        rows.append(Row(logic.label, "logic", logic, note="any logic difference in the PyTorch twin fails this row",
                        culprit="torch"))
    return rows
