"""The tutorial's conditional U-Net in PyTorch; mirrors ddpm_ms/unet.py.

Reproduced quirk of the tutorial (documented, not fixed): the up path iterates
``reversed(in_out[1:])`` with ``is_last = ind >= num_resolutions - 1``, which is never true,
so every up stage upsamples, and the first down stage's skip output ``h[0]`` is never used.
"""
from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ddpm_core.config import UnetConfig, check_unet_input
from ddpm_torch.layers import (
    Attention,
    ConvNextBlock,
    Downsample,
    LinearAttention,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPositionEmbeddings,
    Upsample,
    gelu,
)

INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


class Unet(nn.Module):
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
    ):
        super().__init__()
        cfg = UnetConfig(dim, init_dim, out_dim, tuple(dim_mults), channels, with_time_emb, convnext_mult,
                         use_convnext, resnet_block_groups)
        self.config = cfg
        self.channels = channels

        init_dim = cfg.resolved_init_dim
        self.init_conv = nn.Conv2d(channels, init_dim, 7, padding=3, bias=True)

        in_out = cfg.in_out
        if use_convnext:
            block_klass = partial(ConvNextBlock, mult=convnext_mult)
        else:
            block_klass = partial(ResnetBlock, groups=resnet_block_groups)

        time_dim = cfg.time_dim
        if with_time_emb:
            self.time_mlp = nn.Sequential(
                SinusoidalPositionEmbeddings(dim),
                nn.Linear(dim, time_dim),
                gelu(),
                nn.Linear(time_dim, time_dim),
            )
        else:
            self.time_mlp = None

        self.downs = nn.ModuleList([])
        self.ups = nn.ModuleList([])
        num_resolutions = len(in_out)

        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= (num_resolutions - 1)
            self.downs.append(
                nn.ModuleList(
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
                nn.ModuleList(
                    [
                        block_klass(dim_out * 2, dim_in, time_emb_dim=time_dim),
                        block_klass(dim_in, dim_in, time_emb_dim=time_dim),
                        Residual(PreNorm(dim_in, LinearAttention(dim_in))),
                        Upsample(dim_in) if not is_last else nn.Identity(),
                    ]
                )
            )

        self.final_conv = nn.Sequential(
            block_klass(dim, dim), nn.Conv2d(dim, cfg.resolved_out_dim, 1, bias=False)
        )

    @classmethod
    def from_config(cls, cfg: UnetConfig) -> "Unet":
        return cls(**cfg.to_dict())

    def forward(self, x: torch.Tensor, time: torch.Tensor | None = None) -> torch.Tensor:
        check_unet_input(self.config, tuple(x.shape), None if time is None else tuple(time.shape))
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
            x = torch.cat((x, h[len_h]), dim=1)
            len_h -= 1
            x = block1(x, t)
            x = block2(x, t)
            x = attn(x)
            x = upsample(x)
        return self.final_conv(x)
