"""Issue 25, extreme values: sizes that cannot fit, a training that diverges, weights that sample NaN, and the
settings that must travel with the weights. Each case runs the command as a user does (``corpus.run_cli``):
one ``error:`` line, the expected exit status, no traceback, the inputs unchanged, and nothing half-made.

The sizes refused here (hundreds of GiB and more) exceed any machine this suite runs on, so the refusals do
not depend on the machine; ``tests/ddpm_core/test_memory.py`` checks the estimates themselves.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.training.datasets import write_synthetic_fashion_mnist
from ddpm_core.weights.files import load_weights, save_weights
from parity.engine.initial import initial_weights
from tests.host import PROGRAM_FRAMEWORKS, PROGRAM_TWINS, needs
from tests.reliability.corpus import run_cli
from tests.train.conftest import TINY

CFG = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
DIFF = DiffusionConfig(timesteps=10)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic_fashion_mnist(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """Seeded tiny weights with their settings (T=10, 8x8), as a run exports them."""
    path = tmp_path_factory.mktemp("weights") / "model.safetensors"
    save_weights(initial_weights(CFG, 0), path, "torch", CFG, diffusion=DIFF, image_size=8)
    return path


def options(*pairs: str, **values: str) -> list[str]:
    """TINY with some options replaced (``batch_size="16"``) and others added."""
    out = list(TINY)
    for name, value in values.items():
        out[out.index("--" + name.replace("_", "-")) + 1] = value
    return out + list(pairs)


# ---------------------------------------------------------------- memory


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_sample_refuses_an_n_that_cannot_fit_before_any_work(weights, tmp_path):
    out = tmp_path / "samples.png"
    res = run_cli("ddpm_torch.sample", ["--weights", weights, "--n", "100000000", "--out", out, "--no-progress"],
                  rc=2, inputs=[weights], says="sampling 100000000 images of 8x8 needs at least")
    assert "GiB" in res.error_lines[0] and "use a smaller --n" in res.error_lines[0]
    assert not out.exists()


@pytest.mark.parametrize("twin", PROGRAM_TWINS)
def test_train_refuses_a_model_that_cannot_fit_before_writing_anything(twin, data, tmp_path):
    out = tmp_path / "run"
    run_cli(f"ddpm_{twin}.train", ["--data", data, "--out", out, *options(dim="100000")], rc=2, inputs=[data],
            says="training Unet(dim=100000")
    assert not out.exists()


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_train_refuses_an_image_size_that_cannot_fit(data, tmp_path):
    """Feature maps, not parameters: the tiny model at 2048x2048 (its attention matrix alone is 4 x 1024^4)."""
    run_cli("ddpm_torch.train", ["--data", data, "--out", tmp_path / "run", *options(image_size="2048")],
            rc=2, inputs=[data], says="on batches of 4 at 2048x2048 needs at least")


@pytest.mark.parametrize("args, says", [
    (["--config", '{"dim": 100000, "channels": 1, "dim_mults": [1, 2]}'], "checking Unet(dim=100000"),
    (["--batch", "10000000"], "on a batch of 10000000"),
])
def test_check_refuses_a_run_that_cannot_fit_before_making_weights(args, says):
    run_cli("parity.check", [*args, "--no-progress"], rc=2, says=says, timeout=120)


# ---------------------------------------------------------------- divergence


@pytest.mark.parametrize("twin", PROGRAM_TWINS)
def test_a_diverging_training_stops_at_the_divergence_limit(twin, data, tmp_path):
    """The issue's case: --lr 10 trained on to losses of 3e17 with exit 0. The loss passes --max-loss at
    step 1, before any checkpoint: the run stops, and its folder (nothing to resume) goes."""
    out = tmp_path / "run"
    res = run_cli(f"ddpm_{twin}.train", ["--data", data, "--out", out, "--lr", "10", "--max-steps", "6", *TINY],
                  rc=2, inputs=[data], says="step 1: the loss")
    assert "exceeds --max-loss 100" in res.error_lines[0] and "try a lower --lr" in res.error_lines[0]
    assert not out.exists()


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_divergence_keeps_the_last_good_checkpoint_and_names_it(data, tmp_path):
    """Three steps with a checkpoint after each, then resumed with a limit the next loss exceeds: the checkpoint
    after 3 steps holds the weights that gave that loss, so the one named is the one after 2 steps."""
    out = tmp_path / "run"
    run_cli("ddpm_torch.train", ["--data", data, "--out", out, "--max-steps", "3", "--save-every", "1", *TINY],
            rc=0, inputs=[data])
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    res = run_cli("ddpm_torch.train", ["--resume", out, "--max-steps", "6", "--max-loss", "0.01", "--no-progress"],
                  rc=2, inputs=[data, out / "checkpoints"], says="step 3: the loss")
    line = res.error_lines[0]
    assert "exceeds --max-loss 0.01" in line
    assert "the last good checkpoint, checkpoints/step_000000002.pt (after 2 step(s)), is kept" in line
    assert line.endswith("; checkpoints/step_000000003.pt (after 3 step(s)), also kept, holds the weights that gave "
                         "this loss")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == kept == ["step_000000002.pt",
                                                                             "step_000000003.pt"]


@pytest.mark.parametrize("value", ["nan", "inf"])
@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_max_loss_must_be_a_finite_positive_number(value, data, tmp_path):
    run_cli("ddpm_torch.train", ["--data", data, "--out", tmp_path / "run", "--max-loss", value, *TINY], rc=2,
            inputs=[data], says="--max-loss must be a finite number > 0")


# ---------------------------------------------------------------- non-finite samples


@pytest.mark.parametrize("twin", PROGRAM_TWINS)
def test_sampling_writes_nothing_from_non_finite_states(twin, tmp_path):
    """Finite weights that do not denoise (every weight 1e30, as a diverged training leaves them): the issue's
    garbage PNG and all-NaN .npy with exit 0 become one line naming the first sample and step."""
    weights = tmp_path / "diverged.safetensors"
    state = {k: np.full_like(v, 1e30) for k, v in initial_weights(CFG, 0).items()}
    save_weights(state, weights, "torch", CFG, diffusion=DIFF, image_size=8)
    out, npy, gif = tmp_path / "s.png", tmp_path / "s.npy", tmp_path / "s.gif"
    res = run_cli(f"ddpm_{twin}.sample", ["--weights", weights, "--n", "2", "--out", out, "--npy", npy, "--gif", gif,
                                          "--sampler", "ddim", "--steps", "2", "--compile", "off", "--no-progress"],
                  rc=2, inputs=[weights], says="sample 0 of 2 is NaN or inf after sampling step 1 of 2")
    assert "nothing was written" in res.error_lines[0]
    assert not out.exists() and not npy.exists() and not gif.exists()


# ---------------------------------------------------------------- settings travel with the weights


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_the_image_size_travels_with_exported_weights(data, tmp_path):
    """The issue's case: a model trained at 28x28 with dim 8, its model.safetensors moved out of its run,
    sampled at 8x8 silently. The export now records the size, so the moved file samples at 28x28."""
    out = tmp_path / "run"
    run_cli("ddpm_torch.train", ["--data", data, "--out", out, "--max-steps", "1",
                                 *options(image_size="28", dim_mults="1,2")], rc=0, inputs=[data])
    moved = tmp_path / "elsewhere" / "model.safetensors"
    moved.parent.mkdir()
    shutil.copy(out / "model.safetensors", moved)
    assert load_weights(moved).image_size == 28
    npy = tmp_path / "s.npy"
    res = run_cli("ddpm_torch.sample", ["--weights", moved, "--n", "1", "--out", tmp_path / "s.png", "--npy", npy,
                                        "--no-progress"], rc=0, inputs=[moved])
    assert np.load(npy).shape == (1, 1, 28, 28)
    assert "note:" not in res.stderr  # every setting was recorded: nothing assumed


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_sampling_weights_without_a_recorded_size_says_what_it_assumes(tmp_path):
    weights = tmp_path / "model.pt"
    save_weights(initial_weights(CFG, 0), weights, "torch", CFG)
    res = run_cli("ddpm_torch.sample", ["--weights", weights, "--config", json.dumps(CFG.essentials()), "--n", "1",
                                        "--timesteps", "10", "--out", tmp_path / "s.png", "--no-progress"],
                  rc=0, inputs=[weights])
    assert "note: no image size is recorded with" in res.stderr and "sampling at 8x8" in res.stderr


def run_folder(tmp_path: Path, image_size: int) -> Path:
    """A run folder as training leaves it: model.pt (no room for settings) beside config.json."""
    run = tmp_path / "run"
    run.mkdir()
    save_weights(initial_weights(CFG, 0), run / "model.pt", "torch", CFG)
    (run / "config.json").write_text(json.dumps({"unet": CFG.to_dict(), "diffusion": json.loads(DIFF.to_json()),
                                                 "image_size": image_size}))
    return run


@needs("torch")  # model.pt
def test_convert_carries_the_settings_beside_a_runs_weights_into_safetensors(tmp_path):
    run = run_folder(tmp_path, 16)
    dst = tmp_path / "model.safetensors"
    res = run_cli("parity.convert", [run / "model.pt", dst], rc=0, inputs=[run])
    assert f"read the settings recorded in {run / 'config.json'}" in res.stderr
    loaded = load_weights(dst)
    assert (loaded.config, loaded.diffusion, loaded.image_size) == (CFG, DIFF, 16)


@needs("torch")  # model.pt
def test_check_weights_runs_at_the_runs_image_size(tmp_path):
    """``parity.check --weights`` reads the same settings: the run's 16x16 and T=10, not 28x28 and T=200.
    (In process, up to the spec: the settings are resolved before either framework is imported.)"""
    from parity.check import _weights, build_parser

    run = run_folder(tmp_path, 16)
    args = build_parser("check").parse_args(["--weights", str(run / "model.pt")])
    cfg, _, _, spec = _weights(args)
    assert (cfg, spec.tape.image_size, spec.diffusion) == (CFG, 16, DIFF)
    args = build_parser("check").parse_args(["--weights", str(run / "model.pt"), "--image-size", "8"])
    assert _weights(args)[3].tape.image_size == 8  # an option still wins


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_a_config_beside_the_weights_that_contradicts_their_metadata_is_one_line(weights, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(weights, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"unet": CFG.to_dict(), "image_size": 16}))
    run_cli("ddpm_torch.sample", ["--weights", folder / "model.safetensors", "--out", tmp_path / "s.png",
                                  "--no-progress"], rc=2, inputs=[folder],
            says=f"{folder / 'config.json'} gives image size 16, but {folder / 'model.safetensors'} records 8")
