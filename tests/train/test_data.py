"""Data on disk and the per-step tape: IDX validation and staging, image folders, both twins' loaders
reading the same pixels, and the tape's determinism and sharding."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm_core.training.datasets import DataError, make_stage_dir, prepare_data
from ddpm_core.training.tape import (
    apply_flips,
    batch_indices,
    shard,
    step_draws,
    steps_per_epoch,
    tape_arrays,
)
from tests.train.conftest import (
    FASHION_EXAMPLES,
    make_fashion_mnist,
    make_image_folder,
    twin_module,
    write_idx,
)


def prepare(path, fmt="auto", size=28, channels=None):
    stage = make_stage_dir()
    return prepare_data(path, fmt, size, channels, stage.name), stage


def test_staging_folders_of_killed_processes_are_removed(tmp_path, monkeypatch):
    """A SIGKILLed run leaves its staging folder behind; the next one removes it, and only it."""
    import subprocess
    import sys
    import tempfile

    from ddpm_core.training import datasets

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = datasets.host_tag()
    orphan = tmp_path / f"ddpm-data-{host}-{dead.pid}-x1"
    other_host = tmp_path / f"ddpm-data-elsewhere-{dead.pid}-x2"
    for folder in (orphan, other_host):
        folder.mkdir()
        (folder / "train-images-idx3-ubyte").write_bytes(b"staged")
    first = make_stage_dir()
    assert not orphan.exists() and other_host.exists()
    assert Path(first.name).name.startswith(f"ddpm-data-{host}-{os.getpid()}-")
    second = make_stage_dir()  # a live process's folder stays
    assert Path(first.name).is_dir() and Path(second.name).is_dir()
    first.cleanup()
    second.cleanup()


# ---------------------------------------------------------------- IDX files and detection
@pytest.mark.parametrize("gz", [False, True])
def test_fashion_mnist_is_detected_and_staged_for_both_loaders(tmp_path, gz):
    make_fashion_mnist(tmp_path, gz=gz)
    spec, stage = prepare(tmp_path)
    with stage:
        assert (spec.format, spec.examples, spec.channels, spec.native_size) == ("fashion-mnist", FASHION_EXAMPLES, 1, (28, 28))
        ms_dir, raw = spec.mindspore_dir, f"{spec.torchvision_root}/FashionMNIST/raw"
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            assert Path(ms_dir, name).read_bytes() == Path(raw, name).read_bytes()
            assert Path(raw, name.replace("train", "t10k")).is_file()  # torchvision checks the test names exist


def test_torchvision_layout_is_accepted(tmp_path):
    make_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    spec, stage = prepare(tmp_path)
    with stage:
        assert spec.format == "fashion-mnist" and spec.examples == FASHION_EXAMPLES


def one_line_error(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        prepare(path, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_folder(tmp_path):
    assert str(tmp_path / "nope") in one_line_error(tmp_path / "nope")


def test_truncated_idx(tmp_path):
    make_fashion_mnist(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-100])
    message = one_line_error(tmp_path)
    assert str(f) in message and "truncated" in message


def test_wrong_magic(tmp_path):
    make_fashion_mnist(tmp_path)
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(b"\x00\x00\x09\x01" + f.read_bytes()[4:])
    message = one_line_error(tmp_path)
    assert str(f) in message and "magic" in message


def test_truncated_gzip(tmp_path):
    make_fashion_mnist(tmp_path, gz=True)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(f.read_bytes()[:200])
    message = one_line_error(tmp_path)
    assert str(f) in message and "gzip" in message


def test_truncated_idx_inside_complete_gzip(tmp_path):
    make_fashion_mnist(tmp_path, gz=True)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-5]))
    assert str(f) in one_line_error(tmp_path)


def test_label_count_must_match(tmp_path):
    make_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5))
    assert "5 labels" in one_line_error(tmp_path)


def test_other_image_sizes_are_refused(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 8, 8)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    assert "28x28" in one_line_error(tmp_path)


def test_folder_without_data(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    assert "neither" in one_line_error(tmp_path)


def test_undecodable_image_is_named_up_front(tmp_path):
    make_image_folder(tmp_path)
    bad = tmp_path / "a" / "zz_broken.png"
    bad.write_bytes(b"this is not a png")
    assert str(bad) in one_line_error(tmp_path)


def test_image_folder_lists_like_the_frameworks(image_dir):
    spec, stage = prepare(image_dir, size=8)
    with stage:
        assert spec.format == "image-folder" and spec.channels == 3
        assert [p.split("/")[-2:] for p in spec.files][:4] == [["a", "img0.png"], ["a", "img1.png"], ["a", "img2.png"],
                                                                 ["b", "img0.png"]]


# ---------------------------------------------------------------- the twins' loaders
@pytest.mark.parametrize("gz", [False, True])
def test_both_loaders_read_the_same_fashion_mnist_pixels(tmp_path, gz):
    make_fashion_mnist(tmp_path, gz=gz)
    spec, stage = prepare(tmp_path)
    indices = np.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    with stage:
        got = {t: list(twin_module(t, "data").open_data(spec).batches(indices)) for t in ("torch", "ms")}
    for a, b, row in zip(got["torch"], got["ms"], indices):
        assert a.shape == b.shape == (4, 1, 28, 28) and a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(np.round(a * 255), np.round(b * 255))  # the same bytes were read
        # torchvision's ToTensor divides by 255, MindSpore's multiplies by 1/255: at most 1 ulp apart
        assert np.abs(a - b).max() <= 6e-8
        np.testing.assert_array_equal(np.round(a[:, 0, 0, 0] * 255), row)  # the image at each index, in order


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder_is_resized_and_cropped(twin_name, image_dir, channels):
    spec, stage = prepare(image_dir, size=8, channels=channels)
    with stage:
        x = twin_module(twin_name, "data").open_data(spec).read(np.array([0, 5]))
    assert x.shape == (2, channels, 8, 8) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_undecodable_image_in_the_loader_names_the_file(twin_name, tmp_path):
    """A file Pillow can identify but not decode slips past the up-front check; the loader names it."""
    make_image_folder(tmp_path, per_class=2, classes=("a",), size=(40, 40))
    bad = tmp_path / "a" / "img1.png"
    bad.write_bytes(bad.read_bytes()[:120])
    spec, stage = prepare(tmp_path, size=8)
    with stage, pytest.raises(DataError) as e:
        list(twin_module(twin_name, "data").open_data(spec).batches(np.array([[0, 1]])))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- the tape
def test_tape_is_a_function_of_seed_and_step():
    a, b = step_draws(7, 123, 4, (1, 8, 8), 200), step_draws(7, 123, 4, (1, 8, 8), 200)
    np.testing.assert_array_equal(a.noise, b.noise)
    np.testing.assert_array_equal(a.t, b.t)
    assert a.t.dtype == np.int32 and a.noise.dtype == np.float32 and 0 <= a.t.min() and a.t.max() < 200
    assert not np.array_equal(step_draws(7, 124, 4, (1, 8, 8), 200).noise, a.noise)
    assert not np.array_equal(step_draws(8, 123, 4, (1, 8, 8), 200).noise, a.noise)


def test_each_epoch_visits_whole_batches_once():
    n, batch = 10, 3
    spe = steps_per_epoch(n, batch)
    for epoch in range(2):
        seen = np.concatenate([batch_indices(0, epoch * spe + k, n, batch) for k in range(spe)])
        assert len(set(seen.tolist())) == spe * batch
    assert not np.array_equal(batch_indices(0, 0, n, batch), batch_indices(0, spe, n, batch))
    with pytest.raises(ValueError):
        steps_per_epoch(2, 3)


def test_flips_and_shards():
    x = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    y = apply_flips(x, np.array([True, False]))
    np.testing.assert_array_equal(y[0], x[0][..., ::-1])
    np.testing.assert_array_equal(y[1], x[1])
    tape = tape_arrays(0, range(2), 12, 4, (1, 8, 8), 10)
    parts = [shard(tape["noise"][1], r, 2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), tape["noise"][1])


def test_saved_images_roundtrip(tmp_path):
    from ddpm_core.images import grid_size, save_gif, save_grid

    samples = np.random.default_rng(0).uniform(-1, 1, (5, 3, 6, 6)).astype(np.float32)
    save_grid(tmp_path / "g.png", samples, scale=2)
    assert Image.open(tmp_path / "g.png").size == grid_size(5, 6, 6, 2)
    states = np.random.default_rng(1).uniform(-1, 1, (11, 2, 1, 6, 6)).astype(np.float32)
    assert save_gif(tmp_path / "d.gif", states, frames=4) == 4
    with Image.open(tmp_path / "d.gif") as gif:
        assert gif.n_frames == 4 and gif.size == grid_size(2, 6, 6, cols=2)
