"""The tutorial's conditional U-Net in MindSpore; mirrors ddpm_torch/unet.py.

Compatibility contract: with the tutorial's arguments, the parameter names, shapes and outputs
are those of the tutorial's ``Unet`` after its rename loop, so ``ms.save_checkpoint`` files of
the tutorial load here unchanged.

Reproduced quirk of the tutorial (documented, not fixed): the up path iterates
``reversed(in_out[1:])`` with ``is_last = ind >= num_resolutions - 1``, which is never true,
so every up stage upsamples, and the first down stage's skip output ``h[0]`` is never used.
"""
from __future__ import annotations

from functools import partial

import mindspore as ms
from mindspore import nn, ops

from ddpm_core.config import UnetConfig, check_unet_input
from ddpm_ms.layers import (
    Attention,
    ConvNextBlock,
    Downsample,
    LinearAttention,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPositionEmbeddings,
    Upsample,
    compose_ops,
    gelu,
)

INTEGER_DTYPES = (ms.int8, ms.int16, ms.int32, ms.int64, ms.uint8)


class Unet(nn.Cell):
    """``Unet(dim, init_dim, out_dim, dim_mults, channels, with_time_emb, convnext_mult)`` as in the tutorial;
    ``use_convnext=False`` selects the ResNet blocks with ``resnet_block_groups`` groups."""

    def __init__(
        self,
        dim: int,
        init_dim: int | None = None,
        out_dim: int | None = None,
        dim_mults: tuple[int, ...] = (1, 2, 4, 8),
        channels: int = 3,
        with_time_emb: bool = True,
        convnext_mult: int = 2,
        *,
        use_convnext: bool = True,
        resnet_block_groups: int = 8,
        composed_ops: bool = False,
    ):
        super().__init__()
        cfg = UnetConfig(dim, init_dim, out_dim, tuple(dim_mults), channels, with_time_emb, convnext_mult,
                         use_convnext, resnet_block_groups)
        self.config = cfg
        self.channels = channels

        init_dim = cfg.resolved_init_dim
        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3, pad_mode="pad", has_bias=True)

        in_out = cfg.in_out
        if use_convnext:
            block_klass = partial(ConvNextBlock, mult=convnext_mult)
        else:
            block_klass = partial(ResnetBlock, groups=resnet_block_groups)

        time_dim = cfg.time_dim
        if with_time_emb:
            self.time_mlp = nn.SequentialCell(
                SinusoidalPositionEmbeddings(dim),
                nn.Dense(dim, time_dim),
                gelu(),
                nn.Dense(time_dim, time_dim),
            )
        else:
            self.time_mlp = None

        self.downs = nn.CellList([])
        self.ups = nn.CellList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)
            self.downs.append(
                nn.CellList(
                    [
                        block_klass(dim_in, dim_out, time_emb_dim=time_dim),
                        block_klass(dim_out, dim_out, time_emb_dim=time_dim),
                        Residual(PreNorm(dim_out, LinearAttention(dim_out))),
                        Downsample(dim_out) if not is_last else nn.Identity(),
                    ]
                )
            )

        mid_dim = cfg.dims[-1]
        self.mid_block1 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)
        self.mid_attn = Residual(PreNorm(mid_dim, Attention(mid_dim)))
        self.mid_block2 = block_klass(mid_dim, mid_dim, time_emb_dim=time_dim)

        for ind, (dim_in, dim_out) in enumerate(reversed(in_out[1:])):
            is_last = ind >= (num_resolutions - 1)  # never true: the tutorial's quirk, kept
            self.ups.append(
                nn.CellList(
                    [
                        block_klass(dim_out * 2, dim_in, time_emb_dim=time_dim),
                        block_klass(dim_in, dim_in, time_emb_dim=time_dim),
                        Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                        Upsample(dim_in) if not is_last else nn.Identity(),
                    ]
                )
            )

        self.final_conv = nn.SequentialCell(
            block_klass(dim, dim), nn.Conv2d(dim, cfg.resolved_out_dim, 1, has_bias=False)
        )
        self.use_structural_names()
        if composed_ops:  # MindSpore only: GELU and GroupNorm from primitive ops (layers.compose_ops)
            compose_ops(self)

    def use_structural_names(self) -> None:
        """Name every parameter by its structural path (``downs.0.0.mlp.1.weight``), as the tutorial's
        rename loop does: ``nn.CellList`` names its children by index alone, so ``downs`` and ``ups``
        would otherwise both hold ``0.0.mlp.1.weight``."""
        for name, param in self.parameters_and_names():
            param.name = name

    @classmethod
    def from_config(cls, cfg: UnetConfig, composed_ops: bool = False) -> "Unet":
        return cls(**cfg.to_dict(), composed_ops=composed_ops)

    def construct(self, x, time=None):
        check_unet_input(self.config, x.shape, None if time is None else time.shape)
        if x.dtype != self.init_conv.weight.dtype:
            raise ValueError(f"x is {x.dtype} but the model's weights are {self.init_conv.weight.dtype}")
        if time is not None and time.dtype not in INTEGER_DTYPES:
            raise ValueError(f"timesteps t must be an integer tensor, got {time.dtype}")
        x = self.init_conv(x)
        t = self.time_mlp(time) if self.time_mlp is not None else None
        h = []
        for block1, block2, attn, downsample in self.downs:
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            h.append(x)
            x = downsample(x)

        x = self.mid_block1(x, t)
        x = self.mid_attn(x)
        x = self.mid_block2(x, t)

        len_h = len(h) - 1
        for block1, block2, attn, upsample in self.ups:
            x = ops.concat((x, h[len_h]), 1)
            len_h -= 1
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            x = upsample(x)
        return self.final_conv(x)
