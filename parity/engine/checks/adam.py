"""The Adam check: ``train_steps`` training steps of each twin with MindSpore's ``nn.Adam`` rule (and, on the
PyTorch side, ``torch.optim.Adam``'s, reported as information: it places eps differently), compared as the
parameter change w_k - w_0 (float64, exact). Step 1 reuses the gradient check's gradient when that runs (the
same batch at the same weights). The model's weights are restored afterwards."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ddpm_core.weights.naming import unet_parameters
from parity.engine.checks.base import Check, Judge, SideRun
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec

RULES = {"mindspore": "adam", "torch": "adam_torch_rule"}
"""Each Adam rule a side runs -> the first part of its output keys."""


def rules_of(framework: str) -> tuple[str, ...]:
    """The Adam rules ``framework``'s side runs: both on PyTorch's, MindSpore's own on MindSpore's."""
    return ("mindspore", "torch") if framework == "torch" else ("mindspore",)


def parameter_changes(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The Adam states in ``out`` after k steps -> the parameter change w_k - w_0 (float64), step 0 dropped."""
    res = {}
    for key, value in out.items():
        parts = key.split("/", 2)
        if parts[0] in RULES.values() and len(parts) == 3 and parts[1].startswith("step"):
            if parts[1] != "step0" and f"adam/step0/{parts[2]}" in out:
                res[key] = value.astype(np.float64) - out[f"adam/step0/{parts[2]}"].astype(np.float64)
    return res


class Adam(Check):
    name = "adam"
    outputs = {"adam": "adam", "adam_torch_rule": "adam_torch_rule"}
    trains = True

    def run(self, r: SideRun[Any, Any]) -> None:
        batches = list(zip(r.tape["train_x0"], r.tape["train_t"], r.tape["train_noise"]))
        first = r.loss_and_grads()[1] if "grad" in r.spec.checks else None
        for rule in rules_of(r.side.name):
            prefix = RULES[rule]
            try:
                states = r.side.adam(r.model, r.diffusion, batches, r.spec.lrs, r.spec.diffusion.loss_type, rule,
                                     first)
            finally:
                r.side.load(r.model, r.weights)
            if prefix == "adam":
                r.out.update({f"adam/step0/{n}": v for n, v in r.weights.items()})
            for k, state in enumerate(states, 1):
                r.out.update({f"{prefix}/step{k}/{n}": v for n, v in state.items()})

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        params = {p.torch_name: tuple(p.shape) for p in unet_parameters(spec.unet)}
        out = {}
        for rule in rules_of(framework):
            prefix = RULES[rule]
            for k in range(0 if prefix == "adam" else 1, spec.tape.train_steps + 1):
                out.update({f"{prefix}/step{k}/{n}": s for n, s in params.items()})
        return out

    def compared(self, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return parameter_changes(out)

    def rows(self, j: Judge) -> None:
        a, b, last = j.a, j.b, j.spec.tape.train_steps
        for k in range(1, last + 1):
            j.add(pairs_row(f"adam/step{k}/", a, b, f"Adam step {k}: MindSporeAdam vs nn.Adam", j.device, "adam",
                            note="parameter change w_k - w_0", sides=j.sides))
        torch_rule = f"adam_torch_rule/step{last}/"
        if any(k.startswith(torch_rule) for k in a) and any(k.startswith(f"adam/step{last}/") for k in b):
            a_torch = {f"adam/step{last}/" + k.split("/", 2)[2]: v for k, v in a.items() if k.startswith(torch_rule)}
            j.add(pairs_row(f"adam/step{last}/", a_torch, b, f"Adam step {last}: torch.optim.Adam vs nn.Adam", j.device,
                            "adam_torch_rule", gate=False, note="information: expected to differ (eps placement)",
                            sides=j.sides))
