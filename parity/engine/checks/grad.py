"""The gradient check: the training loss's gradient for every parameter on the tape's first batch, by PyTorch
name (``grad_loss`` is the loss value that call returned)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ddpm_core.weights.naming import unet_parameters
from parity.engine.checks.base import Check, Judge, SideRun
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


class Grad(Check):
    name = "grad"
    outputs = {"grad_loss": "loss", "grad": "grad"}

    def run(self, r: SideRun[Any, Any]) -> None:
        loss, grads = r.loss_and_grads()
        r.out["grad_loss"] = loss
        r.out.update({f"grad/{n}": g for n, g in grads.items()})

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {"grad_loss": (), **{f"grad/{p.torch_name}": tuple(p.shape) for p in unet_parameters(spec.unet)}}

    def rows(self, j: Judge) -> None:
        n = sum(k.startswith("grad/") for k in j.b)
        j.add(pairs_row("grad/", j.a, j.b, f"gradients ({n} tensors)", j.device, "grad", sides=j.sides))
