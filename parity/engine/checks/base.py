"""One check of a parity run as one unit: what it computes on a side, which keys that writes, how they are
compared, its tolerance entries, and whether the float64 specification anchors it.

Rules a check keeps:
  * it has one name: the name a user picks it by (``--checks``, ``checks=``), its registry key, the first part
    of every output key it writes (``predict/t=10``; ``probes`` writes ``probe/...``, the key golden files
    have always stored) and its timing's key;
  * ``outputs`` maps each first part of its keys to the tolerance table's entry (``parity.engine.tolerances``)
    that judges it: the only place where a check's keys meet the table;
  * ``run`` drives a side only through ``ddpm_core.contract.Side`` (numpy in, numpy out) and leaves the model's
    weights as it found them; ``implied`` is computed from the spec alone and names exactly the keys ``run``
    writes, so a golden file and a comparison can be checked against it;
  * every hook has a default that does nothing, so a check defines only what it has.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Mapping, Sequence

import numpy as np

from ddpm_core.contract import D, InferenceSide, M, Side, State
from parity.engine.rows import SIDES, Row
from parity.engine.threeway import STEP_OUTPUTS, Anchored, Rounding, anchored

if TYPE_CHECKING:
    from parity.engine.suite import RunSpec

Followed = tuple[np.ndarray, np.ndarray, str]
"""(PyTorch's values, MindSpore's values, who computed them from whose outputs): an output one side computed
from the other side's outputs (the teacher-forced DDPM steps)."""

PREFIX_STEPS = 5
"""Free-running DDPM and DDIM steps the float64 anchor takes from x_T: its sampler outputs are prefixes."""


@dataclass
class SideRun(Generic[M, D]):
    """One side's run of a spec: what every check's ``run`` reads, and ``out``, which it writes."""

    side: Side[M, D]
    model: M
    diffusion: D
    tape: Mapping[str, np.ndarray]
    spec: RunSpec
    weights: State
    """the model's weights as the run found them (PyTorch names): a check that trains restores them"""
    out: dict[str, np.ndarray] = field(default_factory=dict)
    _first_grads: tuple[np.ndarray, State] | None = None

    @property
    def batch0(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x0, t, noise) of the tape's first training batch."""
        return self.tape["train_x0"][0], self.tape["train_t"][0], self.tape["train_noise"][0]

    def loss_and_grads(self) -> tuple[np.ndarray, State]:
        """The training loss and its gradients on the first batch at the loaded weights, computed once per run:
        the loss, gradient and Adam checks share this one call."""
        if self._first_grads is None:
            self._first_grads = self.side.loss_and_grads(self.model, self.diffusion, *self.batch0,
                                                         self.spec.diffusion.loss_type)
        return self._first_grads


@dataclass
class Judge:
    """What a check's ``rows`` compare: both sides' outputs in their compared form (``a`` PyTorch, ``b``
    MindSpore), the float64 anchor, and ``rows`` so far, to which each check adds its own."""

    a: Mapping[str, np.ndarray]
    b: Mapping[str, np.ndarray]
    spec: RunSpec
    device: str
    sides: tuple[str, str] = SIDES
    anchor: Mapping[str, Mapping[str, np.ndarray]] | None = None
    """``{"spec": ..., "torch64": ...}`` (``parity.engine.anchor.Anchor.outputs``), or None"""
    rounding: Rounding | None = None
    followed: Mapping[str, Followed] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)

    def anchored(self, key: str, output: str,
                 arrays: tuple[np.ndarray, np.ndarray] | None = None) -> Anchored | None:
        """Output ``key`` against the float64 specification, or None where the anchor does not cover it. The
        compared arrays are ``arrays`` (PyTorch's, MindSpore's) if given, else both sides' ``key``; a sampler
        output's anchor is a prefix of its steps, so its first steps are compared."""
        spec, t64 = (self.anchor or {}).get("spec", {}), (self.anchor or {}).get("torch64", {})
        if key not in spec:
            return None
        if arrays is None:
            if key not in self.a or key not in self.b:
                return None
            a, b = self.a[key], self.b[key]
            arrays = (a[:len(spec[key])], b[:len(spec[key])]) if output in STEP_OUTPUTS else (a, b)
        return anchored(output, key, *arrays, spec[key], t64.get(key), self.rounding, self.device, self.sides)

    def add(self, row: Row | None, anchor: Anchored | None = None) -> None:
        """Add ``row`` (nothing for None) with its anchored comparisons."""
        if row is not None:
            row.anchor = anchor
            self.rows.append(row)


class Float64(Generic[M, D]):
    """One float64 implementation for the anchor: an inference side with its model and diffusion."""

    def __init__(self, side: InferenceSide[M, D], model: M, diffusion: D):
        self.side, self.model, self.diff = side, model, diffusion

    def predict(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        return self.side.predict(self.model, x, t)

    def loss(self, x0: np.ndarray, t: np.ndarray, noise: np.ndarray, loss_type: str) -> np.ndarray:
        return self.side.loss(self.model, self.diff, x0, t, noise, loss_type)

    def steps(self, xs: np.ndarray, ts: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.side.ddpm_one_step(self.model, self.diff, xs, ts, noise)

    def ddim_step(self, x: np.ndarray, plan: Any, k: int, noise: np.ndarray | None) -> np.ndarray:
        return self.side.ddim_step(self.model, self.diff, x, plan, k, noise)


class Check:
    """A check's hooks, each doing nothing unless the check defines it (module docstring: the rules)."""

    name: str = ""
    outputs: Mapping[str, str] = {}
    """first part of an output key -> the tolerance table's entry that judges it"""
    anchored: bool = False
    """the float64 specification covers some of its outputs (``anchor``)"""
    trains: bool = False
    """it changes the model's weights (and restores them): it runs after every check that does not"""
    network: bool = True
    """its outputs go through the network, so a failure of it is localised module by module"""
    follows: Mapping[str, str] = {}
    """each key its ``follow`` writes -> the other side's output it steps from and is compared with"""

    @property
    def tolerances(self) -> tuple[str, ...]:
        """Every entry of the tolerance table its rows use."""
        return tuple(dict.fromkeys(self.outputs.values()))

    def run(self, r: SideRun[Any, Any]) -> None:
        """Write this check's outputs of one side into ``r.out``."""

    def implied(self, spec: RunSpec, framework: str, pred_t: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """``{key: shape}`` of what ``run`` writes on ``framework``'s side ("torch" or "ms")."""
        return {}

    def follow(self, r: SideRun[Any, Any], leader: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of this side computed from the other side's outputs ``leader`` (holding ``follows``' values)."""
        return {}

    def live(self, side_t: Side[Any, Any], model_t: Any, side_m: Side[Any, Any], model_m: Any) -> Any:
        """What it compares on both live models at once, before any number is computed (None: nothing)."""
        return None

    def anchor(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec) -> dict[str, np.ndarray]:
        """Its float64 outputs, by the keys of the outputs they anchor."""
        return {}

    def anchor_follow(self, math: Float64[Any, Any], tape: Mapping[str, np.ndarray], spec: RunSpec,
                      leader: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Its float64 outputs computed from a side's outputs ``leader`` (the states both sides stepped from)."""
        return {}

    def compared(self, out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """This check's outputs in ``out``, in the form they are compared in (default: as they are)."""
        return {k: v for k, v in out.items() if k.split("/")[0] in self.outputs}

    def rows(self, j: Judge) -> None:
        """Add its rows of the report to ``j``."""
