"""Real handwritten digits with no download: scikit-learn's copy of the UCI optical digits (1,797 grey 8x8
images, 0-16 ink levels, shipped inside its wheel), split once into a training and a held-out part, and
served to both twins' training loops from the same numpy array (``--data digits``, docs/quality.md).

Rules it keeps:
  * Deterministic: the split is a fixed function of the data (``HELDOUT_PER_CLASS`` images of each class,
    chosen by ``default_rng([SPLIT_SEED, class])``), and the data itself is checked against the sha256 it
    was measured with, so a scikit-learn release that changed the images cannot change the split silently.
  * Both twins read identical pixels: ``level / 16`` in [0, 1] (the loop then applies the tutorial's
    ``t * 2 - 1``), zero-padded (black, the digits' background) around the centre up to ``--image-size``;
    neither framework's transforms touch them.
  * scikit-learn is an optional extra (``pip install 'ddpm-parity[digits]'``); without it ``--data digits``
    is a one-line ``DataError``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ddpm_core.training.datasets import DataError, DataSpec
from ddpm_core.weights.digest import digest

DIGITS = "digits"
"""The ``--data`` value that selects this source (a folder of that name is ``--data ./digits``)."""
NATIVE_SIZE = 8
LEVELS = 16
CLASSES = 10
HELDOUT_PER_CLASS = 30
SPLIT_SEED = 1797
SPLITS = ("train", "heldout")
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
"""sha256 of the uint8 images (1797, 8, 8) followed by the uint8 labels, as scikit-learn 1.9.1 ships them."""
RECIPE = {"dim": "16", "dim-mults": "1,2", "batch-size": "64", "lr": "1e-3", "epochs": "65"}
"""The training options of examples/digits.py and ``python -m parity.quality`` (docs/quality.md): a U-Net of the
tutorial's design at a tenth of its size (dim 16, two levels: 0.29 M parameters against the tutorial's 2.99 M), batch
64, the tutorial's cosine decay from 1e-3, 65 epochs of 23 steps (1,495 steps): about 10 minutes of MindSpore on a
2-core CPU."""


@dataclass(frozen=True)
class Digits:
    """One split: ``images`` float32 (N, 1, S, S) in [0, 1], ``labels`` int64 (N,), ``indices`` into
    ``load_digits()``'s order."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def load_raw() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (uint8 images (1797, 8, 8) with levels 0-16, uint8 labels), verified."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("--data digits needs scikit-learn: pip install 'ddpm-parity[digits]' "
                        "(or pip install scikit-learn)") from None
    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    if images.shape != (1797, NATIVE_SIZE, NATIVE_SIZE) or labels.shape != (1797,):
        raise DataError(f"scikit-learn's digits have shape {images.shape} / {labels.shape}, expected (1797, 8, 8) / (1797,)")
    images, labels = images.astype(np.uint8), labels.astype(np.uint8)
    found = digest((images, labels))
    if found != DIGITS_SHA256:
        raise DataError(f"scikit-learn's digits (sha256 {found[:16]}...) differ from the copy this project's split "
                        f"and results were made with ({DIGITS_SHA256[:16]}...)")
    return images, labels


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """{"train", "heldout"}: sorted indices; the held-out part has ``HELDOUT_PER_CLASS`` images of every class."""
    heldout = np.concatenate([
        np.random.default_rng([SPLIT_SEED, c]).permutation(np.flatnonzero(labels == c))[:HELDOUT_PER_CLASS]
        for c in range(CLASSES)])
    mask = np.zeros(labels.shape[0], bool)
    mask[heldout] = True
    return {"train": np.flatnonzero(~mask), "heldout": np.flatnonzero(mask)}


def pad_to(images01: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) -> (N, 1, size, size) float32, centred on black (the extra pixel of an odd margin goes
    bottom/right)."""
    n, h, w = images01.shape
    if size < max(h, w):
        raise DataError(f"--image-size {size} is smaller than the digits' {h}x{w}; use {h} or more")
    top, left = (size - h) // 2, (size - w) // 2
    out = np.zeros((n, 1, size, size), np.float32)
    out[:, 0, top:top + h, left:left + w] = images01
    return out


def load_split(split: str, image_size: int = NATIVE_SIZE) -> Digits:
    """The ``split`` ("train": 1,497 images, "heldout": 300) at ``image_size``, pixels in [0, 1]."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images, labels = load_raw()
    idx = split_indices(labels)[split]
    return Digits(pad_to(images[idx].astype(np.float32) / LEVELS, image_size), labels[idx].astype(np.int64), idx)


def digits_spec(image_size: int, channels: int | None) -> DataSpec:
    """The ``DataSpec`` of ``--data digits`` (the training split); checks scikit-learn and the size now."""
    if channels not in (None, 1):
        raise DataError(f"digits are grey: 1 channel, but --channels {channels} was given")
    train = load_split("train", image_size)
    return DataSpec(DIGITS, DIGITS, int(train.labels.shape[0]), image_size, 1, native_size=(NATIVE_SIZE, NATIVE_SIZE))


class ArrayData:
    """A twin's ``TrainingData`` over images already in memory: batches are plain numpy indexing, so both
    twins receive the same float32 arrays (B, 1, S, S) in [0, 1]."""

    def __init__(self, images: np.ndarray):
        self.images = images

    @property
    def examples(self) -> int:
        return int(self.images.shape[0])

    def batches(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """One batch per row of ``indices`` (S, B), in order."""
        for row in np.asarray(indices):
            yield self.images[row].copy()

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices)].copy()


def open_digits(spec: DataSpec) -> ArrayData:
    """The training split of ``spec`` (a ``digits_spec``) for a twin's loop."""
    return ArrayData(load_split("train", spec.image_size).images)


def from_model_range(x: np.ndarray) -> np.ndarray:
    """Model-range images ([-1, 1]) back to the data's [0, 1], clipped: the inverse of the loop's ``t * 2 - 1``."""
    return np.clip((np.asarray(x, np.float32) + 1) / 2, 0, 1)
