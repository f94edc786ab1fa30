"""Sampling and pictures in both twins: the grid PNG and the denoising GIF have the right size and frame
count, a sample depends on (seed, index) only, both twins draw the same samples from the same weights,
and the forward-diffusion strip."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ddpm_core.images import grid_size
from ddpm_core.sampling import sample_noise
from ddpm_core.weights.files import load_weights
from tests.train.conftest import make_image_folder, twin_module


def sample(twin: str, *args: str) -> int:
    return twin_module(twin, "sample").main(list(args))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_grid_and_gif(tmp_path, trained_runs, twin_name, sampler):
    weights = trained_runs["torch"] / "model.safetensors"  # trained by PyTorch, sampled by both
    # DDPM takes the run's T=10, recorded in the safetensors metadata (a contradicting --timesteps is refused)
    extra = ["--sampler", "ddim", "--steps", "4", "--eta", "0.5"] if sampler == "ddim" else []
    assert sample(twin_name, "--weights", str(weights), "--n", "5", "--out", str(tmp_path / "s.png"),
                  "--gif", str(tmp_path / "d.gif"), "--gif-index", "0,3", "--gif-frames", "6", "--compile", "off",
                  "--no-progress", "--scale", "3", *extra) == 0
    with Image.open(tmp_path / "s.png") as png:
        assert png.format == "PNG" and png.mode == "L" and png.size == grid_size(5, 8, 8, scale=3)
    with Image.open(tmp_path / "d.gif") as gif:
        # x_T plus one state per step: 11 (T=10) subsampled to --gif-frames 6, or 5 (4 DDIM steps)
        assert gif.format == "GIF" and gif.n_frames == (6 if sampler == "ddpm" else 5)
        assert gif.size == grid_size(2, 8, 8, scale=3, cols=2)
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] > 1000  # the last frame is held


def test_a_sample_depends_on_seed_and_index_only(tmp_path, trained_runs):
    weights = str(trained_runs["ms"] / "model.ckpt")
    common = ["--weights", weights, "--compile", "off", "--no-progress", "--scale", "1", "--sampler", "ddim", "--steps", "3"]
    assert sample("torch", *common, "--n", "3", "--batch-size", "2", "--out", str(tmp_path / "a.png")) == 0
    assert sample("torch", *common, "--n", "2", "--batch-size", "5", "--out", str(tmp_path / "b.png")) == 0
    a, b = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    np.testing.assert_array_equal(a[:, :b.shape[1]][:b.shape[0]], b)  # samples 0 and 1: the first row


def test_both_twins_draw_the_same_samples(trained_runs):
    loaded = load_weights(trained_runs["ms"] / "model.safetensors")
    from ddpm_core.config import DiffusionConfig

    shape = (1, 8, 8)
    drawn = [sample_noise(0, i, 3, shape) for i in range(3)]
    start, noise = np.stack([d[0] for d in drawn]), np.stack([d[1] for d in drawn], axis=1)
    states = {t: twin_module(t, "sample").make_denoiser(loaded.state, loaded.config, DiffusionConfig(timesteps=10), "ddim",
                                                        3, 1.0, "off", False)(start, noise) for t in ("torch", "ms")}
    assert states["torch"].shape == (3, 3, 1, 8, 8)
    assert np.abs(states["torch"] - states["ms"]).max() <= 1e-4


def test_sample_errors_are_one_line(tmp_path, twin_name, trained_runs, capsys):
    assert sample(twin_name, "--weights", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "x.png")) == 2
    assert "none.safetensors" in capsys.readouterr().err
    weights = str(trained_runs["torch"] / "model.safetensors")
    assert sample(twin_name, "--weights", weights, "--n", "2", "--gif", str(tmp_path / "g.gif"), "--gif-index", "5") == 2
    assert "--gif-index 5" in capsys.readouterr().err


def test_noise_strip(tmp_path, twin_name, capsys):
    image = make_image_folder(tmp_path / "img", per_class=1, classes=("a",), size=(40, 30)) / "a" / "img0.png"
    out = tmp_path / "strip.png"
    assert twin_module(twin_name, "noise_strip").main([str(image), "--out", str(out), "--image-size", "16"]) == 0
    with Image.open(out) as png:
        assert png.size == grid_size(5, 16, 16, cols=5) and png.mode == "RGB"
        first = np.asarray(png)[2:18, 2:18].astype(int)
    with Image.open(image) as im:  # t = 0 is (almost) the clean image: 30 px high -> 16, centre crop of 21 px wide
        clean = np.asarray(im.convert("RGB").resize((21, 16), Image.BILINEAR))[:, 2:18].astype(int)
    assert np.abs(first - clean).mean() < 40  # framework resizers differ a little; noise at t=0 is ~1%
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    capsys.readouterr()
    assert twin_module(twin_name, "noise_strip").main([str(bad), "--out", str(out)]) == 2
    assert str(bad) in capsys.readouterr().err


def test_npy_holds_the_samples_of_the_grid(tmp_path, trained_runs):
    """``--npy`` saves the very samples the grid shows, unclipped float32 (N, C, H, W)."""
    from ddpm_core.images import save_grid

    assert sample("torch", "--weights", str(trained_runs["torch"] / "model.safetensors"), "--n", "3",
                  "--out", str(tmp_path / "s.png"), "--npy", str(tmp_path / "s.npy"), "--sampler", "ddim",
                  "--steps", "3", "--no-progress", "--scale", "2") == 0
    samples = np.load(tmp_path / "s.npy")
    assert samples.dtype == np.float32 and samples.shape == (3, 1, 8, 8) and np.isfinite(samples).all()
    save_grid(tmp_path / "again.png", samples, 2)
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "s.png").read_bytes()
