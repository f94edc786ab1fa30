"""The DDPM check: the free-running ancestral sampling loop from the tape's x_T with the tape's per-step noise
(every state x_{T-1} .. x_0), and one step of each side from every state of the other side's trajectory
(teacher-forced: a difference in the step is told from drift). Anchored: the float64 specification's first
``PREFIX_STEPS`` states, and its one step from the other side's states at ``ONE_STEP_SAMPLES`` steps."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from parity.engine.checks.base import PREFIX_STEPS, Check, Float64, Judge, SideRun
from parity.engine.rows import steps_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec

ONE_STEP_SAMPLES = 10
"""Teacher-forced steps, evenly spaced over the T steps (first and last included), the anchor takes."""
TRAJECTORY = "ddpm/trajectory"
ONE_STEP = "ddpm/one_step"


def one_step_index(timesteps: int) -> np.ndarray:
    """Step numbers k (sampling order: t = T-1-k) of the anchored teacher-forced steps."""
    return np.unique(np.linspace(0, timesteps - 1, min(ONE_STEP_SAMPLES, timesteps)).round().astype(int))


def step_inputs(tape: Mapping[str, np.ndarray], trajectory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the state each step k starts from: x_T, then trajectory[k-1]; its t = T-1-k) for a trajectory (T, B, ...)."""
    T = trajectory.shape[0]
    return np.concatenate([tape["x_T"][None], trajectory[:-1]]), np.arange(T - 1, -1, -1, dtype=np.int32)


class Ddpm(Check):
    name = "ddpm"
    outputs = {"ddpm": "ddpm_trajectory"}
    anchored = True
    follows = {ONE_STEP: TRAJECTORY}
    tolerances = ("ddpm_trajectory", "ddpm_one_step")

    def run(self, r: SideRun[Any, Any]) -> None:
        r.out[TRAJECTORY] = r.side.ddpm(r.model, r.diffusion, r.tape["x_T"], r.tape["ddpm_noise"])

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {TRAJECTORY: (spec.diffusion.timesteps, *spec.tape.shape)}

    def follow(self, r: SideRun[Any, Any], leader: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step of this side from every state of the other side's trajectory: row k steps from x_T (k = 0)
        or the other's state k-1, at t = T-1-k, with the tape's noise of step k."""
        if leader.get(TRAJECTORY) is None:
            return {}
        xs, ts = step_inputs(r.tape, leader[TRAJECTORY])
        return {ONE_STEP: r.side.ddpm_one_step(r.model, r.diffusion, xs, ts, r.tape["ddpm_noise"])}

    def anchor(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
        T, x, states = spec.diffusion.timesteps, tape["x_T"], []
        for k in range(min(PREFIX_STEPS, T)):
            x = math.steps(x[None], np.array([T - 1 - k], np.int32), tape["ddpm_noise"][k][None])[0]
            states.append(x)
        return {TRAJECTORY: np.stack(states)}

    def anchor_follow(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec,
                      leader: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One float64 step from the other side's states at the steps ``one_step_index(T)``: (n, b, ...)."""
        if leader.get(TRAJECTORY) is None:
            return {}
        ks = one_step_index(spec.diffusion.timesteps)
        xs, ts = step_inputs(tape, leader[TRAJECTORY])
        return {ONE_STEP: math.steps(xs[ks], ts[ks], tape["ddpm_noise"][ks])}

    def rows(self, j: Judge) -> None:
        T = j.spec.diffusion.timesteps
        names = [f"step {k} (t={T - 1 - k})" for k in range(T)]
        if ONE_STEP in j.followed:
            a, b, who = j.followed[ONE_STEP]
            ks = one_step_index(T)
            an = j.anchored(ONE_STEP, "ddpm_one_step", (a[ks], b[ks]))
            j.add(steps_row("DDPM one step (teacher-forced)", "ddpm_one_step", a, b, names, j.device, note=who,
                            tol=None if an is None else an.tolerance, sides=j.sides), an)
        if TRAJECTORY in j.a and TRAJECTORY in j.b:
            an = j.anchored(TRAJECTORY, "ddpm_trajectory")
            j.add(steps_row(f"DDPM trajectory ({T} steps)", "ddpm_trajectory", j.a[TRAJECTORY], j.b[TRAJECTORY],
                            names, j.device, note="free-running; drift per step in --json",
                            tol=None if an is None else an.tolerance, sides=j.sides), an)
