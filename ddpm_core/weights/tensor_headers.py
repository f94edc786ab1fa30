"""What a weight file declares about its tensors, checked against the file's real size before anything is
allocated or inflated: a crafted or damaged header is one line naming the file and the tensor, never a
``MemoryError``, an overflow or a numpy message.

Rules it keeps:
  * a tensor's byte count is computed with Python integers (no int64 overflow to 0 or below) from dims that
    are integers >= 0, at most ``MAX_DIMS`` of them, and must not exceed the bytes the file has for it;
  * ``.safetensors``: the header length, the JSON header (each entry's dtype, shape and data offsets) and
    every tensor's extent are checked here, by reading only the header, before the safetensors library maps
    the file; ``.pt`` (``torch.save``'s zip): the members' declared sizes, uncompressed, must fit in the file,
    so nothing is inflated beyond it; ``.ckpt``: ``ddpm_core.weights.ckpt`` checks each tensor with ``declared_bytes``.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any, Sequence

from ddpm_core import schema
from ddpm_core.errors import WeightsError, type_and_first_sentence

MAX_DIMS = 32
"""The most dims a tensor may have (numpy 1.x's limit)."""
SAFETENSORS_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                        "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
"""The safetensors dtypes and their sizes in bytes (the format's specification)."""
SAFETENSORS_MAX_HEADER = 100_000_000
"""The largest JSON header the safetensors library reads (its ``MAX_HEADER_SIZE``)."""

READ_PEAK_PER_BYTE = 4
READ_PEAK_SLACK = 256 * 1024
"""Reading a weight file allocates at most ``READ_PEAK_PER_BYTE`` times its size plus ``READ_PEAK_SLACK`` bytes
of Python and numpy memory at once, whatever its header declares: the fuzz test measures it (measured: at most
3.6 times the size, and 29 kB above 4 times it for files under 100 bytes)."""

_SAFETENSORS_ENTRY = schema.obj({"dtype": schema.string(tuple(SAFETENSORS_ITEMSIZE)),
                                 "shape": schema.list_of(schema.integer(0)),
                                 "data_offsets": schema.list_of(schema.integer(0), 2)})


def declared_bytes(dims: Sequence[Any], itemsize: int) -> int:
    """The bytes a tensor of ``dims`` takes, exactly (Python integers); ``ValueError`` naming the problem if
    ``dims`` are not at most ``MAX_DIMS`` integers >= 0."""
    if len(dims) > MAX_DIMS:
        raise ValueError(f"{len(dims)} dims (at most {MAX_DIMS})")
    bad = [d for d in dims if isinstance(d, bool) or not isinstance(d, int) or d < 0]
    if bad:
        raise ValueError(f"dims {list(dims)} hold {bad[0]!r}; each must be an integer >= 0")
    return math.prod(dims) * itemsize


def _cannot_read(path: Path, problem: str) -> WeightsError:
    return WeightsError([problem], f"cannot read {path}")


def check_safetensors_header(path: str | os.PathLike) -> None:
    """A ``WeightsError`` unless the header of the ``.safetensors`` file ``path`` fits the file: its length,
    its JSON, and each tensor's dtype, shape and data offsets (inside the data, as many bytes as its shape
    needs). Reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _cannot_read(path, f"truncated or not a safetensors file ({size} bytes, no header length)")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, SAFETENSORS_MAX_HEADER):
            raise _cannot_read(path, f"truncated or not a safetensors file (its header claims {n} bytes; the file "
                               f"has {size - 8} after the length)")
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise _cannot_read(path, f"truncated or not a safetensors file (header: {schema.json_problem(e)})") from None
    if not isinstance(header, dict):
        raise _cannot_read(path, f"not a safetensors file (its header is {schema.shown(header)}, not an object)")
    data = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            _SAFETENSORS_ENTRY(entry, "")
            offsets = entry["data_offsets"]
            if len(offsets) != 2 or offsets[0] > offsets[1]:
                raise ValueError(f"data_offsets {offsets} are not [begin, end]")
            begin, end = offsets
            if end > data:
                raise ValueError(f"data_offsets {offsets} reach beyond the {data} bytes of data the file holds "
                                 "(truncated, or not a safetensors file)")
            need = declared_bytes(entry["shape"], SAFETENSORS_ITEMSIZE[entry["dtype"]])
            if need != end - begin:
                raise ValueError(f"shape {entry['shape']} of {entry['dtype']} needs {need} bytes, its data_offsets "
                                 f"hold {end - begin}")
        except (schema.Invalid, ValueError) as e:
            raise _cannot_read(path, f"tensor {name!r}: {e}") from None


def check_zip_sizes(path: str | os.PathLike) -> None:
    """A ``WeightsError`` unless every member of the zip ``path`` (``torch.save``'s format) declares an
    uncompressed size that, added up, fits in the file: nothing read from it expands beyond its size."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise _cannot_read(path, f"damaged: its zip structure is broken ({type_and_first_sentence(e)})") from None
    total = 0
    for m in members:
        total += m.file_size
        if total > size:
            raise _cannot_read(path, f"zip member {m.filename.split('/', 1)[-1]} would expand to {m.file_size} "
                               f"bytes, beyond the file's {size} (torch.save stores members uncompressed)")
