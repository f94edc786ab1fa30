"""Devices: a missing device refuses the run (exit code 3, EnvironmentRefused); where a CUDA device
or an Ascend NPU exists, the check runs on it with TF32 off / float32 kept. Skipped cleanly elsewhere."""
import json
import subprocess
import sys

import pytest
import torch
from mindspore import device_context

from parity.env import EnvironmentRefused, setup_mindspore, setup_torch

HAS_CUDA = torch.cuda.is_available()
HAS_ASCEND = device_context.ascend.is_available()
TINY_ARGS = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10", "--image-size", "8",
             "--ddim-steps", "5", "--no-progress"]


def test_bad_device_names_are_value_errors():
    with pytest.raises(ValueError):
        setup_torch("gpu")
    with pytest.raises(ValueError):
        setup_mindspore("cuda")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_missing_cuda_is_refused():
    with pytest.raises(EnvironmentRefused, match="cuda"):
        setup_torch("cuda")


@pytest.mark.skipif(HAS_ASCEND, reason="an Ascend device is present")
def test_missing_ascend_is_refused():
    with pytest.raises(EnvironmentRefused, match="Ascend"):
        setup_mindspore("Ascend")


def test_cpu_setup_records_precision_flags():
    info = setup_torch("cpu")
    assert info["float32_matmul_precision"] == "highest" and info["tf32_matmul"] is False


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_check_on_cuda_with_tf32_off(cli_env, tmp_path):
    out = tmp_path / "cuda.json"
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--torch-device", "cuda", "--json", str(out),
                           *TINY_ARGS], capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    setup = json.loads(out.read_text())["environment"]["torch_setup"]
    assert setup["tf32_matmul"] is False and setup["tf32_cudnn"] is False
    assert setup["float32_matmul_precision"] == "highest"


@pytest.mark.skipif(not HAS_ASCEND, reason="needs an Ascend device")
def test_check_on_ascend_keeps_float32(cli_env, tmp_path):
    out = tmp_path / "ascend.json"
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--ms-device", "Ascend", "--json", str(out),
                           *TINY_ARGS], capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    setup = json.loads(out.read_text())["environment"]["mindspore_setup"]
    assert setup["ascend_precision_mode"] == "must_keep_origin_dtype"
