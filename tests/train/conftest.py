"""Fixtures for the training, sampling and data tests: tiny Fashion-MNIST IDX files (plain and .gz),
tiny image folders, the CLI modules of each twin, and small trained runs shared by several tests.

Everything is made here in temporary folders: the tests need no dataset and no network.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpm_core.runtime.environment import child_env
from tests.host import PROGRAM_FRAMEWORKS, PROGRAM_TWINS, need

REPO = Path(__file__).resolve().parents[2]
TINY = ["--image-size", "8", "--dim", "8", "--dim-mults", "1,2", "--timesteps", "10", "--batch-size", "4",
        "--compile", "off", "--no-progress"]
"""Options of a tiny training run: 8x8 images, an 8-wide two-level U-Net, T=10, batch 4, PyNative."""
FASHION_EXAMPLES = 12


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An unsigned-byte IDX file (the Fashion-MNIST format), gzip-compressed if ``gz``."""
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_fashion_mnist(folder: Path, n: int = FASHION_EXAMPLES, gz: bool = False, seed: int = 0) -> Path:
    """``n`` random 28x28 images with labels, named as Fashion-MNIST's training split."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28))
    images[:, 0, 0] = np.arange(n)  # each image tells its index
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", images, gz)
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz)
    return folder


def make_image_folder(folder: Path, per_class: int = 3, classes: tuple[str, ...] = ("b", "a"),
                      size: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    """ROOT/<class>/<image>.png of random RGB images (width, height = ``size``)."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size[1], size[0], 3)).astype(np.uint8)
            Image.fromarray(pixels).save(folder / c / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def session_dir() -> Path:
    """A private folder for the session's shared data and runs. Not under pytest's basetemp: a pytest
    started meanwhile on the same machine prunes the oldest basetemp folders, even one still in use."""
    with tempfile.TemporaryDirectory(prefix="ddpm-train-tests-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def fashion_dir(session_dir) -> Path:
    return make_fashion_mnist(session_dir / "fashion")


@pytest.fixture(scope="session")
def fashion_gz_dir(session_dir) -> Path:
    return make_fashion_mnist(session_dir / "fashion_gz", gz=True)


@pytest.fixture(scope="session")
def image_dir(session_dir) -> Path:
    return make_image_folder(session_dir / "images" / "root")


def twin_module(twin: str, name: str):
    """``ddpm_<twin>.<name>`` (train, sample, noise_strip, data); skips the calling test where the twin's
    programs cannot run (``tests.host.PROGRAM_FRAMEWORKS``)."""
    need(*PROGRAM_FRAMEWORKS[twin])
    return importlib.import_module(f"ddpm_{twin}.{name}")


@pytest.fixture(params=PROGRAM_TWINS)
def twin_name(request) -> str:
    """Each twin in turn, by package suffix (skipped where its programs cannot run)."""
    return request.param


def run_cli(twin: str, name: str, *args: str, env: dict[str, str] | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m ddpm_<twin>.<name> ARGS`` in a subprocess (for real exit codes and real SIGKILLs).

    The subprocess computes with the same numerics as this process: oneDNN's instruction set (set by
    tests/conftest.py) and one PyTorch thread (``OMP_NUM_THREADS=1``, as ``torch.set_num_threads(1)`` there),
    so a run continued here is comparable bit for bit with one begun there."""
    need(*PROGRAM_FRAMEWORKS[twin])
    full_env = child_env(threads=1, pythonpath=REPO, **(env or {}))
    return subprocess.run([sys.executable, "-m", f"ddpm_{twin}.{name}", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def train(twin: str, *args: str) -> int:
    """The twin's training CLI, in this process."""
    return twin_module(twin, "train").main(list(args))


class TrainedRuns(dict):
    """{"torch": RUN_DIR, "ms": RUN_DIR}, each a ``steps``-step tiny run of that twin on ``data``, trained on first use;
    a twin whose framework cannot be imported skips the test that asks for its run."""

    def __init__(self, folder: Path, data: Path, steps: int = 2):
        super().__init__()
        self.folder, self.data, self.steps = folder, data, steps

    def __missing__(self, twin: str) -> Path:
        need(*PROGRAM_FRAMEWORKS[twin])
        out, said = self.folder / f"run_{twin}", io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):  # not into the test's capsys
            code = train(twin, "--data", str(self.data), "--out", str(out), "--max-steps", str(self.steps), *TINY)
        assert code == 0, said.getvalue()
        self[twin] = out
        return out


@pytest.fixture(scope="session")
def trained_runs(session_dir, fashion_dir) -> dict[str, Path]:
    """A 2-step tiny run of each twin on the same data, trained when a test first asks: {"torch": RUN_DIR,
    "ms": RUN_DIR}."""
    return TrainedRuns(session_dir, fashion_dir)
