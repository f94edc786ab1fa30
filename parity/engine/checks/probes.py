"""The probes check: the diffusion math alone (q_sample, p_sample, the losses, both sampling loops) driven by
a toy noise model instead of the U-Net (``parity.engine.probes``), so a failure in the math is told apart
from one in the network. Its outputs are stored under ``probe/`` (the key golden files have always used)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from parity.engine.checks.base import Check, Judge, SideRun
from parity.engine.probes import probe_shapes, run_probes
from parity.engine.rows import pairs_row

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec


class Probes(Check):
    name = "probes"
    outputs = {"probe": "diffusion_math"}
    network = False

    def run(self, r: SideRun[Any, Any]) -> None:
        s = r.spec
        probes = run_probes(r.side, r.diffusion, r.tape, s.diffusion, s.loss_types, s.tape.ddim_steps, s.ddim_etas)
        r.out.update({f"probe/{n}": v for n, v in probes.items()})

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        shapes = probe_shapes(spec.diffusion, spec.loss_types, spec.tape.ddim_steps, spec.ddim_etas)
        return {f"probe/{n}": s for n, s in shapes.items()}

    def rows(self, j: Judge) -> None:
        j.add(pairs_row("probe/", j.a, j.b, "diffusion math (toy model)", j.device, "diffusion_math", sides=j.sides))
