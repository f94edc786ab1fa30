"""The loss check: every loss type on the tape's first training batch; the training loss type's value is the
one the gradient call returns when the gradient check runs too (one call, not two). Anchored."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from parity.engine.checks.base import Check, Float64, Judge, SideRun
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


class Loss(Check):
    name = "loss"
    outputs = {"loss": "loss"}
    anchored = True

    def run(self, r: SideRun[Any, Any]) -> None:
        for lt in r.spec.loss_types:
            shared = lt == r.spec.diffusion.loss_type and "grad" in r.spec.checks
            r.out[f"loss/{lt}"] = (r.loss_and_grads()[0] if shared
                                   else r.side.loss(r.model, r.diffusion, *r.batch0, lt))

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {f"loss/{lt}": () for lt in spec.loss_types}

    def anchor(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
        batch0 = (tape["train_x0"][0], tape["train_t"][0], tape["train_noise"][0])
        return {f"loss/{lt}": math.loss(*batch0, lt) for lt in spec.loss_types}

    def rows(self, j: Judge) -> None:
        for lt in j.spec.loss_types:
            an = j.anchored(f"loss/{lt}", "loss")
            j.add(pairs_row(f"loss/{lt}", j.a, j.b, f"loss {lt}", j.device, "loss",
                            tol=None if an is None else an.tolerance, sides=j.sides), an)
