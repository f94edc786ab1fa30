"""Issue 17, as a user meets it in both twins' train and sample commands: a folder that is not a run is never
written into or cleaned up; corrupt weights are refused; pruning follows the run's records; a damaged
checkpoint names the intact one to resume from; a diverged run stops at once; bad output paths and bad
settings are one line before any work, and leave nothing behind that blocks a retry.

MindSpore's PyNative steps cost seconds each on the CI machine, so the MindSpore cases train at most 2 steps;
the run-folder logic they share with PyTorch (ddpm_core.training.loop, ddpm_core.training.run_folder) is exercised at length
with PyTorch."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddpm_core.runtime.atomic import host_tag
from ddpm_core.sampling import sample_main
from ddpm_core.weights.files import load_weights
from tests.conftest import damage_tensor_bytes
from tests.train.conftest import TINY, train, twin_module

EXT = {"torch": ".pt", "ms": ".ckpt"}


def one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def sample(twin: str, *args: str) -> int:
    return twin_module(twin, "sample").main(list(args))


def log_of(run) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def records(run) -> list[int]:
    return [e["step"] for e in json.loads((run / "latest.json").read_text())["checkpoints"]]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- 1. a run folder is recognised, not assumed
def test_a_folder_that_is_not_a_run_is_left_alone(tmp_path, fashion_dir, twin_name, capsys):
    """Was: trained into it, deleted its hidden *.tmp files and checkpoints/step_*.pt it did not write, and
    overwrote model.pt, config.json and log.jsonl."""
    user = tmp_path / "mine"
    (user / "checkpoints").mkdir(parents=True)
    files = {user / ".notes.tmp": b"notes", user / "checkpoints" / "step_000000009.pt": b"my checkpoint",
             user / "model.pt": b"my model"}
    for f, data in files.items():
        f.write_bytes(data)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / ".notes.tmp").write_bytes(b"notes")
    (tmp_path / "a-file").write_bytes(b"x")
    for out, extra, says in ((user, [], "no run.json, so it is not a run folder"),
                             (user, ["--allow-other-files"], "no run.json, so it is not a run folder"),
                             (plain, [], "is not empty (1 entry, e.g. '.notes.tmp') and not a run folder"),
                             (tmp_path / "a-file", [], "is a file, not a folder")):
        assert train(twin_name, "--data", str(fashion_dir), "--out", str(out), *extra, *TINY) == 2
        assert says in one_error_line(capsys)
    assert all(f.read_bytes() == data for f, data in files.items())
    assert sorted(p.name for p in user.rglob("*")) == [".notes.tmp", "checkpoints", "model.pt", "step_000000009.pt"]
    assert [p.name for p in plain.iterdir()] == [".notes.tmp"] and (tmp_path / "a-file").read_bytes() == b"x"


def test_allow_other_files_writes_beside_them_and_cleans_only_its_own(tmp_path, fashion_dir):
    out = tmp_path / "shared"
    out.mkdir()
    (out / ".notes.tmp").write_bytes(b"notes")
    (out / "data.csv").write_bytes(b"1,2")
    assert train("torch", "--data", str(fashion_dir), "--out", str(out), "--allow-other-files", "--max-steps", "1",
                 *TINY) == 0
    host, pid = host_tag(), dead_pid()
    ours = [out / f".latest.json.{host}-{pid}.abcd1234.tmp", out / "checkpoints" / f".step_000000002.pt.{host}-{pid}.x1y2z3w4.tmp"]
    others = [out / f".latest.json.{host}-{os.getpid()}.abcd1234.tmp",  # a live process's
              out / f".notes.json.{host}-{pid}.abcd1234.tmp",           # not a run file's
              out / "checkpoints" / ".step_2.pt.tmp", out / ".notes.tmp", out / "data.csv"]
    for f in ours + others:
        f.write_bytes(f.read_bytes() if f.exists() else b"partial")
    assert train("torch", "--resume", str(out), "--max-steps", "2") == 0
    assert not any(f.exists() for f in ours) and all(f.exists() for f in others)
    assert (out / ".notes.tmp").read_bytes() == b"notes" and (out / "data.csv").read_bytes() == b"1,2"


# ---------------------------------------------------------------- 4. pruning by the run's records
def test_restart_from_step_0_keeps_what_it_writes(tmp_path, fashion_dir, capsys):
    """Was: a run restarting from step 0 beside higher-numbered checkpoints deleted each new checkpoint right
    after writing it, and one without latest.json restarted silently and truncated its log."""
    run = tmp_path / "run"
    assert train("torch", "--data", str(fashion_dir), "--out", str(run), "--epochs", "2", "--save-every", "2",
                 *TINY) == 0
    whole = log_of(run)
    assert records(run) == [4, 6] and len(whole) == 6
    capsys.readouterr()
    (run / "latest.json").unlink()
    assert train("torch", "--resume", str(run)) == 2
    line = one_error_line(capsys)
    assert "latest.json is missing, but the run holds checkpoints/step_000000004.pt, checkpoints/step_000000006.pt" in line
    assert "--from-step N" in line and log_of(run) == whole  # nothing changed
    stray = run / "checkpoints" / "step_000000001.pt"  # a checkpoint no record names is never pruned
    shutil.copy(run / "checkpoints" / "step_000000004.pt", stray)
    assert train("torch", "--resume", str(run), "--from-step", "0", "--keep", "1") == 0
    assert records(run) == [6] and log_of(run) == whole
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000001.pt", "step_000000006.pt"]
    assert train("torch", "--resume", str(run)) == 0  # latest.json names a checkpoint that exists and is intact


# ---------------------------------------------------------------- 5. a damaged newest checkpoint
@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, fashion_dir):
    """Per twin, made on first use: a 2-step run with a checkpoint after each step."""
    made = {}

    def get(twin: str):
        if twin not in made:
            run = tmp_path_factory.mktemp(f"two_{twin}") / "run"
            assert train(twin, "--data", str(fashion_dir), "--out", str(run), "--max-steps", "2", "--save-every", "1",
                         *TINY) == 0
            made[twin] = run
        return made[twin]

    return get


def test_a_damaged_checkpoint_names_the_intact_one_to_resume_from(tmp_path, two_checkpoints, twin_name, capsys):
    original = two_checkpoints(twin_name)
    capsys.readouterr()
    run = tmp_path / "run"
    shutil.copytree(original, run)
    ext = EXT[twin_name]
    newest, older = run / "checkpoints" / f"step_000000002{ext}", run / "checkpoints" / f"step_000000001{ext}"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    assert train(twin_name, "--resume", str(run)) == 2
    line = one_error_line(capsys)
    assert f"{newest}: does not match the sha256 recorded" in line
    assert f"the newest intact checkpoint is checkpoints/step_000000001{ext} (step 1): continue from it with " \
           f"--resume {run} --from-step 1" in line
    assert train(twin_name, "--resume", str(run), "--from-step", "1") == 0  # trains step 1 again
    assert log_of(run) == log_of(original) and records(run) == [1, 2]
    capsys.readouterr()
    # without records, a checkpoint's own checksum (zip CRC-32 / MindSpore's CRC) decides
    (run / "latest.json").unlink()
    damage_tensor_bytes(older, np.frombuffer(older.read_bytes()[-4096:-2048], np.uint8))
    assert train(twin_name, "--resume", str(run), "--from-step", "1") == 2
    assert f"{older}: damaged: " in one_error_line(capsys)
    assert train(twin_name, "--resume", str(run), "--from-step", "2") == 0  # verified by its own checksum
    assert records(run) == [2]


# ---------------------------------------------------------------- 6, 7. bad settings: one line, nothing left
@pytest.mark.parametrize("option, says", [
    (["--lr=inf"], "--lr must be a finite number, got inf"),
    (["--dim", "3"], "dim=3: the time embedding needs an even dim >= 4"),
    (["--dim", "5"], "dim=5: the time embedding needs an even dim >= 4"),
])
def test_bad_settings_leave_nothing_that_blocks_a_retry(tmp_path, fashion_dir, twin_name, capsys, option, says):
    """Was: --lr=inf and --dim 3 raised tracebacks after writing run.json, and the retry said 'already holds a run'."""
    out = tmp_path / "run"
    assert train(twin_name, "--data", str(fashion_dir), "--out", str(out), *TINY, *option) == 2
    assert says in one_error_line(capsys)
    assert not out.exists()


def test_the_smallest_dim_trains_in_both_twins(tmp_path, fashion_dir, twin_name):
    """dim=4 is the real minimum (the time embedding's sinusoids need dim // 2 - 1 > 0 and an even dim)."""
    options = list(TINY)
    options[options.index("--dim") + 1] = "4"
    assert train(twin_name, "--data", str(fashion_dir), "--out", str(tmp_path / "run"), "--max-steps", "1",
                 *options) == 0


# ---------------------------------------------------------------- 8. divergence stops at once
def test_a_diverged_run_stops_at_once_and_keeps_the_last_finite_checkpoint(tmp_path, fashion_dir, twin_name, capsys):
    run = tmp_path / "run"
    assert train(twin_name, "--data", str(fashion_dir), "--out", str(run), "--lr", "1e6", "--epochs", "3",
                 "--save-every", "1", *TINY) == 2
    assert one_error_line(capsys) == (f"error: step 1: the loss is nan: training diverged and stopped (try a lower "
                                      f"--lr); checkpoints/step_000000001{EXT[twin_name]} (after 1 step(s)) is kept, "
                                      "but holds the weights that gave this loss; no checkpoint from before it was written")
    assert len(log_of(run)) == 2 and records(run) == [1] and not (run / "model.safetensors").exists()
    from ddpm_core.config import UnetConfig

    config = UnetConfig.from_dict(json.loads((run / "config.json").read_text())["unet"])
    kept = load_weights(run / f"checkpoints/step_000000001{EXT[twin_name]}", config=config)  # strict: all finite
    assert kept.verified and all(np.isfinite(v).all() for v in kept.state.values())


def test_a_run_that_diverges_before_its_first_checkpoint_leaves_no_folder(tmp_path, fashion_dir, capsys):
    run = tmp_path / "run"
    assert train("torch", "--data", str(fashion_dir), "--out", str(run), "--lr", "1e6", *TINY) == 2
    assert one_error_line(capsys).endswith(f"no checkpoint was written; {run} was removed")
    assert not run.exists()
    assert train("torch", "--data", str(fashion_dir), "--out", str(run), "--max-steps", "1", *TINY) == 0  # the retry


# ---------------------------------------------------------------- sampling: outputs, corrupt weights, settings
def test_a_bad_sample_output_is_refused_before_sampling(tmp_path, trained_runs, twin_name, capsys):
    """Was: a traceback after all the sampling was done (--out a folder, or not writable)."""
    weights = str(trained_runs["torch"] / "model.safetensors")
    (tmp_path / "a-file").write_bytes(b"x")
    for out, says in ((tmp_path, "is a folder, not a file"),
                      (tmp_path / "a-file" / "s.png", f"{tmp_path / 'a-file'} is a file, not a folder")):
        assert sample(twin_name, "--weights", weights, "--out", str(out), "--no-progress") == 2
        assert one_error_line(capsys) == f"error: --out {out}: {says}"
    assert sample(twin_name, "--weights", weights, "--out", str(tmp_path / "s.png"), "--gif", str(tmp_path)) == 2
    assert one_error_line(capsys) == f"error: --gif {tmp_path}: is a folder, not a file"

    def never(*args):
        raise AssertionError("sampled before checking --out")

    with pytest.raises(Exception, match="is a folder, not a file"):
        sample_main(["--weights", weights, "--out", str(tmp_path)], "sample", twin_name, never,
                    twin_module(twin_name, "device"))


@pytest.mark.parametrize("fmt", ["native", "safetensors"])
def test_corrupt_weights_are_refused_by_sample(tmp_path, trained_runs, twin_name, capsys, fmt):
    """8 bytes flipped inside a tensor of model.pt, model.ckpt or model.safetensors: one line, exit 2."""
    trained = "torch" if fmt == "native" and twin_name == "torch" else "ms"
    name = f"model{EXT[trained]}" if fmt == "native" else "model.safetensors"
    folder = tmp_path / "run"
    folder.mkdir()
    for f in (name, "config.json"):
        shutil.copy(trained_runs[trained] / f, folder / f)
    weights = folder / name
    state = load_weights(trained_runs[trained] / "model.safetensors").state  # the same values in every format
    damage_tensor_bytes(weights, state[max(state, key=lambda k: state[k].size)])
    assert sample(twin_name, "--weights", str(weights), "--out", str(tmp_path / "s.png"), "--no-progress") == 2
    assert one_error_line(capsys).startswith(f"error: cannot read {weights}: damaged: ")
    assert not (tmp_path / "s.png").exists()


def test_diffusion_settings_travel_with_the_weights(tmp_path, trained_runs, twin_name, capsys):
    """Was: weights moved out of their run folder sampled with the tutorial's T=200 without a word."""
    moved = tmp_path / "moved.safetensors"
    shutil.copy(trained_runs["torch"] / "model.safetensors", moved)  # trained with T=10, no config.json here
    out = str(tmp_path / "s.png")
    common = ["--weights", str(moved), "--out", out, "--n", "1", "--no-progress", "--compile", "off"]
    assert sample(twin_name, *common, "--timesteps", "50") == 2
    assert one_error_line(capsys) == (f"error: --timesteps 50 contradicts the diffusion settings recorded in {moved} "
                                      "(T=10 linear, huber loss); leave the option out")
    if twin_name == "torch":  # sampling itself is the same code in both twins (ddpm_core.sampling)
        assert sample(twin_name, *common) == 0
        assert "1 samples (ddpm, 10 steps, seed 0)" in capsys.readouterr().err
    bare = tmp_path / "bare.pt"
    shutil.copy(trained_runs["torch"] / "model.pt", bare)
    assert sample(twin_name, "--weights", str(bare), "--out", out, "--n", "1", "--no-progress") == 2
    line = one_error_line(capsys)  # its config is named from the shapes, in one line
    assert line.startswith(f"error: cannot load {bare}: these weights are a Unet(dim=8, channels=1, dim_mults=(1, 2)), "
                           "but the tutorial's Unet(dim=28, channels=1, dim_mults=(1, 2, 4)) was assumed; pass --config")
    given = line.split("--config '")[1].split("'")[0]
    if twin_name == "torch":
        assert sample(twin_name, "--weights", str(bare), "--config", given, "--out", out, "--n", "1", "--no-progress",
                      "--sampler", "ddim", "--steps", "2") == 0
        assert "note: no diffusion settings are recorded with" in capsys.readouterr().err
