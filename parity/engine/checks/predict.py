"""The prediction check: the U-Net's noise prediction eps(x_t, t) on the tape's inputs at every prediction
timestep, one batched forward per side; anchored by the float64 specification's prediction."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from parity.engine.checks.base import Check, Float64, Judge, SideRun
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


def _predict(predict: Any, tape: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``predict(x, t)`` on every (pred_x[i], pred_t[i]) of the tape, as one batch: ``{predict/t=N: eps}``."""
    x, ts = tape["pred_x"], tape["pred_t"]
    k, b = x.shape[:2]
    y = predict(x.reshape(k * b, *x.shape[2:]), np.repeat(ts, b)).reshape(x.shape)
    return {f"predict/t={int(t)}": y[i] for i, t in enumerate(ts)}


class Predict(Check):
    name = "predict"
    outputs = {"predict": "prediction"}
    anchored = True

    def run(self, r: SideRun[Any, Any]) -> None:
        r.out.update(_predict(lambda x, t: r.side.predict(r.model, x, t), r.tape))

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {f"predict/t={int(t)}": spec.tape.shape for t in pred_t}

    def anchor(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
        return _predict(math.predict, tape)

    def rows(self, j: Judge) -> None:
        for key in [k for k in j.b if k.startswith("predict/")]:
            an = j.anchored(key, "prediction")
            j.add(pairs_row(key, j.a, j.b, f"prediction {key.split('/')[1]}", j.device, "prediction",
                            tol=None if an is None else an.tolerance, sides=j.sides), an)
