"""The tutorial's building blocks as float64 functions, one per module class of the twins
(ddpm_torch/layers.py, ddpm_ms/layers.py), each taking the ``Node`` of its module.

Every MindSpore default the tutorial relies on is spelled out here, where it is used:
  * ``nn.GELU()`` is the tanh approximation (PyTorch's default is the exact erf form);
  * ``nn.GroupNorm(groups, c)`` has eps 1e-5 and an affine weight/bias (``gamma``/``beta`` there);
  * ``nn.Conv2d``/``nn.Conv2dTranspose`` have no bias unless ``has_bias=True`` (the tutorial sets it
    only for ``init_conv`` and the attention ``to_out`` convolutions); ``nn.Dense`` has one;
  * the tutorial's channel ``LayerNorm`` uses ``Tensor.var``'s population variance (ddof 0), eps 1e-5,
    a gain ``g`` and no bias;
  * ``nn.SiLU`` is x * sigmoid(x); softmax is the plain one.

A ``Node`` is one module of the U-Net: its path (the name ``named_modules()`` gives it in the PyTorch
twin), the weights under that path, and the recorder that sees the module's output. Each function below
returns through ``m.output(y)``, after its children have returned through theirs: the order in which
PyTorch's forward hooks fire.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

from ddpm_core.config import ATTENTION_DIM_HEAD, ATTENTION_HEADS
from ddpm_core.reference import ops

GROUP_NORM_EPS = 1e-5
"""MindSpore ``nn.GroupNorm``'s default eps (PyTorch's is the same)."""
LAYER_NORM_EPS = 1e-5
"""The tutorial's ``LayerNorm.construct``: ``eps = 1e-5``."""

RecordHook = Callable[[str, np.ndarray], None]


class Node:
    """One module: ``m / "net"`` is its child ``net``, ``m["weight"]`` its parameter, ``m.output(y)`` records
    ``y`` as its output (if a recorder was given) and returns it."""

    __slots__ = ("path", "weights", "record")

    def __init__(self, weights: Mapping[str, np.ndarray], path: str = "", record: RecordHook | None = None):
        self.path, self.weights, self.record = path, weights, record

    def __truediv__(self, child: str | int) -> "Node":
        return Node(self.weights, f"{self.path}.{child}" if self.path else str(child), self.record)

    def __getitem__(self, leaf: str) -> np.ndarray:
        return self.weights[f"{self.path}.{leaf}"]

    def output(self, y: np.ndarray) -> np.ndarray:
        if self.record is not None:
            self.record(self.path, y)
        return y


Layer = Callable[[Node, np.ndarray], np.ndarray]


# ---------------------------------------------------------------- single layers

def identity(m: Node, x: np.ndarray) -> np.ndarray:
    """``nn.Identity``: PyTorch calls it (and fires its hook), so it is recorded too."""
    return m.output(x)


def conv(m: Node, x: np.ndarray, *, stride: int = 1, padding: int = 0, bias: bool = False) -> np.ndarray:
    """``nn.Conv2d``; MindSpore's ``has_bias`` defaults to False. 1x1 convolutions are the same in
    ``pad_mode="same"`` (MindSpore's default) and ``"valid"``."""
    y = ops.conv2d(x, m["weight"], stride=stride, padding=padding)
    if bias:
        y = y + m["bias"].reshape(1, -1, 1, 1)
    return m.output(y)


def depthwise_conv(m: Node, x: np.ndarray, *, padding: int) -> np.ndarray:
    """``nn.Conv2d(dim, dim, k, group=dim)``, no bias."""
    return m.output(ops.depthwise_conv2d(x, m["weight"], padding=padding))


def dense(m: Node, x: np.ndarray) -> np.ndarray:
    """``nn.Dense`` / ``nn.Linear`` (with bias, the default of both)."""
    return m.output(ops.linear(x, m["weight"], m["bias"]))


def group_norm(m: Node, x: np.ndarray, *, groups: int) -> np.ndarray:
    return m.output(ops.group_norm(x, groups, m["weight"], m["bias"], eps=GROUP_NORM_EPS))


def gelu(m: Node, x: np.ndarray) -> np.ndarray:
    """MindSpore ``nn.GELU()`` = ``approximate=True``: the tanh form."""
    return m.output(ops.gelu_tanh(x))


def silu(m: Node, x: np.ndarray) -> np.ndarray:
    return m.output(ops.silu(x))


def sequential(m: Node, x: np.ndarray, *layers: Layer) -> np.ndarray:
    """``nn.SequentialCell`` / ``nn.Sequential``: child ``i`` is ``layers[i]``; the container is a module too."""
    for i, layer in enumerate(layers):
        x = layer(m / i, x)
    return m.output(x)


def upsample(m: Node, x: np.ndarray) -> np.ndarray:
    """``Conv2dTranspose(dim, dim, 4, 2, pad_mode="pad", padding=1)``, no bias: (b, c, h, w) -> (b, c, 2h, 2w)."""
    return m.output(ops.conv_transpose2d(x, m["weight"], stride=2, padding=1))


def downsample(m: Node, x: np.ndarray) -> np.ndarray:
    """``Conv2d(dim, dim, 4, 2, pad_mode="pad", padding=1)``, no bias: (b, c, h, w) -> (b, c, h/2, w/2)."""
    return conv(m, x, stride=2, padding=1)


def sinusoidal_embedding(m: Node, t: np.ndarray, *, dim: int) -> np.ndarray:
    """``SinusoidalPositionEmbeddings(dim)``: t (b,) -> (b, dim) = [sin(t f), cos(t f)] with
    f_i = exp(-i log(10000) / (dim/2 - 1)), i < dim/2. The tutorial computes f in float64 numpy and stores
    it as a float32 Tensor: those float32 values are the frequencies; t * f is then computed in float64."""
    half = dim // 2
    freqs = np.exp(np.arange(half) * -(math.log(10000) / (half - 1))).astype(np.float32).astype(np.float64)
    angles = t.astype(np.float64)[:, None] * freqs[None, :]  # (b, dim/2)
    return m.output(np.concatenate([np.sin(angles), np.cos(angles)], axis=-1))  # (b, dim)


# ---------------------------------------------------------------- blocks

def res_conv(m: Node, x: np.ndarray, dim_out: int) -> np.ndarray:
    """A block's shortcut: ``Conv2d(dim, dim_out, 1)`` (no bias) if dim != dim_out, else ``Identity``."""
    return conv(m, x) if x.shape[1] != dim_out else identity(m, x)


def convnext_block(m: Node, x: np.ndarray, time_emb: np.ndarray | None) -> np.ndarray:
    """``ConvNextBlock(dim, dim_out, time_emb_dim, mult)``: (b, dim, h, w) -> (b, dim_out, h, w).
    The block has an ``mlp`` (GELU, Dense(time_dim, dim)) exactly when it was built with a time embedding;
    the final block (``final_conv.0``) is built without one and called without one."""
    h = depthwise_conv(m / "ds_conv", x, padding=3)  # (b, dim, h, w): 7x7, one kernel per channel
    if time_emb is not None:
        condition = sequential(m / "mlp", time_emb, gelu, dense)  # (b, dim)
        h = h + condition[:, :, None, None]
    h = sequential(m / "net", h,
                   lambda n, y: group_norm(n, y, groups=1),  # norm=True: the tutorial never passes False
                   lambda n, y: conv(n, y, padding=1),  # (b, dim_out * mult, h, w)
                   gelu,
                   lambda n, y: group_norm(n, y, groups=1),
                   lambda n, y: conv(n, y, padding=1))  # (b, dim_out, h, w)
    return m.output(h + res_conv(m / "res_conv", x, h.shape[1]))


def block(m: Node, x: np.ndarray, *, groups: int) -> np.ndarray:
    """The tutorial's ResNet ``Block``: 3x3 conv (no bias) -> GroupNorm(groups) -> SiLU. Its ``scale_shift``
    argument is never passed by ``ResnetBlock``, so it does not appear here."""
    x = conv(m / "proj", x, padding=1)
    x = group_norm(m / "norm", x, groups=groups)
    return m.output(silu(m / "act", x))


def resnet_block(m: Node, x: np.ndarray, time_emb: np.ndarray | None, *, groups: int) -> np.ndarray:
    """``ResnetBlock(dim, dim_out, time_emb_dim, groups)``: two ``Block``s, the time condition
    (SiLU, Dense(time_dim, dim_out)) added between them: (b, dim, h, w) -> (b, dim_out, h, w)."""
    h = block(m / "block1", x, groups=groups)
    if time_emb is not None:
        h = sequential(m / "mlp", time_emb, silu, dense)[:, :, None, None] + h
    h = block(m / "block2", h, groups=groups)
    return m.output(h + res_conv(m / "res_conv", x, h.shape[1]))


# ---------------------------------------------------------------- attention

def split_heads(qkv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``to_qkv(x).chunk(3, 1)`` then the tutorial's ``rearrange``: (b, 3 heads d, h, w) -> three
    (b, heads, d, h*w)."""
    b, _, h, w = qkv.shape
    return tuple(part.reshape(b, ATTENTION_HEADS, ATTENTION_DIM_HEAD, h * w) for part in np.split(qkv, 3, axis=1))


def attention(m: Node, x: np.ndarray) -> np.ndarray:
    """``Attention(dim)``: softmax self-attention over the h*w positions, 4 heads of 32:
    (b, dim, h, w) -> (b, dim, h, w)."""
    b, _, h, w = x.shape
    q, k, v = split_heads(conv(m / "to_qkv", x))  # (b, heads, d, n) each
    q = q * ATTENTION_DIM_HEAD**-0.5
    sim = q.transpose(0, 1, 3, 2) @ k  # (b, heads, i, j)
    attn = ops.softmax(sim, axis=-1)
    out = attn @ v.transpose(0, 1, 3, 2)  # (b, heads, i, d)
    out = out.transpose(0, 1, 3, 2).reshape(b, -1, h, w)  # (b, heads d, h, w)
    return m.output(conv(m / "to_out", out, bias=True))


def layer_norm(m: Node, x: np.ndarray) -> np.ndarray:
    """The tutorial's channel ``LayerNorm(dim)`` (not ``nn.LayerNorm``)."""
    return m.output(ops.channel_layer_norm(x, m["g"], eps=LAYER_NORM_EPS))


def linear_attention(m: Node, x: np.ndarray) -> np.ndarray:
    """``LinearAttention(dim)``: q softmaxed over its feature axis d, k over the positions n, v divided by h*w;
    context (b, heads, d, e) = k v^T, out = context^T q. (b, dim, h, w) -> (b, dim, h, w)."""
    b, _, h, w = x.shape
    q, k, v = split_heads(conv(m / "to_qkv", x))  # (b, heads, d, n) each
    q = ops.softmax(q, axis=-2)
    k = ops.softmax(k, axis=-1)
    q = q * ATTENTION_DIM_HEAD**-0.5
    v = v / (h * w)
    context = k @ v.transpose(0, 1, 3, 2)  # (b, heads, d, e)
    out = context.transpose(0, 1, 3, 2) @ q  # (b, heads, e, n)
    out = out.reshape(b, -1, h, w)  # (b, heads e, h, w)
    return m.output(sequential(m / "to_out", out, lambda n, y: conv(n, y, bias=True), layer_norm))


def pre_norm(m: Node, x: np.ndarray, fn: Layer) -> np.ndarray:
    """``PreNorm(dim, fn)``: GroupNorm(1, dim), then ``fn``."""
    return m.output(fn(m / "fn", group_norm(m / "norm", x, groups=1)))


def residual(m: Node, x: np.ndarray, fn: Layer) -> np.ndarray:
    """``Residual(fn)``: fn(x) + x."""
    return m.output(fn(m / "fn", x) + x)
