"""The float64 anchor of a parity run: float64 implementations (the executable specification, and the PyTorch
twin run in float64 where it runs) on every output an anchored check covers (``Check.anchor``), keyed like
the twins' outputs: the predictions, the losses, the first ``PREFIX_STEPS`` states of each sampler from x_T,
and one step from the other side's DDPM states at ``ddpm.one_step_index(T)`` steps. The prefixes and samples
keep the anchor to ~60 image forwards per implementation: whole trajectories would cost T + 2 x DDIM steps.

Rules: the specification's outputs say which twin is wrong; the PyTorch twin in float64 differs from the
specification only by float64 rounding unless its logic differs (the float64 logic gate); and PyTorch's float32
outputs against its own float64 run are this machine's float32 rounding on this run, the scale of the
machine-relative tolerances (``parity.engine.tolerances.machine_relative``). The implementations are given by
the caller (``Float64``: a side, its model, its diffusion), so this module imports no side and no framework.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from parity.engine.checks import REGISTRY
from parity.engine.checks.base import Float64

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec

__all__ = ["Anchor", "Float64", "anchor_outputs", "wants_anchor"]


def anchor_outputs(math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
    """Every anchored output of ``math`` for ``spec`` but those that wait
    for the other side's outputs (``Anchor.after``)."""
    out: dict[str, np.ndarray] = {}
    for check in REGISTRY:
        if check.anchored and check.name in spec.checks:
            out.update(check.anchor(math, tape, spec))
    return out


class Anchor:
    """The float64 implementations of one run, by name (``"spec"``: the specification; ``"torch64"``: the
    PyTorch twin in float64, absent where it does not run here): ``before(tape)`` computes what needs no other
    side's output, ``after(tape, leader)`` what steps from a side's outputs; ``outputs`` is
    ``{name: {key: array}}``."""

    def __init__(self, maths: Mapping[str, Float64[Any, Any]], spec: RunSpec):
        self.spec, self.maths = spec, dict(maths)
        self.outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.maths}
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, fn: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            key = f"reference/{name}"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - t0, 3)

    def before(self, tape: Mapping[str, np.ndarray]) -> None:
        for name, math in self.maths.items():
            self.outputs[name].update(self._timed(name, lambda: anchor_outputs(math, tape, self.spec)))

    def after(self, tape: Mapping[str, np.ndarray], leader: Mapping[str, np.ndarray] | None) -> None:
        """The float64 steps from ``leader``'s outputs: the states both twins' follow outputs stepped from
        (MindSpore's in one process; the golden file's in ``compare``); nothing for None."""
        if leader is None:
            return
        chosen = [c for c in REGISTRY if c.anchored and c.follows and c.name in self.spec.checks]
        for name, math in self.maths.items():
            for check in chosen:
                self.outputs[name].update(self._timed(name, lambda: check.anchor_follow(math, tape, self.spec, leader)))


def wants_anchor(spec: RunSpec) -> bool:
    """Whether ``spec`` asks for the float64 anchor (the "reference" check)."""
    return "reference" in spec.checks
