"""The fast paths keep parity, and ``python -m parity.bench`` reports every figure consistently.

Fast paths: MindSpore's compiled training step (one ``ms.jit`` graph of forward, loss, gradients and
``nn.Adam``) against its PyNative step and against the torch twin with ``MindSporeAdam``; the torch
channels-last step and sampler against plain NCHW. The bench runs once, as a tiny smoke configuration:
a benchmark, not a timed test (nothing here asserts a speed).
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.weights.converter import ms_to_torch
from parity.api import assert_close
from tests.conftest import get_twin
from tests.host import TWINS, available, need, needs

if available("mindspore"):
    import mindspore as ms

    import ddpm_ms
    from ddpm_ms.optim import make_optimizer as ms_optimizer
    from ddpm_ms.optim import make_train_step as ms_train_step
if available("torch"):
    import torch

    import ddpm_torch
    from ddpm_torch.optim import make_optimizer as torch_optimizer
    from ddpm_torch.optim import make_train_step as torch_train_step

ROOT = Path(__file__).resolve().parents[2]
SMALL = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SHORT = DiffusionConfig(timesteps=10)
SHAPE = (2, 1, 8, 8)
LRS = [1e-3, 5e-4, 2e-4]
MOVED = 1e-4
"""Three steps at these learning rates move some weight by more than this, or a comparison proves nothing."""


def batches(n: int = 3) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.uniform(-1, 1, SHAPE).astype(np.float32), rng.integers(0, SHORT.timesteps, SHAPE[0]).astype(np.int32),
             rng.standard_normal(SHAPE).astype(np.float32)) for _ in range(n)]


def train_ms(ms_twin, weights, fast: bool) -> tuple[list[float], dict[str, np.ndarray]]:
    model = ms_twin.build_loaded(SMALL, weights)
    step = ms_train_step(model, ddpm_ms.GaussianDiffusion(SHORT), ms_optimizer(model, LRS), compiled=fast)
    losses = [float(step(*b).asnumpy()) for b in batches()]
    return losses, ms_to_torch({p.name: p.asnumpy().copy() for p in model.get_parameters()}, SMALL)


def train_torch(torch_twin, weights, fast: bool) -> tuple[list[float], dict[str, np.ndarray]]:
    model = torch_twin.build_loaded(SMALL, weights)
    step = torch_train_step(model, ddpm_torch.GaussianDiffusion(SHORT), torch_optimizer(model, LRS), channels_last=fast)
    losses = [float(step(*b)) for b in batches()]
    return losses, {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def assert_same_training(a, b, start: dict[str, np.ndarray], what: str) -> None:
    """Losses under the table's ``loss`` entry; the parameter change w_3 - w_0 under its ``adam`` entry, as
    ``parity.check`` compares training steps (graph mode and oneDNN's layouts order float32 sums differently,
    and Adam turns that into element errors up to ~lr where a gradient is near zero)."""
    for k, (x, y) in enumerate(zip(a[0], b[0], strict=True)):
        assert_close(f"{what}: loss {k + 1}", np.float32(x), np.float32(y), "loss")
    change = lambda w: {n: w[n].astype(np.float64) - start[n] for n in start}  # noqa: E731
    assert_close(f"{what}: w_{len(LRS)} - w_0", change(a[1]), change(b[1]), "adam")


@pytest.fixture(scope="module")
def trained(ms_twin, torch_twin, make_weights):
    """(losses, weights) after 3 steps from the same seeded weights, for each twin and path."""
    weights = make_weights(SMALL)
    return {"ms_compiled": train_ms(ms_twin, weights, True), "ms_pynative": train_ms(ms_twin, weights, False),
            "torch_channels_last": train_torch(torch_twin, weights, True), "torch_eager": train_torch(torch_twin, weights, False),
            "start": weights}


def test_ms_compiled_training_step_equals_pynative(trained):
    assert_same_training(trained["ms_compiled"], trained["ms_pynative"], trained["start"], "ms compiled vs PyNative")
    moved = max(float(np.max(np.abs(trained["ms_compiled"][1][k] - trained["start"][k]))) for k in trained["start"])
    assert moved > MOVED, "the weights must have moved, or the comparison proves nothing"


def test_ms_compiled_training_step_matches_torch_twin(trained):
    assert_same_training(trained["ms_compiled"], trained["torch_channels_last"], trained["start"], "ms compiled vs torch channels-last")
    assert_same_training(trained["ms_compiled"], trained["torch_eager"], trained["start"], "ms compiled vs torch eager")


def test_torch_channels_last_training_step_equals_eager(trained):
    assert_same_training(trained["torch_channels_last"], trained["torch_eager"], trained["start"], "torch channels-last vs eager")


def test_training_comparison_sees_a_wrong_learning_rate(trained, torch_twin, make_weights):
    """The same comparison fails when one side trains with the third step's learning rate doubled."""
    weights = trained["start"]
    model = torch_twin.build_loaded(SMALL, weights)
    step = torch_train_step(model, ddpm_torch.GaussianDiffusion(SHORT),
                            torch_optimizer(model, [*LRS[:2], 2 * LRS[2]]), channels_last=False)
    wrong = ([float(step(*b)) for b in batches()], {k: v.detach().numpy().copy() for k, v in model.state_dict().items()})
    with pytest.raises(AssertionError, match="adam tolerance"):
        assert_same_training(wrong, trained["torch_eager"], weights, "doubled last lr")


def test_ms_compiled_step_follows_replaced_parameter_storage(ms_twin, make_weights):
    """``set_data`` after the graph was compiled (as when resuming) must not leave the graph training the old
    storage: the step recompiles, and ends where an in-place update (``copy_``, which every path sees) ends.
    (PyNative's ``nn.Adam`` itself keeps updating the old storage after a ``set_data``: measured, not tested.)"""
    weights = make_weights(SMALL)
    results = {}
    for fast, how in ((True, "set_data"), (True, "copy_"), (False, "copy_")):
        model = ms_twin.build_loaded(SMALL, weights)
        step = ms_train_step(model, ddpm_ms.GaussianDiffusion(SHORT), ms_optimizer(model, LRS), compiled=fast)
        b = batches(2)
        step(*b[0])
        getattr(model.init_conv.weight, how)(ms.Tensor(np.full(model.init_conv.weight.shape, 0.01, np.float32)))
        loss = float(step(*b[1]).asnumpy())
        results[fast, how] = (loss, model.init_conv.weight.asnumpy().copy())
    reference = results[False, "copy_"]
    assert np.max(np.abs(reference[1] - 0.01)) > MOVED, "the second step must move the weight"
    for key, (loss, weight) in results.items():
        assert_close(f"{key}: loss", np.float32(loss), np.float32(reference[0]), "loss")
        assert_close(f"{key}: init_conv.weight - 0.01", weight - 0.01, reference[1] - 0.01, "adam")


@pytest.mark.parametrize("twin_name", TWINS)
def test_fast_step_still_refuses_bad_input_before_running(twin_name):
    twin = get_twin(twin_name)
    model = twin.build(SMALL)
    make = (ms_train_step, ms_optimizer) if twin_name == "ms" else (torch_train_step, torch_optimizer)
    fast_path = {"compiled": True} if twin_name == "ms" else {"channels_last": True}
    step = make[0](model, twin.GaussianDiffusion(SHORT), make[1](model, LRS), **fast_path)
    x, t, noise = batches(1)[0]
    with pytest.raises(ValueError, match="timesteps"):
        step(x, t.astype(np.float32), noise)
    with pytest.raises(ValueError, match="noise"):
        step(x, t, noise[:1])


@needs("mindspore")
def test_ms_compiled_sampling_compiles_one_graph_for_all_steps():
    """Every step of a compiled DDPM loop reuses one graph: one compile for the first loop, none after."""
    from mindspore.graph.api import ms_compile_cache  # MindSpore's set of compiled phases

    model = ddpm_ms.Unet.from_config(SMALL)
    model.set_train(False)
    diffusion = ddpm_ms.GaussianDiffusion(SHORT)
    before = len(ms_compile_cache)
    diffusion.p_sample_loop(model, SHAPE, compiled=True)
    assert len(ms_compile_cache) - before == 1
    diffusion.p_sample_loop(model, SHAPE, compiled=True)
    assert len(ms_compile_cache) - before == 1


def test_torch_channels_last_sampling_equals_nchw(torch_twin, make_weights):
    """The torch fast path's model (channels-last weights, as ``make_train_step(channels_last=True)`` leaves it) samples
    what the NCHW model samples."""
    nchw = torch_twin.build_loaded(SMALL, make_weights(SMALL)).eval()
    nhwc = torch_twin.build_loaded(SMALL, make_weights(SMALL)).eval().to(memory_format=torch.channels_last)
    diffusion = ddpm_torch.GaussianDiffusion(SHORT)
    rng = np.random.default_rng(1)
    img, noise = rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((10, *SHAPE)).astype(np.float32)
    fast = np.stack(diffusion.p_sample_loop(nhwc, SHAPE, img=img, noise=noise))
    eager = np.stack(diffusion.p_sample_loop(nchw, SHAPE, img=img, noise=noise))
    assert_close("channels-last vs NCHW sampling", fast, eager, "ddpm_trajectory")


# ------------------------------------------------------------------------------------ the bench, smoke-sized
SMOKE = pytest.mark.slow
"""A whole bench run (46 s on a quiet 2-core AMD EPYC: both frameworks, five configurations, MindSpore's graph
compiles): left to ``-m slow`` to keep the default suite under 10 minutes; ``python -m parity.bench`` itself is
the benchmark it checks, and its parts are tested above at unit size."""


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, str]:
    need("torch", "mindspore")  # the default configurations run both twins and the tutorial's code
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "parity.bench", "--batch", "2", "--train-steps", "1", "--sample-steps", "2",
         "--repeats", "1", "--image-size", "8", "--model-config", SMALL.to_json(), "--no-check", "--quiet-wait", "0",
         "--json", str(out / "bench.json"), "--markdown", str(out / "bench.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


@SMOKE
def test_bench_json_has_every_figure_for_every_configuration(smoke):
    report, _ = smoke
    assert set(report) >= {"date", "settings", "machine", "environment", "results", "parity_check", "targets",
                           "data_parallel"}
    assert list(report["results"]) == ["tutorial", "ms_pynative", "ms_compiled", "torch_eager", "torch_channels_last"]
    for name, r in report["results"].items():
        for key in ("label", "isa", "setup_s", "warmup_train_s", "warmup_sample_s", "train_s", "sample_s",
                    "train_images_per_s", "sample_images_per_s", "train_vs_tutorial", "sample_vs_tutorial",
                    "train_fraction_of_peak", "sample_fraction_of_peak", "peak_rss_mib", "load_1min", "foreign_cores",
                    "foreign_cores_max", "idle_cpu_s"):
            assert r.get(key) is not None, f"{name}: {key} missing"
        assert r["isa"] == "AVX2" and r["peak_rss_mib"] > 0 and len(r["train_s"]) == len(r["sample_s"]) == 1
    m = report["machine"]
    assert m["flops_per_image_train_step"] > m["flops_per_image_forward"] > 0 and m["peak_flops_measured"] > 0
    assert report["parity_check"]["wall_s"] is None and report["data_parallel"]["workers"] == [1]
    assert report["data_parallel"]["jobs"] == []


@SMOKE
def test_bench_ratios_are_consistent(smoke):
    report, _ = smoke
    res, s = report["results"], report["settings"]
    base = res["tutorial"]
    for name, r in res.items():
        train = s["batch"] * s["train_steps"] / r["train_s"][0]
        sample = s["batch"] / (r["sample_s"][0] * 200 / s["sample_steps"])
        assert r["train_images_per_s"]["median"] == pytest.approx(train)
        assert r["sample_images_per_s"]["median"] == pytest.approx(sample)
        assert r["train_vs_tutorial"] == pytest.approx(train / base["train_images_per_s"]["median"])
        assert r["sample_vs_tutorial"] == pytest.approx(sample / base["sample_images_per_s"]["median"])
        flops = report["machine"]["flops_per_image_train_step"]
        assert r["train_fraction_of_peak"] == pytest.approx(train * flops / report["machine"]["peak_flops_measured"])
    assert res["tutorial"]["train_vs_tutorial"] == pytest.approx(1.0)
    by_name = {t["target"]: t for t in report["targets"]}
    ratio = by_name["ms compiled sampling vs ms PyNative"]
    assert ratio["value"] == pytest.approx(res["ms_compiled"]["sample_images_per_s"]["median"]
                                           / res["ms_pynative"]["sample_images_per_s"]["median"])
    assert ratio["met"] == (ratio["value"] >= ratio["threshold"])


@SMOKE
def test_bench_markdown_names_every_configuration_and_the_extrapolation(smoke):
    report, text = smoke
    for r in report["results"].values():
        assert r["label"] in text
    assert "scaled by 200/2" in text and "| target |" in text
    assert "Data-parallel scaling: not measured: one worker only (--workers 1)." in text


# ------------------------------------------------------------------------------- data-parallel scaling
def test_scaling_efficiency_is_throughput_over_n_times_the_one_worker_throughput():
    from parity.bench import dp_plan, scaling_efficiency, summarise_scaling

    assert scaling_efficiency(30.0, 2, 20.0) == pytest.approx(0.75)
    assert scaling_efficiency(40.0, 2, 20.0) == pytest.approx(1.0)
    assert dp_plan([1, 2], 2) == [(1, 2), (1, 1), (2, 1)]
    assert dp_plan([1, 2, 4], 16) == [(1, 16), (1, 8), (1, 4), (2, 8), (4, 4)]

    def job(workers, threads, train_s):
        return {"framework": "torch", "workers": workers, "threads": threads, "train_s": train_s,
                "load": [1.0, 2.0], "foreign_cores": [0.1]}

    # batch 4, 2 steps: 8 images per worker per repetition
    out = summarise_scaling([job(1, 2, [1.0, 2.0, 1.5]), job(1, 1, [2.0]), job(2, 1, [2.0]), job(4, 1, [4.0])],
                            batch=4, steps=2, cores=2)
    full, one, two, four = out
    assert full["images_per_s"] == {"median": pytest.approx(16 / 3), "min": 4.0, "max": 8.0}
    assert one["images_per_s"]["median"] == 4.0 and two["images_per_s"]["median"] == 8.0
    assert two["images_per_s_per_worker"] == 4.0
    assert two["efficiency_same_threads"] == pytest.approx(1.0)
    assert two["efficiency_vs_all_cores"] == pytest.approx(8.0 / (2 * 16 / 3))
    assert full["efficiency_same_threads"] == full["efficiency_vs_all_cores"] == pytest.approx(1.0)
    assert four["efficiency_same_threads"] == pytest.approx(8.0 / (4 * 4.0))
    assert summarise_scaling([job(2, 1, [1.0])], 4, 2, 2)[0]["efficiency_same_threads"] is None


def test_bench_workers_must_include_the_one_worker_baseline():
    from parity.bench import parse

    with pytest.raises(SystemExit):
        parse(["--workers", "2"])
    assert parse(["--workers", "2,1,2"]).workers == [1, 2]


@pytest.fixture(scope="module")
def dp_smoke(tmp_path_factory) -> tuple[dict, list[str]]:
    """The scaling part of the bench alone, torch only, the tiny model: 1 worker (2 and 1 threads), 2 via torchrun."""
    need("torch")
    from parity.bench import data_parallel_scaling, dp_markdown, parse

    args = parse(["--configs", "torch_channels_last", "--workers", "1,2", "--batch", "2", "--train-steps", "1", "--repeats",
                  "2", "--image-size", "8", "--model-config", SMALL.to_json(), "--quiet-wait", "0"])
    report = data_parallel_scaling(args, tmp_path_factory.mktemp("dp"))
    return report, dp_markdown(report)


@pytest.mark.slow  # 30 s of launches; the arithmetic and the job plan are tested above, in CI
def test_bench_data_parallel_scaling_smoke(dp_smoke):
    report, lines = dp_smoke
    cores = report["cores"]
    jobs = {(j["workers"], j["threads"]): j for j in report["jobs"]}
    assert set(jobs) == {(1, cores), (1, max(1, cores // 2)), (2, max(1, cores // 2))}
    for (n, threads), j in jobs.items():
        assert j["framework"] == "torch" and j["config"] == "torch_channels_last" and j["threads_reported"] == threads
        assert j["omp_num_threads"] == str(threads) and len(j["train_s"]) == 2 and len(j["warmup_step_s"]) == 2
        assert j["images_per_s"]["median"] > 0 and j["efficiency_same_threads"] > 0 and j["efficiency_vs_all_cores"] > 0
        assert j["launcher"] == ("torchrun" if n == 2 else "none (plain process)")
        assert j["startup_s"] > 0 and j["foreign_cores_max"] >= 0
    two = jobs[2, max(1, cores // 2)]
    assert two["images_per_s"]["median"] == pytest.approx(statistics.median(4 / s for s in two["train_s"]))
    assert sum("| 2 × " in line for line in lines) == 1 and "efficiency" in lines[0]
