"""``train --download``: Fashion-MNIST through torchvision's own ``FashionMNIST(download=True)``, from a mirror on
127.0.0.1 (tests/train/mirror.py), read by both twins; failed and corrupt downloads are one line, leave no
partial file and keep an earlier good copy."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.training.datasets import DataError
from ddpm_core.training.download import default_root, download_fashion_mnist
from tests.blocker.sitecustomize import Blocker
from tests.host import available, need, needs
from tests.train import mirror
from tests.train.conftest import TINY, train, twin_module

if available("torchvision"):
    from torchvision.datasets import FashionMNIST


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included), relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def served(tmp_path):
    """(url, requests, resources) of a local mirror, with torchvision pointed at it for this test."""
    need("torchvision")
    resources = mirror.make_files(tmp_path / "served")
    with mirror.serve(tmp_path / "served") as (url, requests):
        saved = FashionMNIST.mirrors, FashionMNIST.resources
        FashionMNIST.mirrors, FashionMNIST.resources = [url], resources
        try:
            yield url, requests, resources
        finally:
            FashionMNIST.mirrors, FashionMNIST.resources = saved


@needs("torch", "torchvision", "mindspore")
def test_train_downloads_and_both_twins_read_it(tmp_path):
    resources = mirror.make_files(tmp_path / "served")
    cache, run = tmp_path / "cache", tmp_path / "run"
    with mirror.serve(tmp_path / "served") as (url, requests):
        proc = mirror.run(url, resources, "ddpm_torch.train",
                          ["--download", "--out", run, "--max-steps", "1", *TINY], env={"DDPM_PARITY_DATA": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(requests) == {f"/{name}" for name, _ in resources}  # each twice: torchvision's redirect probe is a GET
    raw = cache / "fashion-mnist" / "FashionMNIST" / "raw"
    assert sorted(tree(cache / "fashion-mnist")) == sorted(f"FashionMNIST/raw/{n}{s}" for n in mirror.NAMES
                                                           for s in ("", ".gz"))
    settings = json.loads((run / "run.json").read_text())
    assert settings["data"] == str(cache / "fashion-mnist") and settings["examples"] == 12
    assert len((run / "log.jsonl").read_text().splitlines()) == 1
    # MindSpore's twin reads the same folder, the same pixels as torchvision's
    from ddpm_core.training.datasets import make_stage_dir, prepare_data

    with make_stage_dir() as stage:
        spec = prepare_data(settings["data"], "auto", 28, None, stage)
        got = {t: twin_module(t, "data").open_data(spec).read(np.array([5, 0, 11])) for t in ("torch", "ms")}
    for x in got.values():
        np.testing.assert_array_equal(np.round(x[:, 0, 0, 0] * 255), [5, 0, 11])
    np.testing.assert_array_equal(np.round(got["torch"] * 255), np.round(got["ms"] * 255))
    assert raw.is_dir()


def test_complete_copy_is_used_without_the_network(tmp_path, served):
    url, requests, _ = served
    root = download_fashion_mnist(tmp_path / "data")
    before = tree(root)
    assert len(requests) > 0 and len(before) == 8
    served_before = len(requests)
    FashionMNIST.mirrors = ["http://127.0.0.1:9/"]  # nothing listens there
    assert download_fashion_mnist(root) == root and tree(root) == before and len(requests) == served_before


@pytest.mark.parametrize("damage", ["wrong md5", "missing on the mirror", "no server"])
def test_failed_download_is_one_line_and_leaves_nothing(tmp_path, served, damage):
    url, requests, resources = served
    if damage == "wrong md5":
        FashionMNIST.resources = [(resources[0][0], "0" * 32), *resources[1:]]
    elif damage == "missing on the mirror":
        FashionMNIST.resources = [*resources[:3], ("t10k-labels-idx1-ubyte.gz", resources[3][1])]
        (tmp_path / "served" / "t10k-labels-idx1-ubyte.gz").unlink()
    else:
        FashionMNIST.mirrors = ["http://127.0.0.1:9/"]
    with pytest.raises(DataError) as info:
        download_fashion_mnist(tmp_path / "data")
    message = str(info.value)
    assert message.startswith(f"cannot download Fashion-MNIST into {tmp_path / 'data'}: ") and "\n" not in message
    assert message.endswith("nothing was written there")
    assert tree(tmp_path / "data") == {}


def test_earlier_good_copy_survives_a_failed_download(tmp_path, served):
    url, requests, resources = served
    root = download_fashion_mnist(tmp_path / "data")
    raw = root / "FashionMNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()  # an interrupted earlier run, say
    kept = tree(root)
    good = (tmp_path / "served" / resources[0][0]).read_bytes()
    (tmp_path / "served" / resources[0][0]).write_bytes(good[:-100])  # now the mirror serves a corrupt file
    with pytest.raises(DataError, match="File not found or corrupted"):
        download_fashion_mnist(root)
    assert tree(root) == kept
    (tmp_path / "served" / resources[0][0]).write_bytes(good)
    download_fashion_mnist(root)  # the mirror is good again: only the missing file is added
    assert tree(root) == {**kept, "FashionMNIST/raw/t10k-labels-idx1-ubyte": (raw / "t10k-labels-idx1-ubyte").read_bytes()}


def test_damaged_file_already_there_is_named_and_kept(tmp_path, served):
    root = download_fashion_mnist(tmp_path / "data")
    images = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"{images}: truncated"):
        download_fashion_mnist(root)
    assert images.exists()


@needs("mindspore")
def test_cli_without_torchvision_says_what_to_do(tmp_path, monkeypatch, capsys):
    """MindSpore's twin downloads through torchvision too; on a host without it, one line says so."""
    monkeypatch.setattr(sys, "meta_path", [Blocker(("torchvision",)), *sys.meta_path])
    for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    assert train("ms", "--download", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run"), *TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --download uses torchvision's Fashion-MNIST downloader")
    assert not (tmp_path / "d").exists() and not (tmp_path / "run").exists()


def test_default_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DDPM_PARITY_DATA", str(tmp_path))
    assert default_root() == tmp_path / "fashion-mnist"
    monkeypatch.delenv("DDPM_PARITY_DATA")
    assert default_root() == Path.home() / ".cache" / "ddpm-parity" / "fashion-mnist"
