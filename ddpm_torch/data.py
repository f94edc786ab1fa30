"""Training images through torchvision's own loaders; mirrors ddpm_ms/data.py.

``torchvision.datasets.FashionMNIST`` (reading the staged ``FashionMNIST/raw`` layout) or
``torchvision.datasets.ImageFolder`` read and decode; ``transforms`` resize and center-crop to the
image size (the tutorial's ``Resize(image_size, BILINEAR)``, ``CenterCrop``) when the images are not
already that size, and ``ToTensor`` scales to [0, 1]. Which examples form a batch comes from the
tape (``ddpm_core.training.tape``); the flip and the [-1, 1] scaling are applied after loading, by the
shared loop (docs/training.md).

``--data digits`` bypasses the framework: both twins get ``ddpm_core.training.digits.ArrayData``, the same numpy array.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddpm_core.runtime.frameworks import require

require("torchvision")  # a PyTorch build of one's own may come without it: name the extra

from torch.utils.data import DataLoader  # noqa: E402
from torchvision import datasets, transforms  # noqa: E402

from ddpm_core.training.datasets import DataError, DataSpec, is_image_file  # noqa: E402
from ddpm_core.training.digits import DIGITS, ArrayData, open_digits  # noqa: E402


def image_transforms(spec: DataSpec) -> list:
    """Resize + center crop (unless already at size), grayscale for 1-channel image folders, to [0, 1]."""
    steps = []
    if spec.native_size != (spec.image_size, spec.image_size):
        steps += [transforms.Resize(spec.image_size, transforms.InterpolationMode.BILINEAR),
                  transforms.CenterCrop(spec.image_size)]
    if spec.format == "image-folder" and spec.channels == 1:
        steps.append(transforms.Grayscale(1))
    return steps + [transforms.ToTensor()]


def load_image(path: str) -> Image.Image:
    """torchvision's default loader (``pil_loader``: RGB), with a decoding failure named after the file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


def pipeline_error(e: DataError, spec: DataSpec) -> DataError:
    """A ``DataError`` raised in a DataLoader worker comes back with the worker's traceback in its message;
    the original one-line message (the traceback's last line) as a ``DataError`` (``spec``: as the MindSpore
    twin, which names the source when the message names no file)."""
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[-1].startswith(f"{DataError.__module__}.DataError: "):
        return DataError(lines[-1].split(": ", 1)[1])
    return DataError(str(e) or f"{spec.source}: the PyTorch data pipeline failed")


class TrainingData:
    """The dataset of ``spec`` and the batches the tape asks for, as float32 numpy (B, C, H, W) in [0, 1]."""

    def __init__(self, spec: DataSpec, workers: int = 0):
        self.spec = spec
        self.workers = workers
        transform = transforms.Compose(image_transforms(spec))
        if spec.format == "fashion-mnist":
            self.dataset = datasets.FashionMNIST(spec.torchvision_root, train=True, transform=transform, download=False)
        else:
            self.dataset = datasets.ImageFolder(spec.torchvision_root, transform=transform, loader=load_image,
                                                is_valid_file=is_image_file)
            if tuple(p for p, _ in self.dataset.samples) != spec.files:
                raise DataError(f"{spec.source}: torchvision lists the images differently from ddpm_core.training.datasets")
        if len(self.dataset) != spec.examples:
            raise DataError(f"{spec.source}: torchvision reads {len(self.dataset)} examples, expected {spec.examples}")

    @property
    def examples(self) -> int:
        return len(self.dataset)

    def batches(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """One batch per row of ``indices`` (S, B), in order."""
        loader = DataLoader(self.dataset, batch_sampler=[row.tolist() for row in indices], num_workers=self.workers)
        try:
            for images, _labels in loader:
                yield images.numpy()
        except DataError as e:
            raise pipeline_error(e, self.spec) from None

    def read(self, indices: np.ndarray) -> np.ndarray:
        """The examples at ``indices`` as one batch."""
        return next(self.batches(np.asarray(indices)[None]))


def open_data(spec: DataSpec, workers: int = 0) -> TrainingData | ArrayData:
    """The loader of ``spec``; digits are in memory already and reach both twins as the same numpy array."""
    return open_digits(spec) if spec.format == DIGITS else TrainingData(spec, workers)
