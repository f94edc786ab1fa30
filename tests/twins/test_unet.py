"""The U-Net of each twin, written once and run for both (the ``twin`` fixture): output shapes,
clear errors on bad configurations and inputs, and the parameter table against live parameters."""
import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_UNET, UnetConfig
from ddpm_core.weights.naming import parameter_count, unet_parameters
from tests.host import available, framework, needs

if available("mindspore"):
    import ddpm_ms

SHAPE_CASES = [
    # (config, (batch, height, width)); small, to keep MindSpore's PyNative mode fast
    (UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), (2, 4, 8)),
    (UnetConfig(dim=8, channels=3, dim_mults=(1, 2, 4)), (2, 8, 8)),
    (UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 2, 2)), (1, 8, 8)),
    (UnetConfig(dim=8, channels=3, dim_mults=(1, 2), use_convnext=False, resnet_block_groups=4), (2, 8, 8)),
    (UnetConfig(dim=16, channels=1, dim_mults=(1, 2, 4), use_convnext=False, resnet_block_groups=8), (2, 4, 4)),
    (UnetConfig(dim=8, channels=3, dim_mults=(1, 2), with_time_emb=False), (2, 4, 4)),
    (UnetConfig(dim=8, channels=1, out_dim=2, init_dim=4, dim_mults=(1, 2)), (2, 4, 4)),
]


def case_id(case):
    cfg, (b, h, w) = case
    block = "convnext" if cfg.use_convnext else f"resnet{cfg.resnet_block_groups}"
    return f"mults{''.join(map(str, cfg.dim_mults))}-c{cfg.channels}-{block}-temb{int(cfg.with_time_emb)}-{h}x{w}"


@pytest.mark.parametrize("case", SHAPE_CASES, ids=case_id)
def test_output_shape(twin, case):
    cfg, (b, h, w) = case
    model = twin.build(cfg)
    x = np.random.default_rng(0).standard_normal((b, cfg.channels, h, w)).astype(np.float32)
    t = np.arange(b, dtype=np.int32) * 50 if cfg.with_time_emb else None
    y = twin.forward(model, x, t)
    assert y.shape == (b, cfg.resolved_out_dim, h, w)
    assert y.dtype == np.float32
    assert np.all(np.isfinite(y)) and y.std() > 0


def test_time_embedding_changes_the_output(twin):
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    model = twin.build(cfg)
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    x2 = np.concatenate([x, x])
    y = twin.forward(model, x2, np.array([0, 150], np.int32))
    assert np.abs(y[0] - y[1]).max() > 1e-4
    # int64 timesteps are accepted and mean the same as int32
    np.testing.assert_array_equal(twin.forward(model, x2, np.array([0, 150], np.int64)), y)


def test_every_up_stage_upsamples_and_the_first_skip_is_unused(twin, monkeypatch):
    """The tutorial's quirk, reproduced: ups concatenate skips h[L-1] .. h[1]; the full-size h[0] never."""
    module, attr = (framework("torch"), "cat") if twin.name == "torch" else (framework("mindspore.ops"), "concat")
    original = getattr(module, attr)
    seen = []

    def recording(tensors, *args, **kwargs):
        if len(tensors[1].shape) == 4:
            seen.append(tuple(tensors[1].shape[-2:]))
        return original(tensors, *args, **kwargs)

    monkeypatch.setattr(module, attr, recording)
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 4))
    model = twin.build(cfg)
    y = twin.forward(model, np.zeros((1, 1, 16, 16), np.float32), np.array([3], np.int32))
    assert y.shape == (1, 1, 16, 16)
    assert seen == [(4, 4), (8, 8)]  # h[2], h[1]; never h[0] at 16x16


ERROR_MODEL = UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 4))


@pytest.mark.parametrize(
    "x_shape, x_dtype, t, match",
    [
        ((2, 1, 6, 6), np.float32, np.array([1, 2], np.int32), "image size 6x6 is not a multiple of 4"),
        ((2, 1, 8, 10), np.float32, np.array([1, 2], np.int32), "image size 8x10 is not a multiple of 4"),
        ((2, 3, 8, 8), np.float32, np.array([1, 2], np.int32), "x has 3 channels but the model was built with channels=1"),
        ((2, 1, 8, 8), np.float32, np.array([1.0, 2.0], np.float32), "timesteps t must be an integer tensor"),
        ((2, 1, 8, 8), np.float32, np.array([True, False]), "timesteps t must be an integer tensor"),
        ((2, 1, 8, 8), np.float64, np.array([1, 2], np.int32), "x is .*[Ff]loat64.* but the model's weights are .*[Ff]loat32"),
        ((2, 1, 8, 8), np.float32, np.array([[1], [2]], np.int32), r"t must have shape \(batch,\) = \(2,\), got \(2, 1\)"),
        ((2, 1, 8, 8), np.float32, np.array([1, 2, 3], np.int32), r"t must have shape \(batch,\) = \(2,\), got \(3,\)"),
        ((2, 1, 8, 8), np.float32, None, "this model has a time embedding: pass timesteps t"),
        ((1, 8, 8), np.float32, np.array([1], np.int32), r"x must be \(batch, channels, height, width\)"),
    ],
    ids=["size", "size-nonsquare", "channels", "float-t", "bool-t", "float64-x", "t-2d", "t-batch", "t-missing", "x-3d"],
)
def test_bad_input_raises_clear_value_error(twin, x_shape, x_dtype, t, match):
    model = twin.build(ERROR_MODEL)
    x = np.zeros(x_shape, x_dtype)
    with pytest.raises(ValueError, match=match):
        twin.forward(model, x, t)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 8, "dim_mults": (2, 4)}, r"dim_mults\[0\] must be 1"),
        ({"dim": 12, "dim_mults": (1, 3), "use_convnext": False, "resnet_block_groups": 8},
         r"resnet_block_groups=8 must divide every block width; it does not divide \[12, 36\]"),
        ({"dim": 8, "channels": 0}, "channels must be a positive integer"),
        ({"dim": 8, "dim_mults": ()}, "dim_mults must name at least one level"),
    ],
    ids=["dim_mults0", "resnet-groups", "channels0", "no-levels"],
)
def test_bad_config_raises_before_building(twin, kwargs, match):
    with pytest.raises(ValueError, match=match):
        twin.Unet(**kwargs)


TABLE_CONFIGS = [
    TUTORIAL_UNET,
    UnetConfig(dim=8, channels=3, dim_mults=(1, 2)),
    UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 4, 8)),
    UnetConfig(dim=10, channels=2, dim_mults=(1, 3), convnext_mult=3, init_dim=5, out_dim=4),
    UnetConfig(dim=8, channels=1, dim_mults=(1, 2, 4), with_time_emb=False),
    UnetConfig(dim=16, channels=3, dim_mults=(1, 2, 4), use_convnext=False, resnet_block_groups=8),
    UnetConfig(dim=8, channels=1, dim_mults=(1, 2), use_convnext=False, resnet_block_groups=2, with_time_emb=False),
    UnetConfig(dim=8, channels=1, dim_mults=(1,)),
]


@pytest.mark.parametrize("cfg", TABLE_CONFIGS, ids=lambda c: f"{c.dim}-{c.dim_mults}-{c.use_convnext}-{c.with_time_emb}")
def test_parameter_table_matches_live_parameters(twin, cfg):
    """ddpm_core.weights.naming lists exactly this twin's parameters: names in registration order, and shapes."""
    live = twin.parameters(twin.build(cfg))
    assert live == twin.table_names(cfg)


def test_tutorial_parameter_count(twin):
    live = twin.parameters(twin.build(TUTORIAL_UNET))
    assert sum(int(np.prod(s)) for _, s in live) == parameter_count(TUTORIAL_UNET) == 2_992_180


@needs("mindspore")
def test_ms_parameter_names_are_structural():
    model = ddpm_ms.Unet(dim=8, channels=1, dim_mults=(1, 2, 4))
    names = [p.name for p in model.get_parameters()]
    assert names == [n for n, _ in model.parameters_and_names()]
    assert len(set(names)) == len(names)
    assert "downs.0.0.mlp.1.weight" in names and "ups.0.0.mlp.1.weight" in names
    assert names == [s.ms_name for s in unet_parameters(model.config)]


@needs("mindspore")
@pytest.mark.parametrize("cfg", TABLE_CONFIGS[:3], ids=lambda c: f"{c.dim}-{c.dim_mults}-{c.use_convnext}")
def test_ms_composed_ops_keep_every_parameter_name_and_shape(cfg):
    """``composed_ops`` changes how GELU and GroupNorm compute, never what is stored: the same table."""
    model = ddpm_ms.Unet.from_config(cfg, composed_ops=True)
    assert [(p.name, tuple(p.shape)) for p in model.get_parameters()] == [(s.ms_name, s.shape) for s in unet_parameters(cfg)]
    kinds = {type(c).__name__ for _, c in model.cells_and_names()}
    assert "ComposedGroupNorm" in kinds and "GroupNorm" not in kinds and "GELU" not in kinds


@needs("mindspore")
def test_ms_celllist_names_collide_without_the_rename(monkeypatch):
    """MindSpore names the children of a CellList appended after attachment by index alone
    (``0.0.mlp.1.weight`` in both ``downs`` and ``ups``); ``use_structural_names`` is what fixes it."""
    monkeypatch.setattr(ddpm_ms.Unet, "use_structural_names", lambda self: None)
    model = ddpm_ms.Unet(dim=8, channels=1, dim_mults=(1, 2, 4))
    names = [p.name for p in model.get_parameters()]
    assert "0.0.mlp.1.weight" in names
    assert len(set(names)) < len(names)
    monkeypatch.undo()
    model.use_structural_names()
    assert len({p.name for p in model.get_parameters()}) == len(names)
