"""The one digest: how this project hashes bytes, arrays and named states (sha256), and the framings of the
digests it stores.

Rules it keeps:
  * every digest the project writes or compares is ``digest`` over a sequence of parts: a ``str`` part is its
    UTF-8 bytes, a ``bytes`` part is itself, an array part is its values' little-endian bytes in C order
    (``array_bytes``), whatever the array's byte order or memory layout, so equal digests mean bit-identical
    values on any host;
  * a tensor's digest covers its dtype and shape too (``tensor_digest``); a state's covers every name, in
    sorted order, so the order a dict was built in never matters;
  * the framings below are stored in files earlier versions wrote (manifests and their sidecars, a
    ``.safetensors`` checksum, a run's checkpoint records, a golden file's tape, weights and outputs digests):
    changing one changes every stored value, so they are fixed, and ``tests/ddpm_core/test_digest.py`` pins
    each one's value on a fixed input.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Union

import numpy as np

Part = Union[bytes, str, np.ndarray]
"""One piece of what a digest covers (a number or list is taken as an array)."""

SAFETENSORS_FRAME = "{name}\0{dtype}{shape}\0"
"""Each tensor's header in a ``.safetensors`` file's checksum (its metadata key ``sha256``)."""
TAPE_FRAME = "{name}|{dtype}|{shape}|"
"""Each array's header in a golden file's ``tape_sha256`` (``parity.engine.tape.tape_hash``)."""
FILE_CHUNK = 1 << 20
"""``file_digest`` reads this many bytes at a time."""


def array_bytes(value: np.ndarray) -> bytes:
    """The little-endian, C-order bytes of ``value``'s values (a copy only where the layout differs)."""
    value = np.asarray(value)
    return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()


def digest(parts: Iterable[Part]) -> str:
    """sha256, as 64 lowercase hex digits, over ``parts`` in order (see the module's rules)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            part = part.encode()
        h.update(part if isinstance(part, (bytes, bytearray, memoryview)) else array_bytes(part))
    return h.hexdigest()


def tensor_digest(value: np.ndarray) -> str:
    """A tensor's digest, a manifest's entry: its dtype name and shape (``float32[2, 3]``), then its values."""
    value = np.asarray(value)
    return digest((f"{value.dtype.name}{list(value.shape)}", value))


def state_digest(state: Mapping[str, np.ndarray], frame: str) -> str:
    """One digest over a named state: for each name in sorted order, ``frame`` filled with the ``name``, the
    ``dtype`` name and the ``shape`` (a list), then the values (``SAFETENSORS_FRAME``, ``TAPE_FRAME``)."""

    def parts() -> Iterable[Part]:
        for name in sorted(state):
            value = np.asarray(state[name])
            yield frame.format(name=name, dtype=value.dtype.name, shape=list(value.shape))
            yield value

    return digest(parts())


def manifest_digest(state: Mapping[str, np.ndarray]) -> str:
    """The digest of a state's manifest: ``name=<tensor_digest>;`` for each name in sorted order (a golden
    file's ``weights_sha256`` and ``outputs_sha256``)."""
    return digest(f"{name}={tensor_digest(state[name])};" for name in sorted(state))


def file_digest(path: str | os.PathLike) -> str:
    """The digest of a file's bytes (a run's checkpoint records), read ``FILE_CHUNK`` bytes at a time."""
    with open(path, "rb") as f:
        return digest(iter(lambda: f.read(FILE_CHUNK), b""))
