"""One training step of a pair: the loss, the gradient of every parameter by name, and one step of each side's
optimizer, each judged against the PyTorch model doing the same step in float64.

Rules it keeps: the SPEC's ``loss(outputs)`` is applied to each side's own outputs (write it with operations both
frameworks' tensors have, e.g. ``(out ** 2).mean()``); ``optimizers`` maps a framework ("torch", "ms") to a function
of the parameter list that returns its optimizer, and the float64 arbiter uses PyTorch's; gradients and stepped
weights come back under PyTorch's names through the weight map's layouts; every tensor is judged under its own
machine-relative gate (its float32 rounding, as a module call's output) and a failing one is blamed on the side
farther from float64; every side's weights are restored afterwards, whatever happens; running (``step_on``) and
judging (``judge_step``) are apart, so two hosts judge PyTorch's recorded step with the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ddpm_core.weights.mapping import LAYOUTS, WeightMap
from parity.pair.judge import Gates, Judged, blame, judge


@dataclass
class TensorVerdict:
    """One gradient or stepped weight: its PyTorch name, the judgement, and the side to blame when it fails."""

    name: str
    judged: Judged
    blame: str

    def to_dict(self) -> dict:
        return {"name": self.name, "passed": self.judged.passed, "blame": self.blame,
                "err_vs_float64": {"torch": self.judged.err_torch, "other": self.judged.err_other},
                **{k: v for k, v in self.judged.comparison.to_dict().items() if k != "name"}}


@dataclass
class StepResult:
    """The training step on one input: loss, gradients, and (with optimizers) the weights after one step."""

    index: int
    loss: Judged
    grads: list[TensorVerdict] = field(default_factory=list)
    stepped: list[TensorVerdict] = field(default_factory=list)
    other_label: str = "MindSpore"

    @property
    def passed(self) -> bool:
        return self.loss.passed and all(v.judged.passed for v in self.grads + self.stepped)

    def findings(self) -> list[str]:
        lines = []
        for what, items in (("gradients", self.grads), ("weights after one optimizer step", self.stepped)):
            bad = [v for v in items if not v.judged.passed]
            if bad:
                c = bad[0].judged.comparison
                lines.append(f"training step, input {self.index}: {len(bad)} of {len(items)} {what} differ, first "
                             f"`{bad[0].name}` (max abs {c.max_abs:.2e}, rel L2 {c.rel_l2:.2e}; against float64: "
                             f"PyTorch {bad[0].judged.err_torch:.1e}, {self.other_label} {bad[0].judged.err_other:.1e}"
                             + (f": {bad[0].blame} is wrong)" if bad[0].blame != "neither" else ")"))
        return lines

    def first_failure(self, wm: WeightMap) -> dict | None:
        """The first failing gradient (else stepped weight) as a first divergence: its module on each side."""
        for what, items in (("gradient", self.grads), ("optimizer step", self.stepped)):
            bad = next((v for v in items if not v.judged.passed), None)
            if bad is not None:
                owner = bad.name.rsplit(".", 1)[0] if "." in bad.name else ""
                other = wm.ms_name().get(bad.name, "")
                return {"input": self.index, "module": {"torch": owner, "other": other.rsplit(".", 1)[0]},
                        "tensor": bad.name, "own": True, "error": f"training step: {what}", "blame": bad.blame,
                        "err_vs_float64": {"torch": bad.judged.err_torch, "other": bad.judged.err_other},
                        "message": self.findings()[0]}
        if not self.loss.passed:
            return {"input": self.index, "module": None, "own": True, "error": "training step: loss",
                    "blame": blame(self.loss.err_torch, self.loss.err_other, self.other_label),
                    "message": f"the training loss differs: {self.loss.comparison.describe()}"}
        return None

    def to_dict(self) -> dict:
        return {"input": self.index, "passed": self.passed, "loss": self.loss.comparison.to_dict(),
                "gradients": [v.to_dict() for v in self.grads], "optimizer_step": [v.to_dict() for v in self.stepped]}


def _torch_named(wm: WeightMap, other: Mapping[str, np.ndarray], same_names: bool) -> dict[str, np.ndarray]:
    if same_names:
        return dict(other)
    return {e.torch: LAYOUTS[e.layout].to_torch(other[e.ms], wm.torch_shapes[e.torch]) for e in wm.entries
            if e.ms in other}


def _verdicts(t: Mapping[str, np.ndarray], o: Mapping[str, np.ndarray], r: Mapping[str, np.ndarray], label: str,
              gates: Gates) -> list[TensorVerdict]:
    out = []
    for name in t:
        if name not in o or name not in r:
            continue
        j = judge(name, [t[name]], [o[name]], [r[name]], "pair_module", gates)
        out.append(TensorVerdict(name, j, "" if j.passed else blame(j.err_torch, j.err_other, label)))
    return out


Trained = tuple  # (loss, gradients by name, parameters after one optimizer step or None): one side's step


def step_on(side: Any, args: tuple, loss: Callable[[Any], Any], make_optimizer: Callable[[list], Any] | None,
            restore: Mapping[str, np.ndarray]) -> Trained:
    """One side's training step on ``args`` in training mode; its weights are ``restore``d afterwards, whatever
    happens."""
    try:
        with side.train_mode():
            return side.train_step(args, loss, make_optimizer)
    finally:
        side.load(dict(restore))


def judge_step(index: int, t: Trained, o: Trained, r: Trained, wm: WeightMap, other_label: str, same_names: bool,
               gates: Gates) -> StepResult:
    """The training step's verdict from PyTorch float32's (``t``), the other side's (``o``, under its own names
    unless ``same_names``) and the arbiter's (``r``) steps: the one verdict, whether PyTorch's were computed here or
    recorded on another host (``parity.pair.golden``)."""
    (lt, gt, at), (lo, go, ao), (lr, gr, ar) = t, o, r
    result = StepResult(index, judge("training-step loss", [lt], [lo], [lr], "pair_output", gates),
                        other_label=other_label)
    result.grads = _verdicts(gt, _torch_named(wm, go, same_names), gr, other_label, gates)
    if at is not None and ao is not None and ar is not None:
        result.stepped = _verdicts(at, _torch_named(wm, ao, same_names), ar, other_label, gates)
    return result


def training_step(side_t: Any, side_o: Any, ref: Any, wm: WeightMap, args: tuple, index: int,
                  loss: Callable[[Any], Any], optimizers: Mapping[str, Callable[[list], Any]],
                  gates: Gates) -> StepResult:
    """The training step on ``args`` (see the module docstring), judged by ``judge_step``."""
    start = side_t.state()
    t = step_on(side_t, args, loss, optimizers.get("torch"), start)
    o = step_on(side_o, args, loss, optimizers.get(side_o.framework), wm.to_ms(start))
    r = step_on(ref, args, loss, optimizers.get("torch"), start)
    return judge_step(index, t, o, r, wm, side_o.label, side_o.framework == "torch", gates)
