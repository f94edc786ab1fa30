"""The tutorial's building blocks in MindSpore, with every default the tutorial relies on
spelled out, so a MindSpore release that moves a default cannot move the numbers.

Mirrors ddpm_torch/layers.py class for class and attribute for attribute.
"""
from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from ddpm_core.config import ATTENTION_DIM_HEAD, ATTENTION_HEADS

LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 1e-5


def gelu() -> nn.Cell:
    """The tutorial's ``nn.GELU()``: MindSpore's default is the tanh approximation."""
    return nn.GELU(approximate=True)


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """The tutorial's ``nn.GroupNorm(groups, channels)``: eps 1e-5, affine ``gamma``/``beta``."""
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS, affine=True)


GELU_TANH_COEF = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


class ComposedGELU(nn.GELU):
    """``nn.GELU(approximate=True)`` (the tanh approximation) from primitive ops, as
    x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), which equals 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    The sigmoid form, because MindSpore 2.10's CPU ``tanh`` is an approximation (1e-4 off, measured by
    scripts/ms_ops_speed.py) while its ``sigmoid`` is within 1e-6: this form stays within 1e-6 of ``ops.gelu``."""

    def construct(self, x):
        return x * ops.sigmoid((2.0 * GELU_TANH_COEF) * (x + GELU_CUBIC * (x * x * x)))


class ComposedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (the same ``gamma``/``beta`` parameters, eps and groups) from primitive ops: the group
    mean and the population variance as two passes whose sums are matrix products with a constant column,
    (x - mean) * rsqrt(var + eps), then the per-channel affine."""

    def construct(self, x):
        b, c, h, w = x.shape
        g = x.reshape((b * self.num_groups, -1))
        column = ops.fill(x.dtype, (g.shape[1], 1), 1.0 / g.shape[1])
        d = g - ops.matmul(g, column)
        var = ops.matmul(d * d, column)
        y = (d * ops.rsqrt(var + self.eps)).reshape((b, c, h, w))
        return y * self.gamma.reshape((1, c, 1, 1)) + self.beta.reshape((1, c, 1, 1))


def compose_ops(model: nn.Cell) -> nn.Cell:
    """``model`` with every GELU and GroupNorm computing from primitive ops (``ComposedGELU``,
    ``ComposedGroupNorm``): faster on CPU inside ``ms.jit`` graphs, within float32 rounding of MindSpore's
    kernels but not bit-identical to the tutorial's model. Changed in place (each cell keeps its parameters,
    names and settings: only the class, and so ``construct``, changes), so checkpoints are the same."""
    for _, cell in model.cells_and_names():
        if type(cell) is nn.GELU and cell.approximate == "tanh":  # the tanh form is the one composed
            cell.__class__ = ComposedGELU
        elif type(cell) is nn.GroupNorm:
            cell.__class__ = ComposedGroupNorm
    return model


def rearrange(heads: int, x: Tensor) -> Tensor:
    """(b, heads*c, h, w) -> (b, heads, c, h*w), as the tutorial's ``rearrange``."""
    b, hc, h, w = x.shape
    return x.reshape((b, heads, hc // heads, h * w))


class Residual(nn.Cell):
    def __init__(self, fn: nn.Cell):
        super().__init__()
        self.fn = fn

    def construct(self, x, *args, **kwargs):
        return self.fn(x, *args, **kwargs) + x


def Upsample(dim: int) -> nn.Cell:
    """``Conv2dTranspose(dim, dim, 4, 2, pad_mode="pad", padding=1)``, no bias."""
    return nn.Conv2dTranspose(dim, dim, 4, 2, pad_mode="pad", padding=1, has_bias=False)


def Downsample(dim: int) -> nn.Cell:
    """``Conv2d(dim, dim, 4, 2, pad_mode="pad", padding=1)``, no bias."""
    return nn.Conv2d(dim, dim, 4, 2, pad_mode="pad", padding=1, has_bias=False)


class SinusoidalPositionEmbeddings(nn.Cell):
    """Frequencies computed in float64 numpy and cast to float32, as in the tutorial."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        half_dim = dim // 2
        emb = math.log(10000) / (half_dim - 1)
        emb = np.exp(np.arange(half_dim) * -emb)
        self.emb = Tensor(emb, ms.float32)

    def construct(self, x):
        emb = x[:, None].astype(self.emb.dtype) * self.emb[None, :]
        return ops.concat((ops.sin(emb), ops.cos(emb)), axis=-1)


class Block(nn.Cell):
    """Conv -> GroupNorm -> (scale, shift) -> SiLU; the tutorial's ResNet ``Block``."""

    def __init__(self, dim: int, dim_out: int, groups: int = 1):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, pad_mode="pad", padding=1, has_bias=False)
        self.norm = group_norm(groups, dim_out)
        self.act = nn.SiLU()

    def construct(self, x, scale_shift=None):
        x = self.proj(x)
        x = self.norm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Cell):
    """The ResNet alternative the tutorial offers: two ``Block``s with the time embedding added between."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int | None = None, groups: int = 8):
        super().__init__()
        self.mlp = (nn.SequentialCell(nn.SiLU(), nn.Dense(time_emb_dim, dim_out))
                    if time_emb_dim is not None else None)
        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1, has_bias=False) if dim != dim_out else nn.Identity()

    def construct(self, x, time_emb=None):
        h = self.block1(x)
        if self.mlp is not None and time_emb is not None:
            h = self.mlp(time_emb).expand_dims(-1).expand_dims(-1) + h
        h = self.block2(h)
        return h + self.res_conv(x)


class ConvNextBlock(nn.Cell):
    """The tutorial's block: depthwise 7x7, time condition added, then norm/conv/GELU/norm/conv."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int | None = None, mult: int = 2, norm: bool = True):
        super().__init__()
        self.mlp = (nn.SequentialCell(gelu(), nn.Dense(time_emb_dim, dim))
                    if time_emb_dim is not None else None)
        self.ds_conv = nn.Conv2d(dim, dim, 7, padding=3, group=dim, pad_mode="pad", has_bias=False)
        self.net = nn.SequentialCell(
            group_norm(1, dim) if norm else nn.Identity(),
            nn.Conv2d(dim, dim_out * mult, 3, padding=1, pad_mode="pad", has_bias=False),
            gelu(),
            group_norm(1, dim_out * mult),
            nn.Conv2d(dim_out * mult, dim_out, 3, padding=1, pad_mode="pad", has_bias=False),
        )
        self.res_conv = nn.Conv2d(dim, dim_out, 1, has_bias=False) if dim != dim_out else nn.Identity()

    def construct(self, x, time_emb=None):
        h = self.ds_conv(x)
        if self.mlp is not None and time_emb is not None:
            h = h + self.mlp(time_emb).expand_dims(-1).expand_dims(-1)
        h = self.net(h)
        return h + self.res_conv(x)


class Attention(nn.Cell):
    """Multi-head softmax self-attention over the h*w positions."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dim_head: int = ATTENTION_DIM_HEAD):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, pad_mode="valid", has_bias=False)
        self.to_out = nn.Conv2d(hidden_dim, dim, 1, pad_mode="valid", has_bias=True)

    def construct(self, x):
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(x).chunk(3, 1)
        q, k, v = rearrange(self.heads, q), rearrange(self.heads, k), rearrange(self.heads, v)
        q = q * self.scale
        sim = ops.bmm(q.swapaxes(2, 3), k)  # (b, heads, i, j)
        attn = ops.softmax(sim, axis=-1)
        out = ops.bmm(attn, v.swapaxes(2, 3))  # (b, heads, i, d)
        out = out.swapaxes(-1, -2).reshape((b, -1, h, w))
        return self.to_out(out)


class LayerNorm(nn.Cell):
    """Channel LayerNorm: population variance (ddof=0, passed explicitly), eps 1e-5, a gain ``g`` and no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = Parameter(initializer("ones", (1, dim, 1, 1)), name="g")

    def construct(self, x):
        var = x.var(1, ddof=0, keepdims=True)
        mean = x.mean(1, keep_dims=True)
        return (x - mean) * ops.reciprocal(ops.sqrt(var + LAYER_NORM_EPS)) * self.g


class LinearAttention(nn.Cell):
    """Linear attention; ``v`` is divided by h*w as in the tutorial."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dim_head: int = ATTENTION_DIM_HEAD):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, pad_mode="valid", has_bias=False)
        self.to_out = nn.SequentialCell(nn.Conv2d(hidden_dim, dim, 1, pad_mode="valid", has_bias=True), LayerNorm(dim))

    def construct(self, x):
        b, _, h, w = x.shape
        q, k, v = self.to_qkv(x).chunk(3, 1)
        q, k, v = rearrange(self.heads, q), rearrange(self.heads, k), rearrange(self.heads, v)
        q = ops.softmax(q, -2)
        k = ops.softmax(k, -1)
        q = q * self.scale
        v = v / (h * w)
        context = ops.bmm(k, v.swapaxes(2, 3))  # (b, heads, d, e)
        out = ops.bmm(context.swapaxes(2, 3), q)  # (b, heads, e, n)
        out = out.reshape((b, -1, h, w))
        return self.to_out(out)


class PreNorm(nn.Cell):
    """GroupNorm(1, dim) before ``fn``."""

    def __init__(self, dim: int, fn: nn.Cell):
        super().__init__()
        self.fn = fn
        self.norm = group_norm(1, dim)

    def construct(self, x):
        return self.fn(self.norm(x))
