"""The same weights in both twins give the same noise predictions (CPU float32), and each documented
MindSpore/PyTorch difference matters: flipping it back to PyTorch's default in the torch twin breaks
the agreement. Every bound is the harness's (parity.engine.tolerances), applied by ``parity.assert_close``.
Run with ``-s`` to see the measured differences."""
from __future__ import annotations

import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_DIFFUSION, TUTORIAL_UNET, DiffusionConfig, UnetConfig
from parity.api import assert_close
from tests.host import available, needs

if available("torch"):
    import torch
    from torch import nn

    import ddpm_torch.layers

pytestmark = needs("torch", "mindspore")  # both twins on the same weights

T_TUTORIAL = np.array([0, 100, 199], np.int32)  # t in {0, T/2, T-1}, T = 200: one batch, one sample each
RESNET = UnetConfig(dim=16, channels=3, dim_mults=(1, 2, 4), use_convnext=False, resnet_block_groups=8)


def differences(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max abs, max abs relative to the reference's largest magnitude)."""
    d = np.abs(a.astype(np.float64) - ref)
    return float(d.max()), float(d.max() / np.abs(ref).max())


def report(label: str, a: np.ndarray, ref: np.ndarray, t: np.ndarray) -> None:
    for i, ti in enumerate(t):
        mx, rel = differences(a[i], ref[i])
        print(f"\n{label} t={int(ti):3d}: max abs {mx:.3e}, max rel {rel:.3e}", end="")


class Case:
    def __init__(self, cfg, weights, x, t, ms_out):
        self.cfg, self.weights, self.x, self.t, self.ms_out = cfg, weights, x, t, ms_out

    def torch_model(self, torch_twin):
        return torch_twin.build_loaded(self.cfg, self.weights)


def make_case(ms_twin, weights, cfg, size, t):
    x = np.random.default_rng(0).standard_normal((len(t), cfg.channels, size, size)).astype(np.float32)
    return Case(cfg, weights, x, t, ms_twin.forward(ms_twin.build_loaded(cfg, weights), x, t))


@pytest.fixture(scope="module")
def tutorial_case(ms_twin, make_weights):
    return make_case(ms_twin, make_weights(TUTORIAL_UNET, 0), TUTORIAL_UNET, 28, T_TUTORIAL)


@pytest.fixture(scope="module")
def resnet_case(ms_twin, make_weights):
    return make_case(ms_twin, make_weights(RESNET, 1), RESNET, 16, T_TUTORIAL)


def test_tutorial_config_noise_predictions_agree(tutorial_case, torch_twin):
    c = tutorial_case
    out = torch_twin.forward(c.torch_model(torch_twin), c.x, c.t)
    report("tutorial config torch vs ms", out, c.ms_out, c.t)
    assert_close("tutorial config noise prediction", out, c.ms_out, "prediction")
    assert np.abs(c.ms_out).max() > 0.1  # not a trivially small output


def test_resnet_config_noise_predictions_agree(resnet_case, torch_twin):
    c = resnet_case
    out = torch_twin.forward(c.torch_model(torch_twin), c.x, c.t)
    report("resnet config torch vs ms", out, c.ms_out, c.t)
    assert_close("resnet config noise prediction", out, c.ms_out, "prediction")


def test_p_losses_and_ddim_agree(ms_twin, torch_twin, make_weights):
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    w = make_weights(cfg)
    rng = np.random.default_rng(3)
    x0, noise = rng.standard_normal((2, 2, 1, 8, 8)).astype(np.float32)
    t = np.array([7, 180], np.int32)
    img, step_noise = rng.standard_normal((2, 8, 8)).reshape(2, 1, 8, 8).astype(np.float32), \
        rng.standard_normal((3, 2, 1, 8, 8)).astype(np.float32)
    out = {}
    for tw in (torch_twin, ms_twin):
        model, d = tw.build_loaded(cfg, w), tw.diffusion(TUTORIAL_DIFFUSION)
        out[tw.name] = (float(tw.to_numpy(d.p_losses(model, x0, t, noise))),
                        np.stack(d.ddim_sample_loop(model, (2, 1, 8, 8), steps=3, eta=0.5, img=img, noise=step_noise)))
    assert_close("p_losses", np.float32(out["torch"][0]), np.float32(out["ms"][0]), "loss")
    assert_close("DDIM eta=0.5 states", out["torch"][1], out["ms"][1], "ddim_trajectory")


# ---------------------------------------------------------------- flipping one documented difference

def exact_gelu(model: nn.Module, monkeypatch) -> None:
    """PyTorch's nn.GELU() default (erf) instead of MindSpore's tanh approximation."""
    gelus = [m for m in model.modules() if isinstance(m, nn.GELU)]
    assert gelus
    for m in gelus:
        monkeypatch.setattr(m, "approximate", "none")


def layer_norm_ddof1(model: nn.Module, monkeypatch) -> None:
    """torch.var's default (Bessel-corrected, ddof=1) instead of MindSpore Tensor.var's ddof=0."""
    def forward(self, x):
        var = torch.var(x, dim=1, keepdim=True)  # correction=1 by default
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * torch.reciprocal(torch.sqrt(var + ddpm_torch.layers.LAYER_NORM_EPS)) * self.g
    monkeypatch.setattr(ddpm_torch.layers.LayerNorm, "forward", forward)


def conv_bias(model: nn.Module, monkeypatch) -> None:
    """PyTorch's Conv2d/ConvTranspose2d default bias=True (default init) on every bias-free conv."""
    gen = torch.Generator().manual_seed(0)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is None]
    assert convs
    for m in convs:
        fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight[:, 0].numel()
        bound = fan_in**-0.5
        out_ch = m.out_channels
        m.bias = nn.Parameter((torch.rand(out_ch, generator=gen) * 2 - 1) * bound)


def group_norm_eps(model: nn.Module, monkeypatch) -> None:
    """A GroupNorm eps other than the 1e-5 both frameworks use (1e-3; eps must be passed through)."""
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert norms
    for m in norms:
        monkeypatch.setattr(m, "eps", 1e-3)


def unscaled_linear_attention_v(model: nn.Module, monkeypatch) -> None:
    """LinearAttention without the tutorial's ``v = v / (h * w)``."""
    def forward(self, x):
        b, _, h, w = x.shape
        q, k, v = (ddpm_torch.layers.rearrange(self.heads, part) for part in self.to_qkv(x).chunk(3, dim=1))
        q = torch.softmax(q, dim=-2)
        k = torch.softmax(k, dim=-1)
        q = q * self.scale
        context = torch.matmul(k, v.transpose(2, 3))
        out = torch.matmul(context.transpose(2, 3), q)
        return self.to_out(out.reshape(b, -1, h, w))
    monkeypatch.setattr(ddpm_torch.layers.LinearAttention, "forward", forward)


FLIPS = {"exact_gelu": exact_gelu, "layer_norm_ddof1": layer_norm_ddof1, "conv_bias": conv_bias,
         "group_norm_eps": group_norm_eps, "unscaled_linear_attention_v": unscaled_linear_attention_v}


@pytest.mark.parametrize("flip", sorted(FLIPS))
def test_flipping_a_documented_difference_breaks_agreement(tutorial_case, torch_twin, flip, monkeypatch):
    c = tutorial_case
    model = c.torch_model(torch_twin)
    FLIPS[flip](model, monkeypatch)
    out = torch_twin.forward(model, c.x, c.t)
    mx, rel = differences(out, c.ms_out)
    print(f"\nflip {flip}: max abs {mx:.3e}, max rel {rel:.3e}", end="")
    with pytest.raises(AssertionError, match="prediction tolerance"):
        assert_close(f"flip {flip}", out, c.ms_out, "prediction")


def test_resnet_flip_group_norm_eps_breaks_agreement(resnet_case, torch_twin, monkeypatch):
    """ResNet blocks use GroupNorm(8, c) and SiLU: the GroupNorm flip must show there too."""
    c = resnet_case
    model = c.torch_model(torch_twin)
    group_norm_eps(model, monkeypatch)
    with pytest.raises(AssertionError, match="prediction tolerance"):
        assert_close("flip group_norm_eps", torch_twin.forward(model, c.x, c.t), c.ms_out, "prediction")


def test_timesteps_dtype_does_not_matter(tutorial_case, torch_twin):
    """int32 (the tutorial's) and int64 (PyTorch's usual) timesteps give identical predictions."""
    c = tutorial_case
    model = c.torch_model(torch_twin)
    np.testing.assert_array_equal(torch_twin.forward(model, c.x[:1], c.t[:1].astype(np.int64)),
                                  torch_twin.forward(model, c.x[:1], c.t[:1]))


def test_schedules_identical_across_twins(ms_twin, torch_twin):
    cfg = DiffusionConfig(timesteps=30, schedule="cosine", p2_loss_weight_gamma=0.5)
    a, b = torch_twin.diffusion(cfg), ms_twin.diffusion(cfg)
    for name in ("betas", "alphas_cumprod", "posterior_variance", "sqrt_recip_alphas", "p2_loss_weight"):
        np.testing.assert_array_equal(torch_twin.to_numpy(getattr(a, name)), ms_twin.to_numpy(getattr(b, name)))
