"""The registry of checks: every check of a parity run is one module here (``base.Check``), registered once
in ``REGISTRY``, in the order the report shows them.

Rules: a check has one name everywhere (``CHECKS`` are the names users pick from); ``run_side`` runs the
registered checks in this order, except that a check that trains the model runs after all that do not;
``compare_outputs`` and ``implied_outputs`` (``parity.engine.suite``) are loops over this registry, so a new
check is one new module and one line here.
"""
from __future__ import annotations

from parity.engine.checks.adam import Adam
from parity.engine.checks.base import Check
from parity.engine.checks.ddim import Ddim
from parity.engine.checks.ddpm import Ddpm
from parity.engine.checks.grad import Grad
from parity.engine.checks.loss import Loss
from parity.engine.checks.predict import Predict
from parity.engine.checks.probes import Probes
from parity.engine.checks.reference import Reference
from parity.engine.checks.settings import Settings
from parity.engine.checks.weights import Weights

REGISTRY: tuple[Check, ...] = (Settings(), Weights(), Predict(), Loss(), Grad(), Adam(), Ddpm(), Ddim(), Probes(),
                               Reference())
CHECKS: tuple[str, ...] = tuple(c.name for c in REGISTRY)
BY_NAME: dict[str, Check] = {c.name: c for c in REGISTRY}
RUN_ORDER: tuple[Check, ...] = tuple(sorted(REGISTRY, key=lambda c: c.trains))
"""``REGISTRY`` with the checks that train the model last (a stable sort: the others keep their order)."""
ANCHORED: tuple[str, ...] = tuple(c.name for c in REGISTRY if c.anchored)
"""The checks whose outputs the float64 specification covers."""


def tolerance_of(key: str) -> str:
    """The tolerance table's entry that judges output ``key`` (``KeyError`` for a key no check writes)."""
    first = key.split("/")[0]
    for c in REGISTRY:
        if first in c.outputs:
            return c.outputs[first]
    raise KeyError(f"no check writes output {key!r}")


def check_of(output: str) -> Check | None:
    """The check whose rows use the tolerance entry ``output``, or None (the missing-outputs row)."""
    return next((c for c in REGISTRY if output in c.tolerances), None)
