"""``python -m parity.check`` as a user runs it: the default check passes, structural problems exit 2
with one line, a missing device exits 3 (record/compare across two one-framework processes:
test_one_framework.py)."""
import json
import subprocess
import sys
import time

import numpy as np

from tests.host import needs

TINY_ARGS = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10",
             "--image-size", "8", "--ddim-steps", "5", "--no-progress"]


def check(args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "parity.check", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def one_line_error(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[-1]


@needs("torch", "mindspore")
def test_default_check_passes_with_no_arguments(cli_env, tmp_path):
    """The tutorial configuration, T=200, every check: exit 0 (the one full run of the suite)."""
    out = tmp_path / "report.json"
    start = time.perf_counter()
    proc = check(["--json", str(out)], cli_env)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "PASS: the twins match on every check" in proc.stdout
    assert "sampling loop time step" in proc.stderr  # the progress bar over the trajectory
    report = json.loads(out.read_text())
    assert report["passed"] and report["exit_code"] == 0
    assert report["spec"]["unet"] == {"dim": 28, "init_dim": None, "out_dim": None, "dim_mults": [1, 2, 4],
                                      "channels": 1, "with_time_emb": True, "convnext_mult": 2, "use_convnext": True,
                                      "resnet_block_groups": 8}
    assert report["spec"]["diffusion"]["timesteps"] == 200 and report["spec"]["diffusion"]["loss_type"] == "huber"
    assert len(report["tape_sha256"]) == 64 and len(report["weights_sha256"]) == 64
    env = report["environment"]
    for key in ("python", "torch", "mindspore", "numpy", "cpu_model", "ONEDNN_MAX_CPU_ISA", "mindspore_mode"):
        assert env.get(key), key
    assert env["torch_setup"]["float32_matmul_precision"] == "highest" and env["torch_setup"]["threads"] == 1
    labels = [r["label"] for r in report["rows"]]
    for want in ("weights", "prediction t=0", "prediction t=100", "prediction t=199", "loss huber", "loss l1",
                 "loss l2", "gradients", "Adam step 3: MindSporeAdam", "torch.optim.Adam", "DDPM one step",
                 "DDPM trajectory (200 steps)", "DDIM eta=0 (20 steps)", "DDIM eta=0.5", "diffusion math"):
        assert any(want in label for label in labels), want
    ddpm = next(r for r in report["rows"] if r["label"].startswith("DDPM trajectory"))
    assert len(ddpm["members"]) == 200  # drift per step
    info = next(r for r in report["rows"] if "torch.optim.Adam" in r["label"])
    assert info["gate"] is False
    print(f"default parity.check: {wall:.1f} s wall (subprocess, imports included)")


def test_bad_config_is_structural(cli_env):
    proc = check(["--config", '{"dim": 8, "colour": 3}', *TINY_ARGS[2:]], cli_env)
    assert proc.returncode == 2 and "unknown Unet config keys: colour" in one_line_error(proc)
    proc = check(["--config", "{not json", *TINY_ARGS[2:]], cli_env)
    assert proc.returncode == 2 and "--config: not valid JSON" in one_line_error(proc)


def test_weights_that_do_not_map_are_structural(cli_env, tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"init_conv.weight": np.zeros((5, 1, 7, 7), np.float32)}, str(bad))
    proc = check(["--weights", str(bad), *TINY_ARGS], cli_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    one_line_error(proc)
    proc = check(["--weights", str(tmp_path / "missing.pt"), *TINY_ARGS], cli_env)
    assert proc.returncode == 2 and "missing.pt" in one_line_error(proc)


@needs("torch", "mindspore")
def test_missing_devices_refuse_with_exit_3(cli_env):
    import torch
    from mindspore import device_context

    if not torch.cuda.is_available():
        proc = check(["--torch-device", "cuda", *TINY_ARGS], cli_env)
        assert proc.returncode == 3 and "cuda" in one_line_error(proc)
    if not device_context.ascend.is_available():
        proc = check(["--ms-device", "Ascend", *TINY_ARGS], cli_env)
        assert proc.returncode == 3 and "Ascend" in one_line_error(proc)


@needs("torch", "mindspore")
def test_weights_file_and_config_file_in_process(tmp_path):
    """--weights (any format the converter reads) and --config as a file, through main() in this process."""
    import torch

    from ddpm_core.config import UnetConfig
    from ddpm_core.weights.files import save_weights
    from parity.check import main
    from parity.engine.initial import initial_weights

    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    weights = tmp_path / "w.ckpt"
    save_weights(initial_weights(cfg, 3), weights, naming="torch", config=cfg)  # MindSpore checkpoint
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    try:
        code = main(["--weights", str(weights), "--config", str(config), *TINY_ARGS[2:], "--checks",
                     "settings,weights,predict", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads(out.read_text())
    assert "w.ckpt" in report["environment"]["weights_source"]
    from parity.engine.initial import weights_hash

    assert report["weights_sha256"] == weights_hash(initial_weights(cfg, 3))


def test_train_steps_option_and_its_old_name():
    """--train-steps sets K for the Adam check (and --workers); --adam-steps still works; --workers is off by default."""
    from parity.check import build_parser

    parser = build_parser("check")
    assert parser.parse_args(["--train-steps", "4"]).train_steps == 4
    assert parser.parse_args(["--adam-steps", "5"]).train_steps == 5
    defaults = parser.parse_args([])
    assert defaults.train_steps == 3 and defaults.workers == 1
    assert build_parser("record").parse_args(["--framework", "ms", "--out", "g.npz", "--adam-steps", "2"]).train_steps == 2


# ---------------------------------------------------------------- never pass on nothing (issue 17)
def test_an_empty_check_list_is_a_usage_error(capsys):
    """``--checks ''`` printed "PASS: the twins match on every check" with zero rows and exit 0."""
    import pytest

    from parity.check import main

    for argv in (["--checks", ""], ["record", "--framework", "ms", "--out", "g.npz", "--checks", " , "]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and "--checks: expected at least one str" in capsys.readouterr().err
    from parity.api import make_spec
    from ddpm_core.config import UnetConfig

    with pytest.raises(ValueError, match="no checks to run"):  # the Python API too
        make_spec(UnetConfig(dim=8, channels=1, dim_mults=(1, 2)), checks=())


@needs("torch", "mindspore")
def test_a_comparison_that_produced_no_row_fails(tmp_path, capsys):
    """A golden file recorded with only the settings check (which needs both frameworks in one process, so
    compare leaves it out) leaves compare nothing to compare: that is a failure, not a PASS."""
    import torch

    from parity.check import main

    golden = tmp_path / "g.npz"
    threads = torch.get_num_threads()
    try:
        assert main(["record", "--framework", "ms", "--out", str(golden), "--checks", "settings", *TINY_ARGS]) == 0
        capsys.readouterr()
        assert main(["compare", str(golden), "--framework", "torch", "--no-progress"]) == 2
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr()
    assert "PASS" not in out.out and out.err.strip().splitlines() == [
        "error: nothing was compared (checks: none); a parity run that compares nothing cannot pass"]


def test_missing_weights_say_no_such_file_once(tmp_path, capsys):
    from parity.check import main

    assert main(["--weights", str(tmp_path / "missing.pt"), *TINY_ARGS]) == 2
    assert capsys.readouterr().err == f"error: cannot read {tmp_path / 'missing.pt'}: no such file\n"


@needs("torch")
def test_weights_bring_their_diffusion_settings(tmp_path, capsys):
    """T, schedule and loss recorded with the weights (safetensors metadata) are what the check uses; an
    option that contradicts them is one line, exit 2."""
    import torch

    from ddpm_core.config import DiffusionConfig, UnetConfig
    from ddpm_core.weights.files import save_weights
    from parity.check import main
    from parity.engine.golden import load_golden
    from parity.engine.initial import initial_weights

    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    weights = tmp_path / "w.safetensors"
    save_weights(initial_weights(cfg, 0), weights, "torch", cfg, diffusion=DiffusionConfig(12, "cosine", loss_type="l1"))
    assert main(["--weights", str(weights), "--timesteps", "10", *TINY_ARGS[4:]]) == 2
    assert capsys.readouterr().err == (f"error: --timesteps 10 contradicts the diffusion settings recorded in {weights} "
                                       "(T=12 cosine, l1 loss); leave the option out\n")
    golden = tmp_path / "g.npz"
    threads = torch.get_num_threads()
    try:
        assert main(["record", "--framework", "torch", "--out", str(golden), "--weights", str(weights),
                     "--checks", "weights", *TINY_ARGS[4:]]) == 0
    finally:
        torch.set_num_threads(threads)
    spec = load_golden(golden).spec()
    assert (spec.diffusion.timesteps, spec.diffusion.schedule, spec.diffusion.loss_type) == (12, "cosine", "l1")


def test_a_bad_json_path_fails_before_the_run(tmp_path, capsys):
    """--json is written after the whole run: a folder there used to cost the run, then fail."""
    from parity.check import main

    assert main(["--json", str(tmp_path), *TINY_ARGS]) == 2
    assert capsys.readouterr().err == f"error: --json {tmp_path}: is a folder, not a file\n"
