"""Issue 25, "inputs are sacred": no command writes over a file it reads, however the output is named (the
same path, ``./path``, a symbolic link, a hard link), nor one output over another, and two trainings never
write one run folder at once. Each refusal comes before any work, in one line, exit 2, with every input's
bytes unchanged and no output created.

Before this, each case here exited 0 with the input gone (measured on main 1754895): ``sample --out`` or
``--npy`` over ``--weights``, ``--gif`` over ``--out``, ``check --json`` / ``record --out`` over
``--weights``, ``convert SRC --manifest SRC``, ``convert SRC DST --manifest DST`` (it said "wrote DST"), a
training checkpoint converted onto itself (optimizer, RNG and progress dropped), and two trainings into one
new ``--out`` (both exit 0, their logs mixed).

Each command runs once as a child process (``run_cli``: exit status, one line, no traceback); its variants
run in this process (``refused``), where the frameworks are imported already.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm_core.errors import OutputError
from ddpm_core.runtime.environment import child_env
from ddpm_core.runtime.paths import check_inside, check_outputs
from ddpm_core.training.run_folder import locked
from tests.host import PROGRAM_FRAMEWORKS, PROGRAM_TWINS, needs
from tests.reliability.corpus import ROOT, run_cli, sha256_of
from tests.reliability.fault_kit import refused, tiny_weights
from tests.train.conftest import TINY, make_fashion_mnist, train, twin_module

SAME = "is the same file as"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_fashion_mnist(tmp_path_factory.mktemp("data") / "fashion")


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    """A 2-step tiny PyTorch run: config.json, checkpoints/step_000000002.pt, model.pt, model.safetensors."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert train("torch", "--data", str(data), "--out", str(out), "--max-steps", "2", *TINY) == 0
    return out


@pytest.fixture
def weights(tmp_path) -> Path:
    return tiny_weights(tmp_path / "w.safetensors")


# ---------------------------------------------------------------- sample, both twins
@pytest.mark.parametrize("twin", PROGRAM_TWINS)
def test_sample_out_over_the_weights_is_refused(weights, twin):
    run_cli(f"ddpm_{twin}.sample", ["--weights", weights, "--out", weights, "--n", "1"], rc=2, inputs=[weights],
            says=f"--out {weights} {SAME} --weights {weights}")


@pytest.mark.parametrize("twin", PROGRAM_TWINS)
@pytest.mark.parametrize("case", ["npy=weights", "gif=out", "npy=./out", "out=symlink", "out=hardlink"])
def test_sample_outputs_over_inputs_or_each_other_are_refused(tmp_path, weights, twin, case, capsys):
    png = tmp_path / "s.png"
    outputs = {"npy=weights": ["--out", png, "--npy", weights],
               "gif=out": ["--out", png, "--gif", png],
               "npy=./out": ["--out", png, "--npy", f"{tmp_path}/./s.png"]}
    if case == "out=symlink":
        (tmp_path / "link.png").symlink_to(weights)
        outputs[case] = ["--out", tmp_path / "link.png"]
    if case == "out=hardlink":
        os.link(weights, tmp_path / "hard.png")
        outputs[case] = ["--out", tmp_path / "hard.png"]
    line = refused(twin_module(twin, "sample").main, ["--weights", weights, "--n", "1", *outputs[case]], capsys,
                   says=SAME, inputs=[weights])
    expected = "one output would replace the other" if case in ("gif=out", "npy=./out") else "would destroy an input"
    assert expected in line
    assert not png.exists()


def test_sample_over_the_config_beside_the_weights_is_refused(run, capsys):
    config = run / "config.json"
    refused(twin_module("torch", "sample").main, ["--weights", run / "model.pt", "--out", config], capsys,
            says=f"--out {config} {SAME} the config beside --weights", inputs=[run])


def test_noise_strip_over_its_image_is_refused(tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "cat.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)
    refused(twin_module("torch", "noise_strip").main, [image, "--out", image], capsys, says=f"{SAME} IMAGE",
            inputs=[image])


# ---------------------------------------------------------------- parity.check (refused before any import)
def test_check_json_over_the_weights_is_refused(weights):
    run_cli("parity.check", ["--weights", weights, "--json", weights], rc=2, inputs=[weights],
            says=f"--json {weights} {SAME} --weights")


def test_record_out_over_the_weights_or_the_json_is_refused(tmp_path, weights):
    run_cli("parity.check", ["record", "--framework", "torch", "--weights", weights, "--out", weights], rc=2,
            inputs=[weights], says=f"--out {weights} {SAME} --weights")
    golden = tmp_path / "g.npz"
    run_cli("parity.check", ["record", "--framework", "torch", "--out", golden, "--json", golden], rc=2,
            says=f"--json {golden} {SAME} --out {golden}")
    assert not golden.exists()


def test_compare_json_over_the_golden_is_refused(tmp_path):
    golden = tmp_path / "g.npz"
    golden.write_bytes(b"a golden file")  # refused before it is read
    run_cli("parity.check", ["compare", golden, "--framework", "torch", "--json", golden], rc=2, inputs=[golden],
            says=f"--json {golden} {SAME} GOLDEN")


# ---------------------------------------------------------------- parity.convert (imports no framework)
def test_convert_manifest_over_the_source_is_refused(weights):
    run_cli("parity.convert", [weights, "--manifest", weights], rc=2, inputs=[weights],
            says=f"--manifest {weights} {SAME} SRC")


def test_convert_manifest_over_the_destination_is_refused(tmp_path, weights):
    """Was: "wrote DST", then the manifest replaced it."""
    dst, old = tmp_path / "d.pt", tmp_path / "old.ckpt"  # (writing an old .pt would need PyTorch)
    run_cli("parity.convert", [weights, dst, "--manifest", dst], rc=2, inputs=[weights],
            says=f"--manifest {dst} {SAME} DST")
    assert not dst.exists()
    tiny_weights(old)
    run_cli("parity.convert", [weights, old, "--manifest", old], rc=2, inputs=[weights, old], says=SAME)


@pytest.mark.parametrize("how", ["same", "dot", "symlink", "hardlink"])
def test_convert_a_training_checkpoint_onto_itself_is_refused(tmp_path, run, how):
    """Was: the optimizer, RNG state and progress were dropped, and --resume then refused that step."""
    checkpoint = run / "checkpoints" / "step_000000002.pt"
    dst = {"same": checkpoint, "dot": Path(f"{checkpoint.parent}/./{checkpoint.name}"),
           "symlink": tmp_path / "link.pt", "hardlink": tmp_path / "hard.pt"}[how]
    if how == "symlink":
        dst.symlink_to(checkpoint)
    if how == "hardlink":
        os.link(checkpoint, dst)
    run_cli("parity.convert", [checkpoint, dst, "--config", run / "config.json"], rc=2, inputs=[run],
            says=f"DST {dst} {SAME} SRC {checkpoint}")


def test_convert_to_a_sidecar_manifest_still_works(tmp_path, weights):
    dst = tmp_path / "d.safetensors"  # (a .pt would import PyTorch: seconds)
    run_cli("parity.convert", [weights, dst, "--manifest", f"{dst}.manifest.json"], rc=0, inputs=[weights])
    res = run_cli("parity.convert", [weights, dst], rc=0, inputs=[weights])  # replaces DST, rewrites its sidecar
    assert f"updated {dst}.manifest.json" in res.stderr


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("where", ["the data", "inside the data"])
def test_train_out_in_the_data_is_refused(data, where, capsys):
    out = data if where == "the data" else data / "run"
    refused(twin_module("torch", "train").main, ["--data", data, "--out", out, "--allow-other-files", *TINY], capsys,
            says=f"--out {out} is inside --data {data}", inputs=[data])
    assert not (data / "run").exists()


def test_a_run_folder_locked_by_another_process_is_refused(tmp_path, data, run, capsys):
    """This process holds the lock, with the function a training uses, while a real training is started; then
    a --resume in this process, which opens the folder again (flock locks conflict between open files)."""
    new = tmp_path / "new"
    with locked(new, new=True):
        run_cli("ddpm_torch.train", ["--data", data, "--out", new, "--max-steps", "1", *TINY], rc=2,
                says=f"{new}: another training is writing this run folder")
        assert os.listdir(new) == []  # nothing was added to it, not even a lock file
    assert not new.exists()  # made for the lock, still empty: removed on release
    with locked(run):
        refused(twin_module("torch", "train").main, ["--resume", run], capsys, says="another training is writing",
                inputs=[run])
    assert train("torch", "--resume", str(run), "--max-steps", "3") == 0  # released: it continues


@pytest.mark.slow
@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_two_trainings_into_one_new_folder_one_is_refused(tmp_path, data):
    """Was: both exited 0 and log.jsonl mixed both runs. Now the one that locks first trains, the other stops
    in one line (the folder is locked, or already holds the first one's run), and the log is one run's."""
    out = tmp_path / "run"
    env = child_env(pythonpath=ROOT, PYTHONWARNINGS="ignore")
    procs = {steps: subprocess.Popen([sys.executable, "-m", "ddpm_torch.train", "--data", str(data), "--out", str(out),
                                      "--max-steps", str(steps), *TINY], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE) for steps in (3, 5)}
    done = {steps: (p.wait(timeout=300), p.stderr.read()) for steps, p in procs.items()}
    assert sorted(rc for rc, _ in done.values()) == [0, 2], done
    winner = next(steps for steps, (rc, _) in done.items() if rc == 0)
    loser_err = next(err for rc, err in done.values() if rc == 2)
    errors = [ln for ln in loser_err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in loser_err, loser_err
    assert "another training is writing" in errors[0] or "already holds a run" in errors[0]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(winner))


# ---------------------------------------------------------------- the guard itself
def test_the_guard_passes_distinct_paths_and_json_text(tmp_path, weights):
    check_outputs([("--out", tmp_path / "a.png"), ("--npy", tmp_path / "a.npy"), ("--gif", None)],
                  [("--weights", weights), ("--config", '{"dim": 8}'), ("--other", None)])
    before = sha256_of(tmp_path)
    check_outputs([("--out", tmp_path / "new" / "x.png")], [("--weights", weights)])
    assert sha256_of(tmp_path) == before and not (tmp_path / "new").exists()  # the probe creates nothing
    check_inside("--out", tmp_path / "runs" / "a", "--data", tmp_path / "data")  # siblings are fine
    with pytest.raises(OutputError, match="is inside --data"):
        check_inside("--out", tmp_path / "data" / ".." / "data" / "x", "--data", tmp_path / "data")
