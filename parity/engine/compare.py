"""Comparison of one output of the two twins against a tolerance, with every figure the report shows.

Rule: ``b`` is the reference (MindSpore: the tutorial's framework), ``a`` the other side. A
comparison passes only if ALL hold:
  * every value of both is finite: a NaN or an infinity on either side fails, named
    ("PyTorch produced NaN at predict/t=0[1, 0, 3, 4]"), and the figures read nan. The one exception is a
    tolerance that declares non-finite values expected (``Tolerance.nonfinite``, with its reason): then
    NaN must meet NaN and inf the same inf, at the same places, and ``note`` says so;
  * element-wise, for every element: |a - b| <= atol + rtol * |b|;
  * in aggregate: relative L2 error ||a - b|| / ||b|| <= max_rel_l2, and cosine similarity
    a.b / (|a| |b|) >= min_cosine (aggregates are skipped for single numbers).
Figures are computed in float64 (over the finite places, where non-finite ones are declared). ``atol_needed`` is the smallest atol that would have passed the
element-wise rule at the tolerance's rtol; ``rtol_needed`` the smallest rtol at its atol (inf when
no rtol can pass because |b| = 0 there).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from parity.engine.tolerances import Tolerance


@dataclass
class Comparison:
    """One tensor compared: ``name`` is its path (``grad/downs.1.0.net.1.weight``)."""

    name: str
    tolerance: Tolerance
    shape: tuple[int, ...] = ()
    max_abs: float = 0.0
    max_rel: float = 0.0
    rel_l2: float = 0.0
    cosine: float | None = None
    atol_needed: float = 0.0
    rtol_needed: float = 0.0
    worst_index: tuple[int, ...] = ()
    elementwise_ok: bool = True
    aggregate_ok: bool = True
    problem: str = ""
    scale: float = 1.0
    """the factor the tolerance's atol was multiplied by for this tensor (sampler states: their RMS)"""
    note: str = ""
    """what a passing comparison allowed beyond the numbers (non-finite values its tolerance declares)"""
    nonfinite: tuple[str, ...] = ()
    """the sides that produced a NaN or an infinity the tolerance does not declare"""

    @property
    def passed(self) -> bool:
        return self.elementwise_ok and self.aggregate_ok and not self.problem

    def describe(self) -> str:
        """``name: max abs 3.1e-03 (> atol 1e-05 + rtol 1e-04 * |b|), rel L2 2.0e-03`` or the problem."""
        if self.problem:  # a non-finite value's message names the tensor already
            return self.problem if self.nonfinite else f"{self.name}: {self.problem}"
        t = self.tolerance
        parts = [f"max abs {self.max_abs:.2e}", f"max rel {self.max_rel:.2e}", f"rel L2 {self.rel_l2:.2e}"]
        if self.cosine is not None:
            parts.append(f"cosine {self.cosine:.9f}")
        why = []
        if not self.elementwise_ok:
            why.append(f"|a-b| > {t.atol:.0e} + {t.rtol:.0e}*|b| at {list(self.worst_index)}; "
                       f"needs atol >= {self.atol_needed:.2e}")
        if not self.aggregate_ok:
            why.append(f"aggregate limits: rel L2 <= {t.max_rel_l2:.0e}, cosine >= {t.min_cosine}")
        return f"{self.name}: " + ", ".join(parts) + (f" ({'; '.join(why)})" if why else "")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "shape": list(self.shape), "passed": self.passed, "max_abs": self.max_abs,
            "max_rel": self.max_rel, "rel_l2": self.rel_l2, "cosine": self.cosine,
            "atol_needed": self.atol_needed, "rtol_needed": self.rtol_needed,
            "worst_index": list(self.worst_index), "elementwise_ok": self.elementwise_ok,
            "aggregate_ok": self.aggregate_ok, "problem": self.problem, "atol_scale": self.scale,
            "note": self.note, "nonfinite": list(self.nonfinite), "tolerance": self.tolerance.limits(),
        }


def rms(x: np.ndarray) -> float:
    """Root mean square in float64 (0 for an empty array): the unit sampler states are compared in."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if np.size(x) else 0.0


def _where(name: str, mask: np.ndarray) -> str:
    """``name[i, j, ...]`` of the first True in ``mask``, and how many more there are."""
    if not mask.ndim:
        return name
    idx = [int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape)]
    more = int(mask.sum()) - 1
    return f"{name}{idx}" + (f" (and {more} more of {mask.size})" if more else "")


def _kind(x: float) -> str:
    return "NaN" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _nonfinite(name: str, a: np.ndarray, b: np.ndarray, tol: Tolerance, sides: tuple[str, str],
               c: "Comparison") -> None:
    """Fill ``c.problem`` / ``c.note`` / ``c.nonfinite`` for the non-finite values of ``a`` and ``b``."""
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if not (bad_a.any() or bad_b.any()):
        return
    if tol.nonfinite:
        same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b)))
        bad = (bad_a | bad_b) & ~same
        if not bad.any():
            c.note = f"non-finite at the same {int(same.sum())} place(s) in both, as declared: {tol.nonfinite}"
            return
        i = tuple(int(k) for k in np.unravel_index(int(np.argmax(bad)), a.shape)) if a.ndim else ()
        c.problem = (f"non-finite values at different places: {_where(name, bad)}: {sides[0]} {a[i]!r}, "
                     f"{sides[1]} {b[i]!r}")
        return
    said = []
    for side, values, mask in ((sides[0], a, bad_a), (sides[1], b, bad_b)):
        if mask.any():
            first = values[np.unravel_index(int(np.argmax(mask)), mask.shape)] if mask.ndim else values
            said.append(f"{side} produced {_kind(float(first))} at {_where(name, mask)}")
            c.nonfinite += (side,)
    c.problem = "; ".join(said)


def compare(name: str, a: np.ndarray, b: np.ndarray, tol: Tolerance,
            sides: tuple[str, str] = ("PyTorch", "MindSpore")) -> Comparison:
    """Compare ``a`` against the reference ``b`` under ``tol`` (see the module docstring); ``sides`` name where
    ``a`` and ``b`` came from, for the message about a non-finite value."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    c = Comparison(name, tol, tuple(b.shape))
    if a.shape != b.shape:
        c.problem = f"shape {tuple(a.shape)} vs reference {tuple(b.shape)}"
        c.elementwise_ok = c.aggregate_ok = False
        return c
    if a.size == 0:
        return c
    _nonfinite(name, a, b, tol, sides, c)
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(finite, a, 0.0), np.where(finite, b, 0.0)
    diff = np.abs(a - b)
    absb = np.abs(b)
    excess = diff - (tol.atol + tol.rtol * absb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / absb)
        rtol_each = np.where(diff <= tol.atol, 0.0, (diff - tol.atol) / absb)
    c.max_abs = float(diff.max())
    c.max_rel = float(rel.max())
    c.atol_needed = float(max(0.0, (diff - tol.rtol * absb).max()))
    c.rtol_needed = float(rtol_each.max())
    worst = int(np.argmax(excess))
    c.worst_index = tuple(int(i) for i in np.unravel_index(worst, b.shape)) if b.ndim else ()
    c.elementwise_ok = bool(excess.max() <= 0.0)
    nb, nd = float(np.linalg.norm(b)), float(np.linalg.norm(a - b))
    c.rel_l2 = 0.0 if nd == 0 else (nd / nb if nb > 0 else math.inf)
    if b.size > 1:
        na = float(np.linalg.norm(a))
        if nd == 0:
            c.cosine = 1.0  # identical: exactly 1, not 1 - 1e-16 from rounding
        else:
            c.cosine = float(np.dot(a.ravel(), b.ravel())) / (na * nb) if na * nb > 0 else 0.0
        c.aggregate_ok = c.rel_l2 <= tol.max_rel_l2 and c.cosine >= tol.min_cosine
    if c.nonfinite:  # figures over the finite part would read as agreement: say nothing numeric
        c.max_abs = c.max_rel = c.rel_l2 = c.atol_needed = c.rtol_needed = math.nan
        c.cosine = None if c.cosine is None else math.nan
        c.elementwise_ok = c.aggregate_ok = False
    return c


@dataclass
class Summary:
    """Several comparisons under one label (every gradient, every trajectory step): the worst figures,
    and the first failing member in order."""

    label: str
    members: list[Comparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(m.passed for m in self.members)

    @property
    def first_failure(self) -> Comparison | None:
        return next((m for m in self.members if not m.passed), None)

    def worst(self, key: str = "rel_l2") -> Comparison | None:
        return max(self.members, key=lambda m: (not m.passed, getattr(m, key)), default=None)

    def figure(self, key: str) -> float:
        """The worst ``key`` over the members; aggregates (rel_l2, cosine) over the members whose aggregates
        are checked (a row compared in aggregate over all its tensors reports that comparison)."""
        members = self.members
        if key in ("rel_l2", "cosine"):
            members = [m for m in members if math.isfinite(m.tolerance.max_rel_l2)] or members
        values = [getattr(m, key) for m in members if getattr(m, key) is not None]
        if any(math.isnan(v) for v in values):
            return math.nan
        if key == "cosine":
            return min(values, default=1.0)
        return max(values, default=0.0)

    def to_dict(self) -> dict:
        return {"label": self.label, "passed": self.passed,
                **{k: self.figure(k) for k in ("max_abs", "max_rel", "rel_l2", "cosine", "atol_needed", "rtol_needed")},
                "members": [m.to_dict() for m in self.members]}


def compare_many(label: str, pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], tol: Tolerance,
                 sides: tuple[str, str] = ("PyTorch", "MindSpore")) -> Summary:
    """``compare`` every (name, a, b) under one tolerance."""
    return Summary(label, [compare(name, a, b, tol, sides) for name, a, b in pairs])
