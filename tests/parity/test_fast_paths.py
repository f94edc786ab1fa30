"""The torch twin's GPU fast paths: the training step as one CUDA graph (``make_train_step(cuda_graph=True)``) and
the DDPM loop as one CUDA graph (``GaussianDiffusion.ddpm_graph``, ``p_sample_loop(compiled=True)`` on CUDA), and
``python -m parity.bench.fastcheck``, which checks them on the device they run on.

Without a GPU the static-buffer code of both runs as it is (no capture): it must equal the eager paths bit for
bit, undo its warm-up, refuse what it cannot do, and keep the captured regions free of what capture forbids
(host synchronisation, random draws). The capture itself is tested where a GPU is present (``cuda`` marker).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.runtime.distributed import World
from parity.api import assert_close
from parity.bench import fastcheck
from tests.host import available, needs

if available("torch"):
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    import ddpm_torch
    import ddpm_torch.diffusion
    import ddpm_torch.optim
    from ddpm_torch.optim import MindSporeAdam, make_optimizer, make_train_step

pytestmark = needs("torch")  # the torch twin's fast paths
HAS_CUDA = available("torch") and torch.cuda.is_available()
SMALL = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SHORT = DiffusionConfig(timesteps=10)
SHAPE = (2, 1, 8, 8)
LRS = [1e-3, 5e-4, 2e-4, 1e-4]
TINY = ["--config", SMALL.to_json(), "--image-size", "8", "--batch", "2", "--timesteps", "10"]
FORBIDDEN = {"aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.is_nonzero", "aten.equal", "aten.normal_",
             "aten.randn", "aten.randn_like", "aten.rand", "aten.randint", "aten.bernoulli_", "aten.uniform_"}
"""Ops a CUDA graph cannot hold: they synchronise with the host (a value read back) or draw random numbers."""


def batches(n: int, batch: int = 2) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (batch, *SHAPE[1:])
    return [(rng.uniform(-1, 1, shape).astype(np.float32), rng.integers(0, SHORT.timesteps, batch).astype(np.int32),
             rng.standard_normal(shape).astype(np.float32)) for _ in range(n)]


def trained(steps, **kwargs) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], MindSporeAdam]:
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL)
    optimizer = make_optimizer(model, LRS)
    step = make_train_step(model, ddpm_torch.GaussianDiffusion(SHORT), optimizer, channels_last=False, **kwargs)
    losses = [step(*b) for b in steps]
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}, optimizer


def test_graphed_train_step_equals_the_eager_step_bit_for_bit():
    """Four steps, the last with another batch size (a second graph): the same losses, weights, moments and
    optimizer scalars as the eager step, so the warm-up capture needs was undone (it moves the moments)."""
    steps = batches(3) + batches(1, batch=1)
    eager_losses, eager_weights, eager_opt = trained(steps)
    losses, weights, opt = trained(steps, cuda_graph=True)
    assert [float(v) for v in losses] == [float(v) for v in eager_losses]  # fresh tensors: none overwritten later
    assert all(torch.equal(weights[k], eager_weights[k]) for k in weights)
    eager_state, state = eager_opt.state_dict(), opt.state_dict()
    assert state["mindspore_adam"]["global_step"] == eager_state["mindspore_adam"]["global_step"] == 4
    assert torch.equal(state["mindspore_adam"]["beta2_power"], eager_state["mindspore_adam"]["beta2_power"])
    for k, s in eager_state["state"].items():
        assert torch.equal(s["m"], state["state"][k]["m"]) and torch.equal(s["v"], state["state"][k]["v"])
    moved = max(float((weights[k] - trained([])[1][k]).abs().max()) for k in weights)
    assert moved > 1e-4, "the weights must have moved, or the comparison proves nothing"


def test_graphed_train_step_refuses_what_one_graph_cannot_do():
    model = ddpm_torch.Unet.from_config(SMALL)
    diffusion = ddpm_torch.GaussianDiffusion(SHORT)
    for kwargs, optimizer in (({"loss_scale": 2.0}, make_optimizer(model, LRS)),
                              ({"world": World(0, 2)}, make_optimizer(model, LRS)),
                              ({}, make_optimizer(model, 1e-3, rule="torch"))):
        with pytest.raises(ValueError, match="cuda_graph=True needs one process"):
            make_train_step(model, diffusion, optimizer, cuda_graph=True, **kwargs)
    optimizer = make_optimizer(model, LRS)
    step = make_train_step(model, diffusion, optimizer, cuda_graph=True)
    x, t, noise = batches(1)[0]
    with pytest.raises(ValueError, match="timesteps"):
        step(x, t.astype(np.float32), noise)
    with pytest.raises(ValueError, match="noise"):
        step(x, t, noise[:1])
    assert optimizer.global_step == 0 and not optimizer.state  # refused before anything ran


if available("torch"):
    class Ops(TorchDispatchMode):
        """Every aten op dispatched while active (``seen``: the op packets' names)."""

        def __init__(self):
            super().__init__()
            self.seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))


@pytest.fixture
def captured(monkeypatch):
    """The ops of every region handed to ``capture_graph`` (run once more, under ``Ops``, before the real call:
    the training step undoes it with its warm-up)."""
    regions: list[set[str]] = []
    real = ddpm_torch.diffusion.capture_graph

    def recording(run, device, warmup=None, warmup_calls=2):
        with Ops() as ops:
            run()
        regions.append(ops.seen)
        return real(run, device, warmup, warmup_calls)

    monkeypatch.setattr(ddpm_torch.optim, "capture_graph", recording)
    monkeypatch.setattr(ddpm_torch.diffusion, "capture_graph", recording)
    return regions


def test_captured_regions_never_synchronise_or_draw(captured):
    steps = batches(2)
    _, weights, _ = trained(steps, cuda_graph=True)
    assert all(torch.equal(weights[k], v) for k, v in trained(steps)[1].items())  # the extra run was undone too
    model = ddpm_torch.Unet.from_config(SMALL).eval()
    ddpm_torch.GaussianDiffusion(SHORT).ddpm_graph(model, SHAPE)(torch.randn(SHAPE))
    assert len(captured) == 2 and all("aten.convolution" in ops for ops in captured)
    for ops in captured:
        assert not ops & FORBIDDEN, ops & FORBIDDEN
    with Ops() as eager:  # the check can fail: the eager step's input checks read values back
        trained(steps[:1])
    assert "aten._local_scalar_dense" in eager.seen


def test_ddpm_graph_is_the_compiled_loop_bit_for_bit():
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL).eval()
    diffusion = ddpm_torch.GaussianDiffusion(SHORT)
    rng = np.random.default_rng(1)
    img, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((10, *SHAPE)).astype(np.float32)
    loop = np.stack(diffusion.p_sample_loop(model, SHAPE, img=img, noise=noise, compiled=True))
    run = diffusion.ddpm_graph(model, SHAPE)
    states = run(torch.from_numpy(img), torch.from_numpy(noise))
    assert states.shape == (10, *SHAPE) and np.array_equal(states.numpy(), loop)
    first = states.clone()
    again = run(torch.from_numpy(img))  # noise drawn: another trajectory, in the same output buffer
    assert again is states and not torch.equal(again, first)


# ------------------------------------------------------------------------------------ python -m parity.bench.fastcheck
def test_fastcheck_passes_and_writes_every_row(tmp_path, capsys):
    out = tmp_path / "fast.json"
    assert fastcheck.main(["--device", "cpu", *TINY, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    labels = [r["label"] for r in report["rows"]]
    assert report["passed"] and len(labels) == 2 * 3 + 2 and all(r["passed"] for r in report["rows"])
    assert "train graph: w_K - w_0 vs reference" in labels and "sample: compiled loop vs eager loop" in labels
    assert report["info"]["train/graph"]["moved_max_abs"] > fastcheck.MOVED
    assert "fast paths keep parity" in capsys.readouterr().out


def test_fastcheck_catches_a_graph_that_replays_the_step_twice(monkeypatch, capsys):
    real = ddpm_torch.optim.capture_graph

    def twice(run, device, warmup=None, warmup_calls=2):
        real(run, device, warmup, warmup_calls)
        return lambda: (run(), run())

    monkeypatch.setattr(ddpm_torch.optim, "capture_graph", twice)
    assert fastcheck.main(["--device", "cpu", *TINY, "--train-steps", "2"]) == 1
    text = capsys.readouterr().out
    assert "FAILED train graph: w_K - w_0 vs reference" in text and "ok     train foreach: w_K - w_0" in text


def test_fastcheck_catches_a_wrong_compiled_sampling_step(monkeypatch, capsys):
    p_step = ddpm_torch.GaussianDiffusion.p_step
    monkeypatch.setattr(ddpm_torch.GaussianDiffusion, "p_step",
                        lambda self, model, x, t, noise: p_step(self, model, x, t, noise * 1.001))
    assert fastcheck.main(["--device", "cpu", *TINY, "--train-steps", "1"]) == 1
    assert "FAILED sample: compiled loop vs eager loop" in capsys.readouterr().out


@pytest.mark.skipif(HAS_CUDA, reason="the refusal needs a machine without CUDA")
def test_fastcheck_refuses_a_missing_gpu_in_one_line(capsys):
    assert fastcheck.main(["--device", "cuda", *TINY]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --torch-device cuda: no CUDA device is available")


# ------------------------------------------------------------------------------------ on a GPU
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_fastcheck_on_the_gpu(tmp_path):
    """Captured for real: the graphed step and loop against eager CUDA and float64, the gates of the GPU class."""
    assert fastcheck.main(["--device", "cuda", *TINY, "--json", str(tmp_path / "f.json")]) == 0


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_p_sample_loop_captures_again_when_the_weights_move_to_new_storage():
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL).cuda().eval()
    diffusion = ddpm_torch.GaussianDiffusion(SHORT, device="cuda")
    rng = np.random.default_rng(1)
    img, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((10, *SHAPE)).astype(np.float32)
    first = np.stack(diffusion.p_sample_loop(model, SHAPE, img=img, noise=noise, compiled=True))
    key = diffusion._graph[0]
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data * 0.5  # new storage: the old graph would read the old weights
    second = np.stack(diffusion.p_sample_loop(model, SHAPE, img=img, noise=noise, compiled=True))
    eager = np.stack(diffusion.p_sample_loop(model, SHAPE, img=img, noise=noise, compiled=False))
    assert diffusion._graph[0] != key and not np.array_equal(first, second)
    assert_close("graphed loop after new storage vs eager", second, eager, "ddpm_trajectory", device="gpu")


def test_fastcheck_runs_where_mindspore_is_not_installed():
    """The GPU hosts have PyTorch only: fastcheck must not import MindSpore (tests/one_framework.py blocks it)."""
    from tests.one_framework import run

    proc = run("torch", "parity.bench.fastcheck", ["--device", "cpu", *TINY, "--train-steps", "1"])
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fast paths keep parity" in proc.stdout
