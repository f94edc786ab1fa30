"""The float64 anchor of a parity run: the executable specification (``ddpm_core.reference``) and the
PyTorch twin run in float64, on every output the specification covers.

Keys (as ``parity.suite.run_side`` names the twins' outputs):
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
the scale of the machine-relative tolerances (``parity.tolerances.machine_relative``). The float64
PyTorch model is a deep copy of the one under test, so a change made to it (a planted bug) is kept.
Imports neither framework at import time.
"""
from __future__ import annotations

import copy
import time
from typing import Any, Mapping, Protocol

import numpy as np

from ddpm_core.reference import ReferenceDiffusion, ReferenceUnet
from ddpm_core.schedules import ddim_plan

PREFIX_STEPS = 5
"""Free-running DDPM and DDIM steps the anchor takes from x_T."""
ONE_STEP_SAMPLES = 10
"""Teacher-forced steps, evenly spaced over the T steps (first and last included), the anchor takes."""


def one_step_index(timesteps: int) -> np.ndarray:
    """Step numbers k (sampling order: t = T-1-k) of the anchored teacher-forced steps."""
    return np.unique(np.linspace(0, timesteps - 1, min(ONE_STEP_SAMPLES, timesteps)).round().astype(int))


class Float64Math(Protocol):
    """What the anchor needs from one float64 implementation (numpy in, float64 numpy out)."""

    def predict(self, x: np.ndarray, t: np.ndarray) -> np.ndarray: ...
    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray: ...
    def step(self, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray: ...
    def ddim_step(self, x: np.ndarray, plan: Any, k: int, noise: np.ndarray | None) -> np.ndarray: ...


class SpecMath:
    """The executable specification."""

    def __init__(self, unet: Any, diffusion: Any, weights: Mapping[str, np.ndarray]):
        self.net, self.diff = ReferenceUnet(unet, weights), ReferenceDiffusion(diffusion)

    def predict(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.net(x, t)

    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return np.asarray(self.diff.p_losses(self.net, x0, t, noise, loss_type))

    def step(self, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.diff.p_step(self.net, x, t, noise)

    def ddim_step(self, x: np.ndarray, plan: Any, k: int, noise: np.ndarray | None) -> np.ndarray:
        return self.diff.ddim_step(self.net, np.asarray(x, np.float64), int(plan.t[k]), plan, k, noise)


class Torch64Math:
    """The PyTorch twin after ``model.double()`` (a deep copy: the model under test is left as it is)."""

    def __init__(self, torch_model: Any, diffusion: Any):
        import torch

        import ddpm_torch

        self.torch = torch
        self.model = copy.deepcopy(torch_model).double().eval()
        self.device = next(self.model.parameters()).device
        self.diff = ddpm_torch.GaussianDiffusion(diffusion, device=self.device)
        for name in self.diff.schedule.tables():  # the same float32 values, upcast: every op then runs in float64
            setattr(self.diff, name, getattr(self.diff, name).double())

    def _t(self, a: np.ndarray) -> Any:
        a = np.asarray(a)
        return self.torch.from_numpy(np.array(a, np.float64 if a.dtype.kind == "f" else a.dtype)).to(self.device)

    def predict(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self._t(x), self._t(t)).cpu().numpy()

    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        with self.torch.no_grad():
            return self.diff.p_losses(self.model, self._t(x0), self._t(t), self._t(noise), loss_type).cpu().numpy()

    def step(self, x: np.ndarray, t: np.ndarray, noise: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.diff.p_step(self.model, self._t(x), self._t(t), self._t(noise)).cpu().numpy()

    def ddim_step(self, x: np.ndarray, plan: Any, k: int, noise: np.ndarray | None) -> np.ndarray:
        from ddpm_torch.diffusion import DDIM_COEFS

        coefs = [self.torch.tensor(float(getattr(plan, name)[k]), dtype=self.torch.float64) for name in DDIM_COEFS]
        t = self._t(np.full(len(x), int(plan.t[k]), np.int32))
        with self.torch.no_grad():
            return self.diff.ddim_step(self.model, self._t(x), t, *coefs,
                                       None if noise is None else self._t(noise)).cpu().numpy()


def anchor_outputs(math: Float64Math, tape: Mapping[str, np.ndarray], spec: Any) -> dict[str, np.ndarray]:
    """Every anchored output of ``math`` for ``spec`` (a ``parity.suite.RunSpec``) but the teacher-forced
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
            x = math.step(x, np.full(len(x), T - 1 - k, np.int32), tape["ddpm_noise"][k])
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


def anchor_one_step(math: Float64Math, tape: Mapping[str, np.ndarray], spec: Any,
                    trajectory: np.ndarray) -> np.ndarray:
    """One ancestral step of ``math`` from MindSpore's states (``trajectory``, (T, b, ...)) at the steps
    ``one_step_index(T)``, with the tape's noise of each step: (n, b, ...)."""
    T = spec.diffusion.timesteps
    ks = one_step_index(T)
    starts = np.concatenate([tape["x_T"][None], trajectory[:-1]])[ks]  # (n, b, ...)
    n, b = starts.shape[:2]
    flat = lambda a: a.reshape(n * b, *a.shape[2:])  # noqa: E731
    stepped = math.step(flat(starts), np.repeat(T - 1 - ks, b).astype(np.int32), flat(tape["ddpm_noise"][ks]))
    return stepped.reshape(starts.shape)


class Anchor:
    """Both float64 implementations for one run: ``before(tape)`` computes what needs no MindSpore output,
    ``after(tape, trajectory)`` the teacher-forced steps; ``outputs`` is ``{"spec": ..., "torch64": ...}``."""

    def __init__(self, torch_model: Any, weights: Mapping[str, np.ndarray], spec: Any):
        self.spec = spec
        self.maths = {"spec": SpecMath(spec.unet, spec.diffusion, weights),
                      "torch64": Torch64Math(torch_model, spec.diffusion)}
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
        if trajectory is None or "ddpm" not in self.spec.checks:
            return
        for name, math in self.maths.items():
            self.outputs[name]["ddpm/one_step"] = self._timed(
                name, lambda: anchor_one_step(math, tape, self.spec, trajectory))


def wants_anchor(spec: Any) -> bool:
    """Whether ``spec`` asks for the float64 anchor (the "reference" check)."""
    return "reference" in spec.checks
