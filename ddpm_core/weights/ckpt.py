"""MindSpore ``.ckpt`` files without MindSpore: read and write them with the ``protobuf`` package, byte
for byte as ``mindspore.save_checkpoint`` / ``mindspore.load_checkpoint`` (2.x) do.

The layout (MindSpore's ``mindspore/train/serialization.py`` and ``checkpoint.proto``, 2.7-2.10):
  * The file is a sequence of serialized ``Checkpoint`` messages, one per tensor (a tensor over
    512 MiB is cut into 512 MiB pieces, each its own message with the same tag and dims). Protobuf
    merges concatenated messages, so one parse of the whole file lists every piece in order.
  * Each piece is ``Checkpoint{value: [Value{tag, tensor: TensorProto{dims, tensor_type,
    tensor_content}}]}``: ``dims`` the shape (``[]`` for a scalar), ``tensor_type`` MindSpore's dtype
    name (``Float32``, ``BFloat16``, ... ``str``), ``tensor_content`` the little-endian C-order bytes.
  * Strings (``append_dict`` metadata) are ``tensor_type "str"``, ``dims [0]``, the UTF-32 bytes of
    ``numpy.array(text)``.
  * A tensor with no elements writes no message at all, so it is not in the file (MindSpore's quirk, kept).
  * ``crc_check=True`` appends a 17-byte footer: ``b"crc_num"`` + the CRC-32 (``binascii.crc32``) of
    everything before it as 10 big-endian bytes. Encrypted files (``enc_key``) are not supported.

The message classes are built here from a ``FileDescriptorProto`` equal to MindSpore's (a test compares
them), in a private descriptor pool: no generated ``_pb2`` module to keep in step with the protobuf
runtime, and no clash with MindSpore's own ``checkpoint.proto`` when both are loaded in one process.

Rules it keeps: imports neither framework; every problem is one ``CheckpointError`` (a ``ValueError``)
naming it; a read checks each tensor's dims (integers >= 0, at most ``MAX_DIMS``) and its byte count,
computed without overflow, against its shape and dtype before any array is made (``ddpm_core.weights.tensor_headers``).
"""
from __future__ import annotations

import binascii
import functools
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from ddpm_core.weights.tensor_headers import MAX_DIMS, declared_bytes

CRC_MARK = b"crc_num"
CRC_BYTES = 10
FOOTER_BYTES = len(CRC_MARK) + CRC_BYTES
CHUNK_BYTES = 512 * 1024 * 1024
"""MindSpore's ``1024 * SLICE_SIZE`` bytes: a larger tensor is written as several messages."""
STRING_TYPE = "str"
BFLOAT16 = "BFloat16"
NUMPY_TYPES = {
    "Bool": np.bool_, "Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16,
    "Int32": np.int32, "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64,
    "Float16": np.float16, "Float32": np.float32, "Float64": np.float64,
}
"""MindSpore tensor_type -> numpy dtype (``BFloat16`` is read as float32, exactly)."""
MS_TYPES = {np.dtype(v).name: k for k, v in NUMPY_TYPES.items()}


class CheckpointError(ValueError):
    """A ``.ckpt`` that cannot be read or written; the message names the problem."""


@dataclass(frozen=True)
class Entry:
    """One named value of a checkpoint: a numpy array (bfloat16 widened exactly to float32) or a string."""

    name: str
    value: np.ndarray | str
    tensor_type: str
    """MindSpore's dtype name as stored (``Float32``, ``BFloat16``, ``str``, ...)."""


@functools.lru_cache(maxsize=None)
def message_classes() -> tuple[type, type]:
    """``(Checkpoint, TensorProto)`` message classes, equal in schema to MindSpore's ``checkpoint.proto``."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="checkpoint.proto")

    def message(parent: Any, name: str, fields: Iterable[tuple], oneof: str | None = None) -> Any:
        msg = parent.message_type.add(name=name) if hasattr(parent, "message_type") else parent.nested_type.add(name=name)
        if oneof:
            msg.oneof_decl.add(name=oneof)
        for fname, number, label, ftype, type_name, in_oneof in fields:
            field = msg.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = type_name
            if in_oneof:
                field.oneof_index = 0
        return msg

    checkpoint = message(fdp, "Checkpoint", [("value", 1, F.LABEL_REPEATED, F.TYPE_MESSAGE, ".Checkpoint.Value", False)])
    message(checkpoint, "Value", [
        ("tag", 1, F.LABEL_REQUIRED, F.TYPE_STRING, None, False),
        ("tensor", 2, F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".TensorProto", True),
        ("maptensor", 3, F.LABEL_OPTIONAL, F.TYPE_MESSAGE, ".MapTensorProto", True),
    ], oneof="value")
    message(fdp, "TensorProto", [
        ("dims", 1, F.LABEL_REPEATED, F.TYPE_INT64, None, False),
        ("tensor_type", 2, F.LABEL_REQUIRED, F.TYPE_STRING, None, False),
        ("tensor_content", 3, F.LABEL_REQUIRED, F.TYPE_BYTES, None, False),
    ])
    message(fdp, "MapTensorProto", [("tensor", 1, F.LABEL_REPEATED, F.TYPE_MESSAGE, ".TensorProto", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("TensorProto")))


def file_descriptor() -> Any:
    """The ``FileDescriptorProto`` of ``message_classes`` (to compare with MindSpore's)."""
    from google.protobuf import descriptor_pb2

    out = descriptor_pb2.FileDescriptorProto()
    message_classes()[0].DESCRIPTOR.file.CopyToProto(out)
    return out


# ---------------------------------------------------------------- CRC footer
def crc32(payload: bytes) -> int:
    """The CRC-32 MindSpore stores for ``payload`` (the file without its footer)."""
    return binascii.crc32(payload, 0)


def crc_footer(payload: bytes) -> bytes:
    """The 17 bytes ``save_checkpoint(crc_check=True)`` appends after ``payload``."""
    return CRC_MARK + crc32(payload).to_bytes(CRC_BYTES, byteorder="big")


def split_crc(data: bytes) -> tuple[bytes, int | None]:
    """``(payload, stored CRC)``; ``None`` when the file has no footer (saved without ``crc_check``)."""
    if len(data) >= FOOTER_BYTES and data[-FOOTER_BYTES:-CRC_BYTES] == CRC_MARK:
        return data[:-FOOTER_BYTES], int.from_bytes(data[-CRC_BYTES:], byteorder="big")
    return data, None


def verify_crc(data: bytes) -> bool | None:
    """``True``/``False`` whether the stored CRC matches; ``None`` when there is none."""
    payload, stored = split_crc(data)
    return None if stored is None else crc32(payload) == stored


# ---------------------------------------------------------------- read
def _decode(name: str, tensor_type: str, dims: list[int], content: bytes) -> np.ndarray | str:
    if tensor_type == STRING_TYPE:
        if len(content) % 4:
            raise CheckpointError(f"string entry {name!r}: {len(content)} bytes is not a whole number of UTF-32 characters")
        return str(np.frombuffer(content, f"<U{len(content) // 4}")[0]) if content else ""
    shape = () if dims == [0] else tuple(dims)  # as MindSpore's loader: dims [0] is a scalar
    if tensor_type == BFLOAT16:
        dtype = np.dtype("<u2")
    elif tensor_type in NUMPY_TYPES:
        dtype = np.dtype(NUMPY_TYPES[tensor_type]).newbyteorder("<")
    else:
        raise CheckpointError(f"tensor {name!r}: tensor_type {tensor_type!r} is not supported here "
                              f"(known: {', '.join([*NUMPY_TYPES, BFLOAT16, STRING_TYPE])})")
    try:
        expected = declared_bytes(shape, dtype.itemsize)  # Python integers: dims overflowing int64 stay large
    except ValueError as e:
        raise CheckpointError(f"tensor {name!r}: {e}") from None
    if len(content) != expected:
        raise CheckpointError(f"tensor {name!r}: {len(content)} bytes, but shape {list(shape)} of {tensor_type} "
                              f"needs {expected}")
    flat = np.frombuffer(content, dtype)
    if tensor_type == BFLOAT16:  # the upper half of a float32: widening is exact
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    return flat.astype(flat.dtype.newbyteorder("="), copy=True).reshape(shape)


def parse(data: bytes, crc_check: bool = False) -> list[Entry]:
    """The entries of a ``.ckpt`` file's bytes, in file order.

    A CRC footer is removed; with ``crc_check`` it must be present and match (``load_checkpoint``'s
    ``crc_check=True`` only warns when it is absent; here that is an error too). Pieces of one tensor are joined.
    """
    from google.protobuf.message import DecodeError

    payload, stored = split_crc(data)
    if crc_check:
        if stored is None:
            raise CheckpointError("no CRC footer (saved without crc_check)")
        if crc32(payload) != stored:
            raise CheckpointError(f"CRC-32 mismatch: stored {stored:#010x}, computed {crc32(payload):#010x} "
                                  "(the file is damaged)")
    if not payload:
        raise CheckpointError("empty file")
    Checkpoint, _ = message_classes()
    message = Checkpoint()
    try:
        message.ParseFromString(payload)
    except (DecodeError, UnicodeDecodeError) as e:  # a tag that is not UTF-8 fails in the string decoder
        raise CheckpointError(f"protobuf: {str(e)[:200]}") from None
    if not message.value:
        raise CheckpointError("no entries")
    entries: list[Entry] = []
    values = list(message.value)
    pieces: list[bytes] = []
    for i, value in enumerate(values):
        if not value.HasField("tensor"):
            raise CheckpointError(f"entry {value.tag!r} is a MapTensor, which this reader does not support")
        pieces.append(value.tensor.tensor_content)
        if i + 1 < len(values) and values[i + 1].tag == value.tag:
            continue  # MindSpore joins consecutive pieces with the same tag
        t = value.tensor
        if len(t.dims) > MAX_DIMS:  # before copying them out of the message
            raise CheckpointError(f"tensor {value.tag!r}: {len(t.dims)} dims (at most {MAX_DIMS})")
        entries.append(Entry(value.tag, _decode(value.tag, t.tensor_type, list(t.dims), b"".join(pieces)),
                             t.tensor_type))
        pieces = []
    return entries


def read(path: str | os.PathLike, crc_check: bool = False) -> list[Entry]:
    """``parse`` of the file at ``path`` (``OSError`` if it cannot be opened)."""
    with open(path, "rb") as f:
        return parse(f.read(), crc_check)


# ---------------------------------------------------------------- write
def _encode(name: str, value: Any, tensor_type: str | None) -> tuple[list[int], str, bytes]:
    """(dims, tensor_type, content) as ``save_checkpoint`` stores ``value``."""
    if isinstance(value, str):
        return [0], STRING_TYPE, np.array(value, dtype=f"<U{max(len(value), 1)}").tobytes()
    array = np.asarray(value)
    if tensor_type == BFLOAT16:
        if array.dtype != np.float32:
            raise CheckpointError(f"tensor {name!r}: BFloat16 is written from float32 values, got {array.dtype}")
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4")
        if np.any(bits & 0xFFFF):
            raise CheckpointError(f"tensor {name!r}: values are not on the bfloat16 grid (round them first)")
        return list(array.shape), BFLOAT16, (bits >> 16).astype("<u2").tobytes()
    if array.dtype.name not in MS_TYPES:
        raise CheckpointError(f"tensor {name!r}: numpy dtype {array.dtype} has no MindSpore tensor_type")
    if tensor_type not in (None, MS_TYPES[array.dtype.name]):
        raise CheckpointError(f"tensor {name!r}: tensor_type {tensor_type!r} does not fit numpy dtype {array.dtype}")
    content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return list(array.shape), MS_TYPES[array.dtype.name], content


def serialize(entries: Mapping[str, Any] | Iterable[tuple[str, Any]], crc_check: bool = False,
              tensor_types: Mapping[str, str] | None = None, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """The bytes ``mindspore.save_checkpoint`` writes for these ``(name, value)`` pairs, in order.

    ``value`` is a numpy array or a string; ``tensor_types`` may name ``BFloat16`` for float32 arrays on the
    bfloat16 grid (``ddpm_core.weights.converter.round_to_bfloat16``). ``crc_check`` appends the CRC footer.
    ``chunk_bytes`` is MindSpore's piece size (tests shrink it, as they shrink MindSpore's ``SLICE_SIZE``).
    """
    Checkpoint, _ = message_classes()
    items = entries.items() if isinstance(entries, Mapping) else entries
    parts: list[bytes] = []
    for name, value in items:
        dims, tensor_type, content = _encode(name, value, (tensor_types or {}).get(name))
        for start in range(0, len(content), chunk_bytes):  # as MindSpore: an empty tensor writes nothing
            message = Checkpoint()
            piece = message.value.add(tag=name)
            piece.tensor.dims.extend(dims)
            piece.tensor.tensor_type = tensor_type
            piece.tensor.tensor_content = content[start:start + chunk_bytes]
            parts.append(message.SerializeToString())
    payload = b"".join(parts)
    return payload + crc_footer(payload) if crc_check else payload


def write(path: str | os.PathLike, entries: Mapping[str, Any] | Iterable[tuple[str, Any]], crc_check: bool = False,
          tensor_types: Mapping[str, str] | None = None) -> None:
    """``serialize`` into ``path`` (plain write: callers wanting atomicity pass a temporary path)."""
    data = serialize(entries, crc_check, tensor_types)
    with open(path, "wb") as f:
        f.write(data)
