"""Issue 25, the verdict: a parity run never passes on NaN, on a golden file with an output missing, or on
one whose members were edited, added or crafted; a crafted golden file is refused in one line naming the file
and the member or manifest field (exit 2), without reading what it need not.

The golden files are written here: one real recording of a tiny U-Net (by PyTorch, a few seconds, or by
MindSpore on a host without PyTorch: the reader's checks are the same), then edited copies of it (``craft``).
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy

from ddpm_core.runtime.environment import child_env
from tests.host import needs, recording_twin
from tests.reliability.corpus import ROOT, run_cli

TINY = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10", "--image-size", "8",
        "--ddim-steps", "5", "--no-progress"]
CHECKS = ["--checks", "predict,loss,ddpm,ddim,probes"]


def npy_bytes(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def manifest_of(path: Path) -> dict:
    return json.loads(np.load(path)["manifest"].tobytes().decode())


def craft(src: Path, dst: Path, drop: tuple[str, ...] = (), put: dict[str, bytes] | None = None,
          manifest: object = None) -> Path:
    """A copy of the golden file ``src`` without the members ``drop``, with ``put`` added or replaced and, given
    ``manifest``, that JSON value as its manifest."""
    data = {k: v for k, v in members(src).items() if k not in drop}
    data.update(put or {})
    if manifest is not None:
        data["manifest.npy"] = npy_bytes(np.frombuffer(json.dumps(manifest).encode(), np.uint8))
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, blob in data.items():
            z.writestr(name, blob)
    return dst


@pytest.fixture(scope="module")
def golden(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "g.npz"
    run_cli("parity.check", ["record", "--framework", recording_twin(), "--out", path, *CHECKS, *TINY], rc=0)
    return path


def refused(golden_file: Path, says: str) -> None:
    """``compare`` with the other twin refuses the file before importing its framework: exit 2, one line naming
    the file."""
    other = {"torch": "ms", "ms": "torch"}[recording_twin()]
    res = run_cli("parity.check", ["compare", golden_file, "--framework", other], rc=2, inputs=[golden_file],
                  says=says)
    assert str(golden_file) in res.error_lines[0]


@needs("torch")  # the rounding is measured by a PyTorch recording host (a MindSpore one has no float64 convolution)
def test_a_recorded_golden_covers_its_outputs_with_a_digest(golden):
    from parity.engine.golden import FORMAT, load_golden

    m = manifest_of(golden)
    assert m["format"] == FORMAT and len(m["outputs_sha256"]) == 64
    assert m["rounding"]["max_abs"] > 0 and "float64" in m["rounding"]["how"]  # measured by the recording host
    g = load_golden(golden)
    assert "ddpm/trajectory" in g.outputs and g.notes == []


def test_a_missing_output_is_refused_not_skipped(golden, tmp_path):
    """Removing out/ddpm/trajectory used to drop two rows and print PASS."""
    refused(craft(golden, tmp_path / "g.npz", drop=("out/ddpm/trajectory.npy",)),
            "member out/ddpm/trajectory.npy is missing; the recorded spec (checks predict, loss, ddpm, ddim, probes) "
            "implies it")


def test_an_edited_output_fails_the_digest(golden, tmp_path):
    pred = np.load(golden)["out/predict/t=0"].copy()
    pred[0, 0, 0, 0] += 1e-3
    refused(craft(golden, tmp_path / "g.npz", put={"out/predict/t=0.npy": npy_bytes(pred)}),
            "the stored outputs do not match manifest field 'outputs_sha256'")


def test_an_output_of_the_wrong_shape_names_the_member(golden, tmp_path):
    bad = np.zeros((2, 1, 8, 7), np.float32)
    refused(craft(golden, tmp_path / "g.npz", put={"out/predict/t=0.npy": npy_bytes(bad)}),
            "member out/predict/t=0 has shape (2, 1, 8, 7); the recorded spec (Unet(dim=8, channels=1, "
            "dim_mults=(1, 2)), batch 2, 8x8) implies (2, 1, 8, 8)")


def test_a_header_declaring_4_tib_is_refused_before_any_allocation(golden, tmp_path):
    """It used to end in a MemoryError traceback."""
    f = io.BytesIO()
    npy.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)})
    crafted = craft(golden, tmp_path / "g.npz", put={"out/predict/t=0.npy": f.getvalue() + b"\0" * 64})
    refused(crafted, "member out/predict/t=0: its header declares shape (1099511627776,) float32 (4.0 TiB), but the "
                     "member holds 64 bytes")


def deflated_zeros(path: Path, name: str, size: int) -> None:
    """Append a member of ``size`` zero bytes, deflated (a few hundred KiB on disk), streamed."""
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z, z.open(name, "w", force_zip64=True) as f:
        chunk = bytes(1 << 24)
        for _ in range(size // len(chunk)):
            f.write(chunk)


@pytest.mark.parametrize("name", ["extra.npy", "out/extra.npy"])
def test_an_unknown_member_is_refused_without_inflating_it(golden, tmp_path, name):
    """An extra 1 GiB deflated member used to be inflated in full (2.1 GB RSS), then ignored."""
    from parity.engine.golden import GoldenError, load_golden

    crafted = craft(golden, tmp_path / "g.npz")
    deflated_zeros(crafted, name, 1 << 30)
    assert crafted.stat().st_size < 16 << 20  # 1 GiB inflated
    tracemalloc.start()
    try:
        with pytest.raises(GoldenError, match=f"member '{name}'.*refused unread"):
            load_golden(crafted)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated"
    refused(crafted, "refused unread")


def test_a_member_claiming_more_than_it_stores_is_refused_unread(golden, tmp_path):
    from parity.engine.golden import INFLATE_LIMIT

    crafted = craft(golden, tmp_path / "g.npz", drop=("out/predict/t=0.npy",))
    big = np.zeros(8 << 20, np.float32)  # 32 MiB of zeros deflate to ~32 KiB: far past INFLATE_LIMIT
    with zipfile.ZipFile(crafted, "a", zipfile.ZIP_DEFLATED) as z:
        z.writestr("out/predict/t=0.npy", npy_bytes(big))
    assert INFLATE_LIMIT < 100
    refused(crafted, "member 'out/predict/t=0.npy' declares 32.0 MiB from")


@pytest.mark.parametrize("edit, says", [
    (lambda m: [m], "the manifest is a JSON list, expected an object"),
    (lambda m: {k: v for k, v in m.items() if k != "framework"}, "manifest field 'framework' is missing"),
    (lambda m: {**m, "framework": "jax"}, "manifest field 'framework' is 'jax', expected 'torch' or 'ms'"),
    (lambda m: {**m, "spec": {**m["spec"], "unet": {**m["spec"]["unet"], "dim": 12}}},
     "member init/init_conv.weight has shape (4, 1, 7, 7); the recorded spec (Unet(dim=12, channels=1, "
     "dim_mults=(1, 2)), batch 2, 8x8) implies (8, 1, 7, 7)"),
    (lambda m: {**m, "spec": {**m["spec"], "unet": {**m["spec"]["unet"], "dim": "8"}}}, "manifest field 'spec.unet'"),
    (lambda m: {**m, "spec": {**m["spec"], "tape": {**m["spec"]["tape"], "batch": 3}}},
     "member tape/pred_x has shape (5, 2, 1, 8, 8); the recorded spec"),
    (lambda m: {**m, "spec": {**m["spec"], "tape": {**m["spec"]["tape"], "batch": 10**12}}},
     "manifest field 'spec.tape' implies 2328.3 TiB of sampling noise, more than the file's"),
    (lambda m: {**m, "spec": {**m["spec"], "diffusion": {**m["spec"]["diffusion"], "timesteps": 10**10},
                              "tape": {**m["spec"]["tape"], "timesteps": 10**10, "ddim_steps": 10**10}}},
     "manifest field 'spec.tape' implies"),  # a DDIM plan of 1e10 steps was about to be allocated
    (lambda m: {**m, "spec": [1]}, "manifest field 'spec' is list, expected an object"),
    (lambda m: {**m, "outputs_sha256": 3}, "manifest field 'outputs_sha256' is not a sha256"),
    (lambda m: {**m, "rounding": {"max_abs": -1, "rel_l2": 0}}, "manifest field 'rounding' must be null"),
    (lambda m: {**m, "colour": 1}, "manifest field 'colour' is not a golden manifest field"),
])
def test_a_crafted_manifest_is_one_line_naming_the_field(golden, tmp_path, edit, says):
    """A list or a missing framework used to print just "error: framework"; a spec edited to another dim gave a
    136-line traceback."""
    refused(craft(golden, tmp_path / "g.npz", manifest=edit(manifest_of(golden))), says)


def test_a_manifest_beyond_its_declared_maximum_is_refused_unread(golden, tmp_path):
    from parity.engine.golden import MANIFEST_MAX_BYTES

    blob = npy_bytes(np.zeros(MANIFEST_MAX_BYTES + 1, np.uint8))
    refused(craft(golden, tmp_path / "g.npz", put={"manifest.npy": blob}), "more than the 1.0 MiB a manifest may hold")


def test_a_v1_golden_is_still_read_and_says_its_outputs_carry_no_digest(golden, tmp_path):
    """The golden files recorded before the output digest (the H200's) stay comparable; the report says what
    guards their outputs. Every implied output must still be there."""
    from parity.engine.golden import FORMAT_V1, load_golden

    m = manifest_of(golden)
    v1 = {k: v for k, v in m.items() if k not in ("outputs_sha256", "rounding")} | {"format": FORMAT_V1}
    old = craft(golden, tmp_path / "v1.npz", manifest=v1)
    assert load_golden(old).notes == ["v1.npz is a golden v1 file: its outputs carry no digest (only the zip's CRC-32 "
                                      "guards them)"]
    refused(craft(old, tmp_path / "v1_missing.npz", drop=("out/ddim/eta=0.5.npy",)),
            "member out/ddim/eta=0.5.npy is missing")


def test_a_comparison_missing_an_implied_output_fails():
    """A side that computed fewer outputs than its spec implies: a failing row, never a pass."""
    from ddpm_core.config import DiffusionConfig, UnetConfig
    from parity.api import make_spec
    from parity.engine.suite import compare_outputs, implied_outputs

    spec = make_spec(UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(10), image_size=8,
                     ddim_steps=5, checks=("loss", "ddpm"))
    implied = implied_outputs(spec, "torch", [])
    outputs = {k: np.zeros(s, np.float32) for k, s in implied.items()}
    short = {k: v for k, v in outputs.items() if k != "ddpm/trajectory"}
    rows = compare_outputs(short, outputs, spec, "cpu", implied=(implied, implied), sides=("PyTorch", "MindSpore"))
    assert [r.label for r in rows if not r.passed] == ["outputs the spec implies (1 missing)"]
    assert rows[0].summary.members[0].describe() == "ddpm/trajectory: missing in PyTorch"
    assert all(r.passed for r in compare_outputs(outputs, outputs, spec, "cpu", implied=(implied, implied)))


# ---------------------------------------------------------------- NaN: the run fails, naming the side(s)
@pytest.fixture(scope="module")
def huge_weights(tmp_path_factory) -> Path:
    """Every weight 1e30 (finite, a valid sha256): every output of both twins is NaN or inf."""
    from ddpm_core.config import DiffusionConfig, UnetConfig
    from ddpm_core.weights.files import save_weights
    from parity.engine.initial import initial_weights

    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    path = tmp_path_factory.mktemp("huge") / "huge.safetensors"
    save_weights({k: np.full_like(v, 1e30) for k, v in initial_weights(cfg, 0).items()}, path, "torch", cfg,
                 diffusion=DiffusionConfig(10))
    return path


def mismatch(args: list) -> str:
    """Run ``parity.check ARGS``: exit 1 (a mismatch, no error line, no traceback); its stdout."""
    proc = subprocess.run([sys.executable, "-m", "parity.check", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=child_env(pythonpath=ROOT, PYTHONWARNINGS="ignore"), timeout=600)
    shown = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr + proc.stdout, shown
    assert "PASS" not in proc.stdout, shown
    return proc.stdout


@needs("torch", "mindspore")
def test_nan_in_both_twins_fails_naming_both(huge_weights):
    """It used to print max abs 0, cosine 1.000000000, pass on every row, exit 0."""
    out = mismatch(["--weights", huge_weights, "--checks", "predict,loss,ddpm", "--image-size", "8", "--no-progress"])
    assert "non-finite values: PyTorch and MindSpore produced NaN or inf" in out
    assert "PyTorch produced NaN at predict/t=0[0, 0, 0, 0]" in out and "MindSpore produced NaN at predict/t=0" in out
    assert " pass" not in out and "1.000000000" not in out  # no figure reads as agreement


@needs("torch", "mindspore")
def test_nan_recorded_then_compared_fails_naming_the_golden_side(huge_weights, tmp_path):
    golden = tmp_path / "nan.npz"
    res = run_cli("parity.check", ["record", "--framework", "torch", "--out", golden, "--weights", huge_weights,
                                   "--checks", "predict,ddpm", "--image-size", "8", "--no-progress"], rc=0)
    assert "note: PyTorch" in res.stdout and "produced NaN or inf" in res.stdout
    out = mismatch(["compare", golden, "--framework", "ms", "--no-progress"])
    assert "PyTorch (golden file) produced NaN at predict/t=0" in out and "MindSpore produced NaN" in out
