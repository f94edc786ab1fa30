"""Weights that map themselves, and modules paired through them (ddpm_core.weights.mapping / parity.pair.modules): framework-free,
on hand-made name tables, so each rule is shown to map what it should and to refuse what it should not."""
from __future__ import annotations

import numpy as np
import pytest

from ddpm_core.errors import WeightsError
from ddpm_core.weights.mapping import Tensor, map_weights
from parity.pair.modules import ModuleInfo, pair_modules


def T(name: str, shape: tuple[int, ...], kind: str) -> Tensor:
    return Tensor(name, shape, name.rsplit(".", 1)[0] if "." in name else "", kind)


TORCH = [T("conv.weight", (4, 3, 3, 3), "Conv2d"),
         T("bn.weight", (4,), "BatchNorm2d"), T("bn.bias", (4,), "BatchNorm2d"),
         T("bn.running_mean", (4,), "BatchNorm2d"), T("bn.running_var", (4,), "BatchNorm2d"),
         T("bn.num_batches_tracked", (), "BatchNorm2d"),
         T("emb.weight", (10, 4), "Embedding"), T("tconv.weight", (4, 4, 3), "Conv1d"),
         T("fc.weight", (2, 4), "Linear"), T("fc.bias", (2,), "Linear")]
MS = [T("conv.weight", (4, 3, 3, 3), "Conv2d"),
      T("bn.gamma", (4,), "BatchNorm2d"), T("bn.beta", (4,), "BatchNorm2d"),
      T("bn.moving_mean", (4,), "BatchNorm2d"), T("bn.moving_variance", (4,), "BatchNorm2d"),
      T("emb.embedding_table", (10, 4), "Embedding"), T("tconv.weight", (4, 4, 1, 3), "Conv1d"),
      T("classifier.weight", (2, 4), "Linear"), T("classifier.bias", (2,), "Linear")]


def test_rules_then_structure_map_every_tensor_and_convert_exactly() -> None:
    wm = map_weights(TORCH, MS)
    assert wm.problems == []
    how = {e.torch: (e.ms, e.how) for e in wm.entries}
    assert how["bn.weight"] == ("bn.gamma", "rule") and how["bn.running_var"] == ("bn.moving_variance", "rule")
    assert how["emb.weight"] == ("emb.embedding_table", "rule")
    assert how["fc.weight"] == ("classifier.weight", "structure")  # a renamed module, found by order and shapes
    assert [n for n, _ in wm.dropped] == ["bn.num_batches_tracked"]
    rng = np.random.default_rng(0)
    state = {t.name: rng.standard_normal(t.shape).astype(np.float32) for t in TORCH}
    ms_state = wm.to_ms(state)
    assert ms_state["tconv.weight"].shape == (4, 4, 1, 3)  # Conv1d's layout
    back = wm.to_torch(ms_state)
    assert all(np.array_equal(back[n], state[n]) for n in back) and len(back) == len(TORCH) - 1


def test_every_unmapped_tensor_is_one_line() -> None:
    wm = map_weights(TORCH + [T("extra.weight", (3,), "Linear")], MS + [T("head.weight", (5, 5), "Linear")])
    assert wm.problems == ["PyTorch tensor 'extra.weight' (3,) (Linear) maps to no MindSpore parameter",
                           "MindSpore parameter 'head.weight' (5, 5) (Linear) has no PyTorch source"]
    with pytest.raises(WeightsError) as e:
        wm.check()
    assert e.value.problems == wm.problems


def test_the_users_map_comes_first_and_a_target_claimed_twice_is_a_problem() -> None:
    wm = map_weights(TORCH, MS, {"fc": "classifier"})
    assert {e.torch: e.how for e in wm.entries}["fc.weight"] == "user" and not wm.problems
    twice = map_weights(TORCH, MS, {"bn.weight": "bn.gamma", "bn.bias": "bn.gamma"})
    assert "MindSpore parameter 'bn.gamma' is mapped two ways: from 'bn.weight' and from 'bn.bias'" in twice.problems
    assert "MindSpore parameter 'bn.beta' (4,) (BatchNorm2d) has no PyTorch source" in twice.problems
    misfit = map_weights(TORCH, MS, {"fc.bias": "classifier.weight"})
    assert any("'fc.bias' (2,) does not fit 'classifier.weight' (2, 4)" in p for p in misfit.problems)
    bad = map_weights(TORCH, MS, {"nothing": "classifier", "fc.weight": ("classifier.weight", "sideways")})
    assert any("'nothing' is neither" in p for p in bad.problems) and any("unknown layout" in p for p in bad.problems)


def test_a_transposed_layout_is_exact_both_ways() -> None:
    wm = map_weights([T("fc.weight", (3, 3), "Linear")], [T("fc.weight", (3, 3), "Linear")],
                     {"fc.weight": ("fc.weight", "transpose")})
    w = np.arange(9, dtype=np.float32).reshape(3, 3)
    assert np.array_equal(wm.to_ms({"fc.weight": w})["fc.weight"], w.T)
    assert np.array_equal(wm.to_torch(wm.to_ms({"fc.weight": w}))["fc.weight"], w)


def test_modules_pair_through_their_weights_and_parameterless_ones_by_position() -> None:
    torch_t = [T("stem.0.weight", (4, 3), "Linear"), T("body.fc.weight", (4, 4), "Linear")]
    ms_t = [T("first.weight", (4, 3), "Linear"), T("layers.0.dense.weight", (4, 4), "Linear")]
    wm = map_weights(torch_t, ms_t)
    tree_t = [ModuleInfo("", "Net", ("stem", "act", "body", "pool"), ()),
              ModuleInfo("stem", "Sequential", ("stem.0",), ()), ModuleInfo("stem.0", "Linear", (), ("stem.0.weight",)),
              ModuleInfo("act", "ReLU", (), ()), ModuleInfo("body", "Block", ("body.fc",), ()),
              ModuleInfo("body.fc", "Linear", (), ("body.fc.weight",)), ModuleInfo("pool", "AvgPool2d", (), ())]
    tree_m = [ModuleInfo("", "Net", ("first", "relu", "layers", "gap"), ()),
              ModuleInfo("first", "Linear", (), ("first.weight",)), ModuleInfo("relu", "ReLU", (), ()),
              ModuleInfo("layers", "CellList", ("layers.0",), ()), ModuleInfo("layers.0", "Block", ("layers.0.dense",), ()),
              ModuleInfo("layers.0.dense", "Linear", (), ("layers.0.dense.weight",)), ModuleInfo("gap", "Mean", (), ())]
    pairs = pair_modules(tree_t, tree_m, wm)
    assert pairs.to_ms["stem.0"] == "first" and "stem" in pairs.unpaired_torch  # the owners pair, not the wrapper
    assert pairs.to_ms["body.fc"] == "layers.0.dense" and pairs.to_ms["body"] == "layers.0"  # Block with Block
    assert "layers" in pairs.unpaired_ms
    assert pairs.to_ms["act"] == "relu" and pairs.to_ms["pool"] == "gap"  # between paired neighbours, by position
    assert pairs.to_ms[""] == ""


def test_children_registered_in_another_order_still_pair_the_parameterless_ones_between_them() -> None:
    """diffusers registers ``up_blocks`` before ``mid_block``, mindone after: the paired children in the same order
    on both sides still bound the runs, so the parameterless ``time_proj`` and ``act`` pair by position."""
    names = ("conv_in", "up", "mid", "out")
    tensors = [T(f"{n}.weight", (i + 2, 2), "Linear") for i, n in enumerate(names)]
    wm = map_weights(tensors, tensors)

    def tree(order: tuple[str, ...]) -> list[ModuleInfo]:
        return [ModuleInfo("", "UNet", order, ()), ModuleInfo("time_proj", "Timesteps", (), ()),
                ModuleInfo("act", "SiLU", (), ()), *[ModuleInfo(n, "Linear", (), (f"{n}.weight",)) for n in names]]

    pairs = pair_modules(tree(("conv_in", "time_proj", "up", "mid", "act", "out")),
                         tree(("conv_in", "time_proj", "mid", "up", "act", "out")), wm)
    assert pairs.to_ms["time_proj"] == "time_proj" and pairs.to_ms["act"] == "act"
    assert not pairs.unpaired_torch and not pairs.unpaired_ms
