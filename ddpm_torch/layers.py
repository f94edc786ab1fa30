"""The tutorial's building blocks in PyTorch, reproducing MindSpore's defaults explicitly.

Mirrors ddpm_ms/layers.py class for class and attribute for attribute. Each MindSpore default
that differs from PyTorch's is spelled out where it is used (see docs/porting.md):
GELU is the tanh approximation, convolutions have no bias unless the tutorial asks for one,
the channel LayerNorm uses the population variance.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ddpm_core.config import ATTENTION_DIM_HEAD, ATTENTION_HEADS

LAYER_NORM_EPS = 1e-5
GROUP_NORM_EPS = 1e-5


def gelu() -> nn.Module:
    """MindSpore ``nn.GELU()`` defaults to the tanh approximation; PyTorch's to the exact erf form."""
    return nn.GELU(approximate="tanh")


def group_norm(groups: int, channels: int) -> nn.GroupNorm:
    """MindSpore ``nn.GroupNorm(groups, channels)``: eps 1e-5, affine (``gamma``/``beta`` there)."""
    return nn.GroupNorm(groups, channels, eps=GROUP_NORM_EPS, affine=True)


def rearrange(heads: int, x: torch.Tensor) -> torch.Tensor:
    """(b, heads*c, h, w) -> (b, heads, c, h*w), as the tutorial's ``rearrange``."""
    b, hc, h, w = x.shape
    return x.reshape(b, heads, hc // heads, h * w)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.fn(x, *args, **kwargs) + x


def Upsample(dim: int) -> nn.Module:
    """MindSpore ``Conv2dTranspose(dim, dim, 4, 2, pad_mode="pad", padding=1)``: no bias."""
    return nn.ConvTranspose2d(dim, dim, 4, 2, padding=1, bias=False)


def Downsample(dim: int) -> nn.Module:
    """MindSpore ``Conv2d(dim, dim, 4, 2, pad_mode="pad", padding=1)``: no bias."""
    return nn.Conv2d(dim, dim, 4, 2, padding=1, bias=False)


class SinusoidalPositionEmbeddings(nn.Module):
    """Frequencies computed in float64 numpy and cast to float32, as in the tutorial."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        half_dim = dim // 2
        emb = math.log(10000) / (half_dim - 1)
        emb = np.exp(np.arange(half_dim) * -emb)
        self.register_buffer("emb", torch.from_numpy(emb.astype(np.float32)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = x[:, None].to(self.emb.dtype) * self.emb[None, :]
        return torch.cat((torch.sin(emb), torch.cos(emb)), dim=-1)


class Block(nn.Module):
    """Conv -> GroupNorm -> (scale, shift) -> SiLU; the tutorial's ResNet ``Block``."""

    def __init__(self, dim: int, dim_out: int, groups: int = 1):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim_out, 3, padding=1, bias=False)
        self.norm = group_norm(groups, dim_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        x = self.norm(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return self.act(x)


class ResnetBlock(nn.Module):
    """The ResNet alternative the tutorial offers: two ``Block``s with the time embedding added between."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int | None = None, groups: int = 8):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out)) if time_emb_dim is not None else None
        self.block1 = Block(dim, dim_out, groups=groups)
        self.block2 = Block(dim_out, dim_out, groups=groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1, bias=False) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.mlp is not None and time_emb is not None:
            h = self.mlp(time_emb)[:, :, None, None] + h
        h = self.block2(h)
        return h + self.res_conv(x)


class ConvNextBlock(nn.Module):
    """The tutorial's block: depthwise 7x7, time condition added, then norm/conv/GELU/norm/conv."""

    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int | None = None, mult: int = 2, norm: bool = True):
        super().__init__()
        self.mlp = nn.Sequential(gelu(), nn.Linear(time_emb_dim, dim)) if time_emb_dim is not None else None
        self.ds_conv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=False)
        self.net = nn.Sequential(
            group_norm(1, dim) if norm else nn.Identity(),
            nn.Conv2d(dim, dim_out * mult, 3, padding=1, bias=False),
            gelu(),
            group_norm(1, dim_out * mult),
            nn.Conv2d(dim_out * mult, dim_out, 3, padding=1, bias=False),
        )
        self.res_conv = nn.Conv2d(dim, dim_out, 1, bias=False) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ds_conv(x)
        if self.mlp is not None and time_emb is not None:
            h = h + self.mlp(time_emb)[:, :, None, None]
        h = self.net(h)
        return h + self.res_conv(x)


class Attention(nn.Module):
    """Multi-head softmax self-attention over the h*w positions."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dim_head: int = ATTENTION_DIM_HEAD):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden_dim, dim, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (rearrange(self.heads, part) for part in self.to_qkv(x).chunk(3, dim=1))
        q = q * self.scale
        sim = torch.matmul(q.transpose(2, 3), k)  # (b, heads, i, j)
        attn = torch.softmax(sim, dim=-1)
        out = torch.matmul(attn, v.transpose(2, 3))  # (b, heads, i, d)
        out = out.transpose(-1, -2).reshape(b, -1, h, w)
        return self.to_out(out)


class LayerNorm(nn.Module):
    """Channel LayerNorm: population variance (ddof=0), eps 1e-5, a gain ``g`` and no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = torch.var(x, dim=1, keepdim=True, correction=0)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) * torch.reciprocal(torch.sqrt(var + LAYER_NORM_EPS)) * self.g


class LinearAttention(nn.Module):
    """Linear attention; ``v`` is divided by h*w as in the tutorial."""

    def __init__(self, dim: int, heads: int = ATTENTION_HEADS, dim_head: int = ATTENTION_DIM_HEAD):
        super().__init__()
        self.scale = dim_head**-0.5
        self.heads = heads
        hidden_dim = dim_head * heads
        self.to_qkv = nn.Conv2d(dim, hidden_dim * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden_dim, dim, 1, bias=True), LayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (rearrange(self.heads, part) for part in self.to_qkv(x).chunk(3, dim=1))
        q = torch.softmax(q, dim=-2)
        k = torch.softmax(k, dim=-1)
        q = q * self.scale
        v = v / (h * w)
        context = torch.matmul(k, v.transpose(2, 3))  # (b, heads, d, e)
        out = torch.matmul(context.transpose(2, 3), q)  # (b, heads, e, n)
        out = out.reshape(b, -1, h, w)
        return self.to_out(out)


class PreNorm(nn.Module):
    """GroupNorm(1, dim) before ``fn``."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = group_norm(1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))
