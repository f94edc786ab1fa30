"""Where a pair parts: the first diverging module call, top-down, and whether the error is its own.

Rules it keeps (framework-free; the sides are reached through ``replay`` callables):
  * only paired module calls are compared (``parity.pair.modules``), call k with call k;
  * top-down: from the root call, descend into the first child call (in the order calls started) whose outputs
    differ beyond their gate, until a call none of whose children differ; that call is the first divergence;
  * when the outputs agree, a module whose own error (its single step) is beyond its gate is still a divergence,
    hidden by the layers after it: the first such call in data-flow order is where the walk starts;
  * own against inherited (PaDiff's single step): the other side's module is fed PyTorch's recorded inputs and
    the float64 PyTorch module the same inputs; if the other side still differs beyond this module's own float32
    rounding the error is the module's own, else it was inherited and the enclosing calls are replayed the same
    way, innermost first (their code between submodules made it);
  * blame comes from the single step against float64 (``parity.pair.judge.blame``), and a module whose own error
    is beyond float32 rounding is named as computing a different function, with the settings that differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ddpm_core.errors import EnvironmentRefused, type_and_first_sentence
from parity.pair.calls import Call, CallTree, call_key
from parity.pair.judge import DEFAULT_GATES, Gates, Judged, blame, different_function, judge
from parity.pair.settings import SettingDifference

Replay = Callable[[str, tuple], tuple]
MAX_HIDDEN_STEPS = 20
"""At most this many single steps look for a module's own error behind outputs that agree."""


@dataclass
class Divergence:
    """The first module call where the pair parts, on each side, and what the single step says about it."""

    torch_module: str
    other_module: str
    call: int
    kind: str
    other_kind: str
    output: Judged
    own: bool
    blame: str
    err_torch: float
    err_other: float
    different_function: bool = False
    settings: list[SettingDifference] = field(default_factory=list)
    first_seen: str = ""
    other_label: str = "MindSpore"
    input_index: int = 0
    buffer: str = ""
    """set when the divergence is a buffer after a training-mode pass (``bn.running_mean``), not an output"""
    hidden: bool = False
    """the model's outputs agree: the layers after this module hide its difference"""
    note: str = ""
    """why own against inherited could not be told (the module cannot run alone)"""

    def describe(self) -> str:
        where = f"`{self.torch_module or '(root)'}` ({self.kind})"
        if self.other_module != self.torch_module or self.other_kind != self.kind:
            where += f" / `{self.other_module or '(root)'}` ({self.other_kind})"
        c = self.output.comparison
        text = f"{where}: max abs {c.max_abs:.2e}, rel L2 {c.rel_l2:.2e} (gate {c.tolerance.atol:.1e} / {c.tolerance.max_rel_l2:.1e})"
        if self.buffer:
            text = (f"{where}: its {self.buffer.rsplit('.', 1)[-1]} after a training-mode pass differs by max abs "
                    f"{c.max_abs:.2e}, rel L2 {c.rel_l2:.2e} (gate {c.tolerance.atol:.1e} / {c.tolerance.max_rel_l2:.1e}); "
                    f"against float64: PyTorch {self.err_torch:.1e}, {self.other_label} {self.err_other:.1e} (rel L2)")
            text += f": {self.blame} is wrong" if self.blame != "neither" else ""
        elif self.own:
            text += (f"; given PyTorch's inputs, it still differs: its own error. Against float64: PyTorch "
                     f"{self.err_torch:.1e}, {self.other_label} {self.err_other:.1e} (rel L2)")
            text += f": {self.blame} is wrong" if self.blame != "neither" else ": neither side is clearly farther"
            if self.different_function:
                text += f"; {self.blame if self.blame != 'neither' else 'one side'} computes a different function"
        elif self.note:
            text += f"; own or inherited is not known: {self.note}"
        else:
            text += "; given PyTorch's inputs it matches: the difference was inherited (accumulated rounding)"
        if self.hidden:
            text += "; the model's outputs still agree (the layers after it hide the difference)"
        if self.first_seen:
            text += f"; its submodules agree, but `{self.first_seen}` is fed a different input (the code between them)"
        if self.settings:
            text += "; settings: " + "; ".join(s.describe() for s in self.settings)
        return text

    def to_dict(self) -> dict:
        return {"input": self.input_index, "module": {"torch": self.torch_module, "other": self.other_module},
                "call": self.call, "kind": {"torch": self.kind, "other": self.other_kind}, "own": self.own,
                "error": "own" if self.own else "unknown" if self.note else "inherited", "blame": self.blame,
                "err_vs_float64": {"torch": self.err_torch, "other": self.err_other},
                "different_function": self.different_function, "first_seen": self.first_seen, "buffer": self.buffer,
                "hidden": self.hidden, "note": self.note,
                "settings": [s.to_dict() for s in self.settings], "output": self.output.comparison.to_dict(),
                "message": self.describe()}


class Localiser:
    """The call trees of one input on three runs (PyTorch float32, the other side, PyTorch float64), the module
    pairing, and replays of single modules on the other side and in float64."""

    def __init__(self, t: CallTree, o: CallTree, r: CallTree, to_other: dict[str, str], replay_other: Replay,
                 replay_ref: Replay, settings: dict[str, list[SettingDifference]], other_label: str = "MindSpore",
                 gates: Gates = DEFAULT_GATES):
        self.t, self.o, self.r, self.to_other = t, o, r, to_other
        self.replay_other, self.replay_ref = replay_other, replay_ref
        self.settings, self.other_label, self.gates = settings, other_label, gates
        self.replay_problem = ""

    def partner(self, c: Call) -> Call | None:
        p = self.to_other.get(c.path)
        return None if p is None else self.o.get(call_key(p, c.index))

    def judged(self, c: Call) -> Judged | None:
        """The call's outputs against its partner's, or None if it has no partner or no float64 record."""
        p, ref = self.partner(c), self.r.get(c.key)
        if p is None or ref is None:
            return None
        return judge(c.key, c.outputs, p.outputs, ref.outputs, "pair_module", self.gates)

    def single_step(self, c: Call) -> tuple[Judged, float, float] | None:
        """Both sides' module on PyTorch's recorded inputs, against the float64 module on the same inputs; None
        (the reason in ``replay_problem``) when a module cannot be run alone on them (it takes keyword arguments,
        or state its caller sets); a missing kernel still stops the run."""
        try:
            out_o = self.replay_other(self.to_other[c.path], c.inputs)
            out_r = self.replay_ref(c.path, c.inputs)
        except EnvironmentRefused:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the user's module alone means: no single step
            self.replay_problem = f"`{c.key}` cannot run alone on its recorded inputs ({type_and_first_sentence(e)})"
            return None
        j = judge(c.key, c.outputs, out_o, out_r, "pair_module", self.gates)
        return j, j.err_torch, j.err_other

    def hidden(self, limit: int = MAX_HIDDEN_STEPS) -> tuple[Call, Judged] | None:
        """When the outputs agree: the first call, in data-flow order, whose outputs differ beyond their gate
        and whose single step says the error is its own (a difference later layers hide, e.g. under a pooling);
        at most ``limit`` single steps are run."""
        for c in sorted(self.t.calls, key=lambda c: c.finished):
            j = self.judged(c)
            if j is None or j.passed:
                continue
            limit -= 1
            step = self.single_step(c)
            if step is not None and not step[0].passed:
                return c, j
            if limit == 0:
                break
        return None

    def first_divergence(self, input_index: int = 0) -> Divergence | None:
        """The first divergence, or None when the outputs agree and no module has an own error (see the module
        docstring for the walk)."""
        node = self.t.root()
        if node is None or (root := self.judged(node)) is None:
            return None
        hidden = root.passed
        if hidden:
            found = self.hidden()
            if found is None:
                return None
            node, root = found
        verdict = root
        while True:
            nxt = None
            for child in self.t.children(node.key):
                j = self.judged(child)
                if j is not None and not j.passed:
                    nxt = (child, j)
                    break
            if nxt is None:
                break
            node, verdict = nxt
        first = self.single_step(node)
        if first is None:  # no single step: where, but not whose
            partner = self.partner(node)
            return Divergence(node.path, self.to_other[node.path], node.index, node.kind,
                              partner.kind if partner else "?", verdict, False, "neither", verdict.err_torch,
                              verdict.err_other, False, self.settings.get(node.path, []), "", self.other_label,
                              input_index, hidden=hidden, note=self.replay_problem)
        step, et, eo = first
        first_seen = ""
        chain = node
        while step.passed and chain.parent is not None:  # inherited: replay the enclosing calls, innermost first
            parent = self.t.get(chain.parent)
            if parent is None or parent.path not in self.to_other:
                break
            up = self.single_step(parent)
            if up is None:
                break
            if not up[0].passed:
                step, et, eo = up
                first_seen, node, verdict = node.key, parent, self.judged(parent) or verdict
                break
            chain = parent
        partner = self.partner(node)
        who = blame(et, eo, self.other_label) if not step.passed else "neither"
        own_err = eo if who == self.other_label else et
        settings = self.settings.get(node.path, [])
        changed = not step.passed and (bool(settings) or (who != "neither" and different_function(own_err, self.gates)))
        return Divergence(node.path, self.to_other[node.path], node.index, node.kind,
                          partner.kind if partner else "?", verdict, not step.passed, who, et, eo, changed,
                          settings, first_seen, self.other_label, input_index, hidden=hidden)

    def depth(self) -> list[dict]:
        """Each paired call in the order calls ended (data flow: a leaf before its block): its nesting depth and
        each side's error against float64 (the figures of the depth plot)."""
        rows = []
        for c in sorted(self.t.calls, key=lambda c: c.finished):
            j = self.judged(c)
            if j is None:
                continue
            rows.append({"module": c.key, "kind": c.kind, "depth": c.key.count(".") + (c.path != ""),
                         "err_torch": j.err_torch, "err_other": j.err_other, "passed": j.passed})
        return rows
