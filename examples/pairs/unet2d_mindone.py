"""SPEC: diffusers 0.39's ``UNet2DModel`` + ``DDPMScheduler`` against mindone 0.5.0's ``mindone.diffusers`` ports of
both (MindSpore 2.10, CPU; ``pip install 'ddpm-parity[pairs]'``).

    python -m parity.pair examples/pairs/unet2d_mindone.py                      # forward, training step, loop
    python -m parity.pair examples/pairs/unet2d_mindone.py --set shim=false     # exit 3: the op and the cell
    python -m parity.pair examples/pairs/unet2d_mindone.py --set ms_variance=fixed_large   # a scheduler slip

The model: a small U-Net with each of the main block types (``DownBlock2D``, ``AttnDownBlock2D``, the
attention mid-block, ``AttnUpBlock2D``, ``UpBlock2D``), 16x16 RGB (``--set size=32``, ``--set channels=[32,64]``).
Both libraries name all of their parameters alike: the weights map as identical names.

What the SPEC declares, and why:
  * ``shims``: mindone is written for Ascend; three of its ops have no kernel on MindSpore's CPU build
    (examples/pairs/mindone_cpu_shim.py says which, and what stands in for each). ``--set shim=false`` leaves them
    out: the run stops with exit 3 naming the op and the cell.
  * ``arbiter``: diffusers computes the sinusoidal time embedding in float32 whatever the model's dtype (its
    ``get_timestep_embedding`` casts), so the float64 copy would share float32's rounding there and measure none:
    the arbiter's ``time_proj`` computes the same formula in float64 instead.
  * ``inputs``: one noisy image x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps at each of ``timesteps`` (x0, eps from
    one seeded numpy draw), with t: each is judged under its own gate, from float32's rounding at that t.
  * ``loss`` / ``optimizers``: the training objective (mean squared error of the predicted noise against eps), one
    SGD step on each side.
  * ``step`` / ``loop``: ``steps`` DDPM steps (``set_timesteps(steps)``: t = 900, 800, ..., 0 for 10) with
    each side's own scheduler. The noise is injected: neither scheduler's ``step()`` takes a noise tensor (mindone
    draws from an ``np.random.Generator``, diffusers from a ``torch.Generator``), so while it runs, the draw each
    scheduler module makes (its ``randn_tensor``) returns the tape's noise for this step instead, cast to the
    model output's dtype; the scheduler's own arithmetic (mean, variance, clipping) is what is compared, and a step
    that draws other than once (for t > 0) is an error, not a silent skip. The arbiter's scheduler has its betas and
    cumulative alphas in float64 (diffusers keeps them in float32).
  * ``ms_variance``: the mindone scheduler's ``variance_type``; "fixed_large" plants a porting slip (beta_t where
    the posterior variance belongs) that only the loop can see.

Each framework is imported only where it is used, so the file is also the SPEC of two hosts
(``--record GOLDEN`` where diffusers runs, ``--compare GOLDEN`` where mindone runs).
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

BETAS = (1e-4, 0.02, 1000)
"""DDPMScheduler's defaults (linear betas): the schedule of the inputs, the loss and the loop."""


def _config(size: int, channels: list[int]) -> dict[str, Any]:
    return {"sample_size": size, "in_channels": 3, "out_channels": 3, "layers_per_block": 1,
            "block_out_channels": tuple(channels), "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
            "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 8, "attention_head_dim": 8}


def _is_torch(value: Any) -> bool:
    """A PyTorch module or tensor (PyTorch is not imported for the question: a MindSpore host may lack it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, (torch.nn.Module, torch.Tensor))


def torch_model(size: int = 16, channels: list[int] = [16, 32], seed: int = 0) -> Any:  # noqa: B006
    import diffusers
    import torch

    diffusers.utils.logging.set_verbosity_error()  # else it warns at every .to(dtype), the float64 copy's too
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**_config(size, channels))
    with torch.no_grad():  # GroupNorm's biases start at zero: draw every bias, so each one does something
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 0.2)
    return model


def ms_model(size: int = 16, channels: list[int] = [16, 32]) -> Any:  # noqa: B006
    import mindone.diffusers as md

    return md.UNet2DModel(**_config(size, channels))


def _shim_module() -> Any:
    name = "parity_pair_mindone_cpu_shim"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("mindone_cpu_shim.py"))
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def shims(shim: bool = True, exp: str = "float32") -> list[Any]:
    if exp not in ("float32", "float64"):
        raise ValueError(f"exp must be 'float32' (MindSpore's, as shipped) or 'float64', got {exp!r}")
    module = _shim_module()
    return (list(module.SHIMS) if shim else []) + ([module.PRECISE_EXP] if exp == "float64" else [])


def arbiter(model64: Any) -> Any:
    """The float64 model with its ``time_proj`` (diffusers' ``Timesteps``: the sinusoidal embedding) computed in
    float64."""
    import torch

    class Float64Timesteps(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.n, self.flip, self.shift = inner.num_channels, inner.flip_sin_to_cos, inner.downscale_freq_shift
            self.scale = inner.scale

        def forward(self, timesteps: torch.Tensor) -> torch.Tensor:
            half = self.n // 2
            freq = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / (half - self.shift))
            arg = self.scale * timesteps[:, None].double() * freq[None, :]
            emb = torch.cat([arg.sin(), arg.cos()], dim=-1)
            return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if self.flip else emb

    model64.time_proj = Float64Timesteps(model64.time_proj)
    return model64


def _alphas_cumprod() -> np.ndarray:
    start, end, n = BETAS
    return np.cumprod(1.0 - np.linspace(start, end, n))


def _tape(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, size, size)), rng.standard_normal((1, 3, size, size))


def inputs(timesteps: list[int] = [10, 500, 999], size: int = 16, seed: int = 0) -> list[tuple]:  # noqa: B006
    x0, eps = _tape(size, seed)
    _EPS["eps"] = eps
    abar = _alphas_cumprod()
    return [((math.sqrt(abar[t]) * x0 + math.sqrt(1 - abar[t]) * eps).astype(np.float32), np.array([t], np.int64))
            for t in timesteps]


_EPS: dict[str, np.ndarray] = {}
"""the eps that ``inputs()`` noised every image with: the training target of ``loss``"""


def loss(outputs: Any) -> Any:
    """Mean squared error of the predicted noise against the eps in the inputs (the same for every input)."""
    out = outputs[0]  # diffusers' UNet2DOutput and mindone's tuple both index so
    eps = _EPS["eps"]
    target = sys.modules["torch"].as_tensor(eps, dtype=out.dtype) if _is_torch(out) else _ms_tensor(eps)
    return ((out - target) ** 2).mean()


def _ms_tensor(a: np.ndarray) -> Any:
    import mindspore as ms

    return ms.Tensor(a.astype(np.float32))


def optimizers(lr: float = 0.1) -> dict[str, Any]:
    def sgd(framework: str, ps: list) -> Any:  # each framework imported when its side steps (one may be absent)
        if framework == "torch":
            import torch

            return torch.optim.SGD(ps, lr=lr)
        from mindspore import nn

        return nn.SGD(ps, learning_rate=lr)

    return {"torch": lambda ps: sgd("torch", ps), "ms": lambda ps: sgd("ms", ps)}


def loop(steps: int = 10, seed: int = 0, size: int = 16) -> dict[str, Any]:
    """The timesteps of diffusers' scheduler, or of mindone's where PyTorch is absent (the same; a golden file
    recorded with other timesteps is refused)."""
    try:
        import torch  # noqa: F401 - only whether it is there
        import diffusers as library
    except ModuleNotFoundError:
        import mindone.diffusers as library  # type: ignore[no-redef]
    s = library.DDPMScheduler()
    s.set_timesteps(steps)
    return {"timesteps": [int(t) for t in s.timesteps], "shape": [1, 3, size, size], "seed": seed}


_SCHEDULERS: dict[tuple, Any] = {}


def _scheduler(framework: str, dtype: Any, steps: int, variance: str) -> Any:
    """Each side's scheduler, built once: diffusers' (its betas in float64 for the float64 arbiter) or mindone's."""
    key = (framework, str(dtype), steps, variance)
    if key not in _SCHEDULERS:
        if framework == "torch":
            import diffusers
            import torch

            s = diffusers.DDPMScheduler(variance_type=variance)
            if dtype == torch.float64:
                s.betas = torch.linspace(BETAS[0], BETAS[1], BETAS[2], dtype=torch.float64)
                s.alphas = 1.0 - s.betas
                s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
        else:
            import mindone.diffusers as md

            s = md.DDPMScheduler(variance_type=variance)
        s.set_timesteps(steps)
        _SCHEDULERS[key] = s
    return _SCHEDULERS[key]


@contextlib.contextmanager
def _injected(module: Any, noise: Any, t: int) -> Iterator[None]:
    """While the scheduler steps: its module's ``randn_tensor`` returns ``noise`` (in the dtype asked for)."""
    drawn: list[tuple] = []
    own = module.randn_tensor

    def tape_draw(shape: Any, *args: Any, dtype: Any = None, **kwargs: Any) -> Any:
        drawn.append(tuple(shape))
        return noise.to(dtype) if dtype is not None else noise

    module.randn_tensor = tape_draw
    try:
        yield
    finally:
        module.randn_tensor = own
    if drawn != ([tuple(noise.shape)] if t > 0 else []):
        raise RuntimeError(f"the scheduler drew {drawn} at t={t}: expected one draw of {tuple(noise.shape)} for t > 0")


def step(model: Any, x: Any, t: int, noise: Any, steps: int = 10, ms_variance: str = "fixed_small") -> Any:
    if _is_torch(model):
        from diffusers.schedulers import scheduling_ddpm

        s = _scheduler("torch", x.dtype, steps, "fixed_small")
        eps = model(x, t).sample
        with _injected(scheduling_ddpm, noise, t):
            return s.step(eps, t, x).prev_sample
    from mindone.diffusers.schedulers import scheduling_ddpm as ms_ddpm

    s = _scheduler("ms", None, steps, ms_variance)
    eps = model(x, t)[0]
    with _injected(ms_ddpm, noise, t):
        return s.step(eps, t, x)[0]
