"""ddpm_core.config: derived widths, serialisation, and every check that turns a bad configuration
or input into one ``ValueError`` naming the problem."""
import json
import re

import pytest

from ddpm_core.config import (
    TUTORIAL_DIFFUSION,
    TUTORIAL_UNET,
    DiffusionConfig,
    UnetConfig,
    check_noise_sequence,
    check_same_shape,
    check_timestep_range,
    check_unet_input,
    read_config,
    read_unet_config,
)
from ddpm_core.errors import UserError


def test_tutorial_unet_derived_widths():
    cfg = TUTORIAL_UNET
    assert (cfg.dim, cfg.channels, cfg.dim_mults) == (28, 1, (1, 2, 4))
    assert cfg.resolved_init_dim == 28 // 3 * 2 == 18
    assert cfg.resolved_out_dim == 1
    assert cfg.time_dim == 112
    assert cfg.dims == [18, 28, 56, 112]
    assert cfg.in_out == [(18, 28), (28, 56), (56, 112)]
    assert cfg.size_multiple == 4


def test_explicit_dims_and_no_time_embedding():
    cfg = UnetConfig(dim=16, init_dim=5, out_dim=2, dim_mults=[1, 3], channels=3, with_time_emb=False)
    assert cfg.dim_mults == (1, 3)  # lists normalised to tuples (hashable, comparable)
    assert cfg.dims == [5, 16, 48]
    assert cfg.resolved_out_dim == 2
    assert cfg.time_dim is None
    assert cfg.size_multiple == 2


def test_tutorial_diffusion_defaults():
    d = TUTORIAL_DIFFUSION
    assert (d.timesteps, d.schedule, d.beta_start, d.beta_end, d.loss_type) == (200, "linear", 1e-4, 0.02, "huber")
    assert d.p2_loss_weight_gamma == 0.0


def test_json_round_trip():
    cfg = UnetConfig(dim=12, dim_mults=(1, 2, 4), channels=1, use_convnext=False, resnet_block_groups=4)
    d = json.loads(cfg.to_json())
    assert d["dim_mults"] == [1, 2, 4]
    assert UnetConfig.from_dict(d) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown Unet config keys: dropout"):
        UnetConfig.from_dict({"dim": 8, "dropout": 0.1})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim must be a positive integer"),
        ({"dim": True}, "dim must be a positive integer"),
        ({"dim": 8.0}, "dim must be a positive integer"),
        ({"dim": 2, "with_time_emb": False}, "init_dim = dim // 3 \\* 2 = 0"),
        ({"dim": 3}, "dim=3: the time embedding needs an even dim >= 4"),  # issue 17: was a ZeroDivisionError
        ({"dim": 9}, "dim=9: the time embedding needs an even dim >= 4"),  # was a shape error in the first step
        ({"dim": 8, "channels": 0}, "channels must be a positive integer"),
        ({"dim": 8, "dim_mults": ()}, "dim_mults must name at least one level"),
        ({"dim": 8, "dim_mults": (2, 4)}, "dim_mults\\[0\\] must be 1"),
        ({"dim": 8, "dim_mults": (1, 0)}, r"dim_mults\[1\] must be a positive integer"),
        ({"dim": 12, "use_convnext": False, "resnet_block_groups": 8}, "resnet_block_groups=8 must divide"),
        ({"dim": 8, "out_dim": -1}, "out_dim must be a positive integer"),
    ],
)
def test_bad_unet_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UnetConfig(**kwargs)


def test_resnet_groups_error_names_the_widths():
    # block widths: dim 12 and dims[1:] = 12, 36 -> 8 divides neither; 4 divides both.
    # init_dim (8 here) feeds no GroupNorm, so it need not be divisible.
    with pytest.raises(ValueError, match=r"does not divide \[12, 36\]"):
        UnetConfig(dim=12, dim_mults=(1, 3), use_convnext=False, resnet_block_groups=8)
    UnetConfig(dim=12, dim_mults=(1, 3), use_convnext=False, resnet_block_groups=4)
    UnetConfig(dim=12, init_dim=6, dim_mults=(1, 3), use_convnext=False, resnet_block_groups=4)
    # ConvNeXt blocks do not use resnet_block_groups, so it is not checked against the widths
    UnetConfig(dim=12, dim_mults=(1, 2), use_convnext=True, resnet_block_groups=8)


@pytest.mark.parametrize(
    "x_shape, t_shape, match",
    [
        ((2, 1, 28), (2,), "x must be \\(batch, channels, height, width\\)"),
        ((2, 3, 28, 28), (2,), "x has 3 channels but the model was built with channels=1"),
        ((2, 1, 30, 28), (2,), "image size 30x28 is not a multiple of 4"),
        ((2, 1, 28, 26), (2,), "image size 28x26 is not a multiple of 4"),
        ((2, 1, 0, 0), (2,), "not a multiple"),
        ((2, 1, 28, 28), None, "pass timesteps t"),
        ((2, 1, 28, 28), (2, 1), "t must have shape \\(batch,\\) = \\(2,\\)"),
        ((2, 1, 28, 28), (3,), "t must have shape"),
    ],
)
def test_check_unet_input_rejects(x_shape, t_shape, match):
    with pytest.raises(ValueError, match=match):
        check_unet_input(TUTORIAL_UNET, x_shape, t_shape)


def test_check_unet_input_accepts_valid_and_time_free():
    check_unet_input(TUTORIAL_UNET, (2, 1, 28, 28), (2,))
    check_unet_input(TUTORIAL_UNET, (1, 1, 8, 12), (1,))  # non-square, multiples of 4
    check_unet_input(UnetConfig(dim=8, channels=1, with_time_emb=False, dim_mults=(1, 2)), (2, 1, 6, 6), None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"timesteps": 1}, "timesteps must be at least 2"),
        ({"timesteps": 0}, "timesteps must be a positive integer"),
        ({"schedule": "exp"}, "schedule must be one of"),
        ({"loss_type": "mse"}, "loss_type must be one of"),
        ({"beta_start": 0.02, "beta_end": 0.01}, "need 0 < beta_start < beta_end < 1"),
        ({"beta_end": 1.0}, "need 0 < beta_start < beta_end < 1"),
    ],
)
def test_bad_diffusion_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionConfig(**kwargs)


def test_timestep_range_check_is_half_open():
    check_timestep_range(0, 199, 200)
    with pytest.raises(ValueError, match=r"\[0, 200\)"):
        check_timestep_range(0, 200, 200)
    with pytest.raises(ValueError, match="from -1 to 5"):
        check_timestep_range(-1, 5, 200)


def test_noise_sequence_and_same_shape_checks():
    check_noise_sequence((10, 2, 1, 8, 8), 10, (2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(10, 2, 1, 8, 8\)"):
        check_noise_sequence((9, 2, 1, 8, 8), 10, (2, 1, 8, 8))
    with pytest.raises(ValueError, match="noise must have shape"):
        check_same_shape("noise", (2, 1, 8, 8), (2, 1, 8, 9))


def test_read_config_takes_fields_or_a_run_config_as_text_or_file(tmp_path):
    """One reader for every --config: UnetConfig fields or a run's config.json, inline or in a file."""
    small = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    run = {"unet": small.to_dict(), "diffusion": {"timesteps": 10}, "image_size": 16}
    (tmp_path / "config.json").write_text(json.dumps(run))
    found = read_config(tmp_path / "config.json")
    assert (found.unet, found.diffusion, found.image_size) == (small, DiffusionConfig(timesteps=10), 16)
    assert read_config(json.dumps(run)) == found
    assert read_unet_config(small.to_json()) == small == read_unet_config(str(tmp_path / "config.json"))


@pytest.mark.parametrize("text, says", [
    ("{dim: 8", "--config: not valid JSON"),
    ("missing.json", "--config: cannot read missing.json"),
    ("[1, 2]", "--config: cannot read [1, 2]"),
    ('{"dims": 8}', "--config: unknown Unet config keys: dims"),
    ('{"unet": {"dim": 8}, "diffusion": {"timesteps": 1}}', "--config: timesteps must be at least 2"),
    ('{"unet": {"dim": 8}, "image_size": 0}', "--config: image_size must be a positive integer"),
    ('{"diffusion": {}}', "holds no \"unet\" settings"),
])
def test_read_config_names_the_option_and_the_problem(text, says):
    with pytest.raises(UserError, match=re.escape(says)):
        read_unet_config(text)


def test_read_config_names_the_file(tmp_path):
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(UserError, match=re.escape(f"--model-config file {tmp_path / 'c.json'}: expected a JSON object")):
        read_config(tmp_path / "c.json", "--model-config")
