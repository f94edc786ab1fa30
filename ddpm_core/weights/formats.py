"""Weight files on disk: the readers and writers of ``.pt``/``.pth`` (PyTorch), ``.ckpt`` (MindSpore)
and ``.safetensors``, and their checksums; every weight problem is a ``ddpm_core.errors.WeightsError``.

Rules it keeps: each framework (and safetensors) is imported inside the reader or writer of its own
format, never at import time; ``.ckpt`` files are read and written without MindSpore (``ddpm_core.weights.ckpt``,
byte for byte as ``mindspore.save_checkpoint`` writes them); PyTorch files are read with ``torch.load(weights_only=True)``; a file
that cannot be read is one ``WeightsError`` naming it; what a file declares about its tensors is checked
against its real size before anything is allocated (``ddpm_core.weights.tensor_headers``). ``ddpm_core.weights.files`` builds the strict,
atomic ``load_weights``/``save_weights`` on top of these.

Checksums: every file written here carries one, in the place its format offers, and every reader
verifies it before trusting a value (``RawFile.verified``); a mismatch is one ``WeightsError`` line:
  * ``.pt``: the CRC-32 of each zip member, which ``torch.save`` writes (checked with ``zipfile``);
  * ``.ckpt``: MindSpore's own ``crc_check=True`` trailer, ``b"crc_num"`` + the CRC-32 of everything
    before it as 10 big-endian bytes (checked here byte by byte, with or without MindSpore);
  * ``.safetensors``: ``sha256`` in the metadata, over every tensor's name, dtype, shape and bytes.
A file from elsewhere may carry none (``verified`` False): ``ddpm_core.weights.files`` then checks that
its values are plausible.
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import WeightsError, type_and_first_sentence
from ddpm_core.runtime.frameworks import require
from ddpm_core.weights.digest import SAFETENSORS_FRAME, state_digest
from ddpm_core.weights.tensor_headers import check_safetensors_header, check_zip_sizes

FORMATS = {".pt": "torch", ".pth": "torch", ".ckpt": "mindspore", ".safetensors": "safetensors"}
"""file extension -> format. ``torch`` files are written in torch naming, ``mindspore`` in ms naming,
``safetensors`` in the naming given (recorded in its metadata)."""
SAFETENSORS_FORMAT = "ddpm-parity-weights"
SAFETENSORS_VERSION = "1"
SAFETENSORS_CHECKSUM = "sha256"
"""metadata key of the tensors' ``state_digest`` (framed by ``SAFETENSORS_FRAME``)"""
IMAGE_SIZE_KEY = "image_size"
"""safetensors metadata key: the height = width the model was trained at (a decimal string)"""
BFLOAT16_FORMATS = ("torch", "mindspore")
_MODEL_ENTRIES = ("model", "state_dict")
"""A PyTorch checkpoint dict holding one of these entries keeps the weights there; the rest are extras."""


@dataclass(frozen=True)
class Skipped:
    """A file entry that is not a model parameter, and the rule that recognised it."""

    name: str
    reason: str


def format_of(path: str | os.PathLike) -> str:
    """The format a path's extension names, or a ``WeightsError``."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise WeightsError([f"unknown extension {ext or '(none)'!r}; use one of {', '.join(FORMATS)}"], str(path))
    return FORMATS[ext]


@dataclass
class RawFile:
    entries: dict[str, Any]
    dtypes: dict[str, str]
    extras: list[Skipped] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    verified: bool = False
    """the file carried a checksum and every byte matched it"""


def _damaged(path: Path, what: str) -> WeightsError:
    return WeightsError([f"damaged: {what}; the file changed after it was written"], f"cannot read {path}")


def check_zip_crc(path: Path) -> bool:
    """``torch.save``'s zip format: True when every member passes its CRC-32; False when the file is not a zip
    (the legacy format, which has no checksum); a ``WeightsError`` when a member fails or cannot be read."""
    if not zipfile.is_zipfile(path):
        return False
    check_zip_sizes(path)  # a member that would inflate beyond the file is refused before testzip reads it
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        # NotImplementedError: a damaged header names a compression method zipfile does not know
        raise _damaged(path, f"its zip structure is broken ({type_and_first_sentence(e)})") from None
    if bad is not None:
        raise _damaged(path, f"zip member {bad.split('/', 1)[-1]} fails its CRC-32 check")
    return True


# ---- .ckpt checksum: MindSpore's crc_check trailer, byte-level (no MindSpore needed) ----
def check_ckpt_crc(path: Path) -> bool:
    """True when the ``.ckpt`` ends with MindSpore's CRC footer and the CRC-32 matches; False when it has
    no footer (saved without ``crc_check=True``); a ``WeightsError`` on a mismatch."""
    from ddpm_core.weights import ckpt

    ok = ckpt.verify_crc(Path(path).read_bytes())
    if ok is False:
        raise _damaged(path, "its CRC-32 (MindSpore's crc_check) does not match its content")
    return ok is True
# ---- end of the .ckpt checksum


def verify_checksum(path: str | os.PathLike) -> bool:
    """Verify the checksum a weights file carries: True when it matched, False when the file carries none;
    a ``WeightsError`` when it does not match (or the file cannot be read)."""
    path = Path(path)
    fmt = format_of(path)
    if fmt == "torch":
        return check_zip_crc(path)
    if fmt == "mindspore":
        return check_ckpt_crc(path)
    return _read_safetensors(path).verified


def _read_torch(path: Path) -> RawFile:
    import pickle

    torch = require("torch")

    verified = check_zip_crc(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        text = str(e)
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        operand = re.search(r"Unsupported operand \d+", text)
        if glob or operand or "Weights only load failed" in text:
            detail = (f"the pickle references {glob.group(1)}, which is not allowed" if glob else
                      operand.group(0) if operand else "it holds objects other than tensors and plain containers")
            raise WeightsError([f"refused by torch.load(weights_only=True): {detail} (a file that would run code "
                                "when loaded, or a corrupt one; only tensors and plain containers are accepted)"],
                               f"cannot read {path}") from None
        raise WeightsError([f"not a readable PyTorch file ({type_and_first_sentence(e)})"], f"cannot read {path}") from None
    except Exception as e:  # the zip and pickle readers raise many types for damaged bytes
        raise WeightsError([f"truncated or not a PyTorch file ({type_and_first_sentence(e)})"], f"cannot read {path}") from None
    if not isinstance(obj, Mapping):
        raise WeightsError([f"holds a {type(obj).__name__}, not a state_dict"], f"cannot read {path}")
    extras = []
    inner = [k for k in _MODEL_ENTRIES if isinstance(obj.get(k), Mapping)]
    if len(inner) > 1:
        raise WeightsError([f"holds both {inner[0]!r} and {inner[1]!r}: cannot tell which is the model"],
                           f"cannot read {path}")
    if inner:
        extras = [Skipped(str(k), "training extra in the checkpoint dict") for k in obj if k != inner[0]]
        obj = obj[inner[0]]
    entries, dtypes = {}, {}
    for name, value in obj.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            dtypes[name] = str(value.dtype).removeprefix("torch.")
            try:
                value = value.numpy()
            except TypeError:  # bfloat16 / float8: widened exactly to float32
                value = value.float().numpy()
        entries[str(name)] = value
    return RawFile(entries, dtypes, extras, verified=verified)


def _read_mindspore(path: Path) -> RawFile:
    from ddpm_core.weights import ckpt

    verified = check_ckpt_crc(path)
    try:
        found = ckpt.read(path)
    except ckpt.CheckpointError as e:
        raise WeightsError([f"truncated or not a MindSpore checkpoint ({e})"], f"cannot read {path}") from None
    entries, dtypes, extras = {}, {}, []
    for entry in found:
        if isinstance(entry.value, str):  # append_dict / training metadata saved as strings
            extras.append(Skipped(entry.name, "non-tensor checkpoint entry (str)"))
            continue
        dtypes[entry.name] = entry.tensor_type.lower()
        entries[entry.name] = entry.value
    return RawFile(entries, dtypes, extras, verified=verified)


def _read_safetensors(path: Path) -> RawFile:
    from safetensors import safe_open

    check_safetensors_header(path)
    try:
        with safe_open(str(path), framework="np") as f:
            metadata = dict(f.metadata() or {})
            entries = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError (and TypeError for BF16 in numpy)
        raise WeightsError([f"truncated or not a safetensors file ({type_and_first_sentence(e)})"],
                           f"cannot read {path}") from None
    version = metadata.get("format_version", SAFETENSORS_VERSION)
    if version != SAFETENSORS_VERSION:
        raise WeightsError([f"format_version {version!r}; this reader knows {SAFETENSORS_VERSION!r}"],
                           f"cannot read {path}")
    recorded = metadata.get(SAFETENSORS_CHECKSUM)
    if recorded is not None and recorded != state_digest(entries, SAFETENSORS_FRAME):
        raise _damaged(path, f"its tensors do not match the {SAFETENSORS_CHECKSUM} in its metadata")
    return RawFile(entries, {k: v.dtype.name for k, v in entries.items()}, metadata=metadata,
                   verified=recorded is not None)


def _write_torch(path: Path, state: Mapping[str, np.ndarray], naming: str, cfg: UnetConfig, dtype: str | None,
                 diffusion: DiffusionConfig | None = None, image_size: int | None = None):
    """A plain state_dict (no room for settings: ``load_state_dict`` takes it strictly); zip CRC-32s."""
    torch = require("torch")

    tensors = {n: torch.from_numpy(np.array(v)) for n, v in state.items()}
    if dtype == "bfloat16":
        tensors = {n: t.to(torch.bfloat16) for n, t in tensors.items()}
    torch.save(tensors, path)


def _write_mindspore(path: Path, state: Mapping[str, np.ndarray], naming: str, cfg: UnetConfig, dtype: str | None,
                     diffusion: DiffusionConfig | None = None, image_size: int | None = None):
    """Tensors only (``load_param_into_net(strict_load=True)`` takes it as is), with MindSpore's CRC footer,
    written by ``ddpm_core.weights.ckpt`` (no MindSpore needed)."""
    from ddpm_core.weights import ckpt

    types = {n: ckpt.BFLOAT16 for n in state} if dtype == "bfloat16" else None
    try:
        ckpt.write(path, state, crc_check=True, tensor_types=types)
    except ckpt.CheckpointError as e:
        raise WeightsError([str(e)], f"cannot write {path}") from None


def _write_safetensors(path: Path, state: Mapping[str, np.ndarray], naming: str, cfg: UnetConfig, dtype: str | None,
                       diffusion: DiffusionConfig | None = None, image_size: int | None = None):
    """Tensors, the naming, the configs, the image size the model was trained at and the ``sha256`` of the
    tensors in the metadata."""
    from safetensors.numpy import save_file

    tensors = {n: np.ascontiguousarray(v) for n, v in state.items()}
    metadata = {"format": SAFETENSORS_FORMAT, "format_version": SAFETENSORS_VERSION, "naming": naming,
                "unet_config": cfg.to_json(), SAFETENSORS_CHECKSUM: state_digest(tensors, SAFETENSORS_FRAME)}
    if diffusion is not None:
        metadata["diffusion_config"] = diffusion.to_json()
    if image_size is not None:
        metadata[IMAGE_SIZE_KEY] = str(image_size)
    save_file(tensors, path, metadata=metadata)


READERS: dict[str, Callable[[Path], RawFile]] = {
    "torch": _read_torch, "mindspore": _read_mindspore, "safetensors": _read_safetensors,
}
WRITERS: dict[str, Callable[..., None]] = {
    "torch": _write_torch, "mindspore": _write_mindspore, "safetensors": _write_safetensors,
}
