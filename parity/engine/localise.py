"""Localisation: name the first module where the twins part, and whether the error is its own.

Rules:
  * Modules are matched by structural name (torch ``named_modules`` / MindSpore ``cells_and_names``)
    and call index, never by call order; forward hooks record every call's inputs and outputs
    (MindSpore in PyNative, where ``Cell.register_forward_hook`` fires).
  * "First" is the execution order in which module calls finish, so a leaf is reached before the
    block that contains it.
  * The first module whose output differs beyond the "module" tolerance is then fed PyTorch's
    recorded inputs on the MindSpore side: if its output still differs, the error is its own;
    if not, it inherited a difference that entered its input, and the innermost enclosing module
    whose inputs still agree is examined the same way (its own code, between its submodules,
    made the difference, e.g. a softmax over the wrong axis inside LinearAttention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np

from ddpm_core.contract import Record, Side
from parity.engine.compare import Comparison, compare
from parity.engine.tolerances import Tolerance

T = TypeVar("T")
U = TypeVar("U")


@dataclass
class Finding:
    """Where the twins part: the module, its kind, the figures, and whether the error is its own."""

    module: str
    kind: str
    output: Comparison
    own: bool
    replay: Comparison | None = None
    first_seen: str = ""
    live: str = "ms"

    def describe(self) -> str:
        where = f"`{self.module or '(root)'}` ({self.kind})"
        if self.output.nonfinite:  # no figure to give: say who produced the NaN
            return f"{where}: the first module whose output is not finite: {self.output.problem}"
        text = f"{where}: max abs {self.output.max_abs:.2e}, rel L2 {self.output.rel_l2:.2e}"
        given, runs = ("PyTorch", "MindSpore") if self.live == "ms" else ("MindSpore", "PyTorch")
        if self.replay is not None and self.own:
            text += (f"; given {given}'s input, {runs}'s {self.kind} still differs by max abs "
                     f"{self.replay.max_abs:.2e}: the error is this module's own")
        elif self.replay is not None:
            text += f"; given {given}'s input, {runs}'s output matches: the difference is inherited"
        if self.first_seen:
            text += f"; its submodules agree, but the input of `{self.first_seen}` already differs (the code " \
                    f"between them in {self.kind}.forward/construct)"
        return text

    def to_dict(self) -> dict:
        return {"module": self.module, "kind": self.kind, "own": self.own, "first_seen": self.first_seen,
                "output": self.output.to_dict(), "replay": None if self.replay is None else self.replay.to_dict(),
                "message": self.describe()}


def _compare_tuple(name: str, a: tuple, b: tuple, tol: Tolerance,
                   sides: tuple[str, str] = ("PyTorch", "MindSpore")) -> Comparison:
    """The worst comparison over paired arrays (Nones skipped); a length mismatch is a problem."""
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if len(a) != len(b):
        c = Comparison(name, tol)
        c.problem = f"{len(a)} vs {len(b)} tensors"
        return c
    results = [compare(name, np.asarray(x), np.asarray(y), tol, sides) for x, y in pairs]
    failing = [c for c in results if not c.passed]
    if failing:
        return failing[0]
    return max(results, key=lambda c: c.max_abs, default=Comparison(name, tol))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, -1, -1)]


def localise_records(rec_t: list[Record], rec_m: list[Record], run_live: Callable[[str, tuple], tuple],
                     live: str, tol: Tolerance) -> Finding | None:
    """The first module call (in PyTorch's finishing order) whose output differs beyond ``tol``, or None.

    ``run_live(name, inputs)`` runs the module ``name`` of the ``live`` side ("ms" or "torch") on the
    other side's recorded inputs, to tell its own error from an inherited one."""
    by_m = {r.key: r for r in rec_m}
    by_t = {r.key: r for r in rec_t}
    first = None
    for r in rec_t:
        m = by_m.get(r.key)
        if m is None:
            continue
        c = _compare_tuple(r.key, r.outputs, m.outputs, tol)
        if not c.passed:
            first, first_cmp = r, c
            break
    if first is None:
        return None

    def replay(key: str) -> Comparison:
        rt, rm = by_t[key], by_m[key]
        if live == "ms":  # MindSpore's module on PyTorch's inputs, against PyTorch's outputs
            return _compare_tuple(key, rt.outputs, run_live(rt.name, rt.inputs), tol)
        return _compare_tuple(key, run_live(rm.name, rm.inputs), rm.outputs, tol)

    rep = replay(first.key)
    if not rep.passed:
        return Finding(first.name, first.kind, first_cmp, True, rep, live=live)
    for anc in _ancestors(first.name):
        ra, rm = by_t.get(anc), by_m.get(anc)
        if ra is None or rm is None:
            continue  # never called as a module (a ModuleList/CellList)
        if _compare_tuple(anc, ra.inputs, rm.inputs, tol).passed:
            out = _compare_tuple(anc, ra.outputs, rm.outputs, tol)
            r2 = replay(anc)
            return Finding(anc, ra.kind, out, not r2.passed, r2, first_seen=first.name, live=live)
    return Finding(first.name, first.kind, first_cmp, False, rep, live=live)


def localise(side_t: Side[T, Any], model_t: T, side_m: Side[U, Any], model_m: U, x: np.ndarray, t: np.ndarray,
             tol: Tolerance) -> Finding | None:
    """Both sides in one process: capture both forwards on (x, t), replay on the MindSpore side."""
    rec_t = side_t.capture(model_t, x, t)
    rec_m = side_m.capture(model_m, x, t)
    mods_m = side_m.modules(model_m)
    return localise_records(rec_t, rec_m, lambda name, inputs: side_m.run_module(mods_m[name], inputs), "ms", tol)


def module_errors(side_t: Side[T, Any], model_t: T, side_m: Side[U, Any], model_m: U, x: np.ndarray, t: np.ndarray,
                  tol: Tolerance) -> list[dict]:
    """Every matched module call's output error (for measuring the "module" tolerance)."""
    rec_m = {r.key: r for r in side_m.capture(model_m, x, t)}
    rows = []
    for r in side_t.capture(model_t, x, t):
        if r.key in rec_m:
            c = _compare_tuple(r.key, r.outputs, rec_m[r.key].outputs, tol)
            rows.append({"module": r.key, "kind": r.kind, "max_abs": c.max_abs, "rel_l2": c.rel_l2,
                         "atol_needed": c.atol_needed, "cosine": c.cosine})
    return rows


def localise_against_reference(rec_t: list[Record], rec_m: list[Record], rec_ref: list[Record],
                               tol: Tolerance, min_ratio: float = 0.0) -> list[str]:
    """For each twin, the first module call (PyTorch's finishing order) whose output is farther from the
    specification than ``tol`` (and, with ``min_ratio``, more than that many times farther than the other
    twin's by max abs: where a twin in lower precision leaves the other), in words: "`downs.1.0` (ConvNextBlock):
    MindSpore 40x farther from the float64
    specification than PyTorch (max abs 2.0e-03 vs 5.1e-05)". Empty if both twins stay within ``tol``."""
    by_ref = {r.key: r for r in rec_ref}
    by_m = {r.key: r for r in rec_m}
    found = []
    for name, label, other in (("torch", "PyTorch", "MindSpore"), ("ms", "MindSpore", "PyTorch")):
        for r in rec_t:
            ref, m = by_ref.get(r.key), by_m.get(r.key)
            if ref is None or m is None:
                continue
            mine, theirs = (r, m) if name == "torch" else (m, r)
            c = _compare_tuple(r.key, mine.outputs[:1], ref.outputs, tol, (label, "the float64 specification"))
            if c.passed:
                continue
            if c.nonfinite:
                found.append(f"`{r.key or '(root)'}` ({r.kind}): the first module whose output is not finite: {c.problem}")
                break
            o = _compare_tuple(r.key, theirs.outputs[:1], ref.outputs, tol)
            ratio = c.max_abs / o.max_abs if o.max_abs > 0 else float("inf")
            if ratio <= min_ratio:
                continue
            found.append(f"`{r.key or '(root)'}` ({r.kind}): {label} {ratio:.3g}x farther from the float64 "
                         f"specification than {other} (max abs {c.max_abs:.2e} vs {o.max_abs:.2e})")
            break
    return found
