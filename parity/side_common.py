"""What both sides share without importing either framework: the record of one module call.

Rule: a ``Record`` holds numpy copies only (never framework tensors), so records of the two sides
can be compared after both runs and kept in a report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Record:
    """One call of one module: its structural name, which call it was, its class, inputs and outputs."""

    name: str
    call: int
    kind: str
    inputs: tuple
    outputs: tuple

    @property
    def key(self) -> str:
        return self.name if self.call == 0 else f"{self.name}#{self.call}"


def to_tuple(value: Any, to_numpy: Callable[[Any], np.ndarray]) -> tuple:
    """A module's args or output as a flat tuple of numpy arrays (None and non-tensors kept as None)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    out = []
    for v in items:
        if isinstance(v, (tuple, list)):
            out.extend(to_tuple(v, to_numpy))
        elif v is None or isinstance(v, (bool, int, float, str)):
            out.append(None)
        else:
            out.append(to_numpy(v))
    return tuple(out)
