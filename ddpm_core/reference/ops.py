"""The numeric primitives of the specification, in float64 numpy, each the textbook definition of one
framework operator, with no framework default hidden in it: every epsilon, padding and group count is
an argument that ``layers.py`` spells out where the tutorial uses it.

Layouts are PyTorch's (and MindSpore's; they agree, docs/weights.md): images (b, c, h, w), Conv2d
weights (c_out, c_in / groups, kh, kw), ConvTranspose2d weights (c_in, c_out, kh, kw), Linear/Dense
weights (out, in). "Convolution" means cross-correlation, as in both frameworks (no kernel flip).

Rule: each function guarantees its result to float64 rounding of its definition; speed comes from
handing the sums to BLAS (one matmul over ``sliding_window_view`` windows copied as im2col columns),
never from a rearrangement of the math.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["conv2d", "depthwise_conv2d", "conv_transpose2d", "linear", "group_norm", "channel_layer_norm",
           "gelu_tanh", "silu", "softmax"]


def _pad(x: np.ndarray, padding: int) -> np.ndarray:
    """Zeros on all four sides of the image (MindSpore ``pad_mode="pad"``, PyTorch ``padding=p``)."""
    return np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Dense 2-D convolution without bias: (b, c, h, w), weight (o, c, k, k) -> (b, o, h', w') with
    h' = (h + 2 padding - k) // stride + 1:  y[b, o, i, j] = sum_{c,u,v} x_pad[b, c, s i + u, s j + v] w[o, c, u, v]."""
    o, c, kh, kw = weight.shape
    windows = sliding_window_view(_pad(x, padding), (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    # windows: (b, c, h', w', kh, kw), a view; im2col copies it as columns (c kh kw, b h' w') for one matmul
    b, _, h, w = windows.shape[:4]
    columns = np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3)).reshape(c * kh * kw, b * h * w)
    y = weight.reshape(o, c * kh * kw) @ columns  # (o, b h' w')
    return np.ascontiguousarray(y.reshape(o, b, h, w).transpose(1, 0, 2, 3))  # (b, o, h', w')


def depthwise_conv2d(x: np.ndarray, weight: np.ndarray, padding: int) -> np.ndarray:
    """Grouped convolution with groups == channels (each channel filtered by its own kernel), stride 1,
    no bias: (b, c, h, w), weight (c, 1, k, k) -> (b, c, h', w');
    y[b, c, i, j] = sum_{u,v} x_pad[b, c, i + u, j + v] w[c, 0, u, v]."""
    k = weight.shape[-1]
    xp = _pad(x, padding)
    h, w = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    y = np.zeros((x.shape[0], x.shape[1], h, w))
    for u in range(k):  # k*k shifted copies of the image, each scaled per channel
        for v in range(k):
            y += weight[None, :, 0, u, v, None, None] * xp[:, :, u:u + h, v:v + w]
    return y


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Transposed convolution without bias: (b, c, h, w), weight (c, o, k, k) -> (b, o, h', w') with
    h' = (h - 1) stride - 2 padding + k. By definition: input pixel (i, j) adds x[b, c, i, j] w[c, o, u, v]
    to output position (stride i + u - padding, stride j + v - padding); positions outside are dropped."""
    b, _, h, w = x.shape
    k = weight.shape[-1]
    patches = np.tensordot(x, weight, axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2)  # (b, o, k, k, h, w)
    full = np.zeros((b, weight.shape[1], stride * (h - 1) + k, stride * (w - 1) + k))  # before cropping the padding
    for u in range(k):
        for v in range(k):
            full[:, :, u:u + stride * (h - 1) + 1:stride, v:v + stride * (w - 1) + 1:stride] += patches[:, :, u, v]
    out_h, out_w = stride * (h - 1) - 2 * padding + k, stride * (w - 1) - 2 * padding + k
    return full[:, :, padding:padding + out_h, padding:padding + out_w]


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """PyTorch ``nn.Linear`` / MindSpore ``nn.Dense``: (b, in), weight (out, in), bias (out,) -> (b, out)."""
    return x @ weight.T + bias


def group_norm(x: np.ndarray, groups: int, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """GroupNorm: channels split into ``groups`` consecutive groups, each normalised over (its channels, h, w)
    with the population variance, then a per-channel affine: (b, c, h, w) -> (b, c, h, w)."""
    b, c = x.shape[:2]
    g = x.reshape(b, groups, -1)  # (b, groups, c/groups * h * w)
    mean = g.mean(axis=-1, keepdims=True)
    var = g.var(axis=-1, keepdims=True)  # ddof 0
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return y * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)


def channel_layer_norm(x: np.ndarray, g: np.ndarray, eps: float) -> np.ndarray:
    """The tutorial's ``LayerNorm``: normalise over the channel axis alone (population variance), multiply by
    the gain ``g`` (1, c, 1, 1); no bias. (b, c, h, w) -> (b, c, h, w)."""
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)  # ddof 0: MindSpore's Tensor.var default
    return (x - mean) * (1.0 / np.sqrt(var + eps)) * g


GELU_TANH_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    (x * x * x, not x**3: numpy's float power is 15x slower here)."""
    return 0.5 * x * (1.0 + np.tanh(GELU_TANH_C * (x + 0.044715 * x * x * x)))


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU x * sigmoid(x), with sigmoid(x) written as (1 + tanh(x/2)) / 2 (equal, and never overflows)."""
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """exp(x) / sum(exp(x)) along ``axis`` (shifted by the max first, which changes nothing but overflow)."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
