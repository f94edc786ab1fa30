"""Rows of the report: one label, the tolerance entry it used, its comparisons, and (for an anchored row)
each side against the float64 specification.

Rule: in every row ``a`` is PyTorch and ``b`` MindSpore, the reference; a tensor on one side only fails as
missing; a sampler output is compared step by step with its atol in units of each reference state's RMS.
Every check builds its rows with these helpers, so a row means the same thing whichever check made it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from parity.engine.compare import Comparison, Summary, compare, rms
from parity.engine.threeway import STEP_OUTPUTS, Anchored
from parity.engine.tolerances import Tolerance, tolerance

SIDES = ("PyTorch", "MindSpore")
"""How rows name ``a`` and ``b`` unless told otherwise (``compare`` names a golden file's side)."""


@dataclass
class Row:
    """One line of the report: a label, the tolerance entry it used, its comparisons."""

    label: str
    output: str
    summary: Summary
    gate: bool = True
    note: str = ""
    steps: list[int] = field(default_factory=list)
    anchor: Anchored | None = None
    """Each twin against the float64 specification, the blame; None for an output the specification does
    not cover."""
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


def steps_row(label: str, output: str, a: np.ndarray, b: np.ndarray, names: list[str], device: str,
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


def outputs_row(label: str, output: str, a: np.ndarray | Mapping[str, np.ndarray],
                b: np.ndarray | Mapping[str, np.ndarray], device: str = "cpu") -> Row:
    """``a`` against the reference ``b`` under the table's ``output`` entry, exactly as the harness compares
    that output: one array, or ``{name: array}`` (a name on one side only fails as missing); a sampler
    output (``STEP_OUTPUTS``) step by step."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise TypeError("compare two arrays or two {name: array} mappings")
        row = pairs_row("/", {f"/{k}": v for k, v in a.items()}, {f"/{k}": v for k, v in b.items()}, label, device,
                        output)
        return row if row is not None else Row(label, output, Summary(label, []))
    a, b = np.asarray(a), np.asarray(b)
    if output in STEP_OUTPUTS:
        return steps_row(label, output, a, b, [f"step {k}" for k in range(len(b))], device)
    return pairs_row(label, {label: a}, {label: b}, label, device, output) or Row(label, output, Summary(label, []))
