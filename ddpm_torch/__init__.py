"""A faithful PyTorch port of the MindSpore "Diffusion Model" tutorial's U-Net and DDPM math.

Mirrors ``ddpm_ms`` module for module and name for name; where MindSpore's defaults differ from
PyTorch's, this package reproduces MindSpore's behaviour explicitly (docs/porting.md).

Importing this package lowers PyTorch's intra-op threads to the cores other processes leave free
(``ddpm_core.runtime.environment.default_threads``), unless ``OMP_NUM_THREADS`` is set: on a busy machine
PyTorch's default of one thread per core ran 3-4x slower (docs/training.md, "Threads").
"""
from ddpm_core.runtime.frameworks import require

require("torch")  # without PyTorch: one line naming the extra to install (ddpm_core.runtime.frameworks)

from ddpm_core.runtime.environment import lower_torch_threads  # noqa: E402

lower_torch_threads()

from ddpm_torch.diffusion import GaussianDiffusion  # noqa: E402
from ddpm_torch.layers import (  # noqa: E402
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
from ddpm_torch.unet import Unet  # noqa: E402

__all__ = [
    "Attention", "Block", "ConvNextBlock", "Downsample", "GaussianDiffusion", "LayerNorm", "LinearAttention",
    "PreNorm", "Residual", "ResnetBlock", "SinusoidalPositionEmbeddings", "Unet", "Upsample",
]
