"""What a parity run computes on one side, and how the two sides' outputs become compared rows: loops over the
registry of checks (``parity.engine.checks``).

Rule: ``run_side`` is the only code that drives a side for a run, through the side interface (numpy in, numpy
out), so ``check`` (both sides in one process), ``record`` and ``compare`` (one side each, across machines)
compute exactly the same outputs. Outputs are a flat ``{path: ndarray}`` (``predict/t=100``,
``grad/downs.1.0.net.1.weight``, ``ddpm/trajectory``, ...) that ``record`` saves as is. In every comparison
``a`` is PyTorch and ``b`` MindSpore, the reference.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np

from ddpm_core.config import LOSS_TYPES, DiffusionConfig, UnetConfig
from ddpm_core.contract import D, M, Side
from ddpm_core.schedules import cosine_decay_lr
from parity.engine.anchor import Anchor
from parity.engine.checks import CHECKS, REGISTRY, RUN_ORDER, tolerance_of
from parity.engine.checks.base import Check, Followed, Judge, SideRun
from parity.engine.compare import Comparison, Summary
from parity.engine.rows import SIDES, Row
from parity.engine.tape import TapeSpec
from parity.engine.threeway import Rounding, prediction_rounding
from parity.engine.tolerances import tolerance

TUTORIAL_LR: dict[str, Any] = dict(min_lr=1e-7, max_lr=1e-4, total_step=10 * 3750, step_per_epoch=3750, decay_epoch=10)
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


def side_run(side: Side[M, D], model: M, diffusion: D, tape: Mapping[str, np.ndarray],
             spec: RunSpec) -> SideRun[M, D]:
    """One side's run of ``spec``, on writable copies of the tape (no side can alter the shared tape)."""
    return SideRun(side, model, diffusion, {k: np.array(v) for k, v in tape.items()}, spec, side.state(model))


def _run_checks(r: SideRun[Any, Any], timings: dict[str, float],
                on_lead: Callable[[dict[str, np.ndarray]], None] | None = None) -> None:
    chosen = [c for c in RUN_ORDER if c.name in r.spec.checks and type(c).run is not Check.run]
    followed = [c for c in chosen if c.follows]
    for check in chosen:
        clock = time.perf_counter()
        check.run(r)
        timings[f"{r.side.name}/{check.name}"] = round(time.perf_counter() - clock, 3)
        if on_lead is not None and followed and check is followed[-1]:
            on_lead({k: r.out[k] for c in followed for k in c.follows.values()})


def run_side(side: Side[M, D], model: M, diffusion: D, tape: Mapping[str, np.ndarray], spec: RunSpec,
             timings: dict[str, float] | None = None,
             on_lead: Callable[[dict[str, np.ndarray]], None] | None = None) -> dict[str, np.ndarray]:
    """Every output of one side for ``spec`` (each chosen check's ``run``, in ``RUN_ORDER``). Leaves the model's
    weights as it found them. ``on_lead`` receives the outputs the other side's checks follow (the DDPM
    trajectory) as soon as they all exist, so the other side's ``follow`` can start while this side goes on."""
    r = side_run(side, model, diffusion, tape, spec)
    _run_checks(r, {} if timings is None else timings, on_lead)
    return r.out


def leads(spec: RunSpec) -> bool:
    """Whether a check of ``spec`` follows the other side's outputs (then the leader sends them once)."""
    return any(c.follows for c in REGISTRY if c.name in spec.checks)


def run_follower(side: Side[M, D], model: M, diffusion: D, tape: Mapping[str, np.ndarray], spec: RunSpec,
                 make_anchor: Callable[[], Anchor] | None, lead: Callable[[], Mapping[str, np.ndarray] | None],
                 timings: dict[str, float]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict]:
    """The one sequence of the side that follows the other (in this process, in the PyTorch worker, or against
    a golden file): its outputs (``run_side``); the float64 anchor (``make_anchor()``, made after the run: the
    model as the run leaves it, e.g. channels-last after PyTorch's training steps, is what its float64 copy
    starts from) and the anchor's outputs that need no other side (while the leader may still run); then, once
    ``lead()`` returns the leader's outputs (None: the leader failed), the outputs this side computes from them
    (``follow_side``) and the anchor's. Returns (outputs, followed outputs, ``anchor.outputs`` or {})."""
    r = side_run(side, model, diffusion, tape, spec)
    _run_checks(r, timings)
    anchor = None if make_anchor is None else make_anchor()
    if anchor is not None:
        anchor.before(tape)
    leader = lead() if leads(spec) else None
    followed: dict[str, np.ndarray] = {}
    if leader is not None:
        t0 = time.perf_counter()
        followed = follow_side(r, leader)
        timings[f"{side.name}/follow"] = round(time.perf_counter() - t0, 3)
    if anchor is not None:
        anchor.after(tape, leader)
        timings.update(anchor.timings)
    return r.out, followed, {} if anchor is None else anchor.outputs


def pair_followed(followed: Mapping[str, np.ndarray], leader: Mapping[str, np.ndarray], follower_is_a: bool,
                  note: str) -> dict[str, Followed]:
    """The follower's outputs paired with the leader's outputs they stepped from, as (PyTorch's, MindSpore's,
    ``note``: who stepped from whose states) for ``compare_outputs``."""
    out: dict[str, Followed] = {}
    for check in REGISTRY:
        for key, lead_key in check.follows.items():
            if key in followed and lead_key in leader:
                mine, theirs = followed[key], leader[lead_key]
                out[key] = (mine, theirs, note) if follower_is_a else (theirs, mine, note)
    return out


def follow_side(r: SideRun[Any, Any], leader: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What one side computes from the other side's outputs ``leader`` (each chosen check's ``follow``: the
    teacher-forced DDPM steps), keyed like ``run_side``'s outputs."""
    out: dict[str, np.ndarray] = {}
    for check in RUN_ORDER:
        if check.name in r.spec.checks:
            out.update(check.follow(r, leader))
    return out


def implied_outputs(spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of every output ``run_side`` computes for ``spec`` on ``framework``'s side ("torch" or
    "ms"), the prediction timesteps being the tape's ``pred_t``: what a golden file must hold and what a
    comparison must cover (the float32 outputs; computed from the spec alone, nothing drawn)."""
    out: dict[str, tuple[int, ...]] = {}
    for check in RUN_ORDER:
        if check.name in spec.checks:
            out.update(check.implied(spec, framework, pred_t))
    return out


def missing_row(implied: tuple[Collection[str], Collection[str]], a: Mapping[str, np.ndarray],
                b: Mapping[str, np.ndarray], device: str, sides: tuple[str, str] = SIDES) -> Row | None:
    """A failing row naming every output the spec implies (``implied``: the keys of ``a``'s side and of ``b``'s,
    ``implied_outputs``) that a side does not have, or None: a run that compares fewer outputs than its spec
    implies never passes."""
    members = [Comparison(key, tolerance(tolerance_of(key), "float32", device), problem=f"missing in {side}")
               for keys, have, side in ((implied[0], a, sides[0]), (implied[1], b, sides[1]))
               for key in keys if key not in have]
    if not members:
        return None
    label = f"outputs the spec implies ({len(members)} missing)"
    return Row(label, "missing", Summary(label, members), note="every output the spec implies must be compared")


def compared(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output in the form its check compares it (``Check.compared``: Adam states as parameter changes)."""
    res: dict[str, np.ndarray] = {}
    for check in REGISTRY:
        res.update(check.compared(out))
    return res


def compare_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], spec: RunSpec, device: str,
                    followed: Mapping[str, Followed] | None = None,
                    anchor: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                    implied: tuple[Collection[str], Collection[str]] | None = None,
                    sides: tuple[str, str] = SIDES, rounding: Rounding | None = None) -> list[Row]:
    """Rows for every output both sides computed: each registered check's ``rows``, in the registry's order.
    ``followed`` = the outputs one side computed from the other's (``follow_side``, as (PyTorch values,
    MindSpore values, who computed them)); ``anchor`` = ``parity.engine.anchor.Anchor.outputs`` (the float64
    specification's outputs, and PyTorch float64's where that ran): the rows it covers are compared three ways
    under machine-relative tolerances (``parity.engine.threeway``) scaled by ``rounding`` (default: PyTorch
    float32 against its float64 run, measured here), and a float64 logic row is added where PyTorch ran in
    float64. ``implied`` (the keys each side's spec implies) adds a failing row for any that is missing;
    ``sides`` name ``a`` and ``b`` in messages."""
    missing = None if implied is None else missing_row(implied, a, b, device, sides)
    a, b = compared(a), compared(b)
    if rounding is None and anchor and anchor.get("torch64"):
        rounding = prediction_rounding(a, anchor["torch64"])
    judge = Judge(a, b, spec, device, sides, anchor, rounding, followed or {})
    judge.add(missing)
    for check in REGISTRY:
        check.rows(judge)
    return judge.rows
