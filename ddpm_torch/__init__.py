"""A faithful PyTorch port of the MindSpore "Diffusion Model" tutorial's U-Net and DDPM math.

Mirrors ``ddpm_ms`` module for module and name for name; where MindSpore's defaults differ from
PyTorch's, this package reproduces MindSpore's behaviour explicitly (docs/porting.md).
"""
from ddpm_torch.diffusion import GaussianDiffusion
from ddpm_torch.layers import (
    Attention,
    Block,
    ConvNextBlock,
    Downsample,
    LayerNorm,
    LinearAttention,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPositionEmbeddings,
    Upsample,
)
from ddpm_torch.unet import Unet

__all__ = [
    "Attention", "Block", "ConvNextBlock", "Downsample", "GaussianDiffusion", "LayerNorm", "LinearAttention",
    "PreNorm", "Residual", "ResnetBlock", "SinusoidalPositionEmbeddings", "Unet", "Upsample",
]
