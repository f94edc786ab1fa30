"""Training images through MindSpore's own loaders; mirrors ddpm_torch/data.py.

``mindspore.dataset.FashionMnistDataset`` (reading the staged folder of plain IDX files) or
``mindspore.dataset.ImageFolderDataset`` read and decode; ``vision`` transforms resize and center-crop
to the image size (the tutorial's ``Resize(image_size, Inter.BILINEAR)``, ``CenterCrop``) when the images
are not already that size, and ``ToTensor`` scales to [0, 1]. Which examples form a batch comes from the
tape (``ddpm_core.training.tape``) through a sampler; the flip and the [-1, 1] scaling are applied after
loading, by the shared loop (docs/training.md).

``--data digits`` bypasses the framework: both twins get ``ddpm_core.training.digits.ArrayData``, the same numpy array.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import mindspore.dataset as ds
import numpy as np
from mindspore.dataset import vision

from ddpm_core.training.datasets import IMAGE_EXTENSIONS, DataError, DataSpec
from ddpm_core.training.digits import DIGITS, ArrayData, open_digits

_DECODE_FAILED = re.compile(r"Invalid image, (.+?) decode failed")


def image_transforms(spec: DataSpec) -> list:
    """Resize + center crop (unless already at size), grayscale for 1-channel image folders, to [0, 1]."""
    steps = []
    if spec.native_size != (spec.image_size, spec.image_size):
        steps += [vision.Resize(spec.image_size, vision.Inter.BILINEAR), vision.CenterCrop(spec.image_size)]
    if spec.format == "image-folder" and spec.channels == 1:
        steps += [vision.ConvertColor(vision.ConvertMode.COLOR_RGB2GRAY), lambda hw: hw[..., None]]
    return steps + [vision.ToTensor()]


def pipeline_error(e: RuntimeError, spec: DataSpec) -> DataError:
    """The file a MindSpore pipeline error names, as a one-line ``DataError``."""
    text = str(e)
    found = _DECODE_FAILED.search(text)
    if found:
        return DataError(f"{found.group(1)}: cannot decode image (MindSpore: the image is broken or unreadable)")
    detail = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("[ERROR]")]
    return DataError(f"{spec.source}: the MindSpore data pipeline failed: {(detail or [text.splitlines()[0]])[0]}")


class _Indices(ds.Sampler):
    """Yields the tape's example indices, batch after batch."""

    def __init__(self, flat: np.ndarray):
        super().__init__()
        self.flat = flat

    def __iter__(self):
        return iter(self.flat.tolist())


class TrainingData:
    """The dataset of ``spec`` and the batches the tape asks for, as float32 numpy (B, C, H, W) in [0, 1]."""

    def __init__(self, spec: DataSpec, workers: int = 0):
        self.spec = spec
        self.workers = workers
        size = self._dataset(None).get_dataset_size()
        if size != spec.examples:
            raise DataError(f"{spec.source}: MindSpore reads {size} examples, expected {spec.examples}")

    def _dataset(self, sampler: ds.Sampler | None) -> ds.Dataset:
        order = {"sampler": sampler} if sampler is not None else {"shuffle": False}
        if self.spec.format == "fashion-mnist":
            return ds.FashionMnistDataset(self.spec.mindspore_dir, usage="train", **order)
        return ds.ImageFolderDataset(self.spec.mindspore_dir, decode=True, extensions=list(IMAGE_EXTENSIONS), **order)

    @property
    def examples(self) -> int:
        return self.spec.examples

    def batches(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """One batch per row of ``indices`` (S, B), in order."""
        if indices.shape[0] == 0:
            return
        dataset = self._dataset(_Indices(np.asarray(indices).reshape(-1)))
        dataset = dataset.project("image").map(image_transforms(self.spec), "image",
                                               num_parallel_workers=max(1, self.workers))
        dataset = dataset.batch(indices.shape[1], drop_remainder=True)
        try:
            for (images,) in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
                yield images
        except RuntimeError as e:
            raise pipeline_error(e, self.spec) from None

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The examples at ``indices`` as one batch."""
        return next(self.batches(np.asarray(indices)[None]))


def open_data(spec: DataSpec, workers: int = 0) -> TrainingData | ArrayData:
    """The loader of ``spec``; digits are in memory already and reach both twins as the same numpy array."""
    return open_digits(spec) if spec.format == DIGITS else TrainingData(spec, workers)
