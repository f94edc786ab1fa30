"""The executable specification of the tutorial's model: its U-Net and its DDPM/DDIM math in float64
numpy, framework-free, written to be read. A porter learns the model here; the twins (ddpm_torch,
ddpm_ms) are held to it, and the parity harness measures each twin's distance from it.

Read in this order:
  ops.py        the numeric primitives (convolutions, norms, activations) as textbook definitions
  layers.py     one function per module class of the twins, every MindSpore default spelled out
  unet.py       ``ReferenceUnet``: the tutorial's U-Net, its up-path quirk reproduced
  diffusion.py  ``ReferenceDiffusion``: q_sample, the losses, the ancestral step and loop, DDIM

Rules: importing this package imports neither torch nor mindspore; weights are PyTorch-named
({``ddpm_core.weights.naming`` torch_name: array}) and checked strictly; everything is computed in float64
from the exact table values the twins index (float32, upcast); nothing is drawn at random.

    from ddpm_core.reference import ReferenceUnet, ReferenceDiffusion
    net = ReferenceUnet(cfg, weights)           # eps = net(x, t); net(x, t, record=fn) sees every module
    diff = ReferenceDiffusion(diffusion_cfg)    # diff.p_sample_loop(net, x_T, noise) -> (T, b, ...)
"""
from ddpm_core.reference.diffusion import ReferenceDiffusion
from ddpm_core.reference.unet import ReferenceUnet

__all__ = ["ReferenceDiffusion", "ReferenceUnet"]
