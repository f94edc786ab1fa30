"""The reference check: the float64 anchor (``parity.engine.anchor``: the specification, and the PyTorch twin
in float64, on every anchored check's outputs). Its own row is the float64 logic gate: the PyTorch twin in
float64 against the specification on every anchored row, which fails on any logic difference in that twin."""
from __future__ import annotations

from parity.engine.checks.base import Check, Judge
from parity.engine.rows import Row
from parity.engine.threeway import logic_summary


class Reference(Check):
    name = "reference"
    tolerances = ("logic",)
    network = False

    def rows(self, j: Judge) -> None:
        logic = logic_summary(j.rows, "float64 logic (PyTorch float64 vs spec)")
        if logic.members:
            j.rows.append(Row(logic.label, "logic", logic, note="any logic difference in the PyTorch twin fails this row",
                              culprit="torch"))
