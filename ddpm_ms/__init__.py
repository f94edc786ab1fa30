"""The MindSpore "Diffusion Model" tutorial's U-Net and DDPM math as a library.

Importing this package sets ``ONEDNN_MAX_CPU_ISA=AVX2`` (unless already set; ``ddpm_core.runtime.environment``)
before MindSpore runs any kernel: MindSpore 2.10's CPU convolutions are 25-60x slower under oneDNN's default
instruction set on AVX-512/AMX processors (docs/performance.md). Set the variable yourself to
override it.
"""
from ddpm_core.runtime.environment import pin_isa

pin_isa()  # before MindSpore runs a kernel

from ddpm_core.runtime.frameworks import require  # noqa: E402

require("mindspore")  # without MindSpore: one line naming the extra to install (ddpm_core.runtime.frameworks)

from ddpm_ms.diffusion import GaussianDiffusion  # noqa: E402
from ddpm_ms.layers import (  # noqa: E402
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
from ddpm_ms.unet import Unet  # noqa: E402

__all__ = [
    "Attention", "Block", "ConvNextBlock", "Downsample", "GaussianDiffusion", "LayerNorm", "LinearAttention",
    "PreNorm", "Residual", "ResnetBlock", "SinusoidalPositionEmbeddings", "Unet", "Upsample",
]
