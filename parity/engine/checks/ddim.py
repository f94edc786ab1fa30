"""The DDIM check: the free-running DDIM loop from the tape's x_T for every eta of the spec (its noise from
the tape where eta > 0). Anchored: the float64 specification's first ``PREFIX_STEPS`` states."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ddpm_core.schedules import ddim_plan
from parity.engine.checks.base import PREFIX_STEPS, Check, Float64, Judge, SideRun
from parity.engine.rows import steps_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


class Ddim(Check):
    name = "ddim"
    outputs = {"ddim": "ddim_trajectory"}
    anchored = True

    def run(self, r: SideRun[Any, Any]) -> None:
        for eta in r.spec.ddim_etas:
            r.out[f"ddim/eta={eta:g}"] = r.side.ddim(r.model, r.diffusion, r.tape["x_T"], r.spec.tape.ddim_steps, eta,
                                                     r.tape["ddim_noise"])

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {f"ddim/eta={eta:g}": (spec.tape.ddim_steps, *spec.tape.shape) for eta in spec.ddim_etas}

    def anchor(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
        out = {}
        for eta in spec.ddim_etas:
            plan, x, states = ddim_plan(spec.diffusion, spec.tape.ddim_steps, eta), tape["x_T"], []
            for k in range(min(PREFIX_STEPS, plan.steps)):
                x = math.ddim_step(x, plan, k, tape["ddim_noise"][k] if plan.sigma[k] > 0 else None)
                states.append(x)
            out[f"ddim/eta={eta:g}"] = np.stack(states)
        return out

    def rows(self, j: Judge) -> None:
        for key in [k for k in j.b if k.startswith("ddim/") and k in j.a]:
            n, an = j.b[key].shape[0], j.anchored(key, "ddim_trajectory")
            j.add(steps_row(f"DDIM {key.split('/')[1]} ({n} steps)", "ddim_trajectory", j.a[key], j.b[key],
                            [f"step {k}" for k in range(n)], j.device, tol=None if an is None else an.tolerance,
                            sides=j.sides), an)
