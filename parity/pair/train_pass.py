"""One training-mode pass of a pair: what eval-mode comparisons cannot see (BatchNorm's batch statistics and the
running statistics it updates, and so a momentum convention).

Rules it keeps: the pass runs on the first input whose eval-mode outputs agree (input 0 if none does), so it
tests what eval mode cannot; it runs on PyTorch float32, the other side and the float64 arbiter with dropout off (so it
is deterministic) and every call recorded; its outputs are judged and localised like an input's; a buffer that
differs is the owning module's own difference only when that module's inputs still agree (else it is inherited
from a difference upstream and only counted); every side's weights and buffers are restored afterwards, whatever
happens.
"""
from __future__ import annotations

from typing import Any

from parity.pair.judge import Gates, blame, different_function, judge
from parity.pair.localise import Divergence, Localiser
from ddpm_core.weights.mapping import WeightMap
from parity.pair.modules import ModulePairs
from parity.pair.report import TrainPass
from parity.pair.settings import SettingDifference


def training_pass(side_t: Any, side_o: Any, ref: Any, wm: WeightMap, pairs: ModulePairs, args: tuple, index: int,
                  settings: dict[str, list[SettingDifference]], gates: Gates) -> TrainPass:
    """The training-mode pass on ``args``, input ``index`` (see the module docstring)."""
    start = side_t.state()
    kinds = {m.path: m.kind for m in side_t.tree()}
    try:
        with side_t.train_mode(), side_o.train_mode(), ref.train_mode():
            out_t, tree_t = side_t.forward(args, record=True)
            out_o, tree_o = side_o.forward(args, record=True)
            out_r, tree_r = ref.forward(args, record=True)
            st, so, sr = side_t.state(), wm.to_torch(side_o.state()), ref.state()
            output = judge("training-mode output", out_t, out_o, out_r, "pair_output", gates)
            loc = Localiser(tree_t, tree_o, tree_r, pairs.to_ms, side_o.run_module, ref.run_module, settings,
                            side_o.label, gates)
            div = loc.first_divergence(index)
    finally:
        side_t.load(start)
        side_o.load(wm.to_ms(start))
        ref.load(start)
    own: list[Divergence] = []
    inherited: list[str] = []
    mapped = wm.ms_name()
    for name in side_t.buffers():
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
        who = blame(j.err_torch, j.err_other, side_o.label)
        err = j.err_other if who == side_o.label else j.err_torch
        diffs = settings.get(owner, [])
        own.append(Divergence(owner, pairs.to_ms.get(owner, "?"), 0, kinds.get(owner, "?"), call_o.kind, j, True, who,
                              j.err_torch, j.err_other,
                              bool(diffs) or (who != "neither" and different_function(err, gates)), diffs, "",
                              side_o.label, index, name))
    return TrainPass(output, div, own, inherited, index)
