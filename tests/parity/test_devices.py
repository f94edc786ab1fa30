"""Devices: a missing device refuses the run (exit code 3, EnvironmentRefused); where a CUDA device
or an Ascend NPU exists, the check runs on it with TF32 off / float32 kept. Skipped cleanly elsewhere."""
import json
import subprocess
import sys

import pytest

from ddpm_core.errors import EnvironmentRefused, UserError
from parity.env import setup_mindspore, setup_torch
from tests.host import available, needs

if available("torch"):
    import torch
if available("mindspore"):
    from mindspore import device_context

HAS_CUDA = available("torch") and torch.cuda.is_available()
HAS_ASCEND = available("mindspore") and device_context.ascend.is_available()
TINY_ARGS = ["--config", '{"dim": 8, "channels": 1, "dim_mults": [1, 2]}', "--timesteps", "10", "--image-size", "8",
             "--ddim-steps", "5", "--no-progress"]


@pytest.mark.parametrize("setup, name, option", [
    pytest.param(setup_torch, "gpu", "--torch-device", marks=needs("torch"), id="torch"),
    pytest.param(setup_mindspore, "cuda", "--ms-device", marks=needs("mindspore"), id="ms")])
def test_bad_device_names_are_user_errors_naming_the_option(setup, name, option):
    """The harness checks devices through the twins' own ``resolve_device`` (one place), under its option's name."""
    with pytest.raises(UserError, match=f"^{option} {name}: expected"):
        setup(name)


@needs("torch")
@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_missing_cuda_is_refused():
    with pytest.raises(EnvironmentRefused, match="cuda"):
        setup_torch("cuda")


@needs("mindspore")
@pytest.mark.skipif(HAS_ASCEND, reason="an Ascend device is present")
def test_missing_ascend_is_refused():
    with pytest.raises(EnvironmentRefused, match="Ascend"):
        setup_mindspore("Ascend")


@needs("torch")
def test_cpu_setup_records_precision_flags():
    info = setup_torch("cpu")
    assert info["float32_matmul_precision"] == "highest" and info["tf32_matmul"] is False


@pytest.mark.cuda
@needs("torch", "mindspore")
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_check_on_cuda_with_tf32_off(cli_env, tmp_path):
    out = tmp_path / "cuda.json"
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--torch-device", "cuda", "--json", str(out),
                           *TINY_ARGS], capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    setup = json.loads(out.read_text())["environment"]["torch_setup"]
    assert setup["tf32_matmul"] is False and setup["tf32_cudnn"] is False
    assert setup["float32_matmul_precision"] == "highest"


@needs("torch", "mindspore")
@pytest.mark.skipif(not HAS_ASCEND, reason="needs an Ascend device")
def test_check_on_ascend_keeps_float32(cli_env, tmp_path):
    out = tmp_path / "ascend.json"
    proc = subprocess.run([sys.executable, "-m", "parity.check", "--ms-device", "Ascend", "--json", str(out),
                           *TINY_ARGS], capture_output=True, text=True, env=cli_env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    setup = json.loads(out.read_text())["environment"]["mindspore_setup"]
    assert setup["ascend_precision_mode"] == "must_keep_origin_dtype"
