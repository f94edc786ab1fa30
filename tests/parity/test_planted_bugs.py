"""Planted bugs: each test injects one bug into one twin at run time and asserts that the harness
fails (exit code 1), blames that twin (it is farther from the float64 specification) and localises it:
the named module, the settings line, or the diagnosis.

The tolerances must never be loosened to let one of these through (parity/engine/tolerances.py)."""
import numpy as np
import pytest

from parity.engine.initial import initial_weights
from tests.host import available, needs
from tests.parity.conftest import FORWARD_CHECKS, SIZE, TINY, TINY_T

if available("torch") and available("mindspore"):
    import mindspore as ms
    import torch
    from mindspore import Tensor, ops
    from torch import nn

    import ddpm_ms
    import ddpm_torch

pytestmark = needs("torch", "mindspore")  # a bug planted in one twin, caught against the other


def failed(report):
    assert not report.passed and report.exit_code == 1, report.text()
    return report


def finding(report):
    assert report.findings, report.text()
    return report.findings[0]


def blamed(report, twin, logic_sees_it=True):
    """Every failing row the specification covers blames ``twin``, and at least one does; the float64 logic
    gate fails on a PyTorch bug in code it runs (``logic_sees_it``), never on a MindSpore bug."""
    anchored = [r for r in report.failures if r.anchor is not None or r.culprit]
    assert anchored, report.text()
    assert {r.blame for r in anchored} == {twin}, [(r.label, r.blame) for r in anchored]
    logic = next((r for r in report.rows if r.output == "logic"), None)
    assert logic is not None and logic.passed == (twin == "ms" or not logic_sees_it), logic.summary.to_dict()
    label = {"torch": "PyTorch", "ms": "MindSpore"}[twin]
    assert f"({label})" in report.table()
    return report


def settings_lines(report):
    return [m.describe() for m in report.settings]


def test_exact_gelu_in_torch(monkeypatch, fresh_pair, run):
    monkeypatch.setattr(ddpm_torch.layers, "gelu", lambda: nn.GELU())  # exact erf GELU in every block
    report = blamed(failed(run(*fresh_pair())), "torch")
    f = finding(report)
    assert (f.module, f.kind, f.own) == ("downs.0.0.mlp.0", "GELU", True)
    assert "GELU approximate: tanh in MindSpore, none (exact) in PyTorch at `downs.0.0.mlp.0`" in settings_lines(report)
    assert "`downs.0.0.mlp.0` (GELU)" in report.text()


def test_dropped_bias_in_mindspore(fresh_pair, run):
    model_t, model_m = fresh_pair()
    model_m.init_conv.has_bias = False
    report = blamed(failed(run(model_t, model_m)), "ms")
    f = finding(report)
    assert (f.module, f.kind, f.own) == ("init_conv", "Conv2d", True)
    assert "Conv2d bias: False in MindSpore, True in PyTorch at `init_conv`" in settings_lines(report)


def test_wrong_group_norm_eps_in_torch(fresh_pair, run):
    model_t, model_m = fresh_pair()
    model_t.downs[0][1].net[3].eps = 1e-3
    report = blamed(failed(run(model_t, model_m)), "torch")
    assert any("`downs.0.1.net.3` (GroupNorm): PyTorch" in d and "farther from the float64 specification" in d
               for d in report.diagnoses), report.diagnoses
    assert (finding(report).module, finding(report).kind) == ("downs.0.1.net.3", "GroupNorm")
    assert "GroupNorm eps: 1e-05 in MindSpore, 0.001 in PyTorch at `downs.0.1.net.3`" in settings_lines(report)


def test_wrong_layer_norm_eps_in_mindspore(monkeypatch, fresh_pair, run):
    monkeypatch.setattr(ddpm_ms.layers, "LAYER_NORM_EPS", 1e-3)
    report = blamed(failed(run(*fresh_pair())), "ms")
    assert any("`downs.0.2.fn.fn.to_out.1` (LayerNorm): MindSpore" in d for d in report.diagnoses), report.diagnoses
    assert (finding(report).module, finding(report).kind) == ("downs.0.2.fn.fn.to_out.1", "LayerNorm")
    assert "LayerNorm eps: 0.001 in MindSpore, 1e-05 in PyTorch at `downs.0.2.fn.fn.to_out.1`" in settings_lines(report)


def test_layer_norm_with_ddof_1_in_mindspore(monkeypatch, fresh_pair, run):
    def construct(self, x):
        var = x.var(1, ddof=1, keepdims=True)
        mean = x.mean(1, keep_dims=True)
        return (x - mean) * ops.reciprocal(ops.sqrt(var + ddpm_ms.layers.LAYER_NORM_EPS)) * self.g

    monkeypatch.setattr(ddpm_ms.layers.LayerNorm, "construct", construct)
    report = blamed(failed(run(*fresh_pair())), "ms")
    assert (finding(report).module, finding(report).own) == ("downs.0.2.fn.fn.to_out.1", True)
    assert "LayerNorm ddof: 1 in MindSpore, 0 in PyTorch at `downs.0.2.fn.fn.to_out.1`" in settings_lines(report)


def test_transposed_conv_kernel_in_mindspore(fresh_pair, run):
    model_t, model_m = fresh_pair()
    p = dict(model_m.parameters_and_names())["downs.0.0.net.1.weight"]
    p.copy_(Tensor(np.ascontiguousarray(p.asnumpy().transpose(0, 1, 3, 2))))
    report = blamed(failed(run(model_t, model_m, weights=initial_weights(TINY, 0))), "ms")
    weights = next(r for r in report.rows if r.output == "weights")
    assert not weights.passed and weights.summary.first_failure.name == "downs.0.0.net.1.weight"
    assert (finding(report).module, finding(report).kind, finding(report).own) == ("downs.0.0.net.1", "Conv2d", True)


def test_flipped_conv_kernel_in_torch(fresh_pair, run):
    model_t, model_m = fresh_pair()
    with torch.no_grad():
        w = model_t.downs[1][0].net[1].weight
        w.copy_(torch.flip(w, dims=(2, 3)))
    report = blamed(failed(run(model_t, model_m, weights=initial_weights(TINY, 0))), "torch")
    assert (finding(report).module, finding(report).kind) == ("downs.1.0.net.1", "Conv2d")


def test_one_weight_perturbed_after_conversion(fresh_pair, run):
    model_t, model_m = fresh_pair()
    p = dict(model_m.parameters_and_names())["downs.1.0.net.1.weight"]
    value = np.array(p.asnumpy(), copy=True)
    value[0, 0, 0, 0] += 1e-3
    p.copy_(Tensor(value))
    report = blamed(failed(run(model_t, model_m, weights=initial_weights(TINY, 0))), "ms")
    first = next(r for r in report.rows if r.output == "weights").summary.first_failure
    assert first.name == "downs.1.0.net.1.weight" and first.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert (finding(report).module, finding(report).own) == ("downs.1.0.net.1", True)


def test_softmax_over_the_wrong_axis_in_torch_linear_attention(monkeypatch, fresh_pair, run):
    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = (ddpm_torch.layers.rearrange(self.heads, part) for part in self.to_qkv(x).chunk(3, dim=1))
        q = torch.softmax(q, dim=-1)  # the tutorial: dim=-2
        k = torch.softmax(k, dim=-1)
        q = q * self.scale
        v = v / (h * w)
        context = torch.matmul(k, v.transpose(2, 3))
        out = torch.matmul(context.transpose(2, 3), q)
        return self.to_out(out.reshape(b, -1, h, w))

    monkeypatch.setattr(ddpm_torch.layers.LinearAttention, "forward", forward)
    report = blamed(failed(run(*fresh_pair())), "torch")
    f = finding(report)
    assert (f.module, f.kind, f.own) == ("downs.0.2.fn.fn", "LinearAttention", True)
    assert f.first_seen == "downs.0.2.fn.fn.to_out.0"  # the first submodule whose input differs
    assert not report.settings  # the axis lives in code, not in a setting: only the numbers find it


def test_off_by_one_timestep_into_the_schedule_in_mindspore(monkeypatch, fresh_pair, run):
    def extract(self, a, t, x_shape):
        t = ops.clip(t + 1, 0, self.timesteps - 1)
        return a.gather(t, -1).reshape(t.shape[0], *((1,) * (len(x_shape) - 1)))

    monkeypatch.setattr(ddpm_ms.diffusion.GaussianDiffusion, "extract", extract)
    report = blamed(failed(run(*fresh_pair(), checks=("predict", "loss", "probes", "reference"))), "ms")
    failing = {r.output for r in report.failures}
    assert "loss" in failing and "diffusion_math" in failing and "prediction" not in failing
    assert any("MindSpore diffusion math" in d and "reads the schedule at t+1" in d for d in report.diagnoses)
    assert any("outside the network's forward pass" in d for d in report.diagnoses), report.text()


def test_sampling_noise_from_the_framework_rng_instead_of_the_tape(monkeypatch, fresh_pair, run):
    loop = ddpm_torch.diffusion.GaussianDiffusion.p_sample_loop

    def rng_loop(self, model, shape, img=None, noise=None, progress=False, compiled=False):
        return loop(self, model, shape, img=img, noise=None, progress=progress, compiled=compiled)

    monkeypatch.setattr(ddpm_torch.diffusion.GaussianDiffusion, "p_sample_loop", rng_loop)
    report = blamed(failed(run(*fresh_pair(), checks=("ddpm", "probes", "reference"), compiled=False)), "torch",
                    logic_sees_it=False)  # the anchor steps with p_step, not through the bugged loop
    rows = {r.output: r for r in report.rows}
    assert not rows["ddpm_trajectory"].passed
    assert rows["ddpm_one_step"].passed  # one step from the same x_t with the tape's noise agrees
    assert any(d.startswith("PyTorch diffusion math") and "per-step noise is not the tape's" in d
               for d in report.diagnoses), report.diagnoses


def test_assert_parity_raises_with_the_report(fresh_pair):
    """The API's AssertionError carries the report text, first divergence included."""
    from parity.api import assert_parity

    model_t, model_m = fresh_pair()
    model_m.init_conv.has_bias = False
    with pytest.raises(AssertionError, match=r"first divergence: `init_conv` \(Conv2d\)"):
        assert_parity(model_t, model_m, diffusion=TINY_T, image_size=SIZE, checks=FORWARD_CHECKS)
    assert ms.get_context("mode") == ms.PYNATIVE_MODE  # the harness leaves MindSpore's mode alone
