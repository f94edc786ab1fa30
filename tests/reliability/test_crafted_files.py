"""Issue 25, hand-edited and crafted files: a run's run.json or latest.json edited by hand, weight files whose
headers declare negative, overflowing or oversized tensors, a configuration that never ends or holds the
wrong types, and weights of one wrong dtype. Each ends in exit 2 and one line naming the file and the field,
with no traceback and every input unchanged (``corpus.run_cli``).

Was (on 1754895): run.json with dim changed gave a 146-line traceback in the PyTorch twin; an unknown key, or
latest.json's "checkpoints" as a string or a list of numbers, a traceback in both; a .ckpt whose dims overflow
to 0 a reshape traceback; --config /dev/zero read until MemoryError; "dim_mults": "12" trained a (1, 2) U-Net;
an all-int32 .safetensors gave 115 error lines. The schema, header and config checks themselves are shared
core code (ddpm_core.schema, ddpm_core.weights.tensor_headers, ddpm_core.config), so each twin's command line is
driven through a share of the cases, and through the one that reaches its own checkpoint loader.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.errors import WeightsError
from ddpm_core.weights.files import load_weights
from tests.host import needs
from tests.reliability.corpus import run_cli, sha256_of
from tests.reliability.crafted import (
    SMALL_JSON,
    ckpt_with_dims,
    edit_json,
    project_file,
    pt_that_inflates,
    safetensors_with_header,
    small_weights,
)
from tests.train.conftest import TrainedRuns, make_fashion_mnist, twin_module


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A 1-step tiny run of each twin, trained when a test first asks for it: {"torch": RUN_DIR, "ms": RUN_DIR}
    (a twin whose programs cannot run here skips the test)."""
    root = tmp_path_factory.mktemp("crafted-runs")
    return TrainedRuns(root, make_fashion_mnist(root / "fashion"), steps=1)


def called(main, argv, capsys, *, inputs, says: str) -> None:
    """``corpus.run_cli``'s assertion for a command called in this process (where a framework is imported once
    for many cases): exit 2, one ``error:`` line holding ``says``, no traceback, ``inputs`` unchanged."""
    before = {p: sha256_of(p) for p in inputs}
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in err, err
    assert {p: sha256_of(p) for p in inputs} == before


def set_key(key, value):
    return lambda d: d.update({key: value})


def drop_sha256(d):
    del d["checkpoints"][0]["sha256"]


RUN_EDITS = {  # name -> (file, edit, what the one line says)
    "dim": ("run.json", set_key("dim", 12), "run.json does not describe the model this checkpoint holds"),
    "unknown key": ("run.json", set_key("colour", "red"), "run.json: colour: unknown field"),
    "dim_mults string": ("run.json", set_key("dim_mults", "12"), 'run.json: dim_mults: expected a list, got a string ("12")'),
    "lr string": ("run.json", set_key("lr", "1e-4"), "run.json: lr: expected a finite number"),
    "bool seed": ("run.json", set_key("seed", True), "run.json: seed: expected an integer, got true"),
    "checkpoints string": ("latest.json", set_key("checkpoints", "checkpoints/step_000000001.pt"),
                           "latest.json: checkpoints: expected a list, got a string"),
    "checkpoints numbers": ("latest.json", set_key("checkpoints", [1, 2]),
                            "latest.json: checkpoints[0]: expected a JSON object, got 1"),
    "record without sha256": ("latest.json", drop_sha256, "latest.json: checkpoints[0].sha256: missing"),
    "a list": ("latest.json", lambda d: [d], "latest.json: expected a JSON object, got a list"),
}
BY_CLI = [("torch", "dim"), ("ms", "dim"), ("ms", "unknown key")]
"""The cases run as a user runs them, in a child process: each twin's own checkpoint loader, and the shared
schema's wiring into each twin's command; the rest run in this process (``called``)."""


def edited_copy(runs: dict[str, Path], twin: str, case: str, tmp_path: Path) -> tuple[Path, str]:
    name, edit, says = RUN_EDITS[case]
    run = tmp_path / "run"
    shutil.copytree(runs[twin], run)
    edit_json(run / name, edit)
    return run, says


@pytest.mark.parametrize("twin, case", BY_CLI)
def test_a_hand_edited_run_file_is_one_line_naming_the_file_and_field(tmp_path, runs, twin, case):
    run, says = edited_copy(runs, twin, case, tmp_path)
    run_cli(f"ddpm_{twin}.train", ["--resume", run, "--max-steps", "2"], rc=2, inputs=[run], says=says)


@pytest.mark.parametrize("case", [c for c in RUN_EDITS if ("torch", c) not in BY_CLI])
def test_every_hand_edit_is_one_line_in_process(tmp_path, runs, case, capsys):
    run, says = edited_copy(runs, "torch", case, tmp_path)
    called(twin_module("torch", "train").main, ["--resume", run, "--max-steps", "2"], capsys, inputs=[run], says=says)


# ---------------------------------------------------------------- weight files with crafted headers
CRAFTED = {  # file name -> (writer, what the one line says)
    "negative.ckpt": (lambda p: ckpt_with_dims(p, [-1, 4], bytes(16)), "dims [-1, 4] hold -1"),
    "overflow_to_0.ckpt": (lambda p: ckpt_with_dims(p, [2 ** 32, 2 ** 32]),
                           "0 bytes, but shape [4294967296, 4294967296] of Float32 needs 73786976294838206464"),
    "too_many_dims.ckpt": (lambda p: ckpt_with_dims(p, [1] * 40, bytes(4)), "40 dims (at most 32)"),
    "negative.safetensors": (lambda p: safetensors_with_header(
        p, {"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, bytes(4)),
        "tensor 'x': shape[0]: expected an integer >= 0, got -1"),
    "overflow.safetensors": (lambda p: safetensors_with_header(
        p, {"x": {"dtype": "F32", "shape": [2 ** 40, 2 ** 40], "data_offsets": [0, 4]}}, bytes(4)),
        "shape [1099511627776, 1099511627776] of F32 needs 4835703278458516698824704 bytes, its data_offsets hold 4"),
    "beyond.safetensors": (lambda p: safetensors_with_header(
        p, {"x": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}, bytes(4)),
        "data_offsets [0, 4096] reach beyond the 4 bytes of data the file holds"),
    "header_length.safetensors": (lambda p: safetensors_with_header(p, {}, length=2 ** 62),
                                  "its header claims 4611686018427387904 bytes"),
    "inflates.pt": (pt_that_inflates, "would expand to 4194304 bytes, beyond the file's"),
}


HEADERS_BY_CLI = ("overflow_to_0.ckpt", "overflow.safetensors", "inflates.pt")


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs("torch")) if n.endswith(".pt") else n for n in CRAFTED])
def test_a_crafted_header_is_refused_before_anything_is_allocated(tmp_path, name, capsys):
    from parity.convert import main

    write, says = CRAFTED[name]
    src, dst = write(tmp_path / name), tmp_path / "out.safetensors"
    if name in HEADERS_BY_CLI:
        res = run_cli("parity.convert", [src, dst], rc=2, inputs=[src], says=says)
        assert res.error_lines[0].startswith(f"error: cannot read {src}: ")
    else:
        called(main, [src, dst], capsys, inputs=[src], says=f"cannot read {src}: ")
        with pytest.raises(WeightsError, match=re.escape(says)):
            load_weights(src)
    assert not dst.exists()


@needs("torch")
def test_a_crafted_pt_inflated_in_memory_before(tmp_path):
    """The case above was real: torch.load reads a deflated member in full, 400x the file's size here."""
    import torch

    path = pt_that_inflates(tmp_path / "x.pt")
    assert torch.load(path, weights_only=True)["x"].numel() * 4 > 400 * path.stat().st_size


@pytest.mark.parametrize("twin, name", [("ms", "negative.ckpt"), ("torch", "overflow_to_0.ckpt")])
def test_sample_refuses_crafted_weights_in_one_line(tmp_path, twin, name, capsys):
    write, says = CRAFTED[name]
    src = write(tmp_path / name)
    argv = ["--weights", src, "--out", tmp_path / "s.png", "--n", "1"]
    if twin == "ms":
        run_cli("ddpm_ms.sample", argv, rc=2, inputs=[src], says=says)
    else:
        called(twin_module(twin, "sample").main, argv, capsys, inputs=[src], says=says)
    assert not (tmp_path / "s.png").exists()


def test_weights_of_one_wrong_dtype_are_one_line(tmp_path):
    from safetensors.numpy import save_file

    src = tmp_path / "int32.safetensors"
    save_file({k: v.astype(np.int32) for k, v in small_weights().items()}, str(src))
    res = run_cli("parity.convert", [src, tmp_path / "out.pt", "--config", SMALL_JSON], rc=2, inputs=[src],
                  says="dtype: every tensor is int32")
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# ---------------------------------------------------------------- configurations
def test_a_config_that_never_ends_is_refused_after_the_limit(tmp_path):
    src = project_file(tmp_path, ".safetensors")
    run_cli("parity.convert", [src, tmp_path / "out.pt", "--config", "/dev/zero"], rc=2, inputs=[src],
            says="--config file /dev/zero: larger than 1048576 bytes")


@pytest.mark.parametrize("fields, says", [
    ({"dim_mults": "12"}, 'dim_mults must be a list of positive integers, got a string ("12")'),
    ({"dim_mults": [1, True]}, "dim_mults[1] must be a positive integer, got true"),
    ({"use_convnext": "no"}, 'use_convnext must be true or false, got a string ("no")'),
    ({"dim": 8.0}, "dim must be a positive integer, got 8.0"),
])
def test_config_fields_are_type_checked(tmp_path, fields, says, capsys):
    from parity.convert import main

    src = project_file(tmp_path, ".safetensors")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**json.loads(SMALL_JSON), **fields}))
    argv = [src, tmp_path / "out.pt", "--config", config]
    if "dim_mults" in fields and fields["dim_mults"] == "12":  # the case of the issue, as a user meets it
        run_cli("parity.convert", argv, rc=2, inputs=[src, config], says=f"--config file {config}: {says}")
    else:
        called(main, argv, capsys, inputs=[src, config], says=f"--config file {config}: {says}")
    assert not (tmp_path / "out.pt").exists()
