"""The float64 anchor of a parity run: the executable specification (``ddpm_core.reference``) and the
PyTorch twin run in float64, on every output the specification covers.

Keys (as ``parity.engine.suite.run_side`` names the twins' outputs):
  ``predict/t=N``    the tape's noise predictions
  ``loss/<type>``    the losses on the first training batch
  ``ddpm/prefix``    the first ``PREFIX_STEPS`` states of the free-running DDPM trajectory from x_T
  ``ddpm/one_step``  one ancestral step from MindSpore's states at the steps ``one_step_index(T)``
  ``ddim/eta=E``     the first ``PREFIX_STEPS`` DDIM states
The prefixes and samples keep the anchor to ~60 image forwards per implementation: the whole trajectories
would cost T + 2 x DDIM steps of them.

Rules: the specification's outputs say which twin is wrong; the PyTorch twin in float64 differs from
the specification only by float64 rounding unless its logic differs (the float64 logic gate); and
PyTorch's float32 outputs against its own float64 run are this machine's float32 rounding on this run,
the scale of the machine-relative tolerances (``parity.engine.tolerances.machine_relative``). The float64
PyTorch model is a deep copy of the one under test, so a change made to it (a planted bug) is kept.
Imports neither framework at import time.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from ddpm_core.contract import InferenceSide
from ddpm_core.reference.side import ReferenceSide
from ddpm_core.schedules import ddim_plan

PREFIX_STEPS = 5
"""Free-running DDPM and DDIM steps the anchor takes from x_T."""
ONE_STEP_SAMPLES = 10
"""Teacher-forced steps, evenly spaced over the T steps (first and last included), the anchor takes."""


def one_step_index(timesteps: int) -> np.ndarray:
    """Step numbers k (sampling order: t = T-1-k) of the anchored teacher-forced steps."""
    return np.unique(np.linspace(0, timesteps - 1, min(ONE_STEP_SAMPLES, timesteps)).round().astype(int))


class Float64:
    """One float64 implementation for the anchor: an inference side with its model and diffusion."""

    def __init__(self, side: InferenceSide, model: Any, diffusion: Any):
        self.side, self.model, self.diff = side, model, diffusion

    def predict(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.side.predict(self.model, x, t)

    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return self.side.loss(self.model, self.diff, x0, t, noise, loss_type)

    def steps(self, xs: np.ndarray, ts: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.side.ddpm_one_step(self.model, self.diff, xs, ts, noise)

    def ddim_step(self, x: np.ndarray, plan: Any, k: int, noise: np.ndarray | None) -> np.ndarray:
        return self.side.ddim_step(self.model, self.diff, x, plan, k, noise)


def anchor_outputs(math: Float64, tape: Mapping[str, np.ndarray], spec: Any) -> dict[str, np.ndarray]:
    """Every anchored output of ``math`` for ``spec`` (a ``parity.engine.suite.RunSpec``) but the teacher-forced
    steps, which wait for MindSpore's trajectory (``anchor_one_step``)."""
    checks, out, T = spec.checks, {}, spec.diffusion.timesteps
    if "predict" in checks:
        x, ts = tape["pred_x"], tape["pred_t"]
        k, b = x.shape[:2]
        y = math.predict(x.reshape(k * b, *x.shape[2:]), np.repeat(ts, b)).reshape(x.shape)
        out.update({f"predict/t={int(t)}": y[i] for i, t in enumerate(ts)})
    if "loss" in checks:
        batch0 = (tape["train_x0"][0], tape["train_t"][0], tape["train_noise"][0])
        out.update({f"loss/{lt}": math.loss(*batch0, lt) for lt in spec.loss_types})
    if "ddpm" in checks:
        x, states = tape["x_T"], []
        for k in range(min(PREFIX_STEPS, T)):
            x = math.steps(x[None], np.array([T - 1 - k], np.int32), tape["ddpm_noise"][k][None])[0]
            states.append(x)
        out["ddpm/prefix"] = np.stack(states)
    if "ddim" in checks:
        for eta in spec.ddim_etas:
            plan, x, states = ddim_plan(spec.diffusion, spec.tape.ddim_steps, eta), tape["x_T"], []
            for k in range(min(PREFIX_STEPS, plan.steps)):
                x = math.ddim_step(x, plan, k, tape["ddim_noise"][k] if plan.sigma[k] > 0 else None)
                states.append(x)
            out[f"ddim/eta={eta:g}"] = np.stack(states)
    return out


def anchor_one_step(math: Float64, tape: Mapping[str, np.ndarray], spec: Any,
                    trajectory: np.ndarray) -> np.ndarray:
    """One ancestral step of ``math`` from MindSpore's states (``trajectory``, (T, b, ...)) at the steps
    ``one_step_index(T)``, with the tape's noise of each step: (n, b, ...)."""
    T = spec.diffusion.timesteps
    ks = one_step_index(T)
    starts = np.concatenate([tape["x_T"][None], trajectory[:-1]])[ks]  # (n, b, ...)
    return math.steps(starts, (T - 1 - ks).astype(np.int32), tape["ddpm_noise"][ks])


class Anchor:
    """The float64 implementations for one run: ``before(tape)`` computes what needs no MindSpore output,
    ``after(tape, trajectory)`` the teacher-forced steps; ``outputs`` is ``{"spec": ..., "torch64": ...}``.
    ``torch_model`` None (a host without PyTorch: ``compare`` on a MindSpore host) runs the specification
    alone, and ``outputs`` has no "torch64"."""

    def __init__(self, torch_model: Any, weights: Mapping[str, np.ndarray], spec: Any):
        self.spec = spec
        reference = ReferenceSide()
        self.maths = {"spec": Float64(reference, reference.load_model(weights, spec.unet),
                                      reference.diffusion(spec.diffusion))}
        if torch_model is not None:
            from parity.sides.torch import TorchSide

            torch64 = TorchSide(str(next(torch_model.parameters()).device), dtype=np.float64)
            self.maths["torch64"] = Float64(torch64, torch64.adopt(torch_model), torch64.diffusion(spec.diffusion))
        self.outputs: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.maths}
        self.timings: dict[str, float] = {}

    def _timed(self, name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            key = f"reference/{name}"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.perf_counter() - t0, 3)

    def before(self, tape: Mapping[str, np.ndarray]) -> None:
        for name, math in self.maths.items():
            self.outputs[name].update(self._timed(name, lambda: anchor_outputs(math, tape, self.spec)))

    def after(self, tape: Mapping[str, np.ndarray], trajectory: np.ndarray | None) -> None:
        """The teacher-forced steps from ``trajectory``'s states: the states both twins' one-step outputs
        stepped from (MindSpore's in one process; the golden file's in ``compare``)."""
        if trajectory is None or "ddpm" not in self.spec.checks:
            return
        for name, math in self.maths.items():
            self.outputs[name]["ddpm/one_step"] = self._timed(
                name, lambda: anchor_one_step(math, tape, self.spec, trajectory))


def wants_anchor(spec: Any) -> bool:
    """Whether ``spec`` asks for the float64 anchor (the "reference" check)."""
    return "reference" in spec.checks
