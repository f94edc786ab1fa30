"""The parity report: the terminal table, the verdict and exit code, and the JSON with every figure.

Rules: the exit code is 0 only if every gating row passes and the settings check found nothing;
information rows (``gate=False``) never fail a run. The JSON holds every comparison (per tensor, per
step), the localisation, the environment fingerprint, the tape and weight hashes and the timings,
and is written atomically (``ddpm_core.runtime.atomic``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from ddpm_core.errors import EXIT_MISMATCH, EXIT_OK
from ddpm_core.runtime.atomic import atomic_write_bytes
from parity.engine.localise import Finding
from parity.engine.rows import Row
from parity.engine.settings import SettingMismatch, summarize

SIDE_LABELS = {"torch": "PyTorch", "ms": "MindSpore"}


def _g(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if math.isnan(v):
        return "nan"
    if v == float("inf"):
        return "inf"
    return f"{v:.{digits}e}"


@dataclass
class Report:
    """Everything a parity run found."""

    title: str
    spec: dict
    tape_hash: str
    weights_hash: str
    environment: dict
    rows: list[Row] = field(default_factory=list)
    settings: list[SettingMismatch] = field(default_factory=list)
    settings_pairs: int = 0
    findings: list[Finding] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "check"
    notes: list[str] = field(default_factory=list)
    """what the reader should know about the inputs whatever the verdict (a golden file without an output
    digest); printed under the table"""

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if r.gate and not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failures and not self.settings

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.passed else EXIT_MISMATCH

    def verdict(self, limit: int = 4) -> str:
        """PASS, or FAIL with where the twins part first, then the failing checks (at most ``limit``)."""
        if self.passed:
            return "PASS: the twins match on every check"
        lines = [f"FAIL: {len(self.failures)} check(s) differ beyond tolerance"
                 + (f", {len(self.settings)} settings mismatch(es)" if self.settings else "")]
        lines += [f"  first divergence: {f.describe()}" for f in self.findings]
        lines += [f"  settings: {s}" for s in summarize(self.settings)]
        lines += [f"  diagnosis: {d}" for d in self.diagnoses]
        nonfinite = self.nonfinite_sides()
        if nonfinite:
            lines.append(f"  non-finite values: {' and '.join(nonfinite)} produced NaN or inf (in "
                         f"{sum(1 for r in self.failures if _nonfinite(r))} check(s)); no figure of those rows is a "
                         "measurement")
        for row in self.failures[:limit]:
            first, said = row.summary.first_failure, ""
            if first is None and row.anchor is not None:
                first = row.anchor.torch if not row.anchor.torch.passed else row.anchor.ms
                sides = getattr(row.anchor, "sides", ("PyTorch", "MindSpore"))  # parity.precision's rows name none
                said = f"{sides[0] if first is row.anchor.torch else sides[1]} vs the float64 spec, "
            blame = f" [{SIDE_LABELS[row.blame]} is farther from the float64 spec]" if row.blame else ""
            lines.append(f"  {row.label}{blame}: {said}{first.describe() if first else 'failed'}")
        if len(self.failures) > limit:
            rest = [r.label for r in self.failures[limit:]]
            lines.append(f"  ... and {len(rest)} more: {', '.join(rest)}")
        return "\n".join(lines)

    def nonfinite_sides(self) -> list[str]:
        """The sides that produced a non-finite value in a failing row, in the order first met."""
        sides: list[str] = []
        for row in self.failures:
            for side in _nonfinite(row):
                if side not in sides:
                    sides.append(side)
        return sides

    def table(self) -> str:
        head = ("check", "max abs", "max rel", "rel L2", "cosine", "needs atol", "atol / rtol", "err torch",
                "err ms", "result")
        body = []
        if self.spec.get("checks") is None or "settings" in self.spec.get("checks", []):
            body.append((f"settings ({self.settings_pairs} module pairs)", "-", "-", "-", "-", "-", "exact", "-", "-",
                         "pass" if not self.settings else f"FAIL ({len(self.settings)})"))
        for r in self.rows:
            s, tol = r.summary, r.summary.members[0].tolerance if r.summary.members else None
            if r.anchor is not None:
                tol = r.anchor.tolerance
            cos = s.figure("cosine")
            result = ("pass" if r.passed else "FAIL") if r.gate else ("info" if r.passed else "info: differs")
            if r.passed and any(m.note for m in r.summary.members):
                result += " (non-finite as declared)"
            if r.blame:
                result += f" ({SIDE_LABELS[r.blame]})"
            body.append((r.label, _g(s.figure("max_abs")), _g(s.figure("max_rel")), _g(s.figure("rel_l2")),
                         "-" if all(m.cosine is None for m in s.members) else f"{cos:.9f}"[:11],
                         _g(s.figure("atol_needed")), f"{_g(tol.atol, 0)} / {_g(tol.rtol, 0)}" if tol else "-",
                         "-" if r.anchor is None else _g(r.anchor.err_torch),
                         "-" if r.anchor is None else _g(r.anchor.err_ms), result))
        widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), "  ".join("-" * w for w in widths)]
        lines += [fmt.format(*row) for row in body]
        return "\n".join(lines)

    def text(self) -> str:
        env = self.environment
        devices = []
        if "torch" in env:
            devices.append(f"PyTorch {env['torch']} {env.get('torch_setup', {}).get('device', '')}")
        if "mindspore" in env:
            devices.append(f"MindSpore {env['mindspore']} {env.get('mindspore_setup', {}).get('device', '')} "
                           f"({env.get('mindspore_mode', '')})")
        return "\n".join([
            self.title,
            f"tape {self.tape_hash[:16]}  weights {self.weights_hash[:16]}  " + " / ".join(devices),
            "", self.table(), *[f"note: {n}" for n in self.notes], "", self.verdict(),
        ])

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "title": self.title, "passed": self.passed, "exit_code": self.exit_code,
            "spec": self.spec, "tape_sha256": self.tape_hash, "weights_sha256": self.weights_hash,
            "environment": self.environment,
            "settings": {"pairs": self.settings_pairs, "mismatches": [m.to_dict() for m in self.settings]},
            "rows": [r.to_dict() for r in self.rows],
            "localisation": [f.to_dict() for f in self.findings], "diagnoses": list(self.diagnoses),
            "notes": list(self.notes),
            "timings_s": self.timings,
        }

    def write_json(self, path: str) -> None:
        """Strict JSON (non-finite numbers become the strings "inf", "-inf", "nan"), written atomically."""
        text = json.dumps(_finite(self.to_dict()), indent=1, default=_json_default, allow_nan=False)
        atomic_write_bytes(path, text.encode())


def _nonfinite(row: Row) -> list[str]:
    """The sides named by a non-finite value in ``row``'s comparisons (its anchored ones included)."""
    comparisons = list(row.summary.members)
    if row.anchor is not None:
        comparisons += [row.anchor.torch, row.anchor.ms]
    return [side for c in comparisons for side in c.nonfinite]


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    return str(o)
