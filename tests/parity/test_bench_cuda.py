"""``python -m parity.bench --device cuda``: without a GPU it refuses in one line and writes nothing; its
workloads, its sampling loop, its arithmetic, the batch sweep and the profile run on the CPU (the same code,
``--torch-device cpu``); the CUDA graphs are checked against the eager paths where a GPU is present.
The twin's fast paths themselves (ddpm_torch: ``make_train_step(cuda_graph=True)``, ``ddpm_graph``) are tested in
tests/parity/test_fast_paths.py."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from parity.bench.cli import parse
from parity.bench.cuda import CUDA_CONFIGS, graphed, sample_loop
from parity.bench.cuda_run import break_even_images, cuda_markdown, run_cuda
from parity.bench.sweep import sweep_markdown
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
    return parse(["--device", "cuda", "--torch-device", device, "--configs", configs, "--batch", "2", "--image-size",
                  "8", "--model-config", SMALL.to_json(), "--train-steps", "2", "--sample-steps", "4", "--repeats", "2"])


@pytest.mark.skipif(HAS_CUDA, reason="the refusal needs a machine without CUDA")
def test_cuda_bench_refuses_without_a_gpu_in_one_line(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "parity.bench", "--device", "cuda", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --torch-device cuda: no CUDA device is available to PyTorch")
    assert not out.exists() and proc.stdout == ""


def test_cuda_bench_options_are_checked():
    with pytest.raises(SystemExit):
        parse(["--device", "cuda", "--configs", "torch_eager"])  # a CPU configuration
    with pytest.raises(SystemExit):
        parse(["--device", "cuda", "--workers", "1,2"])
    for bad in (["--batches", "16"], ["--torch-device", "cpu"], ["--profile", "p.txt"]):  # cuda-only options
        with pytest.raises(SystemExit):
            parse(bad)
    for bad in (["--torch-device", "gpu"], ["--batches", "16,x"], ["--batches", "0,16"],
                ["--batches", "16", "--profile", "p.txt"], ["--sweep-gain", "0.9"]):
        with pytest.raises(SystemExit):
            parse(["--device", "cuda", *bad])
    args = parse(["--device", "cuda"])
    assert args.sample_steps == 200 and args.train_steps == 20 and {"cuda_graph", "graph", "graph_bf16"} <= set(args.configs)
    assert args.torch_device == "cuda" and args.batches is None
    assert parse(["--device", "cuda", "--batches", "64,16,16,32"]).batches == [16, 32, 64]


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


def test_graphed_step_runs_its_static_buffer_code_on_the_cpu():
    """Without CUDA the per-step graph is its static-buffer code: the bench's loop gives the eager loop, bit for bit."""
    torch.manual_seed(0)
    model = ddpm_torch.Unet.from_config(SMALL).eval()
    diffusion = ddpm_torch.GaussianDiffusion(DiffusionConfig(timesteps=10))
    img, noise = torch.randn(SHAPE), torch.randn((10, *SHAPE))
    with torch.no_grad():
        step = lambda x, t, n: diffusion.p_step(model, x, t, n)  # noqa: E731
        assert torch.equal(sample_loop(graphed(step, SHAPE, "cpu"), diffusion, SHAPE, "cpu", img, noise),
                           sample_loop(step, diffusion, SHAPE, "cpu", img, noise))


def test_every_configuration_builds_and_runs_on_the_cpu(monkeypatch):
    """Each ``CUDA_CONFIGS`` entry builds, trains a step and samples a 2-step loop on the CPU with the tiny model
    (torch.compile disabled: inductor's C++ build takes minutes here); a sampler returns every state."""
    from parity.bench.cuda import build

    monkeypatch.setattr(torch._dynamo.config, "disable", True)
    for name in CUDA_CONFIGS:
        work = build(name, SMALL, 2, 8, "cpu")
        assert work.train is not None or work.sample is not None, name
        if work.train is not None:
            work.train(1)
        if work.sample is not None:
            assert tuple(work.sample(2).shape) == (2, *SHAPE), name


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


# ------------------------------------------------------------------------------------ the batch sweep
def _fake_point(ips: dict):
    """A ``measure_point`` whose training and sampling rates are ``ips[name](batch)`` images/s (None: raise it)."""

    def measure_point(name, args, device, batch, train_steps, sample_steps):
        rate = ips[name](batch)
        if isinstance(rate, BaseException):
            raise rate
        return {"label": CUDA_CONFIGS[name].label, "peak_dtype": CUDA_CONFIGS[name].peak_dtype, "batch": batch,
                "train_steps": train_steps, "sample_steps": sample_steps, "setup_s": 0.0, "warmup_train_s": 0.1,
                "warmup_sample_s": 0.1, "peak_memory_mib": None,
                "train_s": [batch * train_steps / rate] * 2, "sample_s": [batch / (rate / 100) / (200 / sample_steps)] * 2}

    return measure_point


def _sweep(monkeypatch, ips: dict, extra=()):
    from parity.bench import sweep

    monkeypatch.setattr(sweep, "measure_point", _fake_point(ips))
    monkeypatch.setattr(sweep, "machine_figures", lambda args, device, peak_n=None: {
        "flops_per_image_forward": 1e9, "flops_per_image_train_step": 3e9,
        "peak_flops": {"float32": 1e13, "tf32": 1e14, "float16": 1e15, "bfloat16": 1e15}})
    args = parse(["--device", "cuda", "--torch-device", "cpu", "--configs", ",".join(ips), "--batches",
                  "16,32,64,128,256", "--image-size", "8", "--model-config", SMALL.to_json(), *extra])
    snapshots = []
    report = sweep.run_sweep(args, on_point=lambda r: snapshots.append(json.loads(json.dumps(r))))
    return report, snapshots


def test_sweep_finds_the_filling_batch_and_stops_at_saturation_or_out_of_memory(monkeypatch):
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    report, snapshots = _sweep(monkeypatch, {
        "graph": lambda b: 10.0 * min(b, 64),                       # fills the GPU at 64: 128 gains nothing
        "graph_bf16": lambda b: oom if b >= 128 else 20.0 * b,      # out of memory at 128
        "eager": lambda b: RuntimeError("CUDA error: operation not permitted when stream is capturing") if b == 32
        else 5.0 * b})
    graph, bf16, eager = (report["sweep"][n] for n in ("graph", "graph_bf16", "eager"))
    assert list(graph["points"]) == ["16", "32", "64", "128"] and graph["stopped"].startswith("saturated at batch 128")
    assert graph["best"]["train"]["batch"] == 64 and graph["best"]["train"]["images_per_s"] == pytest.approx(640.0)
    assert graph["best"]["train"]["fraction_of_peak"] == pytest.approx(640.0 * 3e9 / 1e13)
    assert bf16["stopped"] == "out of memory at batch 128" and bf16["best"]["sample"]["batch"] == 64
    assert bf16["points"]["128"]["error"].startswith("out of memory: OutOfMemoryError: CUDA out of memory")
    assert eager["stopped"] == "failed at batch 32" and "stream is capturing" in eager["points"]["32"]["error"]
    assert graph["points"]["16"]["train_vs_eager"] == pytest.approx(2.0)  # against eager at the same batch
    assert len(snapshots) == 4 + 4 + 2 and snapshots[-1]["sweep"]["eager"]["stopped"] == "failed at batch 32"
    text = sweep_markdown(snapshots[-1])
    assert all(e["label"] in text for e in report["sweep"].values()) and "out of memory at batch 128" in text


def test_sweep_plan_scales_the_work_with_the_batch():
    from parity.bench.sweep import plan

    args = parse(["--device", "cuda", "--batches", "16"])  # --train-steps 20, --sample-steps 200
    assert plan(16, args) == (20, 200)  # batch 16: the full T=200 loop, as the graphed-loop goal needs
    assert plan(512, args) == (8, 10) and plan(2048, args) == (2, 10)


def test_sweep_stops_when_the_budget_is_spent(monkeypatch):
    report, snapshots = _sweep(monkeypatch, {"graph": lambda b: 100.0}, extra=("--budget-s", "0"))
    assert report["sweep"]["graph"]["points"] == {} and snapshots == []
    assert report["sweep"]["graph"]["stopped"] == "out of time (--budget-s 0) before batch 16"
    assert all(t["value"] is None and t["met"] is None for t in report["targets"])


def test_sweep_goals_of_issue_24(monkeypatch):
    report, _ = _sweep(monkeypatch, {"graph": lambda b: 10.0 * b ** 0.5, "graph_bf16": lambda b: 100.0 * b,
                                     "eager": lambda b: b ** 0.5})
    goals = {t["target"]: t for t in report["targets"]}
    bf16 = goals["bfloat16 training at its best batch"]
    assert (bf16["value"], bf16["batch"], bf16["config"], bf16["met"]) == (25600.0, 256, "graph_bf16", True)
    f32 = goals["float32 (TF32 off) training at its best batch"]
    assert f32["value"] == pytest.approx(10.0 * 256 ** 0.5 * 3e9 / 1e13) and f32["met"] is False
    speedup = goals["sampling, batch 16, T=200: graphed loop (graph) over eager"]
    assert speedup["value"] == pytest.approx(10.0) and speedup["met"] is True
    assert report["graph_sampling_vs_eager"] == {"batch_16": pytest.approx(10.0), "best_batch": 256,
                                                 "at_best_batch": pytest.approx(10.0)}
    assert "| sampling, batch 16, T=200: graphed loop (graph) over eager | 10.0 | graph, batch 16 | 8 × | yes |" \
        in sweep_markdown(report)


def test_profile_names_the_top_operators_on_the_cpu():
    from parity.bench.profile import profile_configs

    text = profile_configs(_args("eager,cuda_graph", "cpu"), "cpu")
    assert "## eager: training" in text and "## eager: sampling" in text and "## cuda_graph: sampling" in text
    assert "cuda_graph: training" not in text  # cuda_graph trains as channels-last: nothing of its own
    rows = [ln for ln in text.splitlines() if ln.startswith("| `aten::")]
    assert rows and any("convolution" in ln for ln in rows)
