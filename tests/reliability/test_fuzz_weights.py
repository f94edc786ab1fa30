"""Issue 25, item 7: property-based fuzzing of the weight readers (``.safetensors``, ``.ckpt`` protobuf, ``.pt``
zip), through ``load_weights`` as every command reads weights.

The property, for every file hypothesis makes: reading it gives a valid result, or a ``UserError`` (a
``WeightsError``) whose first line names the file; never another exception, and never an allocation beyond
the file's size: the Python and numpy memory the read allocates (``tracemalloc``'s peak) stays within
``READ_PEAK_PER_BYTE`` times the file's size plus ``READ_PEAK_SLACK``, and what it returns is no larger than
the file (twice it for bfloat16, which is widened to float32). The C allocations inside torch, protobuf and
safetensors are sized by what the header checks have already compared with the file's size
(``ddpm_core.weights.tensor_headers``; the crafted cases in test_crafted_files.py show each refusal).

Files come from the project's own writers (``save_weights``, ``ddpm_core.weights.ckpt.serialize``), mutated byte by byte
(flips, overwrites with extreme integers, truncation, insertion), and from headers built field by field with
extreme values (negative, overflowing and oversized dims, offsets and lengths). Bounded in time:
``derandomize=True`` and a fixed ``max_examples`` per format, so every run tries the same files.
"""
from __future__ import annotations

import io
import json
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e .[test])")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ddpm_core.config import UnetConfig  # noqa: E402
from ddpm_core.errors import UserError  # noqa: E402
from ddpm_core.weights import ckpt  # noqa: E402
from ddpm_core.weights.files import load_weights, save_weights  # noqa: E402
from ddpm_core.weights.naming import unet_parameters  # noqa: E402
from ddpm_core.weights.tensor_headers import READ_PEAK_PER_BYTE, READ_PEAK_SLACK, SAFETENSORS_ITEMSIZE  # noqa: E402
from tests.host import available, needs  # noqa: E402

TINY = UnetConfig(dim=4, channels=1, dim_mults=(1,))
"""The smallest U-Net: 62 tensors, files of 37-54 kB."""
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
"""No deadline: the machine's load decides a read's time, not the reader; ``max_examples`` bounds the run."""
EXTREME = st.one_of(st.integers(-3, 70), st.sampled_from([-1, -2 ** 31, 2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1,
                                                         -2 ** 63, 10 ** 9]))
"""A dim, offset or length: small ones, and those that overflow int32, int64 or a product of them."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


class Seeds(dict):
    def __repr__(self) -> str:  # hypothesis shows a failing example's arguments: not 180 kB of bytes
        return f"<the project's files: {', '.join(self)}>"


@pytest.fixture(scope="module")
def seeds(folder) -> dict[str, bytes]:
    """The project's own files of ``TINY``'s weights: {".pt", ".ckpt", ".safetensors", ".ckpt-nocrc"}: bytes
    (".pt" only where PyTorch imports: the tests that read it say they need it)."""
    rng = np.random.default_rng(0)
    state = {s.torch_name: (0.1 * rng.standard_normal(s.shape)).astype(np.float32) for s in unet_parameters(TINY)}
    out = Seeds()
    for ext in (".pt", ".ckpt", ".safetensors") if available("torch") else (".ckpt", ".safetensors"):
        save_weights(state, folder / f"seed{ext}", "torch", TINY)
        out[ext] = (folder / f"seed{ext}").read_bytes()
    out[".ckpt-nocrc"] = ckpt.serialize(load_weights(folder / "seed.ckpt", naming="ms", config=TINY).state)  # no CRC to stop a mutation
    return out


def read_cleanly(path: Path) -> None:
    """The property (see the module's docstring) for the file at ``path``."""
    size = path.stat().st_size
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        loaded = load_weights(path, config=TINY)
    except UserError as e:
        loaded = None
        assert str(path) in str(e).splitlines()[0], f"the error does not name the file: {e}"
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        if not tracing:
            tracemalloc.stop()
    assert peak <= READ_PEAK_PER_BYTE * size + READ_PEAK_SLACK, f"read {size} bytes, allocated {peak}"
    if loaded is not None:
        assert sum(v.nbytes for v in loaded.state.values()) <= 2 * size


MUTATION = st.tuples(st.sampled_from(["flip", "int64", "truncate", "insert"]), st.integers(0, 1 << 20),
                     st.integers(0, 255), EXTREME)


def mutate(data: bytes, mutations: list[tuple[str, int, int, int]]) -> bytes:
    """``data`` with each mutation applied at ``position % len``: a bit flipped, 8 bytes overwritten by an
    extreme little-endian integer, the rest cut off, or a byte inserted."""
    buf = bytearray(data)
    for kind, position, byte, number in mutations:
        if not buf:
            break
        i = position % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << (byte % 8)
        elif kind == "int64":
            buf[i:i + 8] = (number % 2 ** 64).to_bytes(8, "little")
        elif kind == "truncate":
            del buf[i:]
        else:
            buf.insert(i, byte)
    return bytes(buf)


def rezipped(data: bytes, mutations: list[tuple[str, int, int, int]]) -> bytes:
    """A ``torch.save`` zip whose data.pkl (the pickle torch.load unpickles) is mutated and whose CRC-32s are
    made right again, so that the mutation reaches torch's unpickler rather than the checksum."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for m in src.infolist():
            body = src.read(m.filename)
            dst.writestr(m.filename, mutate(body, mutations) if m.filename.endswith("data.pkl") else body)
    return out.getvalue()


@pytest.mark.parametrize("seed", [pytest.param(".pt", marks=needs("torch")), ".ckpt", ".safetensors", ".ckpt-nocrc"])
@settings(FUZZ, max_examples=30)  # 30 mutated files of each seed
@given(mutations=st.lists(MUTATION, min_size=1, max_size=4))
def test_a_mutated_project_file_reads_cleanly(folder, seeds, seed, mutations):
    path = folder / f"mutated{seed.split('-')[0]}"
    path.write_bytes(mutate(seeds[seed], mutations))
    read_cleanly(path)


@needs("torch")
@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3))
def test_a_pt_whose_pickle_is_mutated_reads_cleanly(folder, seeds, mutations):
    path = folder / "pickle.pt"
    path.write_bytes(rezipped(seeds[".pt"], mutations))
    read_cleanly(path)


TENSOR_TYPES = st.sampled_from([*ckpt.NUMPY_TYPES, ckpt.BFLOAT16, ckpt.STRING_TYPE, "Float33", ""])


@FUZZ
@given(entries=st.lists(st.tuples(st.sampled_from(["x", "init_conv.weight", "final_conv.1.bias"]),
                                  st.lists(EXTREME.filter(lambda d: -2 ** 63 <= d < 2 ** 63), max_size=6),
                                  TENSOR_TYPES, st.binary(max_size=96)), min_size=1, max_size=4),
       crc=st.booleans())
def test_a_ckpt_of_crafted_headers_reads_cleanly(folder, entries, crc):
    Checkpoint, _ = ckpt.message_classes()
    parts = []
    for tag, dims, tensor_type, content in entries:
        message = Checkpoint()
        value = message.value.add(tag=tag)
        value.tensor.dims.extend(dims)
        value.tensor.tensor_type = tensor_type
        value.tensor.tensor_content = content
        parts.append(message.SerializeToString())
    payload = b"".join(parts)
    path = folder / "crafted.ckpt"
    path.write_bytes(payload + ckpt.crc_footer(payload) if crc else payload)
    read_cleanly(path)


SAFETENSORS_ENTRY = st.fixed_dictionaries({
    "dtype": st.sampled_from([*SAFETENSORS_ITEMSIZE, "F33", 7]),
    "shape": st.one_of(st.lists(EXTREME, max_size=5), st.just("12")),
    "data_offsets": st.lists(EXTREME, min_size=0, max_size=3),
})


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["x", "init_conv.weight", "__metadata__"]), SAFETENSORS_ENTRY,
                              max_size=3),
       data=st.binary(max_size=96), length=st.one_of(st.none(), EXTREME))
def test_a_safetensors_of_crafted_headers_reads_cleanly(folder, header, data, length):
    text = json.dumps(header).encode()
    size = len(text) if length is None else length % 2 ** 64
    path = folder / "crafted.safetensors"
    path.write_bytes(struct.pack("<Q", size) + text + data)
    read_cleanly(path)


def test_the_allocation_check_catches_a_reader_that_trusts_a_header(folder, seeds, monkeypatch):
    """A planted bug: a reader that allocates what a header declares (16 MiB, for a 37 kB file) is caught."""
    from ddpm_core.weights import formats

    honest = formats.READERS["mindspore"]

    def trusting(path: Path) -> formats.RawFile:
        np.ones(16 << 20, np.uint8)  # as a reader that sized an array from a crafted header would
        return honest(path)

    monkeypatch.setitem(formats.READERS, "mindspore", trusting)
    path = folder / "planted.ckpt"
    path.write_bytes(seeds[".ckpt"])
    with pytest.raises(AssertionError, match="allocated"):
        read_cleanly(path)
    monkeypatch.undo()
    read_cleanly(path)
