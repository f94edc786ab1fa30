"""``--data digits``: scikit-learn's 8x8 digits, a fixed held-out split, padding, the one-line errors, and both
twins' training CLIs feeding the loop exactly the tape's digits, unflipped, in [-1, 1]."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ddpm_core.training.datasets import DataError, prepare_data
from ddpm_core.training.digits import HELDOUT_PER_CLASS, load_raw, load_split, split_indices
from ddpm_core.training.tape import apply_flips, batch_indices, step_draws, to_model_range
from ddpm_core.weights.files import save_weights
from tests.train.conftest import TINY, train, twin_module

HELDOUT_SHA256 = "d7cd2bb79a7a93fecad7c9ab631f058b4c1bcea51aefa2a4774ccf6f981355ac"
"""sha256 of the held-out indices (int64): the split every figure in docs/quality.md was measured with."""


def test_split_is_fixed_stratified_and_disjoint():
    images, labels = load_raw()
    split = split_indices(labels)
    train_idx, heldout = split["train"], split["heldout"]
    assert len(train_idx) == 1497 and len(heldout) == 300
    assert np.array_equal(np.sort(np.concatenate([train_idx, heldout])), np.arange(1797))
    assert np.bincount(labels[heldout], minlength=10).tolist() == [HELDOUT_PER_CLASS] * 10
    assert hashlib.sha256(heldout.astype(np.int64).tobytes()).hexdigest() == HELDOUT_SHA256


def test_pixels_are_levels_over_16_padded_on_black():
    images, labels = load_raw()
    native, padded = load_split("train"), load_split("train", 13)
    assert native.images.shape == (1497, 1, 8, 8) and padded.images.shape == (1497, 1, 13, 13)
    assert np.array_equal(native.images[:, 0], images[native.indices] / np.float32(16))
    assert native.images.max() == 1.0 and native.images.min() == 0.0
    assert np.array_equal(padded.images[:, :, 2:10, 2:10], native.images)  # odd margin: the extra pixel bottom/right
    border = padded.images.copy()
    border[:, :, 2:10, 2:10] = 0
    assert not border.any()
    assert np.array_equal(native.labels, labels[native.indices])


@pytest.mark.parametrize("kwargs, says", [
    ({"image_size": 6}, "smaller than the digits' 8x8"),
    ({"channels": 3}, "1 channel"),
    ({"data": "some/folder", "fmt": "digits"}, "pass --data digits"),
])
def test_bad_digits_options_are_one_line_errors(tmp_path, kwargs, says):
    args = {"data": "digits", "fmt": "auto", "image_size": 8, "channels": None, **kwargs}
    with pytest.raises(DataError) as e:
        prepare_data(args["data"], args["fmt"], args["image_size"], args["channels"], tmp_path)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_training_cli_feeds_the_tapes_digits_unflipped(tmp_path, twin_name, make_weights):
    """One CLI step on ``--data digits`` has exactly the loss of ``train_steps`` on the tape's digits, unflipped;
    the same step on flipped digits (the tutorial's default augmentation) would differ (checked in PyTorch)."""
    from ddpm_core.config import DiffusionConfig, UnetConfig

    cfg, diffusion = UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=10)
    weights = make_weights(cfg, 7)
    init = tmp_path / "init.safetensors"
    save_weights(weights, init, "torch", cfg)
    seed = 3
    assert train(twin_name, "--data", "digits", "--out", str(tmp_path / "run"), *TINY, "--max-steps", "1",
                 "--seed", str(seed), "--lr", "1e-3", "--init-weights", str(init)) == 0
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (settings["flip"], settings["image_size"], settings["examples"], settings["data_format"]) == (False, 8, 1497, "digits")
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])["loss"]

    draws = step_draws(seed, 0, 4, (1, 8, 8), diffusion.timesteps)
    assert draws.flips.any()  # else the flipped control below would prove nothing
    images = load_split("train").images[batch_indices(seed, 0, 1497, 4)]
    train_steps = twin_module(twin_name, "train").train_steps
    expect = lambda x: train_steps(cfg, diffusion, weights, x[None], draws.t[None], draws.noise[None], [1e-3])[0][0]  # noqa: E731
    assert logged == expect(to_model_range(images))
    if twin_name == "torch":  # the control is about the data, not the framework: one twin suffices
        assert abs(logged - expect(to_model_range(apply_flips(images, draws.flips)))) > 1e-4
