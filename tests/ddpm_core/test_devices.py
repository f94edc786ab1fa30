"""Device and precision names (ddpm_core/runtime/devices.py, ddpm_core/runtime/amp.py) and the cuBLAS workspace policy
(ddpm_core/runtime/environment.py): each framework's own spelling, any case, and one line naming the other
framework's word when it is given to the wrong twin."""
from __future__ import annotations

import pytest

from ddpm_core.errors import UserError
from ddpm_core.runtime.amp import DEFAULT_LOSS_SCALE, train_loss_scale, train_policy
from ddpm_core.runtime.devices import parse_device
from ddpm_core.runtime.environment import CUBLAS_DETERMINISTIC, CUBLAS_VARIABLE, pin_cublas_workspace


@pytest.mark.parametrize("framework,text,expected", [
    ("torch", None, "cpu"), ("torch", "cpu", "cpu"), ("torch", "CPU", "cpu"), ("torch", "cuda", "cuda"),
    ("torch", "CUDA:1", "cuda:1"), ("torch", " cuda:01 ", "cuda:1"),
    ("ms", None, "CPU"), ("ms", "cpu", "CPU"), ("ms", "gpu", "GPU"), ("ms", "ASCEND", "Ascend"), ("ms", "Ascend", "Ascend"),
])
def test_each_framework_spells_its_devices_its_own_way(framework, text, expected):
    assert parse_device(framework, text) == expected


@pytest.mark.parametrize("framework,text,says", [
    ("torch", "gpu", "PyTorch calls a CUDA GPU 'cuda'"),
    ("torch", "Ascend", "Ascend is MindSpore's"),
    ("torch", "cuda:", "expected cpu, cuda or cuda:N"),
    ("torch", "cuda:-1", "expected cpu, cuda or cuda:N"),
    ("torch", "mps", "expected cpu, cuda or cuda:N"),
    ("ms", "cuda", "MindSpore calls a CUDA GPU 'GPU'"),
    ("ms", "cuda:0", "MindSpore calls a CUDA GPU 'GPU'"),
    ("ms", "npu", "MindSpore calls an Ascend NPU 'Ascend'"),
    ("ms", "GPU:0", "expected CPU, GPU, Ascend"),
])
def test_a_foreign_or_bogus_name_is_one_user_error(framework, text, says):
    with pytest.raises(UserError) as e:
        parse_device(framework, text)
    message = str(e.value)
    assert message.startswith(f"--device {text}: ") and says in message and "\n" not in message


def test_training_precisions_map_to_the_matched_policies():
    assert train_policy("torch", "fp32").full and train_policy("ms", "fp32").full
    assert (train_policy("torch", "fp16").level, train_policy("torch", "fp16").dtype) == ("autocast", "float16")
    assert (train_policy("ms", "bf16").level, train_policy("ms", "bf16").dtype) == ("auto", "bfloat16")
    assert train_loss_scale("fp16") == DEFAULT_LOSS_SCALE and train_loss_scale("bf16") == train_loss_scale("fp32") == 1.0
    with pytest.raises(ValueError, match="fp32, bf16 or fp16"):
        train_policy("torch", "fp8")


def test_the_cublas_workspace_is_pinned_unless_the_user_set_it():
    env: dict[str, str] = {}
    pin_cublas_workspace(env)
    assert env == {CUBLAS_VARIABLE: CUBLAS_DETERMINISTIC}
    env = {CUBLAS_VARIABLE: ":16:8"}
    pin_cublas_workspace(env)
    assert env[CUBLAS_VARIABLE] == ":16:8"
