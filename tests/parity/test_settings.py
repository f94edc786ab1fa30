"""The settings check's vocabulary: both frameworks' layers translate to the same settings when they
do the same thing, and to different ones (named) when they do not."""
import numpy as np
import pytest

from parity.engine.settings import check_settings, probe_channel_layer_norm, summarize
from parity.sides.ms_settings import ms_settings
from parity.sides.torch_settings import torch_settings
from tests.host import available, needs

if available("mindspore"):
    import mindspore as ms
    from mindspore import nn as msnn

    import ddpm_ms
if available("torch"):
    import torch
    from torch import nn

    import ddpm_torch


@pytest.mark.parametrize("t_layer, m_layer", [
    (lambda: nn.Conv2d(4, 8, 3, padding=1, bias=False), lambda: msnn.Conv2d(4, 8, 3, pad_mode="pad", padding=1)),
    (lambda: nn.Conv2d(4, 8, 3, padding=1, bias=False), lambda: msnn.Conv2d(4, 8, 3, pad_mode="same")),
    (lambda: nn.Conv2d(4, 8, 1, bias=False), lambda: msnn.Conv2d(4, 8, 1)),  # MindSpore's default pad_mode "same"
    (lambda: nn.Conv2d(4, 8, 1, bias=False), lambda: msnn.Conv2d(4, 8, 1, pad_mode="valid")),
    (lambda: nn.Conv2d(4, 4, 7, padding=3, groups=4, bias=False),
     lambda: msnn.Conv2d(4, 4, 7, pad_mode="pad", padding=3, group=4)),
    (lambda: nn.ConvTranspose2d(4, 4, 4, 2, padding=1, bias=False),
     lambda: msnn.Conv2dTranspose(4, 4, 4, 2, pad_mode="pad", padding=1)),
    (lambda: nn.Linear(3, 5), lambda: msnn.Dense(3, 5)),
    (lambda: nn.GroupNorm(2, 8), lambda: msnn.GroupNorm(2, 8)),
    (lambda: nn.GELU(approximate="tanh"), lambda: msnn.GELU()),
    (lambda: nn.GELU(), lambda: msnn.GELU(approximate=False)),
    (lambda: nn.Softmax(dim=-1), lambda: msnn.Softmax(axis=-1)),
])
@needs("torch", "mindspore")
def test_equivalent_layers_have_equal_settings(t_layer, m_layer):
    assert torch_settings(t_layer()) == ms_settings(m_layer())


@pytest.mark.parametrize("t_layer, m_layer, key", [
    (lambda: nn.Conv2d(4, 8, 3, padding=1), lambda: msnn.Conv2d(4, 8, 3, pad_mode="pad", padding=1), "bias"),
    (lambda: nn.Conv2d(4, 8, 3, padding=0), lambda: msnn.Conv2d(4, 8, 3, pad_mode="pad", padding=1), "padding"),
    (lambda: nn.Conv2d(4, 8, 3, stride=2), lambda: msnn.Conv2d(4, 8, 3, stride=1, pad_mode="valid"), "stride"),
    (lambda: nn.Conv2d(4, 8, 3, dilation=2), lambda: msnn.Conv2d(4, 8, 3, pad_mode="valid"), "dilation"),
    (lambda: nn.GroupNorm(2, 8, eps=1e-3), lambda: msnn.GroupNorm(2, 8), "eps"),
    (lambda: nn.GELU(), lambda: msnn.GELU(), "approximate"),
    (lambda: nn.Softmax(dim=1), lambda: msnn.Softmax(axis=-1), "axis"),
])
@needs("torch", "mindspore")
def test_a_different_setting_is_named(t_layer, m_layer, key):
    (_, st), (_, sm) = torch_settings(t_layer()), ms_settings(m_layer())
    assert st[key] != sm[key]


def test_channel_layer_norm_probe_measures_eps_and_ddof(sides):
    side_t, side_m = sides
    ln_t, ln_m = ddpm_torch.layers.LayerNorm(16), ddpm_ms.layers.LayerNorm(16)
    with torch.no_grad():
        ln_t.g.copy_(torch.linspace(0.5, 1.5, 16).reshape(1, 16, 1, 1))
    assert probe_channel_layer_norm(side_t, ln_t) == {"ddof": 0, "eps": 1e-5}
    assert probe_channel_layer_norm(side_m, ln_m) == {"ddof": 0, "eps": 1e-5}

    class Sample(ddpm_torch.layers.LayerNorm):  # unbiased variance, eps 1e-3
        def forward(self, x):
            var = torch.var(x, dim=1, keepdim=True, correction=1)
            return (x - x.mean(1, keepdim=True)) / torch.sqrt(var + 1e-3) * self.g + 0.25

    assert probe_channel_layer_norm(side_t, Sample(16)) == {"ddof": 1, "eps": 1e-3}


def test_tutorial_twins_have_no_settings_mismatch_and_a_swapped_layer_is_named(sides, fresh_pair):
    model_t, model_m = fresh_pair()
    mismatches, pairs = check_settings(*sides[:1], model_t, sides[1], model_m)
    assert not mismatches and pairs > 100
    model_t.downs[0][3] = nn.Identity()
    mismatches, _ = check_settings(sides[0], model_t, sides[1], model_m)
    assert [m.describe() for m in mismatches][0] == "layer type: Conv2d in MindSpore, Identity in PyTorch at `downs.0.3`"
    assert summarize(mismatches)


@needs("mindspore")
def test_settings_check_does_not_touch_mindspore_mode():
    assert ms.get_context("mode") == ms.PYNATIVE_MODE
    assert np.isfinite(1.0)
