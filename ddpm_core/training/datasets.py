"""Training data on disk, checked before any framework loader sees it: Fashion-MNIST IDX files
(plain or ``.gz``) and folders of images, the layout each framework's loader expects, and the
one-line ``DataError`` that names the offending file. ``--data digits`` (scikit-learn's built-in
digits, nothing on disk) is handed to ``ddpm_core.training.digits``.

Rules it keeps:
  * Every problem a user can cause (a missing folder, a truncated or corrupt IDX file, a file that is
    not an image) is a ``DataError`` whose message names the file; the commands print it as one line
    and exit 2. IDX files are validated (magic, dimensions, size against the file length, image count
    against label count) before a loader reads them.
  * Both twins see the same examples in the same order: the IDX record order, or the image files
    sorted by class folder and then file name (byte order), with the same extension list, which is
    what ``torchvision.datasets.ImageFolder`` and ``mindspore.dataset.ImageFolderDataset`` both do.
  * The frameworks' loaders stay in charge of reading and decoding; this module only stages the
    files where each loader looks for them (symlinks, or decompressed copies of ``.gz`` files).
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddpm_core.errors import DataError
from ddpm_core.runtime.atomic import host_tag, process_alive

FORMATS = ("fashion-mnist", "image-folder", "digits")
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_UBYTE = 0x08
FASHION_MNIST_SIZE = (28, 28)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tiff", ".JPG", ".JPEG", ".PNG", ".TIFF")
"""The tutorial's ``extensions=['.jpg', '.jpeg', '.png', '.tiff']`` and their upper-case spellings, matched
exactly (MindSpore's ImageFolderDataset compares suffixes case-sensitively; torchvision is given the same
test), so both twins list the same files."""


@dataclass(frozen=True)
class IdxHeader:
    path: str
    dims: tuple[int, ...]

    @property
    def count(self) -> int:
        return self.dims[0]


@dataclass(frozen=True)
class DataSpec:
    """What a twin's loader reads: the format, the staged location for each loader, and the tensor shape.

    ``examples`` is the number of examples; ``native_size`` the images' own (height, width) when known
    (Fashion-MNIST), so a loader can skip resizing when it already matches.
    """

    format: str
    source: str
    examples: int
    image_size: int
    channels: int
    files: tuple[str, ...] = ()
    native_size: tuple[int, int] | None = None
    torchvision_root: str | None = None
    mindspore_dir: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


# ---------------------------------------------------------------- IDX files
def read_idx_header(path: str | os.PathLike, ndim: int, display: str | None = None) -> IdxHeader:
    """Validate the IDX file at ``path`` (plain): unsigned-byte magic with ``ndim`` dimensions, and a
    length of exactly header + prod(dims) bytes. ``display`` is the name used in messages."""
    name = display or str(path)
    size = os.path.getsize(path)
    header_len = 4 + 4 * ndim
    with open(path, "rb") as f:
        head = f.read(header_len)
    if len(head) < 4:
        raise DataError(f"{name}: not an IDX file: only {size} bytes")
    zero, dtype, nd = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != IDX_UBYTE or nd != ndim:
        raise DataError(f"{name}: not an unsigned-byte IDX file with {ndim} dimension(s): magic number "
                        f"0x{head[:4].hex()}, expected 0x{0x0800 | ndim:08x}")
    if len(head) < header_len:
        raise DataError(f"{name}: truncated IDX header ({size} bytes, the header alone needs {header_len})")
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = header_len + int(np.prod(dims, dtype=np.int64))
    if size != expected:
        shape = "x".join(map(str, dims))
        what = "truncated" if size < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: the header says {shape} ({expected} bytes with the header), "
                        f"the file has {size} bytes")
    if dims[0] == 0:
        raise DataError(f"{name}: holds no records")
    return IdxHeader(name, tuple(int(d) for d in dims))


def _find(directory: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``directory`` (the plain file wins)."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_fashion_mnist(root: Path) -> tuple[Path, Path] | None:
    """(images, labels) of the Fashion-MNIST training split under ``root`` (flat, the standard download
    layout and MindSpore's, or torchvision's ``FashionMNIST/raw``); None if there is none."""
    for directory in (root, root / "FashionMNIST" / "raw"):
        images = _find(directory, TRAIN_IMAGES)
        if images is not None:
            labels = _find(directory, TRAIN_LABELS)
            if labels is None:
                raise DataError(f"{directory}: has {images.name} but no {TRAIN_LABELS} (or {TRAIN_LABELS}.gz)")
            return images, labels
    return None


def _stage_file(src: Path, dest: Path) -> None:
    """``dest`` becomes ``src`` itself (a symlink) or, for ``.gz``, its decompressed copy."""
    if src.suffix != ".gz":
        os.symlink(src.resolve(), dest)
        return
    try:
        with gzip.open(src, "rb") as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        reason = "truncated gzip stream" if isinstance(e, EOFError) else f"corrupt gzip data ({e})"
        raise DataError(f"{src}: {reason}") from None


def stage_fashion_mnist(images: Path, labels: Path, stage: Path) -> tuple[IdxHeader, str, str]:
    """Validate the pair and lay it out for both loaders under ``stage``; return (image header,
    torchvision root, MindSpore dataset dir).

    torchvision's ``FashionMNIST(root)`` reads ``root/FashionMNIST/raw/<name>`` (plain files) and checks
    that the four files of both splits exist; with ``train=True`` it reads only the training pair, so the
    test names point at the training files when the real ones are absent. MindSpore's
    ``FashionMnistDataset(dir, usage="train")`` reads ``dir/<name>`` (plain files).
    """
    ms_dir = stage / "mindspore"
    raw = stage / "torchvision" / "FashionMNIST" / "raw"
    ms_dir.mkdir(parents=True)
    raw.mkdir(parents=True)
    for src, stem in ((images, TRAIN_IMAGES), (labels, TRAIN_LABELS)):
        _stage_file(src, ms_dir / stem)
    img = read_idx_header(ms_dir / TRAIN_IMAGES, 3, str(images))
    if img.dims[1:] != FASHION_MNIST_SIZE:
        raise DataError(f"{images}: holds {img.dims[1]}x{img.dims[2]} images; Fashion-MNIST's are "
                        f"{FASHION_MNIST_SIZE[0]}x{FASHION_MNIST_SIZE[1]} (MindSpore's FashionMnistDataset reads no other size)")
    lab = read_idx_header(ms_dir / TRAIN_LABELS, 1, str(labels))
    if img.count != lab.count:
        raise DataError(f"{labels}: holds {lab.count} labels but {images} holds {img.count} images")
    for stem, test_stem in ((TRAIN_IMAGES, TEST_IMAGES), (TRAIN_LABELS, TEST_LABELS)):
        os.symlink((ms_dir / stem).resolve(), raw / stem)
        os.symlink((ms_dir / stem).resolve(), raw / test_stem)
    return img, str(stage / "torchvision"), str(ms_dir)


# ---------------------------------------------------------------- image folders
def is_image_file(path: str) -> bool:
    return path.endswith(IMAGE_EXTENSIONS)


def list_image_folder(root: Path) -> list[tuple[str, int]]:
    """(path, class index) of every image, classes and files sorted as both frameworks sort them."""
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DataError(f"{root}: no class subfolders; an image folder holds ROOT/<class>/<image> "
                        f"(one subfolder is enough), with extensions {', '.join(IMAGE_EXTENSIONS[:4])}")
    samples = []
    for index, name in enumerate(classes):
        for dirpath, dirnames, filenames in sorted(os.walk(root / name, followlinks=True)):
            dirnames.sort()
            samples += [(os.path.join(dirpath, f), index) for f in sorted(filenames) if is_image_file(f)]
    if not samples:
        raise DataError(f"{root}: no images with extensions {', '.join(IMAGE_EXTENSIONS[:4])} in its class folders")
    return samples


def check_image_files(paths: list[str]) -> None:
    """Open every file's header with Pillow (cheap: no pixel decoding) so a file that is not an image at
    all fails now, naming it, rather than deep inside a loader's worker thread."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as im:
                im.size  # noqa: B018 - the header is parsed on open
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None


# ---------------------------------------------------------------- the entry point
def detect_format(root: Path) -> str:
    if find_fashion_mnist(root) is not None:
        return "fashion-mnist"
    if any(e.is_dir() for e in os.scandir(root)):
        return "image-folder"
    raise DataError(f"{root}: holds neither Fashion-MNIST ({TRAIN_IMAGES}[.gz] and {TRAIN_LABELS}[.gz]) "
                    "nor class subfolders of images")


def is_digits(data: str | os.PathLike | None, fmt: str = "auto") -> bool:
    """Whether ``--data``/``--data-format`` select scikit-learn's digits: ``--data digits`` exactly (a folder
    of that name is ``./digits``)."""
    return str(data) == "digits" and fmt in ("auto", "digits")


def default_image_size(data: str | os.PathLike | None, fmt: str = "auto") -> int:
    """``--image-size`` when not given: the digits' own 8, else the tutorial's 28."""
    return 8 if is_digits(data, fmt) else 28


def default_flip(data: str | os.PathLike | None, fmt: str = "auto") -> bool:
    """``--flip`` when not given: the tutorial's random horizontal flip, except for digits (a mirrored 2 is no digit)."""
    return not is_digits(data, fmt)


def default_channels(fmt: str) -> int:
    return 1 if fmt == "fashion-mnist" else 3


def prepare_data(data: str | os.PathLike, fmt: str, image_size: int, channels: int | None,
                 stage: str | os.PathLike) -> DataSpec:
    """Check ``data`` and stage it under ``stage`` (an empty private folder) for both loaders.

    ``fmt`` is ``"auto"`` or one of ``FORMATS``; ``channels`` None takes the format's default
    (1 for Fashion-MNIST, 3 for images). ``data`` "digits" is scikit-learn's built-in digits
    (``ddpm_core.training.digits``): nothing is read from disk or staged.
    """
    if is_digits(data, fmt):
        from ddpm_core.training.digits import digits_spec

        return digits_spec(image_size, channels)
    if fmt == "digits":
        raise DataError(f"--data-format digits reads scikit-learn's built-in digits: pass --data digits, not {data}")
    root = Path(data)
    if not root.exists():
        raise DataError(f"{root}: data folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (pass the folder that holds the data)")
    if fmt == "auto":
        fmt = detect_format(root)
    if fmt not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    channels = default_channels(fmt) if channels is None else channels
    if fmt == "fashion-mnist":
        found = find_fashion_mnist(root)
        if found is None:
            raise DataError(f"{root}: no {TRAIN_IMAGES}[.gz] here or in {root / 'FashionMNIST' / 'raw'}")
        if channels != 1:
            raise DataError(f"{root}: Fashion-MNIST images have 1 channel, but --channels {channels} was given")
        header, tv_root, ms_dir = stage_fashion_mnist(*found, Path(stage))
        return DataSpec(fmt, str(root), header.count, image_size, channels, tuple(map(str, found)),
                        (header.dims[1], header.dims[2]), tv_root, ms_dir)
    if channels not in (1, 3):
        raise DataError(f"{root}: image folders are read as RGB (--channels 3) or grayscale (--channels 1), "
                        f"not {channels} channels")
    samples = list_image_folder(root)
    check_image_files([p for p, _ in samples])
    return DataSpec(fmt, str(root), len(samples), image_size, channels, tuple(p for p, _ in samples),
                    None, str(root), str(root))


STAGE_PREFIX = "ddpm-data-"


def make_stage_dir() -> tempfile.TemporaryDirectory:
    """A private folder for the staged files, removed when the returned object is cleaned up.

    Its name carries this host and process id. A process that is SIGKILLed (a launcher stopping a
    data-parallel job, the out-of-memory killer) cannot remove its folder, which may hold a decompressed
    copy of the data, so such folders of this host whose process is gone are removed first."""
    remove_orphaned_stage_dirs()
    return tempfile.TemporaryDirectory(prefix=f"{STAGE_PREFIX}{host_tag()}-{os.getpid()}-")


def remove_orphaned_stage_dirs() -> list[Path]:
    """Remove the staging folders of this host whose process no longer exists; return them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{STAGE_PREFIX}{host_tag()}-*-*"):
        pid = folder.name[len(f"{STAGE_PREFIX}{host_tag()}-"):].split("-", 1)[0]
        if pid.isdigit() and folder.is_dir() and not folder.is_symlink() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def write_synthetic_fashion_mnist(folder: str | os.PathLike, examples: int = 64, seed: int = 0) -> Path:
    """Write ``examples`` synthetic 28x28 "garments" (bright rectangles on black) as gzipped Fashion-MNIST
    training files in ``folder``: data for trying the commands without downloading anything."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = np.zeros((examples, *FASHION_MNIST_SIZE), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(2, 10, 2)
        height, width = rng.integers(10, 17, 2)
        image[top:top + height, left:left + width] = rng.integers(120, 256)
    labels = rng.integers(0, 10, examples).astype(np.uint8)
    for name, array in ((TRAIN_IMAGES, images), (TRAIN_LABELS, labels)):
        header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
        with gzip.open(folder / f"{name}.gz", "wb") as f:
            f.write(header + array.tobytes())
    return folder
