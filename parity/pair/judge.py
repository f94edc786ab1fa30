"""How a pair is judged: the gate from the model's own float32 rounding, and which side is to blame.

Rules it keeps (framework-free):
  * arrays whose shapes differ only by unit axes are compared as PyTorch's shape (a port that keeps or drops a
    size-1 axis computes the same values); any other shape difference fails;
  * the arbiter is the PyTorch model in float64 on the same inputs; the gate of every compared tensor is
    ``k`` x the PyTorch float32 model's error against it (``parity.engine.tolerances.RELATIVE``), so it holds on
    any machine and a wrong side can never loosen its own gate;
  * a divergence is blamed on the side whose error against float64 exceeds the other's by more than
    ``BLAME_RATIO`` (errors below one float32 ulp count as one ulp: they say nothing); otherwise on neither;
  * a module whose own error (fed identical inputs) is beyond what float32 can round to (the ``pair_function``
    entry) computes a different function, not a less precise one.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import numpy as np

from parity.engine.compare import Comparison, compare
from parity.engine.tolerances import (
    BLAME_RATIO,
    RELATIVE,
    RELATIVE_AMP,
    RelativeRule,
    Tolerance,
    machine_relative,
    tolerance,
)

ULP = float(np.finfo(np.float32).eps)


@dataclass
class Judged:
    """One call's (or output's) comparison: PyTorch float32 against the other side under the machine-relative
    gate, and each side's relative L2 error against float64."""

    comparison: Comparison
    err_torch: float
    err_other: float

    @property
    def passed(self) -> bool:
        return self.comparison.passed


def _arrays(values: Sequence[object]) -> list[np.ndarray | None]:
    return [None if v is None else np.asarray(v) for v in values]


@dataclass(frozen=True)
class Gates:
    """The device class whose table entries apply, and the machine-relative rules (the table's, or a SPEC's)."""

    device: str = "cpu"
    rules: Mapping[str, RelativeRule] = field(default_factory=lambda: dict(RELATIVE))
    dtype: str = "float32"
    """the precision the other side computes in: "float32", or an autocast side's "bfloat16" / "float16", judged
    against the float64 arbiter (``judge``)"""


DEFAULT_GATES = Gates()
"""CPU entries and the table's rules."""


def with_overrides(device: str, overrides: Mapping[str, Mapping[str, float]] | None, dtype: str = "float32") -> Gates:
    """Gates whose rules take a SPEC's ``tolerances`` (``{"pair_output": {"k": 20}}``: fields of a RelativeRule
    for "pair_output" or "pair_module"); anything else is ``ValueError`` naming what is allowed. ``dtype``: the
    precision's rules (``RELATIVE``, or ``RELATIVE_AMP`` for an autocast side)."""
    rules = dict(RELATIVE) if dtype == "float32" else {k: RELATIVE_AMP[(k, dtype)] for k in ("pair_output", "pair_module")}
    for output, fields in (overrides or {}).items():
        allowed = ("k", "floor_atol", "floor_rel_l2")
        if output not in ("pair_output", "pair_module", "pair_loop") or not isinstance(fields, Mapping) or \
                any(k not in allowed or not isinstance(v, (int, float)) or v <= 0 for k, v in fields.items()):
            raise ValueError(f"tolerances[{output!r}]: expected 'pair_output', 'pair_module' or 'pair_loop' with "
                             f"positive {', '.join(allowed)}, got {fields!r}")
        rules[output] = replace(rules[output], **{k: float(v) for k, v in fields.items()},
                                reason=f"the SPEC's tolerances {dict(fields)} over the table's: {rules[output].reason}",
                                measured="set by the SPEC")
    return Gates(device, rules, dtype)


def gate(output: str, gates: Gates, rounding: Comparison) -> Tolerance:
    """The machine-relative gate for ``output`` ("pair_output" / "pair_module") from a rounding comparison. Where
    float32 rounding is as large as the tensor itself (relative L2 >= 1: a quantity that is 0 in exact arithmetic,
    such as the gradient of a bias that a BatchNorm's mean removes) only the element-wise rule is kept: relative
    L2 and cosine of rounding noise say nothing."""
    g = machine_relative(tolerance(output, gates.dtype, gates.device), rounding.max_abs, rounding.rel_l2,
                         gates.rules[output])
    return g.elementwise_only() if rounding.rel_l2 >= 1.0 else g


def judge(name: str, torch_out: Sequence[object], other_out: Sequence[object], ref_out: Sequence[object],
          output: str = "pair_module", gates: Gates = DEFAULT_GATES) -> Judged:
    """Compare the PyTorch float32 outputs (``a``) with the other side's (``b``), array by array, each under the
    gate from its own float32 rounding; the failing array, else the one with the largest error, is reported.
    With ``gates.dtype`` an autocast precision, ``torch_out`` is the reference model under the same autocast and
    ``b`` is compared with float64 under k x that reference's rounding (its error against float64)."""
    t, o, r = _arrays(torch_out), _arrays(other_out), _arrays(ref_out)
    loose = tolerance(output, gates.dtype, gates.device)
    if len(t) != len(o):
        c = Comparison(name, loose)
        c.problem = f"{len(t)} output tensor(s) in PyTorch, {len(o)} in the other side"
        return Judged(c, 0.0, 0.0)
    worst: Judged | None = None
    for i, (a, b, ref) in enumerate(zip(t, o, r + [None] * (len(t) - len(r)))):
        if a is None or b is None:
            continue
        if a.shape != b.shape and _squeezed(a.shape) == _squeezed(b.shape):
            b = b.reshape(a.shape)  # (1, 512, 1, 1) against (1, 512): a port keeps or drops unit axes
        label = name if len(t) == 1 else f"{name}[{i}]"
        if ref is not None and ref.shape == a.shape:
            g = gate(output, gates, compare(label, a, ref, loose))
            et, eo = rel_l2(a, ref), rel_l2(b, ref) if b.shape == ref.shape else float("inf")
        else:
            g, et, eo = loose, float("nan"), float("nan")
        against = ref if gates.dtype != "float32" and ref is not None and ref.shape == a.shape else a
        j = Judged(compare(label, against, b, g), et, eo)
        if not j.passed:
            return j
        if worst is None or j.comparison.max_abs > worst.comparison.max_abs:
            worst = j
    return worst or Judged(Comparison(name, loose), 0.0, 0.0)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    """||a - ref|| / ||ref|| in float64 (0 when equal, inf when ref is 0 and a is not)."""
    a64, r64 = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    d, n = float(np.linalg.norm(a64 - r64)), float(np.linalg.norm(r64))
    return 0.0 if d == 0 else (d / n if n > 0 else float("inf"))


def blame(err_torch: float, err_other: float, other_label: str) -> str:
    """The side farther from float64 by more than BLAME_RATIO ("PyTorch" or ``other_label``), else "neither"."""
    a, b = max(err_torch, ULP), max(err_other, ULP)
    if b > BLAME_RATIO * a:
        return other_label
    if a > BLAME_RATIO * b:
        return "PyTorch"
    return "neither"


def different_function(own_err: float, gates: Gates = DEFAULT_GATES) -> bool:
    """Whether an own error (relative L2 against float64, on identical inputs) is beyond float32 rounding."""
    return own_err > tolerance("pair_function", gates.dtype, gates.device).max_rel_l2
