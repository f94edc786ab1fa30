"""Three-way comparison: each twin against the float64 specification, machine-relative fp32 gates, blame.

For every row the specification covers (``parity.engine.anchor``), with a = PyTorch float32, m = MindSpore
float32, s = the specification and a64 = the PyTorch twin in float64, all on the same inputs:
  * the float32 rounding of this run is measured on the noise predictions alone, as a against a64 (the
    PyTorch twin's own forward in float32 and in float64: the same code, so a bug in it cannot loosen the
    gate; the samplers' loops are not used for it, since a bug there would show up as "rounding");
  * every anchored row's gate is ``parity.engine.tolerances.machine_relative``: k x that rounding (in the row's
    units: sampler states per unit of RMS, a loss relative to its value), at least the rule's floors; the
    twins are compared with each other (the whole output) and each with s (the anchored part) under it,
    and the row passes only if all three pass;
  * ``err_torch`` / ``err_ms`` are the max abs errors of a and m against s (sampler states in units of
    their RMS, as the cross comparison); a failing row blames the twin whose error is more than
    ``BLAME_RATIO`` times the other's;
  * a64 against s is the float64 logic gate (one row of its own): it fails on any logic difference in the
    PyTorch twin, an epsilon included, whatever float32 rounding does.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from parity.engine.compare import Comparison, Summary, compare, rms
from parity.engine.tolerances import BLAME_RATIO, RELATIVE, Tolerance, machine_relative, tolerance

STEP_OUTPUTS = ("ddpm_one_step", "ddpm_trajectory", "ddim_trajectory")
"""Outputs compared per sampler step, (steps, batch, ...), with the atol in units of each state's RMS."""


def _scaled(x: np.ndarray, ref: np.ndarray, output: str) -> tuple[np.ndarray, np.ndarray]:
    """Sampler states divided, step by step, by the reference state's RMS (at least 1), as the cross
    comparison scales its atol; other outputs as they are."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if output not in STEP_OUTPUTS:
        return x, ref
    scale = np.array([max(1.0, rms(r)) for r in ref]).reshape(-1, *(1,) * (ref.ndim - 1))
    return x / scale, ref / scale


@dataclass(frozen=True)
class Rounding:
    """This run's float32 rounding: the worst over the noise predictions of PyTorch float32 against its own
    float64 run, max abs in units of the prediction's RMS (at least 1) and relative L2."""

    max_abs: float
    rel_l2: float

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "rel_l2": self.rel_l2}


def prediction_rounding(a: Mapping[str, np.ndarray], t64: Mapping[str, np.ndarray]) -> Rounding | None:
    """``Rounding`` from every ``predict/...`` output present in both, or None if there is none (or if one
    holds a non-finite value: NaN is no rounding, and the rows fail on it anyway)."""
    keys = [k for k in t64 if k.startswith("predict/") and k in a]
    if not keys:
        return None
    cs = [compare(k, *_scaled_byrms(a[k], t64[k]), tolerance("prediction").elementwise_only()) for k in keys]
    if any(c.nonfinite for c in cs):
        return None
    return Rounding(max(c.max_abs for c in cs), max(c.rel_l2 for c in cs))


def _scaled_byrms(x: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = max(1.0, rms(np.asarray(ref, np.float64)))
    return np.asarray(x, np.float64) / scale, np.asarray(ref, np.float64) / scale


@dataclass
class Anchored:
    """One row's comparisons against the specification."""

    tolerance: Tolerance
    rounding: Rounding | None
    own_rounding: Comparison | None
    torch: Comparison
    ms: Comparison
    logic: Comparison | None
    """the float64 logic comparison: None where the PyTorch twin did not run here in float64 (``compare`` on a
    MindSpore host)"""
    members: list[str] = field(default_factory=list)
    sides: tuple[str, str] = ("PyTorch", "MindSpore")
    """how the report names the PyTorch and the MindSpore outputs (a golden file's side says so)"""

    @property
    def passed(self) -> bool:
        return self.torch.passed and self.ms.passed

    @property
    def err_torch(self) -> float:
        return self.torch.max_abs

    @property
    def err_ms(self) -> float:
        return self.ms.max_abs

    @property
    def blame(self) -> str | None:
        """The twin farther from the specification by more than ``BLAME_RATIO`` (the one twin that produced a
        non-finite value where the other did not), or None."""
        nan_torch, nan_ms = len(self.torch.nonfinite) == 1 and self.torch.nonfinite[0] == self.sides[0], \
            len(self.ms.nonfinite) == 1 and self.ms.nonfinite[0] == self.sides[1]
        if nan_torch != nan_ms:
            return "torch" if nan_torch else "ms"
        if self.err_ms > BLAME_RATIO * self.err_torch:
            return "ms"
        if self.err_torch > BLAME_RATIO * self.err_ms:
            return "torch"
        return None

    def to_dict(self) -> dict:
        return {"err_torch": self.err_torch, "err_ms": self.err_ms, "blame": self.blame,
                "rounding": None if self.rounding is None else self.rounding.to_dict(),
                "torch32_vs_torch64": None if self.own_rounding is None else self.own_rounding.to_dict(),
                "torch_vs_spec": self.torch.to_dict(), "ms_vs_spec": self.ms.to_dict(),
                "logic": None if self.logic is None else self.logic.to_dict(),
                "machine_relative_tolerance": self.tolerance.limits()}


def anchored(output: str, key: str, a: np.ndarray, m: np.ndarray, s: np.ndarray, a64: np.ndarray | None,
             rounding: Rounding | None, device: str, sides: tuple[str, str] = ("PyTorch", "MindSpore")) -> Anchored:
    """The comparisons of output ``key`` (arrays of the same shape; an ``output`` of the tolerance table) under
    the gate ``rounding`` sets (the table entry where the run measured no rounding: no prediction was
    compared). ``sides`` name the PyTorch and MindSpore arrays in messages; ``a64`` (the PyTorch twin in
    float64) is None where that twin did not run here in float64."""
    table = tolerance(output, "float32", device)
    tol = table
    if rounding is not None:
        # a scalar (a loss) is as far off as the prediction relatively; arrays in the prediction's RMS units
        r_abs = rounding.rel_l2 * abs(float(np.asarray(s))) if np.asarray(s).size == 1 else rounding.max_abs
        tol = machine_relative(table, r_abs, rounding.rel_l2, RELATIVE[output])
    each = tol if tol.aggregate_over == "each" else tol.elementwise_only()
    spec, own = "the float64 specification", f"{sides[0]} in float64"
    return Anchored(tol, rounding, None if a64 is None else compare(key, *_scaled(a, a64, output), each, (sides[0], own)),
                    compare(key, *_scaled(a, s, output), each, (sides[0], spec)),
                    compare(key, *_scaled(m, s, output), each, (sides[1], spec)),
                    None if a64 is None else compare(key, a64, s, tolerance("logic", "float64", "cpu"), (own, spec)),
                    sides=sides)


def logic_summary(rows: list, label: str) -> Summary:
    """Every anchored row's float64 logic comparison, under one label."""
    members = []
    for row in rows:
        if row.anchor is not None and row.anchor.logic is not None:
            members.append(replace(row.anchor.logic, name=row.label))
    return Summary(label, members)
