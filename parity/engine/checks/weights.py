"""The weights check: the parameters each twin holds, read back under their PyTorch names, must equal each
other bit for bit (the tolerance table's ``weights`` entry is exact): any difference is a conversion bug."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ddpm_core.weights.naming import unet_parameters
from parity.engine.checks.base import Check, Judge, SideRun
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


class Weights(Check):
    name = "weights"
    outputs = {"weights": "weights"}

    def run(self, r: SideRun[Any, Any]) -> None:
        r.out.update({f"weights/{n}": v for n, v in r.weights.items()})

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        return {f"weights/{p.torch_name}": tuple(p.shape) for p in unet_parameters(spec.unet)}

    def rows(self, j: Judge) -> None:
        n = sum(k.startswith("weights/") for k in j.b)
        j.add(pairs_row("weights/", j.a, j.b, f"weights ({n} tensors)", j.device, "weights", sides=j.sides))
