"""Training runs in both twins: the run folder, checkpoints that survive a SIGKILL, exact resume, the
exported weights loading in the other framework, and bad inputs failing with one line and exit 2."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from parity.api import assert_close
from ddpm_core.weights.files import load_weights
from tests.train.conftest import (
    TINY,
    make_fashion_mnist,
    make_image_folder,
    run_cli,
    train,
    twin_module,
)
from tests.host import framework

EXT = {"torch": ".pt", "ms": ".ckpt"}


def losses(run) -> list[tuple[int, int, float, float]]:
    return [(r["step"], r["epoch"], r["loss"], r["lr"]) for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def test_run_folder(trained_runs, twin_name):
    run = trained_runs[twin_name]
    log = losses(run)
    assert [r[0] for r in log] == [0, 1] and all(np.isfinite(r[2]) for r in log) and log[0][3] == 1e-4
    latest = json.loads((run / "latest.json").read_text())
    assert latest["step"] == 2 and latest["checkpoint"] == f"checkpoints/step_000000002{EXT[twin_name]}"
    settings = json.loads((run / "run.json").read_text())
    assert (settings["framework"], settings["data_format"], settings["channels"], settings["examples"]) == \
           (twin_name, "fashion-mnist", 1, 12)
    config = load_weights(run / "model.safetensors").config
    assert load_weights(run / f"model{EXT[twin_name]}", config=config).state
    meta, step_counter, moments = checkpoint_contents(twin_name, run / latest["checkpoint"])
    assert (meta["step"], meta["lr_position"], meta["tape"]["next_step"], step_counter) == (2, 2, 2, 2)
    assert moments == 2 * len(load_weights(run / "model.safetensors").state)  # Adam's m and v per parameter


def checkpoint_contents(twin: str, path) -> tuple[dict, int, int]:
    """(meta, optimizer step counter, number of Adam moment tensors) of a training checkpoint."""
    if twin == "torch":
        torch = framework("torch")

        state = torch.load(path, weights_only=True)
        opt = state["optimizer"]
        return state["meta"], opt["mindspore_adam"]["global_step"], sum(len(s) for s in opt["state"].values())
    ms = framework("mindspore")

    saved = ms.load_checkpoint(str(path))
    moments = sum(k.startswith(("moment1.", "moment2.")) for k in saved)
    return json.loads(saved["ddpm_meta"]), int(saved["global_step"].asnumpy()[0]), moments


def test_epochs_set_the_learning_rate_list(tmp_path, fashion_dir):
    """12 examples, batch 4: 3 steps per epoch; 2 epochs -> cosine_decay_lr constant within each epoch."""
    out = tmp_path / "run"
    assert train("torch", "--data", str(fashion_dir), "--out", str(out), "--epochs", "2", "--lr", "1e-3",
                 "--save-every", "100", *TINY) == 0
    log = losses(out)
    assert [r[1] for r in log] == [0, 0, 0, 1, 1, 1]
    assert [r[3] for r in log] == pytest.approx([1e-3] * 3 + [1e-7 + 0.5 * (1e-3 - 1e-7) * 1.0] * 3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000006.pt"]


def test_image_folder_training(tmp_path, twin_name):
    data = make_image_folder(tmp_path / "images", per_class=2)
    out = tmp_path / "run"
    assert train(twin_name, "--data", str(data), "--out", str(out), "--max-steps", "1", "--channels", "3", *TINY) == 0
    assert json.loads((out / "run.json").read_text())["data_format"] == "image-folder"
    assert load_weights(out / "model.safetensors").config.channels == 3


KILL_COMMON = ["--epochs", "2", "--save-every", "2", *TINY]
"""6 steps (12 examples, batch 4, 2 epochs), a checkpoint every 2 steps."""


@pytest.fixture(scope="module")
def uninterrupted(session_dir, fashion_gz_dir):
    """The uninterrupted 6-step run of each twin, made on first use."""
    runs = {}

    def get(twin):
        if twin not in runs:
            out = session_dir / f"whole_{twin}"
            assert train(twin, "--data", str(fashion_gz_dir), "--out", str(out), *KILL_COMMON) == 0
            runs[twin] = out
        return runs[twin]

    return get


@pytest.mark.parametrize("twin,kill_at", [("torch", "during-save:4"), ("ms", "during-save:4"),
                                          ("torch", "before-pointer:2"), ("ms", "after-step:3")])
def test_sigkill_then_resume_continues_the_loss_curve_exactly(tmp_path, fashion_gz_dir, uninterrupted, twin, kill_at):
    """The run SIGKILLed (mid-save, between a checkpoint and its pointer, or after a step) and resumed logs
    the same losses as the uninterrupted run, bit for bit, and ends with the same weights."""
    killed = run_cli(twin, "train", "--data", str(fashion_gz_dir), "--out", str(tmp_path / "killed"), *KILL_COMMON,
                     env={"DDPM_KILL_AT": kill_at})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    step = int(kill_at.split(":")[1])
    assert [r[0] for r in losses(tmp_path / "killed")] == list(range(step))  # it died where it was told to
    assert train(twin, "--resume", str(tmp_path / "killed")) == 0

    whole = uninterrupted(twin)
    assert losses(tmp_path / "killed") == losses(whole)
    assert not [p for p in (tmp_path / "killed" / "checkpoints").iterdir() if p.name.startswith(".")]
    a = load_weights(tmp_path / "killed" / "model.safetensors").state
    b = load_weights(whole / "model.safetensors").state
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_can_extend_max_steps(tmp_path, fashion_dir):
    """(The resume logic is shared; the SIGKILL tests above cover each twin's checkpoint files.)"""
    common = ["--data", str(fashion_dir), "--save-every", "100", *TINY]
    assert train("torch", "--out", str(tmp_path / "whole"), "--max-steps", "3", *common) == 0
    assert train("torch", "--out", str(tmp_path / "part"), "--max-steps", "1", *common) == 0
    assert train("torch", "--resume", str(tmp_path / "part"), "--max-steps", "3") == 0
    assert losses(tmp_path / "part") == losses(tmp_path / "whole")


def test_resume_refuses_changed_settings(tmp_path, trained_runs, capsys):
    assert train("torch", "--resume", str(trained_runs["torch"]), "--lr", "0.5") == 2
    assert "--lr" in capsys.readouterr().err
    assert train("ms", "--resume", str(trained_runs["torch"])) == 2
    assert "ddpm_torch.train" in capsys.readouterr().err


def test_cross_framework_noise_predictions(trained_runs, torch_twin, ms_twin):
    """A model trained in one framework, exported and loaded into the other, predicts the same noise."""
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.array([0, 4, 9], np.int32)
    for trained, other in (("torch", ms_twin), ("ms", torch_twin)):
        native = {"torch": torch_twin, "ms": ms_twin}[trained]
        exported = load_weights(trained_runs[trained] / f"model{EXT[trained]}",
                                config=load_weights(trained_runs[trained] / "model.safetensors").config)
        cfg = exported.config
        ref = native.forward(native.build_loaded(cfg, exported.state), x, t)
        got = other.forward(other.build_loaded(cfg, load_weights(trained_runs[trained] / "model.safetensors").state), x, t)
        assert_close(f"trained in {trained}, predicted in {other.name}", got, ref, "prediction")


# ---------------------------------------------------------------- bad inputs: one line, exit 2
def bad_inputs(tmp_path):
    truncated = make_fashion_mnist(tmp_path / "truncated")
    f = truncated / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-1])
    magic = make_fashion_mnist(tmp_path / "magic")
    g = magic / "train-images-idx3-ubyte"
    g.write_bytes(b"\x00\x00\x08\x02" + g.read_bytes()[4:])
    broken = make_image_folder(tmp_path / "broken", per_class=1)
    h = broken / "a" / "img0.png"
    h.write_bytes(b"GIF89a but not really")
    return {"missing": (tmp_path / "missing", tmp_path / "missing"), "truncated": (truncated, f),
            "magic": (magic, g), "undecodable": (broken, h)}


@pytest.mark.parametrize("case", ["missing", "truncated", "magic", "undecodable"])
def test_bad_data_is_one_line_and_exit_2(tmp_path, twin_name, case, capsys):
    data, named = bad_inputs(tmp_path)[case]
    assert train(twin_name, "--data", str(data), "--out", str(tmp_path / "run"), *TINY) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: ") and str(named) in err


def test_bad_data_exit_code_in_a_real_process(tmp_path, twin_name):
    data, named = bad_inputs(tmp_path)["truncated" if twin_name == "torch" else "undecodable"]
    done = run_cli(twin_name, "train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY)
    lines = [ln for ln in done.stderr.splitlines() if "WARNING" not in ln]  # MindSpore's own import warnings
    assert done.returncode == 2 and lines == [f"error: {lines[0][7:]}"] and str(named) in lines[0]
    assert "Traceback" not in done.stderr


def assert_same_steps(what: str, a: tuple, b: tuple, start: dict[str, np.ndarray]) -> None:
    """``train_steps`` results (losses, final weights): losses under the harness's ``loss`` tolerance, the
    parameter change w_K - w_0 under its ``adam`` tolerance."""
    assert_close(f"{what}: losses", np.array(a[0], np.float32), np.array(b[0], np.float32), "loss")
    assert_close(f"{what}: w_K - w_0", {k: a[1][k] - start[k] for k in start}, {k: b[1][k] - start[k] for k in start},
                 "adam")


def test_parity_train_steps_agree(make_weights):
    """Both twins' ``train_steps``: 3 steps from the same weights on the same tape."""
    from ddpm_core.config import DiffusionConfig, UnetConfig
    from ddpm_core.training.tape import apply_flips, tape_arrays, to_model_range

    cfg, diffusion = UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=10)
    tape = tape_arrays(0, range(3), 12, 4, (1, 8, 8), diffusion.timesteps)
    images = np.random.default_rng(5).uniform(0, 1, (3, 4, 1, 8, 8)).astype(np.float32)
    x = np.stack([to_model_range(apply_flips(im, f)) for im, f in zip(images, tape["flips"])])
    lrs = [1e-3, 5e-4, 1e-4]
    weights = make_weights(cfg, 3)
    out = {t: twin_module(t, "train").train_steps(cfg, diffusion, weights, x, tape["t"], tape["noise"], lrs)
           for t in ("torch", "ms")}
    loss_diff = np.abs(np.array(out["torch"][0]) - np.array(out["ms"][0]))
    weight_diff = max(float(np.abs(out["torch"][1][k] - out["ms"][1][k]).max()) for k in weights)
    moved = max(float(np.abs(out["torch"][1][k] - weights[k]).max()) for k in weights)
    print(f"\ntrain_steps parity: loss diff per step {loss_diff.tolist()}, final weights max abs {weight_diff:.3g} "
          f"(weights moved up to {moved:.3g})")
    assert moved > 1e-4, "the weights must move, or the comparison proves nothing"
    assert_same_steps("torch vs ms train_steps", out["torch"], out["ms"], weights)


def test_same_init_weights_give_the_same_losses_in_both_twins(tmp_path, fashion_dir, trained_runs):
    """The CLIs end to end: the same --init-weights, --seed and data (Fashion-MNIST at its own 28x28, so no
    resizer is involved) give both twins the same batches, flips, t and noise, hence the same losses."""
    init = str(trained_runs["ms"] / "model.safetensors")
    options = [*TINY, "--image-size", "28", "--max-steps", "2", "--lr", "1e-3", "--init-weights", init]
    for twin in ("torch", "ms"):
        assert train(twin, "--data", str(fashion_dir), "--out", str(tmp_path / twin), *options) == 0
    a, b = losses(tmp_path / "torch"), losses(tmp_path / "ms")
    assert [r[:2] for r in a] == [r[:2] for r in b] and [r[3] for r in a] == [r[3] for r in b]
    assert_close("CLI losses, torch vs ms", np.array([x[2] for x in a]), np.array([y[2] for y in b]), "loss")


def test_mindspore_graph_training_matches_pynative(make_weights):
    """MindSpore trains with its U-Net forward as an ``ms.jit`` graph by default (``--compile auto``)."""
    from ddpm_core.config import DiffusionConfig, UnetConfig
    from ddpm_core.training.tape import tape_arrays

    cfg, diffusion = UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), DiffusionConfig(timesteps=10)
    tape = tape_arrays(1, range(2), 12, 4, (1, 8, 8), diffusion.timesteps)
    x = np.random.default_rng(6).uniform(-1, 1, (2, 4, 1, 8, 8)).astype(np.float32)
    weights, train_steps = make_weights(cfg, 4), twin_module("ms", "train").train_steps
    graph = train_steps(cfg, diffusion, weights, x, tape["t"], tape["noise"], [1e-3, 1e-3], compile="auto")
    pynative = train_steps(cfg, diffusion, weights, x, tape["t"], tape["noise"], [1e-3, 1e-3], compile="off")
    assert_same_steps("ms graph vs PyNative", graph, pynative, weights)
