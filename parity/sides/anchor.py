"""The float64 anchor's implementations, assembled from sides: the executable specification
(``ddpm_core.reference.side.ReferenceSide``, numpy) and, where a twin's side offers one, that side in float64
(``Side.float64``: PyTorch's). Imports no framework (a side given to it has imported its own)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddpm_core.contract import Side
from ddpm_core.reference.side import ReferenceSide
from parity.engine.anchor import Anchor, Float64
from parity.engine.suite import RunSpec


def float64_anchor(weights: Mapping[str, np.ndarray], spec: RunSpec, side: Side[Any, Any] | None = None,
                   model: Any = None) -> Anchor:
    """The anchor of ``spec``: the specification on ``weights``, and ``side``'s float64 run of ``model`` where
    ``side`` offers one (a copy: a change made to ``model``, a planted bug, is kept)."""
    reference = ReferenceSide()
    maths: dict[str, Float64[Any, Any]] = {
        "spec": Float64(reference, reference.load_model(weights, spec.unet), reference.diffusion(spec.diffusion))}
    twin64 = None if side is None else side.float64(model)
    if twin64 is not None:
        side64, model64 = twin64
        maths["torch64"] = Float64(side64, model64, side64.diffusion(spec.diffusion))
    return Anchor(maths, spec)
