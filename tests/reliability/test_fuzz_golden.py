"""Issue 25, item 7: a property-based fuzz test of the golden-file reader. Whatever is done to a small real golden
file (bytes flipped, a member's ``.npy`` header rewritten, members dropped, renamed, duplicated or truncated, the
manifest's fields replaced by any JSON), ``load_golden`` either returns a golden file or raises one
``GoldenError`` of one line: never another exception, and it never allocates more than the file could hold.

Bounded in time (a few seconds): ``max_examples`` and ``deadline`` are set, and ``derandomize=True`` makes CI
run the same examples every time.
"""
from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.lib import format as npy

from parity.engine.golden import Golden, GoldenError, load_golden
from tests.host import recording_twin
from tests.reliability.corpus import run_cli

FUZZ = settings(max_examples=60, deadline=timedelta(seconds=5), derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TINY = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10", "--image-size", "8",
        "--ddim-steps", "5", "--no-progress", "--batch", "1", "--checks", "predict,loss,ddpm,probes"]


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> bytes:
    """A small golden file (about 100 KB) recorded by the PyTorch twin, or the MindSpore twin where PyTorch is
    not installed: the reader is the same."""
    path = tmp_path_factory.mktemp("fuzz") / "g.npz"
    run_cli("parity.check", ["record", "--framework", recording_twin(), "--out", path, *TINY], rc=0)
    return path.read_bytes()


def entries(blob: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def zipped(items: list[tuple[str, bytes]]) -> bytes:
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, data in items:
            z.writestr(name, data)
    return f.getvalue()


def outcome(tmp_path: Path, blob: bytes) -> Golden | GoldenError:
    """Load ``blob`` as a golden file under tracemalloc; assert the property; return what happened."""
    path = tmp_path / "fuzzed.npz"
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        result: Golden | GoldenError = load_golden(path)
    except GoldenError as e:
        result = e
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    if isinstance(result, GoldenError):
        assert "\n" not in str(result) and str(result), repr(result)
    # the arrays once, a hashing copy of the largest, and the reader's own bookkeeping
    assert peak <= 2 * len(blob) + (2 << 20), f"{peak} bytes allocated for a file of {len(blob)}"
    return result


def test_the_real_file_loads(real, tmp_path):
    assert isinstance(outcome(tmp_path, real), Golden)


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8))
def test_flipped_bytes(real, tmp_path, flips):
    blob = bytearray(real)
    for where, value in flips:
        blob[int(where * len(blob))] = value
    outcome(tmp_path, bytes(blob))


shapes = st.lists(st.one_of(st.integers(-3, 40), st.integers(0, 1 << 62)), max_size=5).map(tuple)
descrs = st.sampled_from(["<f4", "<f8", ">f4", "<i4", "|u1", "<f2", "|b1", "<c8", "|O", "<U3", "<V8", "<f16"])


@FUZZ
@given(st.data())
def test_rewritten_headers(real, tmp_path, data):
    """A member's .npy header says another shape, dtype or order (numpy writes the header; the body stays)."""
    items = list(entries(real).items())
    i = data.draw(st.integers(0, len(items) - 1))
    name, body = items[i]
    f = io.BytesIO(body)
    npy.read_magic(f)
    npy.read_array_header_1_0(f)
    rest = body[f.tell():]
    header = io.BytesIO()
    d = {"descr": data.draw(descrs), "fortran_order": data.draw(st.booleans()), "shape": data.draw(shapes)}
    try:
        npy.write_array_header_1_0(header, d)
    except (ValueError, TypeError):  # numpy's writer refuses it: no such file can be written this way
        return
    cut = data.draw(st.integers(0, len(rest)))
    items[i] = (name, header.getvalue() + rest[:cut])
    outcome(tmp_path, zipped(items))


@FUZZ
@given(st.data())
def test_members_dropped_renamed_duplicated_or_truncated(real, tmp_path, data):
    items = list(entries(real).items())
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(items) - 1))
        name, body = items[i]
        action = data.draw(st.sampled_from(["drop", "rename", "duplicate", "truncate", "garbage"]))
        if action == "drop" and len(items) > 1:
            items.pop(i)
        elif action == "rename":
            items[i] = (data.draw(st.sampled_from(["out/", "tape/", "init/", "", "../"])) +
                        data.draw(st.text("abc./=_", min_size=1, max_size=8)) + ".npy", body)
        elif action == "duplicate":
            items.append((name, body))
        elif action == "truncate":
            items[i] = (name, body[:data.draw(st.integers(0, len(body)))])
        else:
            items[i] = (name, data.draw(st.binary(max_size=200)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name as it writes one
        blob = zipped(items)
    outcome(tmp_path, blob)


json_values = st.recursive(st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)


@FUZZ
@given(st.data())
def test_manifest_fields_replaced(real, tmp_path, data):
    """Any field of the manifest, or of its spec, replaced by any JSON value, or removed."""
    items = entries(real)
    manifest = json.loads(np.load(io.BytesIO(items["manifest.npy"])).tobytes().decode())
    target = manifest if data.draw(st.booleans()) else manifest["spec"]
    target = target if data.draw(st.booleans()) or not isinstance(target.get("tape"), dict) else target["tape"]
    key = data.draw(st.sampled_from(sorted(target) + ["extra"]))
    if data.draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = data.draw(json_values)
    text = json.dumps(manifest, allow_nan=True).encode()
    f = io.BytesIO()
    np.save(f, np.frombuffer(text, np.uint8))
    items["manifest.npy"] = f.getvalue()
    outcome(tmp_path, zipped(list(items.items())))
