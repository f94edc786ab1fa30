"""``parity.pair``: any PyTorch model against its port (a MindSpore cell, or PyTorch on another device).

``compare(torch_model, other_model, inputs)`` returns a ``PairReport`` (``other_model`` a MindSpore cell, a PyTorch
module on another device, or ``TorchVariant(module, compile=..., autocast=...)``); ``assert_pair_parity`` raises
``AssertionError`` with the report's findings when the pair differs; ``python -m parity.pair SPEC.py`` is the
command (docs/pairs.md). Nothing here imports a framework until a side needs it.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from parity.pair.report import PairReport
from parity.pair.run import compare
from parity.pair.variants import TorchVariant

__all__ = ["PairReport", "TorchVariant", "assert_pair_parity", "compare"]


def assert_pair_parity(torch_model: Any, other_model: Any, inputs: Sequence[Any], *,
                       name_map: Mapping[str, Any] | None = None, **options: Any) -> PairReport:
    """``compare`` for a test suite: the report when the pair matches, else ``AssertionError`` whose message is
    the report's table and findings (the first divergence named, with its blame)."""
    report = compare(torch_model, other_model, inputs, name_map=name_map, **options)
    if not report.passed:
        raise AssertionError(report.text())
    return report
