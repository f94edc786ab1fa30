"""A stochastic loop of a pair (a sampler: N scheduler steps), fed from one numpy tape and judged step by step.

The SPEC's ``step(model, x, t, noise)`` is one step of the loop on the side whose model it is given (a PyTorch
module in float32 or float64, or the port): ``x`` and ``noise`` arrive as that side's tensors in its dtype, ``t``
as an int, and it returns the next state. Neither framework's scheduler is asked for randomness: the noise of
every step is drawn once, in numpy, before any side runs (``Tape``), and the same arrays go to every side.

Rules it keeps (framework-free; the sides are reached through ``side.run_step``):
  * three runs from the tape's one start: PyTorch float32, the other side, and the PyTorch float64 arbiter, each
    fed its own previous state (free-running), so what a user's sampler would produce is what is compared;
  * teacher-forced (PaDiff's single step, for a loop): step i of the other side and of the arbiter is also run
    from PyTorch float32's state i, so each step's own error is told from the drift it inherits;
  * every step is judged under its own machine-relative gate (``pair_loop``: k x PyTorch float32's error against
    float64 on that step, at that timestep), never a side's error against float64, so a timestep where float32
    rounds worse (an embedding's argument t x frequency near t=1000) gets the gate its rounding calls for, and no
    other does;
  * a failing step is blamed on the side farther from float64, and the report says at which timesteps the loop
    parts and at which it does not;
  * running (``free_run``, ``forced_run``) and judging (``judge_loop``) are apart: two hosts judge PyTorch's recorded
    states and the port's live ones with the same ``judge_loop`` (``parity.pair.golden``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ddpm_core.errors import UserError
from parity.pair.judge import Gates, Judged, blame, judge

Step = Callable[[Any, Any, int, Any], Any]


@dataclass
class Tape:
    """The loop's randomness, drawn once: the start state and one noise array per step (float32)."""

    start: np.ndarray
    noise: list[np.ndarray]

    @classmethod
    def draw(cls, shape: Sequence[int], steps: int, rng: np.random.Generator) -> "Tape":
        """Standard normal start and noises of ``shape``, in that order from ``rng`` (inject your own rng)."""
        shape = tuple(int(n) for n in shape)
        start = rng.standard_normal(shape).astype(np.float32)
        return cls(start, [rng.standard_normal(shape).astype(np.float32) for _ in range(steps)])


def plan(loop: Mapping[str, Any], inputs: Sequence[tuple[np.ndarray, ...]]) -> tuple[list[int], Tape]:
    """The SPEC's ``loop`` (``{"timesteps": [...], "shape": [...], "seed": 0}``; the shape defaults to the first
    input's first array) as its timesteps and the tape drawn from ``seed``; any problem is ``UserError``."""
    unknown = sorted(set(loop) - {"timesteps", "shape", "seed"})
    steps = loop.get("timesteps")
    if unknown or not isinstance(steps, (list, tuple)) or not steps or \
            not all(isinstance(t, (int, np.integer)) for t in steps):
        raise UserError(f"loop: expected {{'timesteps': [int, ...], 'shape': [...], 'seed': int}}, got {dict(loop)!r}")
    shape = loop.get("shape", inputs[0][0].shape)
    seed = loop.get("seed", 0)
    if not isinstance(seed, int):
        raise UserError(f"loop: seed must be an int, got {seed!r}")
    return [int(t) for t in steps], Tape.draw(shape, len(steps), np.random.default_rng(seed))


@dataclass
class StepVerdict:
    """One step of the loop: free-running (each side from its own state) and teacher-forced (from PyTorch's)."""

    index: int
    timestep: int
    free: Judged
    forced: Judged | None
    blame: str = ""

    @property
    def passed(self) -> bool:
        return self.free.passed and (self.forced is None or self.forced.passed)

    @property
    def own(self) -> bool:
        """The step's own error: it fails even from PyTorch's state."""
        return self.forced is not None and not self.forced.passed

    @property
    def deciding(self) -> Judged:
        """The judgement that decides blame: teacher-forced for a step's own error, else free-running."""
        return self.forced if self.forced is not None and self.own else self.free

    def label(self) -> str:
        return f"loop step {self.index} (t={self.timestep})"

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"step": self.index, "timestep": self.timestep, "passed": self.passed,
                               "blame": self.blame, "own": self.own, "free": self.free.comparison.to_dict(),
                               "err_vs_float64": {"torch": self.free.err_torch, "other": self.free.err_other}}
        if self.forced is not None:
            out["forced"] = {**self.forced.comparison.to_dict(),
                             "err_vs_float64": {"torch": self.forced.err_torch, "other": self.forced.err_other}}
        return out


@dataclass
class LoopResult:
    """Every step's verdict, in the loop's order."""

    steps: list[StepVerdict] = field(default_factory=list)
    other_label: str = "MindSpore"

    @property
    def passed(self) -> bool:
        return bool(self.steps) and all(s.passed for s in self.steps)

    def findings(self) -> list[str]:
        bad = [s for s in self.steps if not s.passed]
        if not bad:
            return []
        s = bad[0]
        j = s.deciding
        c = j.comparison
        why = ("from PyTorch's state it still differs: the step's own error (the model or the scheduler; the forward "
               "rows say whether the model does)" if s.own else
               "from PyTorch's state it matches: the difference was inherited from the steps before (drift)")
        lines = [f"{s.label()}: max abs {c.max_abs:.2e}, rel L2 {c.rel_l2:.2e} (gate {c.tolerance.atol:.1e} / "
                 f"{c.tolerance.max_rel_l2:.1e}); {why}. Against float64: PyTorch {j.err_torch:.1e}, "
                 f"{self.other_label} {j.err_other:.1e} (rel L2)"
                 + (f": {s.blame} is wrong" if s.blame not in ("", "neither") else "")]
        good = [x for x in self.steps if x.passed]
        if good:
            lines.append("the loop differs at " + ", ".join(f"t={x.timestep}" for x in bad) + " and matches at "
                         + ", ".join(f"t={x.timestep}" for x in good) + ": the difference depends on the timestep")
        return lines

    def first_failure(self) -> dict | None:
        s = next((x for x in self.steps if not x.passed), None)
        if s is None:
            return None
        j = s.deciding
        return {"input": None, "module": None, "loop_step": s.index, "timestep": s.timestep, "own": s.own,
                "error": "loop step: own" if s.own else "loop step: inherited", "blame": s.blame,
                "err_vs_float64": {"torch": j.err_torch, "other": j.err_other}, "message": self.findings()[0]}

    def to_dict(self) -> dict:
        return {"passed": self.passed, "steps": [s.to_dict() for s in self.steps]}


def free_run(side: Any, step: Step, timesteps: Sequence[int], tape: Tape) -> list[np.ndarray]:
    """``side``'s loop from the tape's start, each step fed its own previous state: the state after every step."""
    states, x = [], tape.start
    for t, noise in zip(timesteps, tape.noise):
        x = side.run_step(step, x, t, noise)
        states.append(x)
    return states


def forced_run(side: Any, step: Step, timesteps: Sequence[int], tape: Tape, states_t: Sequence[np.ndarray],
               free: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``side``'s step i from PyTorch float32's state i (``states_t[i - 1]``): teacher-forced. Step 0 starts from the
    tape on every side, so it is ``free[0]``, the side's own free-running step 0."""
    return [free[0], *(side.run_step(step, states_t[i - 1], t, noise)
                       for i, (t, noise) in enumerate(zip(timesteps, tape.noise)) if i)]


def judge_loop(timesteps: Sequence[int], free_t: Sequence[np.ndarray], free_o: Sequence[np.ndarray],
               free_r: Sequence[np.ndarray], forced_o: Sequence[np.ndarray] | None,
               forced_r: Sequence[np.ndarray] | None, gates: Gates, other_label: str) -> LoopResult:
    """Every step judged from the three free-running trajectories and (when given) the other side's and the
    arbiter's teacher-forced steps: the one verdict of a loop, whether the states were computed here or recorded
    on another host (``parity.pair.golden``)."""
    result = LoopResult(other_label=other_label)
    for i, t in enumerate(timesteps):
        free = judge(f"loop step {i} (t={t})", [free_t[i]], [free_o[i]], [free_r[i]], "pair_loop", gates)
        forced = None
        if forced_o is not None and forced_r is not None:
            forced = judge(f"loop step {i} (t={t}), teacher-forced", [free_t[i]], [forced_o[i]], [forced_r[i]],
                           "pair_loop", gates)
        v = StepVerdict(i, int(t), free, forced)
        if not v.passed:
            v.blame = blame(v.deciding.err_torch, v.deciding.err_other, other_label)
        result.steps.append(v)
    return result


def check_tape(timesteps: Sequence[int], tape: Tape) -> None:
    """``UserError`` unless the tape has one noise array per timestep."""
    if len(tape.noise) != len(timesteps):
        raise UserError(f"loop: the tape has {len(tape.noise)} noise arrays for {len(timesteps)} timesteps")


def run_loop(side_t: Any, side_o: Any, ref: Any, step: Step, timesteps: Sequence[int], tape: Tape, gates: Gates,
             teacher_forced: bool = True) -> LoopResult:
    """The loop on the three sides from ``tape`` (see the module docstring), judged by ``judge_loop``."""
    check_tape(timesteps, tape)
    free_t, free_o, free_r = (free_run(s, step, timesteps, tape) for s in (side_t, side_o, ref))
    forced_o = forced_r = None
    if teacher_forced:
        forced_o = forced_run(side_o, step, timesteps, tape, free_t, free_o)
        forced_r = forced_run(ref, step, timesteps, tape, free_t, free_r)
    return judge_loop(timesteps, free_t, free_o, free_r, forced_o, forced_r, gates, side_o.label)
