"""Crafted weight files and hand-edited run files for issue 25's corpus and fuzz tests: each function writes
one file as an adversarial user (or a damaged disk) would make it, starting where it can from what the
project's own writers produce.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.weights import ckpt
from ddpm_core.weights.files import save_weights
from ddpm_core.weights.naming import unet_parameters

SMALL = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SMALL_JSON = json.dumps({"dim": 8, "channels": 1, "dim_mults": [1, 2]})


def small_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Every parameter of ``Unet(SMALL)``, PyTorch names, float32 drawn from N(0, 0.1)."""
    rng = np.random.default_rng(seed)
    return {s.torch_name: (0.1 * rng.standard_normal(s.shape)).astype(np.float32) for s in unet_parameters(SMALL)}


def project_file(folder: Path, ext: str) -> Path:
    """``SMALL``'s weights written by ``save_weights`` (the project's own writer) as ``folder/w<ext>``."""
    path = folder / f"w{ext}"
    save_weights(small_weights(), path, "torch", SMALL)
    return path


def ckpt_with_dims(path: Path, dims: list[int], content: bytes = b"", tensor_type: str = "Float32") -> Path:
    """A ``.ckpt`` of one tensor ``x`` whose header declares ``dims`` over ``content``."""
    Checkpoint, _ = ckpt.message_classes()
    message = Checkpoint()
    value = message.value.add(tag="x")
    value.tensor.dims.extend(dims)
    value.tensor.tensor_type = tensor_type
    value.tensor.tensor_content = content
    path.write_bytes(message.SerializeToString())
    return path


def safetensors_with_header(path: Path, header: Any, data: bytes = b"", length: int | None = None) -> Path:
    """A ``.safetensors`` of the JSON ``header`` (its length field ``length`` if given) followed by ``data``."""
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def pt_that_inflates(path: Path, elements: int = 1 << 20) -> Path:
    """A ``.pt`` as ``torch.save`` writes it, of ``elements`` float32 zeros, with its members deflated: a small
    file that expands to ``4 * elements`` bytes when read."""
    import torch

    plain = path.with_name(path.stem + ".plain.pt")
    torch.save({"x": torch.zeros(elements)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member.filename))
    plain.unlink()
    return path


def edit_json(path: Path, edit: Callable[[Any], Any]) -> Path:
    """Rewrite the JSON file ``path`` with ``edit(value)`` (which may change ``value`` in place and return None)."""
    value = json.loads(path.read_text())
    changed = edit(value)
    path.write_text(json.dumps(value if changed is None else changed))
    return path
