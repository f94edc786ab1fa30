"""``--self-test``: how sharp is the verdict on *this* model? Plant small bugs in the MindSpore side at run time,
one at a time, and report for each whether the verdict catches it and where it says the bug is.

Rules it keeps: the self-test runs only on a pair that matches (else every plant is "caught" and the table says
nothing); each plant is undone before the next run (``parity.pair.plants``); what is planted is left to the numeric
verdict (the weights row is checked before the plant); each probe says whether the numbers, the settings check, or
both caught it; the table is information, never a gate: a bug the verdict misses is reported as missed, with the
figures, not hidden.
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

from parity.pair.report import PairReport
from parity.pair.run import compare

NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
         "InstanceNorm3d")


@dataclass
class Probe:
    """One planted bug and the verdict on it."""

    bug: str
    planted_at: str
    what: str
    caught: bool
    by: str
    found_at: str
    blame: str
    located: bool
    output_rel_l2: float

    def cells(self) -> list[str]:
        return [self.bug, self.planted_at or "(root)", self.what, "yes" if self.caught else "MISSED", self.by or "-",
                (self.found_at or "-") + ("" if self.located or not self.caught else " (elsewhere)"),
                self.blame or "-", f"{self.output_rel_l2:.1e}"]


def _swap_side(plant: Callable[..., Any], *args_then_side: Any) -> Any:
    """``plant(side, *args)`` called as ``partial(_swap_side, plant, *args)(side)``: the plan's arguments bound first."""
    *args, side = args_then_side
    return plant(side, *args)


def _plans(side: Any, report: PairReport) -> list[tuple[str, Callable[[Any], Any]]]:
    """(label, plant(side) -> Plant | None) for every norm, the first / middle / last weight, every activation."""
    from parity.pair.ms_side import kind_of
    from parity.pair.plants import VARIANTS, plant_activation, plant_eps, plant_weight

    plans: list[tuple[str, Callable[[Any], Any]]] = []
    kinds = {p: kind_of(c) for p, c in side._cells.items()}
    for path, kind in kinds.items():
        if kind in NORMS:
            plans.append((path, functools.partial(_swap_side, plant_eps, path, kind)))
    weights = [e.ms for e in report.weight_map.entries if len(report.weight_map.ms_shapes[e.ms]) >= 2]
    for name in dict.fromkeys([weights[0], weights[len(weights) // 2], weights[-1]] if weights else []):
        plans.append((name, functools.partial(_swap_side, plant_weight, name)))
    for path, kind in kinds.items():
        if kind in VARIANTS:
            plans.append((path, functools.partial(_swap_side, plant_activation, path, kind)))
    return plans


def _keep(plan: Callable[[Any], Any], out: list[Any], side: Any) -> None:
    out.append(plan(side))


def self_test(torch_model: Any, ms_model: Any, inputs: Sequence[Any], *, name_map: Mapping[str, Any] | None = None,
              torch_device: str = "cpu", other_device: str = "", progress: Callable[[str], None] | None = None,
              tolerances: Mapping[str, Mapping[str, float]] | None = None, shims: Sequence[Any] = (),
              arbiter: Callable[[Any], Any] | None = None) -> tuple[PairReport, list[Probe]]:
    """The base comparison (no plant) and, when it passes, one probe per planted bug (the SPEC's ``shims`` and
    ``arbiter`` in every run)."""
    run: dict[str, Any] = {"name_map": name_map, "torch_device": torch_device, "other_device": other_device,
                           "train_pass": False, "tolerances": tolerances, "shims": shims, "arbiter": arbiter}
    base = compare(torch_model, ms_model, inputs, **run)
    if not base.passed:
        return base, []
    from parity.pair.ms_side import MsPairSide

    probes = []
    for label, plan in _plans(MsPairSide(ms_model, other_device or "CPU"), base):
        planted: list[Any] = []
        report = compare(torch_model, ms_model, inputs, tamper=functools.partial(_keep, plan, planted), **run)
        plant = planted[0] if planted else None
        if plant is None:
            probes.append(Probe("eps", label, "not plantable (unknown internals)", False, "", "", "", False, 0.0))
            continue
        plant.undo()
        first = report.first_divergence() or {}
        found = (first.get("module") or {}).get("other", "")
        worst = max((r.output.comparison.rel_l2 for r in report.inputs), default=0.0)
        by = "+".join(w for w, hit in (("numbers", any(not r.output.passed or r.divergence for r in report.inputs)),
                                       ("settings", any(r.settings for r in report.inputs))) if hit)
        probes.append(Probe(plant.kind, plant.cell, plant.what, not report.passed, by, found,
                            first.get("blame", ""), found == plant.cell, worst))
        if progress is not None:
            progress(f"{plant.kind} at {plant.cell or '(root)'}: {'caught' if not report.passed else 'missed'}")
    return base, probes


def table(probes: list[Probe]) -> str:
    """The sensitivity table, with a summary line."""
    head = ["bug", "planted at", "what", "caught", "by", "found at", "blame", "output rel L2"]
    rows = [p.cells() for p in probes]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths))  # noqa: E731
    caught = [p for p in probes if p.caught]
    summary = (f"self-test: {len(probes)} planted bugs, {len(caught)} caught, "
               f"{sum(p.located for p in caught)} of them at the planted module")
    return "\n".join([summary, "", fmt(head), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def to_dicts(probes: list[Probe]) -> list[dict]:
    return [asdict(p) for p in probes]
