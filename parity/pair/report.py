"""The report of a pair: every row with its figures, the first divergence, and the same content as a terminal
table, JSON, Markdown and JUnit XML.

Rules it keeps: ``passed`` is true only when the weights read back exactly, every input's outputs pass their gate
with no module's own error and no settings difference, and the training-mode pass (when run) passes with no buffer differing;
``first_divergence`` is null when passed, else the first of: an input's localised module (its outputs differ, or a
module's own error hides behind outputs that agree), a buffer's
module, a settings difference; every format is built from ``to_dict`` or the same rows, so they cannot disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape, quoteattr

from ddpm_core.weights.mapping import WeightMap
from parity.engine.compare import Summary
from parity.pair.judge import Judged
from parity.pair.localise import Divergence
from parity.pair.modules import ModulePairs
from parity.pair.settings import SettingDifference

if TYPE_CHECKING:
    from parity.pair.loop import LoopResult
    from parity.pair.train_step import StepResult


def shape_text(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join("x".join(str(n) for n in s) for s in shapes)


@dataclass
class InputResult:
    """One input's verdict: outputs judged, the first divergence (when they differ), settings differences at its
    sizes, and each side's error against float64 along the depth."""

    index: int
    shapes: list[tuple[int, ...]]
    output: Judged
    divergence: Divergence | None
    settings: list[SettingDifference] = field(default_factory=list)
    depth: list[dict] = field(default_factory=list)
    values: dict[int, list[int]] = field(default_factory=dict)
    """argument position -> its values, for small integer arguments (a timestep, a label): shown in the label"""

    @property
    def passed(self) -> bool:
        return self.output.passed and self.divergence is None and not self.settings

    def label(self) -> str:
        parts = [str(self.values[i]) if i in self.values else shape_text([s]) for i, s in enumerate(self.shapes)]
        return f"input {self.index} ({', '.join(parts)})"

    def to_dict(self) -> dict:
        return {"index": self.index, "shapes": [list(s) for s in self.shapes],
                "values": {str(k): v for k, v in self.values.items()}, "passed": self.passed,
                "output": self.output.comparison.to_dict(),
                "err_vs_float64": {"torch": self.output.err_torch, "other": self.output.err_other},
                "first_divergence": None if self.divergence is None else self.divergence.to_dict(),
                "settings": [s.to_dict() for s in self.settings], "depth": self.depth}


@dataclass
class TrainPass:
    """The training-mode pass on one input: outputs judged (and localised when they differ), the buffers that differ
    as their module's own difference, and those that differ only because their module's inputs already did."""

    output: Judged
    divergence: Divergence | None
    buffers: list[Divergence] = field(default_factory=list)
    inherited: list[str] = field(default_factory=list)
    index: int = 0

    @property
    def passed(self) -> bool:
        return self.output.passed and self.divergence is None and not self.buffers and not self.inherited

    def blame(self) -> str:
        found = [d.blame for d in ([self.divergence] if self.divergence else []) + self.buffers if d.blame != "neither"]
        return found[0] if found else ""

    def findings(self) -> list[str]:
        at = f"training-mode pass, input {self.index}"
        lines = [] if self.divergence is None else [f"{at}: {self.divergence.describe()}"]
        lines += [f"{at}: {b.describe()}" for b in self.buffers]
        if self.inherited:
            lines.append(f"{at}: {len(self.inherited)} more buffer(s) differ because their "
                         f"module's inputs already differ (inherited), first `{self.inherited[0]}`")
        return lines

    def to_dict(self) -> dict:
        return {"input": self.index, "passed": self.passed, "output": self.output.comparison.to_dict(),
                "err_vs_float64": {"torch": self.output.err_torch, "other": self.output.err_other},
                "first_divergence": None if self.divergence is None else self.divergence.to_dict(),
                "buffers": [b.to_dict() for b in self.buffers], "inherited_buffers": self.inherited}


@dataclass
class Row:
    name: str
    passed: bool
    max_abs: float | None
    rel_l2: float | None
    gate: str
    err_torch: float | None
    err_other: float | None
    result: str


@dataclass
class PairReport:
    name: str
    torch_label: str
    other_label: str
    weight_map: WeightMap
    weights: Summary
    pairs: ModulePairs
    inputs: list[InputResult]
    train: TrainPass | None
    environment: dict[str, Any]
    step: "StepResult | None" = None
    notes: list[str] = field(default_factory=list)
    """how a side ran that a reader must know (a compiled side's graph breaks), below the headline"""
    loop: "LoopResult | None" = None
    shims: list[str] = field(default_factory=list)
    """what each of the SPEC's shims replaces in the port: listed in every report, never silent"""

    @property
    def passed(self) -> bool:
        return (self.weights.passed and all(r.passed for r in self.inputs)
                and (self.train is None or self.train.passed) and (self.step is None or self.step.passed)
                and (self.loop is None or self.loop.passed))

    def first_divergence(self) -> dict | None:
        if self.passed:
            return None
        div = next((r.divergence for r in self.inputs if r.divergence is not None), None)
        if div is None and self.train is not None:
            div = self.train.divergence or next(iter(self.train.buffers), None)
        if div is not None:
            return div.to_dict()
        s = next((s for r in self.inputs for s in r.settings), None)
        if s is not None:
            idx = next(r.index for r in self.inputs if s in r.settings)
            return {"input": idx, "module": {"torch": s.torch_module, "other": s.other_module},
                    "kind": {"torch": s.kind, "other": s.kind}, "own": True, "error": "setting",
                    "blame": self.other_label, "different_function": True, "settings": [s.to_dict()],
                    "message": f"the outputs agree at this input, but a setting differs: {s.describe()}"}
        if self.step is not None and not self.step.passed:
            return self.step.first_failure(self.weight_map)
        if self.loop is not None and not self.loop.passed:
            return self.loop.first_failure()
        return {"input": None, "module": None, "message": "the weights do not read back exactly",
                "blame": self.other_label, "own": True, "error": "weights"}

    def rows(self) -> list[Row]:
        w = self.weights
        out = [Row(f"weights ({len(w.members)} tensors)", w.passed, w.figure("max_abs"), w.figure("rel_l2"),
                   "exact", None, None, "pass" if w.passed else "FAIL")]
        for r in self.inputs:
            c = r.output.comparison
            result = "pass" if r.passed else (f"FAIL ({r.divergence.blame})" if r.divergence is not None
                                              and r.divergence.blame != "neither" else
                                              "FAIL (settings)" if r.output.passed else "FAIL")
            out.append(Row(r.label(), r.passed, c.max_abs, c.rel_l2, f"{c.tolerance.atol:.1e} / {c.tolerance.max_rel_l2:.1e}",
                           r.output.err_torch, r.output.err_other, result))
        if self.train is not None:
            c, ok, blamed = self.train.output.comparison, self.train.passed, self.train.blame()
            out.append(Row(f"training-mode pass, input {self.train.index} (outputs, buffers)", ok, c.max_abs, c.rel_l2,
                           f"{c.tolerance.atol:.1e} / {c.tolerance.max_rel_l2:.1e}", self.train.output.err_torch,
                           self.train.output.err_other, "pass" if ok else f"FAIL ({blamed})" if blamed else "FAIL"))
        if self.step is not None:
            st = self.step
            out.append(_row(f"training step, input {st.index}: loss", [st.loss], ""))
            out.append(_row(f"gradients ({len(st.grads)} tensors)", [v.judged for v in st.grads],
                            next((v.blame for v in st.grads if v.blame not in ("", "neither")), "")))
            if st.stepped:
                out.append(_row(f"one optimizer step ({len(st.stepped)} tensors)", [v.judged for v in st.stepped],
                                next((v.blame for v in st.stepped if v.blame not in ("", "neither")), "")))
        for v in self.loop.steps if self.loop is not None else []:
            judged = [v.free] + ([v.forced] if v.forced is not None else [])
            out.append(_row(v.label() + (", free / teacher-forced" if v.forced is not None else ""), judged,
                            v.blame if v.blame != "neither" else ""))
        return out

    def findings(self) -> list[str]:
        """What a reader needs below the table: each failing input's divergence, buffer differences, settings
        differences, and at which inputs the pair differs."""
        lines = []
        for r in self.inputs:
            if r.divergence is not None:
                lines.append(f"{r.label()}: {r.divergence.describe()}")
            lines += [f"{r.label()}: {s.describe()}" for s in r.settings
                      if r.divergence is None or s not in r.divergence.settings]
        lines += self.train.findings() if self.train is not None else []
        lines += self.step.findings() if self.step is not None else []
        lines += self.loop.findings() if self.loop is not None else []
        bad = [r for r in self.inputs if not r.passed]
        if bad and len(bad) < len(self.inputs):
            good = [r for r in self.inputs if r.passed]
            lines.append("the pair differs at " + "; ".join(r.label() for r in bad) + " and matches at "
                         + "; ".join(r.label() for r in good) + ": the difference depends on the input")
        return lines

    def headline(self) -> str:
        counts = self.weight_map.counts()
        mapped = ", ".join(f"{v} {k}" for k, v in counts.items() if k != "dropped" and v)
        paired = len(self.pairs.to_ms)
        return (f"parity.pair: {self.name}: {self.torch_label} vs {self.other_label}; {len(self.inputs)} input(s)\n"
                f"weights: {len(self.weight_map.entries)} mapped ({mapped}), {counts['dropped']} dropped; "
                f"{paired} modules paired, {len(self.pairs.unpaired_torch)} PyTorch / "
                f"{len(self.pairs.unpaired_ms)} {self.other_label} unpaired"
                + "".join(f"\nshim (the SPEC's): {s}" for s in self.shims))

    def text(self) -> str:
        """The terminal table."""
        head = ["check", "max abs", "rel L2", "gate atol / rel L2", "err torch", "err other", "result"]
        body = [[r.name, _num(r.max_abs), _num(r.rel_l2), r.gate, _num(r.err_torch), _num(r.err_other), r.result]
                for r in self.rows()]
        widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
        fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
        lines = [self.headline(), *[f"note: {n}" for n in self.notes], "", fmt(head), fmt(["-" * w for w in widths]),
                 *map(fmt, body)]
        found = self.findings()
        if found:
            lines += ["", *found]
        lines += ["", "PASS: the pair matches" if self.passed else "FAIL: the pair differs"]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"# parity.pair: {self.name}", "", *self.headline().splitlines()[1:], *[f"note: {n}" for n in self.notes], "",
                 "| check | max abs | rel L2 | gate atol / rel L2 | err torch | err other | result |",
                 "|---|---:|---:|---:|---:|---:|---|"]
        lines += [f"| {r.name} | {_num(r.max_abs)} | {_num(r.rel_l2)} | {r.gate} | {_num(r.err_torch)} | "
                  f"{_num(r.err_other)} | {r.result} |" for r in self.rows()]
        found = self.findings()
        if found:
            lines += ["", "## Findings", "", *[f"- {f}" for f in found]]
        lines += ["", "**PASS**: the pair matches" if self.passed else "**FAIL**: the pair differs", ""]
        return "\n".join(lines)

    def junit(self) -> str:
        rows = self.rows()
        failures = sum(not r.passed for r in rows)
        cases = []
        found = " | ".join(self.findings())
        for r in rows:
            body = "" if r.passed else f"<failure message={quoteattr(r.result)}>{escape(found)}</failure>"
            cases.append(f'  <testcase classname={quoteattr("parity.pair." + self.name)} name={quoteattr(r.name)}>'
                         f"{body}</testcase>")
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={quoteattr("parity.pair " + self.name)} '
                f'tests="{len(rows)}" failures="{failures}">\n' + "\n".join(cases) + "\n</testsuite>\n")

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.passed, "first_divergence": self.first_divergence(),
                "sides": {"torch": self.torch_label, "other": self.other_label},
                "weights": {**self.weight_map.to_dict(), "check": self.weights.to_dict()},
                "modules": {"paired": self.pairs.to_ms, "unpaired_torch": self.pairs.unpaired_torch,
                            "unpaired_other": self.pairs.unpaired_ms},
                "inputs": [r.to_dict() for r in self.inputs],
                "training_mode": None if self.train is None else self.train.to_dict(),
                "training_step": None if self.step is None else self.step.to_dict(),
                "loop": None if self.loop is None else self.loop.to_dict(), "shims": self.shims,
                "findings": self.findings(), "notes": self.notes, "environment": self.environment}


def _row(name: str, judged: list[Judged], blamed: str) -> Row:
    """One row over several judged tensors: the worst figures, failing when any fails."""
    ok = all(j.passed for j in judged)
    worst = max(judged, key=lambda j: (not j.passed, math.isfinite(j.comparison.tolerance.max_rel_l2),
                                       j.comparison.rel_l2), default=None)  # rounding-noise tensors last
    if worst is None:
        return Row(name, ok, None, None, "-", None, None, "pass")
    c = worst.comparison
    return Row(name, ok, max(j.comparison.max_abs for j in judged), c.rel_l2,
               f"{c.tolerance.atol:.1e} / {c.tolerance.max_rel_l2:.1e}", worst.err_torch, worst.err_other,
               "pass" if ok else f"FAIL ({blamed})" if blamed else "FAIL")


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "-"
    return "0" if v == 0 else f"{v:.1e}"
