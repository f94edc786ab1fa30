"""``--device``, ``--precision`` and ``--deterministic`` in both twins' commands (ddpm_torch/device.py,
ddpm_ms/device.py), tested on the CPU up to the device boundary:

  * a device that is not here (CUDA for PyTorch; GPU and Ascend for MindSpore's CPU build) stops train,
    sample and noise_strip with one line and exit 3 before anything is written; a bogus name is exit 2;
  * a precision the device cannot run is refused the same way; bf16 and fp16 train (on autocast / amp);
  * under torchrun, ``cuda`` is each worker's local GPU, joined with NCCL (with CUDA faked up to the boundary);
  * the deterministic mode switches what it should; checkpoints hold CPU tensors, and a checkpoint whose
    tensors were saved on CUDA resumes here.
The ``cuda`` tests run the same on a GPU and skip here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.errors import EXIT_ENVIRONMENT, EXIT_USER_ERROR, EnvironmentRefused, UserError
from tests.host import PROGRAM_FRAMEWORKS, available, needs
from tests.reliability.corpus import run_cli
from tests.train.conftest import REPO, TINY, train, twin_module

if available("torch"):
    import torch

HAS_CUDA = available("torch") and torch.cuda.is_available()
MISSING = {"torch": ["cuda", "cuda:1"], "ms": ["GPU", "ascend"]}
"""Devices this machine (no GPU, MindSpore's CPU build) does not have, in each twin's spelling."""
BOGUS = {"torch": ("gpu", "PyTorch calls a CUDA GPU 'cuda'"), "ms": ("cuda:0", "MindSpore calls a CUDA GPU 'GPU'")}
CFG = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
DIFFUSION = DiffusionConfig(timesteps=10)


def error_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def tape(steps: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (steps, 4, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, (steps, 4)).astype(np.int32),
            rng.standard_normal((steps, 4, 1, 8, 8)).astype(np.float32))


# ---------------------------------------------------------------- refusals, before anything is written
@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_a_missing_device_stops_training_in_one_line_exit_3_and_leaves_no_folder(tmp_path, fashion_dir, twin_name, capsys):
    for device in MISSING[twin_name]:
        out = tmp_path / f"run-{device}"
        assert train(twin_name, "--data", str(fashion_dir), "--out", str(out), "--device", device, *TINY) == EXIT_ENVIRONMENT
        (line,) = error_lines(capsys)
        assert line.startswith(f"error: --device {device}: "), line
        assert not out.exists()


def test_a_bogus_device_is_exit_2_and_names_the_framework_word(tmp_path, fashion_dir, twin_name, capsys):
    device, says = BOGUS[twin_name]
    out = tmp_path / "run"
    assert train(twin_name, "--data", str(fashion_dir), "--out", str(out), "--device", device, *TINY) == EXIT_USER_ERROR
    (line,) = error_lines(capsys)
    assert says in line and not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
def test_sample_and_noise_strip_refuse_a_missing_device_before_reading_or_writing(tmp_path, trained_runs, twin_name,
                                                                                 capsys):
    device = MISSING[twin_name][0]
    out = tmp_path / "samples.png"
    sample = twin_module(twin_name, "sample").main(
        ["--weights", str(trained_runs[twin_name] / "model.safetensors"), "--n", "2", "--out", str(out), "--device", device])
    assert sample == EXIT_ENVIRONMENT and len(error_lines(capsys)) == 1 and not out.exists()
    strip = twin_module(twin_name, "noise_strip").main([str(REPO / "examples" / "cat.jpg"), "--image-size", "16",
                                                        "--out", str(out), "--device", device])
    assert strip == EXIT_ENVIRONMENT and len(error_lines(capsys)) == 1 and not out.exists()


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present")
@pytest.mark.parametrize("twin,device", [pytest.param(t, d, marks=needs(*PROGRAM_FRAMEWORKS[t]), id=f"{t}-{d}")
                                         for t, d in (("torch", "cuda"), ("ms", "GPU"))])
def test_a_missing_device_in_a_real_process(tmp_path, fashion_dir, twin, device):
    """As a user runs it: exit 3, one ``error:`` line, no traceback, the data untouched, no run folder."""
    out = tmp_path / "run"
    run_cli(f"ddpm_{twin}.train", ["--data", fashion_dir, "--out", out, "--device", device, *TINY],
            rc=EXIT_ENVIRONMENT, inputs=[fashion_dir], says=f"--device {device}")
    assert not out.exists()


@needs(*PROGRAM_FRAMEWORKS["ms"])
def test_bf16_on_mindspores_cpu_is_refused_for_a_new_run_and_a_resumed_one(tmp_path, fashion_dir, trained_runs, capsys):
    out = tmp_path / "run"
    assert train("ms", "--data", str(fashion_dir), "--out", str(out), "--precision", "bf16", *TINY) == EXIT_ENVIRONMENT
    (line,) = error_lines(capsys)
    assert "--precision bf16" in line and "CPU" in line and not out.exists()
    run = tmp_path / "stored-bf16"  # a run folder that says bf16 (started on an Ascend card, say)
    run.mkdir()
    for name in ("run.json", "config.json"):
        (run / name).write_bytes((trained_runs["ms"] / name).read_bytes())
    settings = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**settings, "precision": "bf16"}))
    before = sorted(p.name for p in run.iterdir())
    assert train("ms", "--resume", str(run), "--data", str(fashion_dir)) == EXIT_ENVIRONMENT
    assert "--precision bf16" in error_lines(capsys)[0] and sorted(p.name for p in run.iterdir()) == before


# ---------------------------------------------------------------- precision
@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_mixed_precision_training_runs_and_is_a_setting_of_the_run(tmp_path, fashion_dir, trained_runs, capsys):
    """bf16 and fp16 (PyTorch, autocast on the CPU) train: finite losses, not float32's bits (the policy is on),
    ``precision`` stored in run.json, and ``--resume`` refuses to change it."""
    fp32 = [json.loads(ln)["loss"] for ln in (trained_runs["torch"] / "log.jsonl").read_text().splitlines()]
    for precision in ("bf16", "fp16"):
        out = tmp_path / precision
        assert train("torch", "--data", str(fashion_dir), "--out", str(out), "--max-steps", "2", "--precision", precision,
                     *TINY) == 0
        losses = [json.loads(ln)["loss"] for ln in (out / "log.jsonl").read_text().splitlines()]
        assert len(losses) == 2 and all(np.isfinite(losses)) and losses != fp32
        assert json.loads((out / "run.json").read_text())["precision"] == precision
    assert json.loads((trained_runs["torch"] / "run.json").read_text())["precision"] == "fp32"
    capsys.readouterr()
    assert train("torch", "--resume", str(tmp_path / "fp16"), "--precision", "fp32", "--max-steps", "3") == EXIT_USER_ERROR
    assert "--precision" in error_lines(capsys)[0]


@needs(*PROGRAM_FRAMEWORKS["ms"])
def test_mindspore_fp16_training_runs_with_its_loss_scale(make_weights):
    from ddpm_ms.train import train_steps

    x, t, e = tape()
    w = make_weights(CFG)
    fp32, _ = train_steps(CFG, DIFFUSION, w, x, t, e, [1e-3, 1e-3])
    trainer = twin_module("ms", "train").Trainer(CFG, DIFFUSION, [1e-3, 1e-3], weights=w, precision="fp16")
    fp16 = [trainer.step(*batch) for batch in zip(x, t, e)]
    assert all(np.isfinite(fp16)) and fp16 != fp32 and trainer.lr_position() == 2


@pytest.mark.parametrize("twin_name", ["torch", "ms"])
def test_a_loss_scaled_step_changes_no_float32_bit_and_skips_non_finite_gradients(twin_name, make_weights):
    """A power-of-two loss scale (fp16's 1024) leaves a float32 step bit-identical; an infinite one makes every
    gradient non-finite, and the step then leaves the weights and the learning-rate position as they were
    (MindSpore: in the compiled step that training runs)."""
    optim, adapter = twin_module(twin_name, "optim"), twin_module(twin_name, "adapter").Adapter()
    diffusion = twin_module(twin_name, "diffusion").GaussianDiffusion(DIFFUSION)
    x, t, e = tape(1)
    w = make_weights(CFG)
    results = {}
    for scale in (1.0, 1024.0, float("inf")):
        model = adapter.load_model(w, CFG)
        optimizer = optim.make_optimizer(model, [1e-3])
        kwargs = {"compiled": scale == float("inf")} if twin_name == "ms" else {}
        optim.make_train_step(model, diffusion, optimizer, loss_scale=scale, **kwargs)(x[0], t[0], e[0])
        position = optimizer.global_step if twin_name == "torch" else int(optimizer.global_step.asnumpy()[0])
        results[scale] = (adapter.state(model), position)
    assert results[1.0][1] == results[1024.0][1] == 1
    assert all(np.array_equal(results[1.0][0][k], results[1024.0][0][k]) for k in w)
    assert any(not np.array_equal(results[1.0][0][k], w[k]) for k in w)  # the step moved the weights
    assert results[float("inf")][1] == 0
    assert all(np.array_equal(results[float("inf")][0][k], w[k]) for k in w)


# ---------------------------------------------------------------- the deterministic mode
@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_deterministic_mode_is_on_by_default_and_can_be_traded(tmp_path, fashion_dir):
    from ddpm_torch import device

    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert train("torch", "--data", str(fashion_dir), "--out", str(tmp_path / "a"), "--max-steps", "1", *TINY) == 0
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        meta = torch.load(next((tmp_path / "a" / "checkpoints").iterdir()), weights_only=True)["meta"]
        assert (meta["numerics"]["device"], meta["numerics"]["deterministic"]) == ("cpu", True)
        assert train("torch", "--data", str(fashion_dir), "--out", str(tmp_path / "b"), "--max-steps", "1",
                     "--no-deterministic", *TINY) == 0
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
        assert "deterministic" not in json.loads((tmp_path / "b" / "run.json").read_text())  # not a setting of the run
    finally:
        device.use_deterministic(before)


@needs("torch")
def test_deterministic_mode_sets_the_cublas_workspace_before_cuda(monkeypatch):
    from ddpm_torch import device

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        assert device.use_deterministic(True) == {"deterministic_algorithms": True, "cudnn_deterministic": True,
                                                  "cublas_workspace_config": ":4096:8"}
    finally:
        device.use_deterministic(before)


@needs("mindspore")
def test_mindspore_takes_one_deterministic_mode_per_process():
    from ddpm_ms import device

    assert device.use_deterministic(True) == {"deterministic": "ON"}  # what every trainer in this process asks for
    with pytest.raises(EnvironmentRefused, match="already ON in this process"):
        device.use_deterministic(False)


# ---------------------------------------------------------------- placement and checkpoints
@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_the_trainer_puts_model_diffusion_and_batches_on_its_device():
    """On the meta device (shapes without data): every parameter, every schedule table and every batch the
    diffusion places are there."""
    trainer = twin_module("torch", "train").Trainer(CFG, DIFFUSION, [1e-3], device="meta")
    assert {p.device.type for p in trainer.model.parameters()} == {"meta"}
    assert trainer.diffusion.sqrt_alphas_cumprod.device.type == "meta"
    assert trainer.diffusion.tensor(np.zeros((4, 1, 8, 8), np.float32)).device.type == "meta"
    assert trainer.numerics()["device"] == "meta"


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_checkpoints_hold_cpu_tensors_only(trained_runs):
    locations = set()
    path = next((trained_runs["torch"] / "checkpoints").iterdir())
    torch.load(path, weights_only=True, map_location=lambda storage, location: locations.add(location) or storage)
    assert locations == {"cpu"}


def _saved_as_cuda(path: Path, trainer) -> None:
    """``trainer``'s checkpoint with every storage tagged ``cuda:0``, as ``torch.save`` writes a CUDA run's tensors."""
    from torch import serialization

    entry = (-1, lambda obj: "cuda:0", lambda obj, location: None)
    serialization._package_registry.append(entry)
    serialization._package_registry.sort(key=lambda e: e[0])
    try:
        torch.save({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                    "torch_rng_state": torch.get_rng_state(), "meta": {"format": "ddpm-parity-train-state",
                                                                       "framework": "torch"}}, path)
    finally:
        serialization._package_registry.remove(entry)


@needs(*PROGRAM_FRAMEWORKS["torch"])
def test_a_checkpoint_saved_on_cuda_resumes_on_the_cpu(tmp_path, make_weights):
    """The file's tensors say cuda:0 (a plain ``torch.load`` here refuses it); the trainer loads it onto the
    CPU and continues exactly as the run it came from."""
    Trainer = twin_module("torch", "train").Trainer
    x, t, e = tape(2)
    a = Trainer(CFG, DIFFUSION, [1e-3, 5e-4], weights=make_weights(CFG))
    a.step(x[0], t[0], e[0])
    _saved_as_cuda(tmp_path / "cuda.pt", a)
    if not HAS_CUDA:
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "cuda.pt", weights_only=True)
    b = Trainer(CFG, DIFFUSION, [1e-3, 5e-4], weights=make_weights(CFG, seed=1))
    b.load_checkpoint(tmp_path / "cuda.pt")
    assert b.lr_position() == 1 and {p.device.type for p in b.model.parameters()} == {"cpu"}
    assert b.step(x[1], t[1], e[1]) == a.step(x[1], t[1], e[1])
    assert all(np.array_equal(v, b.state()[k]) for k, v in a.state().items())


# ---------------------------------------------------------------- CUDA up to the boundary
@pytest.fixture
def two_fake_gpus(monkeypatch):
    """torch.cuda as a machine with 2 GPUs would answer, ``set_device`` recorded, TF32 flags restored after."""
    selected = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield selected
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@needs("torch")
def test_cuda_is_selected_with_tf32_off(two_fake_gpus, monkeypatch):
    from ddpm_torch.device import resolve_device

    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_device("cuda") == "cuda:0" and resolve_device("CUDA:1") == "cuda:1"
    assert two_fake_gpus == [0, 1]
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    with pytest.raises(EnvironmentRefused, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@needs("torch")
def test_under_torchrun_each_worker_takes_its_local_gpu(two_fake_gpus, monkeypatch):
    from ddpm_torch.device import resolve_device

    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_device("cuda") == "cuda:1" and two_fake_gpus == [1]
    with pytest.raises(UserError, match="all 2 workers of this machine on one GPU"):
        resolve_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")  # more workers than GPUs
    with pytest.raises(EnvironmentRefused, match="cuda:2"):
        resolve_device("cuda")


@needs("torch")
def test_a_cuda_job_joins_with_nccl_and_a_cpu_job_with_gloo(monkeypatch):
    from ddpm_torch import distributed

    joined = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: joined.append(backend))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    assert distributed.init("cuda:1").size == 2 and distributed.init("cpu").size == 2
    assert joined == ["nccl", "gloo"]


@needs("torch")
def test_bfloat16_is_refused_on_a_gpu_without_it(monkeypatch):
    from ddpm_torch.device import check_precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla V100")
    with pytest.raises(EnvironmentRefused, match="Tesla V100 has no native bfloat16"):
        check_precision("cuda:0", "bf16")
    assert check_precision("cuda:0", "fp16").dtype == "float16" and check_precision("cpu", "bf16").dtype == "bfloat16"


@pytest.mark.cuda
@needs(*PROGRAM_FRAMEWORKS["torch"])
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_train_on_cuda_then_resume_on_the_cpu(tmp_path, fashion_dir):
    """Deterministic CUDA training resumes bit for bit on CUDA, and continues on the CPU (with a warning that
    the last bits may differ)."""
    base = ["--data", str(fashion_dir), *TINY]
    assert train("torch", *base, "--out", str(tmp_path / "whole"), "--max-steps", "4", "--device", "cuda") == 0
    assert train("torch", *base, "--out", str(tmp_path / "cut"), "--max-steps", "2", "--save-every", "2",
                 "--device", "cuda") == 0
    assert train("torch", "--resume", str(tmp_path / "cut"), "--max-steps", "4", "--device", "cuda") == 0
    whole, cut = ((tmp_path / n / "log.jsonl").read_text() for n in ("whole", "cut"))
    assert whole == cut
    locations = set()
    torch.load(next((tmp_path / "cut" / "checkpoints").iterdir()), weights_only=True,
               map_location=lambda storage, location: locations.add(location) or storage)
    assert locations == {"cpu"}
    assert train("torch", "--resume", str(tmp_path / "cut"), "--max-steps", "6", "--device", "cpu") == 0
    assert len((tmp_path / "cut" / "log.jsonl").read_text().splitlines()) == 6
