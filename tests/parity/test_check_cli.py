"""``python -m parity.check`` as a user runs it: the default check passes, structural problems exit 2
with one line, a missing device exits 3 (record/compare across two one-framework processes:
test_one_framework.py)."""
import json
import subprocess
import sys
import time

import numpy as np

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
    assert proc.returncode == 2 and "--config is not valid JSON" in one_line_error(proc)


def test_weights_that_do_not_map_are_structural(cli_env, tmp_path):
    from safetensors.numpy import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"init_conv.weight": np.zeros((5, 1, 7, 7), np.float32)}, str(bad))
    proc = check(["--weights", str(bad), *TINY_ARGS], cli_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    one_line_error(proc)
    proc = check(["--weights", str(tmp_path / "missing.pt"), *TINY_ARGS], cli_env)
    assert proc.returncode == 2 and "missing.pt" in one_line_error(proc)


def test_missing_devices_refuse_with_exit_3(cli_env):
    import torch
    from mindspore import device_context

    if not torch.cuda.is_available():
        proc = check(["--torch-device", "cuda", *TINY_ARGS], cli_env)
        assert proc.returncode == 3 and "cuda" in one_line_error(proc)
    if not device_context.ascend.is_available():
        proc = check(["--ms-device", "Ascend", *TINY_ARGS], cli_env)
        assert proc.returncode == 3 and "Ascend" in one_line_error(proc)


def test_weights_file_and_config_file_in_process(tmp_path):
    """--weights (any format the converter reads) and --config as a file, through main() in this process."""
    import torch

    from ddpm_core.config import UnetConfig
    from ddpm_core.weights import save_weights
    from parity.check import main
    from parity.initial import initial_weights

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
    from parity.initial import weights_hash

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
