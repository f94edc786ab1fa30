"""``python -m parity.bench --device cuda``: without a GPU it refuses in one line and writes nothing; its
workloads, its sampling loop and its arithmetic run on the CPU (the same code, device "cpu"); the CUDA graph
is checked against the eager step where a GPU is present."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.bench.cli import parse
from parity.bench.cuda import graphed, sample_loop
from parity.bench.cuda_run import break_even_images, cuda_markdown, run_cuda
from tests.host import available, needs

if available("torch"):
    import torch

    import ddpm_torch

pytestmark = needs("torch")  # the CUDA bench is PyTorch's
ROOT = Path(__file__).resolve().parents[2]
HAS_CUDA = available("torch") and torch.cuda.is_available()
SMALL = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SHAPE = (2, 1, 8, 8)


def _args(configs: str, device: str = "cuda"):
    args = parse(["--device", "cuda", "--configs", configs, "--batch", "2", "--image-size", "8", "--model-config",
                  SMALL.to_json(), "--train-steps", "2", "--sample-steps", "4", "--repeats", "2"])
    args.device = device
    return args


@pytest.mark.skipif(HAS_CUDA, reason="the refusal needs a machine without CUDA")
def test_cuda_bench_refuses_without_a_gpu_in_one_line(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "parity.bench", "--device", "cuda", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: torch device cuda requested, but torch.cuda.is_available()")
    assert not out.exists() and proc.stdout == ""


def test_cuda_bench_options_are_checked():
    with pytest.raises(SystemExit):
        parse(["--device", "cuda", "--configs", "torch_eager"])  # a CPU configuration
    with pytest.raises(SystemExit):
        parse(["--device", "cuda", "--workers", "1,2"])
    args = parse(["--device", "cuda"])
    assert args.sample_steps == 200 and args.train_steps == 20 and "cuda_graph" in args.configs


def test_sample_loop_is_the_twins_ddpm_loop():
    """The bench's loop with the twin's ``p_step`` gives, bit for bit, the twin's own ``p_sample_loop``."""
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL).eval()
    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=10))
    rng = np.random.default_rng(0)
    img, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((10, *SHAPE)).astype(np.float32)
    with torch.no_grad():
        ours = sample_loop(lambda x, t, n: diffusion.p_step(model, x, t, n), diffusion, SHAPE, "cpu",
                           torch.from_numpy(img), torch.from_numpy(noise)).numpy()
    twins = np.stack(diffusion.p_sample_loop(model, SHAPE, img=img, noise=noise, compiled=True))
    assert ours.shape == (10, *SHAPE) and np.array_equal(ours, twins)


def test_cuda_workloads_and_figures_on_cpu():
    """Three configurations on the CPU, tiny model: every figure present and consistent with the timings."""
    report = run_cuda(_args("eager,channels_last,amp_bf16", "cpu"), peak_n=128)
    res, m = report["results"], report["machine"]
    assert list(res) == ["eager", "channels_last", "amp_bf16"]
    for name, r in res.items():
        assert len(r["train_s"]) == len(r["sample_s"]) == 2 and r["warmup_train_s"] > 0
        train = [2 * 2 / s for s in r["train_s"]]
        assert r["train_images_per_s"]["median"] == pytest.approx(np.median(train))
        assert r["sample_images_per_s"]["median"] == pytest.approx(np.median([2 / (s * 200 / 4) for s in r["sample_s"]]))
        peak = m["peak_flops"][r["peak_dtype"]]
        assert r["train_fraction_of_peak"] == pytest.approx(np.median(train) * 3 * m["flops_per_image_forward"] / peak)
        assert r["train_vs_eager"] == pytest.approx(np.median(train) / res["eager"]["train_images_per_s"]["median"])
    assert res["amp_bf16"]["peak_dtype"] == "bfloat16" and set(m["peak_flops"]) == {"float32", "tf32", "float16",
                                                                                       "bfloat16"}
    text = cuda_markdown(json.loads(json.dumps(report)))  # what --json writes reads back into the same table
    assert all(r["label"] in text for r in res.values()) and "scaled by 200/4" in text


def test_compile_break_even():
    assert break_even_images(10.0, 100.0, 200.0) == pytest.approx(2000.0)  # saves 5 ms an image
    assert break_even_images(10.0, 200.0, 100.0) is None  # slower: never pays


def test_cuda_graph_needs_cuda():
    with pytest.raises(ValueError, match="cuda_graph needs a CUDA device"):
        graphed(lambda x, t, n: x, SHAPE, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_graph_step_equals_the_eager_step():
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL).cuda().eval()
    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=10), device="cuda")
    img, noise = torch.randn(SHAPE, device="cuda"), torch.randn((10, *SHAPE), device="cuda")
    with torch.no_grad():
        step = lambda x, t, n: diffusion.p_step(model, x, t, n)  # noqa: E731
        eager = sample_loop(step, diffusion, SHAPE, "cuda", img, noise)
        replayed = sample_loop(graphed(step, SHAPE, "cuda"), diffusion, SHAPE, "cuda", img, noise)
    assert torch.equal(eager, replayed)
