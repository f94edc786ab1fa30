"""The tutorial's conditional U-Net as a float64 numpy function of PyTorch-named weights: the executable
specification both twins (ddpm_torch/unet.py, ddpm_ms/unet.py) are held to.

Shapes for the tutorial's ``Unet(dim=28, channels=1, dim_mults=(1, 2, 4))`` on 28x28 images:
dims = [init_dim, dim*1, dim*2, dim*4] = [18, 28, 56, 112] (init_dim = dim // 3 * 2), time_dim = 4 dim = 112.

    x (b, 1, 28, 28) --init_conv 7x7--> (b, 18, 28, 28);   t (b,) --time_mlp--> (b, 112)
    downs.0: 18 -> 28 at 28x28, skip h[0], Downsample -> 14x14
    downs.1: 28 -> 56 at 14x14, skip h[1], Downsample -> 7x7
    downs.2: 56 -> 112 at 7x7,  skip h[2], Identity (the last level does not downsample)
    mid: block 112, Attention, block 112 at 7x7
    ups.0: cat(x, h[2]) 224 -> 56 at 7x7,   Upsample -> 14x14
    ups.1: cat(x, h[1]) 112 -> 28 at 14x14, Upsample -> 28x28
    final_conv: block 28 -> 28 (no time embedding), 1x1 conv 28 -> out_dim = channels

The tutorial's quirk, reproduced (as the twins do): the up path iterates ``reversed(in_out[1:])`` with
``is_last = ind >= num_resolutions - 1``, which is never true, so every up stage upsamples and the first
down stage's skip ``h[0]`` is never used. Each down stage: block, block, Residual(PreNorm(LinearAttention)),
Downsample; each up stage the same with Upsample.
"""
from __future__ import annotations

from functools import partial
from typing import Mapping

import numpy as np

from ddpm_core.config import UnetConfig, check_unet_input
from ddpm_core.reference.layers import (
    Node,
    RecordHook,
    attention,
    conv,
    convnext_block,
    dense,
    downsample,
    gelu,
    identity,
    linear_attention,
    pre_norm,
    residual,
    resnet_block,
    sequential,
    sinusoidal_embedding,
    upsample,
)
from ddpm_core.weights.converter import check_weights


class ReferenceUnet:
    """``Unet(cfg)`` holding float64 copies of ``weights`` ({PyTorch name: array}, strictly the parameters
    ``ddpm_core.weights.naming.unet_parameters(cfg)`` lists: a missing, extra or mis-shaped key is a ``ValueError``
    naming it). Calling it computes the noise prediction in float64."""

    def __init__(self, cfg: UnetConfig, weights: Mapping[str, np.ndarray]):
        check_weights(weights, cfg, "torch")  # WeightsError, a ValueError, one line per offending key
        self.config = cfg
        self._weights = {name: np.array(value, dtype=np.float64) for name, value in weights.items()}
        if cfg.use_convnext:
            self._block = convnext_block  # convnext_mult is in the weights: net.1 maps dim -> dim_out * mult
        else:
            self._block = partial(resnet_block, groups=cfg.resnet_block_groups)

    def state(self) -> dict[str, np.ndarray]:
        """The weights, float64 copies, PyTorch names."""
        return {name: value.copy() for name, value in self._weights.items()}

    def __call__(self, x: np.ndarray, t: np.ndarray | None = None, record: RecordHook | None = None) -> np.ndarray:
        """eps(x, t): x (b, channels, h, w) of any float dtype, t (b,) integers (None only for a model without
        time embedding) -> float64 (b, out_dim, h, w). ``record(path, output)``, if given, is called for every
        module call with PyTorch's module path ('' for the whole model), in the order PyTorch's forward hooks
        fire."""
        x, t = np.asarray(x), None if t is None else np.asarray(t)
        check_unet_input(self.config, x.shape, None if t is None else t.shape)
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"x must be a floating-point array, got {x.dtype}")
        if t is not None and not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"timesteps t must be an integer array, got {t.dtype}")
        root = Node(self._weights, "", record)
        return root.output(self._forward(root, x.astype(np.float64), t))

    def _forward(self, root: Node, x: np.ndarray, t: np.ndarray | None) -> np.ndarray:
        cfg, block = self.config, self._block
        x = conv(root / "init_conv", x, padding=3, bias=True)  # (b, init_dim, h, w): 7x7 with bias
        time_emb = None
        if cfg.with_time_emb:
            time_emb = sequential(root / "time_mlp", t,
                                  partial(sinusoidal_embedding, dim=cfg.dim),  # (b, dim)
                                  dense,  # (b, 4 dim)
                                  gelu,
                                  dense)  # (b, 4 dim)

        levels = len(cfg.in_out)
        skips = []
        for i in range(levels):  # in_out[i] = (dims[i], dims[i+1])
            stage = root / "downs" / i
            x = block(stage / 0, x, time_emb)  # (b, dims[i+1], h, w)
            x = block(stage / 1, x, time_emb)
            x = residual(stage / 2, x, partial(pre_norm, fn=linear_attention))
            skips.append(x)
            x = downsample(stage / 3, x) if i < levels - 1 else identity(stage / 3, x)

        x = block(root / "mid_block1", x, time_emb)
        x = residual(root / "mid_attn", x, partial(pre_norm, fn=attention))
        x = block(root / "mid_block2", x, time_emb)

        for i in range(levels - 1):  # reversed(in_out[1:]): one stage fewer than the down path
            stage = root / "ups" / i
            x = np.concatenate([x, skips[levels - 1 - i]], axis=1)  # (b, 2 dims[L-i], h, w); skips[0] unused
            x = block(stage / 0, x, time_emb)  # (b, dims[L-1-i], h, w)
            x = block(stage / 1, x, time_emb)
            x = residual(stage / 2, x, partial(pre_norm, fn=linear_attention))
            x = upsample(stage / 3, x)  # every up stage upsamples (the quirk): (b, c, 2h, 2w)

        return sequential(root / "final_conv", x,
                          lambda m, y: block(m, y, None),  # block(dim, dim), built without a time embedding
                          conv)  # (b, out_dim, h, w): 1x1, no bias
