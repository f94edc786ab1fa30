"""One training-mode pass of a pair: what eval-mode comparisons cannot see (BatchNorm's batch statistics and the
running statistics it updates, and so a momentum convention).

Rules it keeps: the pass runs on the first input whose eval-mode outputs agree (input 0 if none does), so it
tests what eval mode cannot; it runs on PyTorch float32, the other side and the float64 arbiter with dropout off (so it
is deterministic) and every call recorded; its outputs are judged and localised like an input's; a buffer that
differs is the owning module's own difference only when that module's inputs still agree (else it is inherited
from a difference upstream and only counted); every side's weights and buffers are restored afterwards, whatever
happens; running (``pass_on``) and judging (``judge_pass``) are apart, so two hosts judge PyTorch's recorded pass
with the same code.
"""
from __future__ import annotations

from typing import Any

from ddpm_core.weights.mapping import WeightMap
from parity.pair.judge import Gates, blame, different_function, judge
from parity.pair.localise import Divergence, Localiser, Replay
from parity.pair.modules import ModulePairs
from parity.pair.report import TrainPass
from parity.pair.settings import SettingDifference

Passed = tuple  # (outputs, call tree, floating buffers after the pass by PyTorch name): one side's pass


def pass_on(side: Any, args: tuple, buffers: Any) -> Passed:
    """``side``'s training-mode pass with every call recorded, and ``buffers(side)``, its running statistics after
    it under PyTorch's names; the caller holds the side in training mode and restores its state."""
    out, tree = side.forward(args, record=True)
    return out, tree, buffers(side)


def judge_pass(t: Passed, o: Passed, r: Passed, replay_other: Replay, replay_ref: Replay, pairs: ModulePairs,
               wm: WeightMap, kinds: dict[str, str], buffers: list[str], index: int,
               settings: dict[str, list[SettingDifference]], other_label: str, gates: Gates) -> TrainPass:
    """The training-mode pass's verdict from PyTorch float32's (``t``), the other side's (``o``) and the arbiter's
    (``r``) passes, localised with ``replay_other`` / ``replay_ref`` (single steps in training mode): the one
    verdict, whether PyTorch's passes ran here or were recorded on another host (``parity.pair.golden``)."""
    (out_t, tree_t, st), (out_o, tree_o, so), (out_r, tree_r, sr) = t, o, r
    output = judge("training-mode output", out_t, out_o, out_r, "pair_output", gates)
    loc = Localiser(tree_t, tree_o, tree_r, pairs.to_ms, replay_other, replay_ref, settings, other_label, gates)
    div = loc.first_divergence(index)
    own: list[Divergence] = []
    inherited: list[str] = []
    mapped = wm.ms_name()
    for name in buffers:
        if name not in mapped:
            continue
        j = judge(name, [st[name]], [so[name]], [sr[name]], "pair_module", gates)
        if j.passed:
            continue
        owner = name.rsplit(".", 1)[0] if "." in name else ""
        call_t, call_r = tree_t.get(owner), tree_r.get(owner)
        call_o = loc.partner(call_t) if call_t is not None else None
        if call_t is None or call_o is None or call_r is None or \
                not judge(owner, call_t.inputs, call_o.inputs, call_r.inputs, "pair_module", gates).passed:
            inherited.append(name)
            continue
        who = blame(j.err_torch, j.err_other, other_label)
        err = j.err_other if who == other_label else j.err_torch
        diffs = settings.get(owner, [])
        own.append(Divergence(owner, pairs.to_ms.get(owner, "?"), 0, kinds.get(owner, "?"), call_o.kind, j, True, who,
                              j.err_torch, j.err_other,
                              bool(diffs) or (who != "neither" and different_function(err, gates)), diffs, "",
                              other_label, index, name))
    return TrainPass(output, div, own, inherited, index)


def training_pass(side_t: Any, side_o: Any, ref: Any, wm: WeightMap, pairs: ModulePairs, args: tuple, index: int,
                  settings: dict[str, list[SettingDifference]], gates: Gates) -> TrainPass:
    """The training-mode pass on ``args``, input ``index`` (see the module docstring), judged by ``judge_pass``."""
    start = side_t.state()
    buffers = side_t.buffers()
    try:
        with side_t.train_mode(), side_o.train_mode(), ref.train_mode():
            t = pass_on(side_t, args, lambda s: s.state())
            o = pass_on(side_o, args, lambda s: wm.to_torch(s.state()))
            r = pass_on(ref, args, lambda s: s.state())
            return judge_pass(t, o, r, side_o.run_module, ref.run_module, pairs, wm,
                              {m.path: m.kind for m in side_t.tree()}, buffers, index, settings, side_o.label, gates)
    finally:
        side_t.load(start)
        side_o.load(wm.to_ms(start))
        ref.load(start)
