"""ddpm_core.weights.naming: the parameter table itself (its agreement with both twins' live parameters is
tested in tests/twins/test_unet.py::test_parameter_table_matches_live_parameters)."""
import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_UNET, UnetConfig
from ddpm_core.weights.mapping import LAYOUTS, map_weights
from ddpm_core.weights.naming import (
    GROUP_NORM_RENAMES,
    parameter_count,
    torch_to_ms_names,
    unet_parameters,
    unet_tensors,
    unet_weight_map,
)

CONFIGS = [
    TUTORIAL_UNET,
    UnetConfig(dim=8, channels=3, dim_mults=(1, 2)),
    UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 4, 8), with_time_emb=False),
    UnetConfig(dim=16, channels=3, dim_mults=(1, 2, 2), use_convnext=False, resnet_block_groups=8),
]


def test_tutorial_parameter_count():
    assert parameter_count(TUTORIAL_UNET) == 2_992_180


def test_tutorial_table_size_and_ends():
    specs = unet_parameters(TUTORIAL_UNET)
    assert len(specs) == 166
    assert specs[0].torch_name == "init_conv.weight" and specs[0].shape == (18, 1, 7, 7)
    assert specs[1].torch_name == "init_conv.bias"
    assert specs[-1].torch_name == "final_conv.1.weight" and specs[-1].shape == (1, 28, 1, 1)


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_names_unique_and_only_group_norm_renamed(cfg):
    specs = unet_parameters(cfg)
    assert len({s.torch_name for s in specs}) == len(specs)
    assert len({s.ms_name for s in specs}) == len(specs)
    for s in specs:
        if s.module == "GroupNorm":
            prefix, leaf = s.torch_name.rsplit(".", 1)
            assert s.ms_name == f"{prefix}.{GROUP_NORM_RENAMES[leaf]}"
        else:
            assert s.ms_name == s.torch_name
        assert s.layout in LAYOUTS


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_registration_order_and_structure(cfg):
    tops = [s.torch_name.split(".", 1)[0] for s in unet_parameters(cfg)]
    order = [t for i, t in enumerate(tops) if i == 0 or tops[i - 1] != t]
    expected = ["init_conv", "time_mlp", "downs", "ups", "mid_block1", "mid_attn", "mid_block2", "final_conv"]
    if not cfg.with_time_emb:
        expected.remove("time_mlp")
    if len(cfg.dim_mults) == 1:
        expected.remove("ups")
    assert order == expected
    names = {s.torch_name for s in unet_parameters(cfg)}
    levels = len(cfg.dim_mults)
    # every down stage but the last downsamples; every up stage upsamples (the tutorial's quirk)
    assert {f"downs.{i}.3.weight" for i in range(levels - 1)} <= names
    assert f"downs.{levels - 1}.3.weight" not in names
    assert {f"ups.{i}.3.weight" for i in range(levels - 1)} <= names
    assert not any(n.endswith(".mlp.1.weight") and "final_conv" in n for n in names)
    assert any(".mlp.1.weight" in n for n in names) == cfg.with_time_emb


def test_only_init_conv_and_attention_outputs_carry_conv_bias():
    conv_biases = sorted(s.torch_name for s in unet_parameters(TUTORIAL_UNET)
                         if s.module in ("Conv2d", "ConvTranspose2d") and s.torch_name.endswith(".bias"))
    assert conv_biases[0] == "downs.0.2.fn.fn.to_out.0.bias"
    assert "init_conv.bias" in conv_biases and "mid_attn.fn.fn.to_out.bias" in conv_biases
    assert all(n == "init_conv.bias" or ".to_out" in n for n in conv_biases)
    assert len(conv_biases) == 1 + 3 + 2 + 1  # init, 3 down + 2 up linear attentions, mid attention


def test_layouts_conv_transpose_is_in_out():
    specs = {s.torch_name: s for s in unet_parameters(TUTORIAL_UNET)}
    up = specs["ups.0.3.weight"]
    assert up.module == "ConvTranspose2d" and up.shape == (56, 56, 4, 4)
    assert specs["time_mlp.1.weight"].shape == (112, 28)  # Linear/Dense: (out, in) in both
    assert specs["downs.0.0.ds_conv.weight"].shape == (18, 1, 7, 7)  # depthwise: (out, in / groups, k, k)
    assert specs["downs.0.2.fn.fn.to_out.1.g"].shape == (1, 28, 1, 1)


def test_the_weight_map_round_trips_bit_for_bit():
    cfg = CONFIGS[1]
    rng = np.random.default_rng(0)
    state = {s.torch_name: rng.standard_normal(s.shape).astype(np.float32) for s in unet_parameters(cfg)}
    wm = unet_weight_map(cfg)
    ms_state = wm.to_ms(state)
    assert list(ms_state) == [s.ms_name for s in unet_parameters(cfg)]  # the model's order
    back = wm.to_torch(ms_state)
    assert list(back) == list(state) and all(back[n].tobytes() == state[n].tobytes() for n in state)


# The table is the engine's explicit map: needed as the contract, and sufficient (it gives exactly the table).
MAP_CONFIGS = [TUTORIAL_UNET, UnetConfig(dim=8, channels=3, dim_mults=(1, 2), use_convnext=True),
               UnetConfig(dim=8, channels=3, dim_mults=(1, 2), use_convnext=False)]


@pytest.mark.parametrize("cfg", MAP_CONFIGS, ids=str)
def test_the_engine_with_the_table_as_its_map_gives_exactly_the_table(cfg):
    wm = unet_weight_map(cfg)
    assert wm.problems == [] and wm.dropped == []
    assert wm.ms_name() == torch_to_ms_names(cfg)
    assert list(wm.ms_name()) == list(torch_to_ms_names(cfg))  # and in the table's order
    assert {e.how for e in wm.entries} == {"user"} and {e.layout for e in wm.entries} == {"same"}


@pytest.mark.parametrize("cfg", MAP_CONFIGS, ids=str)
def test_rules_alone_recover_every_name_of_the_table(cfg):
    """The measured fact docs/weights.md states: without the table, the engine's rules (identical names, then
    GroupNorm's weight/bias -> gamma/beta by its kind) recover all of the U-Net's names; structure is not needed."""
    wm = map_weights(unet_tensors(cfg, "torch"), unet_tensors(cfg, "ms"))
    assert wm.problems == [] and wm.ms_name() == torch_to_ms_names(cfg)
    renamed = sum(s.module == "GroupNorm" for s in unet_parameters(cfg))
    assert wm.counts() == {"identical": len(wm.entries) - renamed, "rule": renamed, "dropped": 0}
    if cfg == TUTORIAL_UNET:
        assert wm.counts() == {"identical": 102, "rule": 64, "dropped": 0}


def test_a_table_entry_that_disagrees_with_the_rules_is_what_the_engine_follows():
    """The table is final: an entry the rules would not choose (a plausible table bug) is followed, and the
    strict map stays clean, so the table-equality test above is what catches it, not the engine."""
    cfg = MAP_CONFIGS[1]
    table = {s.torch_name: (s.ms_name, s.layout) for s in unet_parameters(cfg)}
    a, b = "downs.0.0.net.0.weight", "downs.0.0.net.0.bias"
    table[a], table[b] = table[b], table[a]
    wm = map_weights(unet_tensors(cfg, "torch"), unet_tensors(cfg, "ms"), name_map=table)
    assert wm.problems == [] and wm.ms_name()[a] == "downs.0.0.net.0.beta"
    assert wm.ms_name() != torch_to_ms_names(cfg)


def test_torch_to_ms_names_map():
    m = torch_to_ms_names(TUTORIAL_UNET)
    assert m["downs.0.0.net.0.weight"] == "downs.0.0.net.0.gamma"
    assert m["mid_attn.fn.norm.bias"] == "mid_attn.fn.norm.beta"
    assert m["downs.0.2.fn.fn.to_out.1.g"] == "downs.0.2.fn.fn.to_out.1.g"
    assert m["ups.1.3.weight"] == "ups.1.3.weight"
    assert len(m) == len(set(m.values())) == 166


def test_parameter_count_is_sum_of_shapes():
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2), with_time_emb=False)
    assert parameter_count(cfg) == sum(int(np.prod(s.shape)) for s in unet_parameters(cfg))
    assert parameter_count(cfg) < parameter_count(UnetConfig(dim=8, channels=1, dim_mults=(1, 2)))
