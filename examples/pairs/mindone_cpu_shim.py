"""A CPU shim for mindone 0.5.0 on MindSpore 2.10's CPU build: the three ops of ``mindone.diffusers``'
``UNet2DModel`` and ``DDPMScheduler`` that have no CPU kernel, each replaced by a standard op that has one.

mindone is written for Ascend. On the CPU build, in PyNative and in graph mode alike:
  * ``mint.arange`` (the sinusoidal time embedding) has no kernel (``Arange``): ``ops.arange`` computes it;
  * ``mint.nn.Conv2d`` (``Conv2DExt``, every convolution of the U-Net) has none: its ``construct`` calls
    ``ops.conv2d`` (the legacy ``Conv2D`` kernel) with the layer's own weight, bias, stride, padding, dilation and
    groups; the layer, its parameters and their names are untouched;
  * ``Tensor.nonzero`` (``NonZeroExt``, the scheduler's ``previous_timestep`` once ``set_timesteps`` was called) has
    none: ``ops.nonzero`` without ``as_tuple`` (the legacy ``NonZero`` kernel) computes the indices, split by axis
    for ``as_tuple``.
(``mint.baddbmm`` has no CPU kernel either, but this model never calls it: its attention has no mask.)

Rules it keeps: each shim is a context manager that patches while it is entered and restores the original on
exit (``parity.pair`` enters the SPEC's shims around every call into MindSpore, so nothing outside a run sees them);
the replacements compute the same function (the tests compare against PyTorch with and without them); a layer
the shim cannot express (a padding mode other than zeros, a padding given as a string) raises instead of guessing.
Each shim's ``description`` is listed in the report: a shim is the user's, never silent.
"""
from __future__ import annotations

from typing import Any, Callable

import mindspore as ms
from mindspore import mint, ops


class Patch:
    """``setattr(owner, name, replacement)`` while entered, the original restored on exit; re-entrant."""

    def __init__(self, owner: Any, name: str, replacement: Callable[..., Any], description: str):
        self.owner, self.name, self.replacement, self.description = owner, name, replacement, description
        self._saved: list[Any] = []

    def __enter__(self) -> "Patch":
        self._saved.append(getattr(self.owner, self.name))
        setattr(self.owner, self.name, self.replacement)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.owner, self.name, self._saved.pop())

    def __repr__(self) -> str:
        return self.description


def _arange(start: Any = 0, end: Any = None, step: Any = 1, *, dtype: Any = None) -> ms.Tensor:
    return ops.arange(start, end, step, dtype=dtype)


def _conv2d(self: mint.nn.Conv2d, input: ms.Tensor) -> ms.Tensor:  # noqa: A002 - mint's own parameter name
    if self.padding_mode != "zeros" or isinstance(self.padding, str):
        raise NotImplementedError(f"the CPU shim has no Conv2d with padding {self.padding!r} ({self.padding_mode})")
    return ops.conv2d(input, self.weight, self.bias, stride=self.stride, pad_mode="pad", padding=tuple(self.padding),
                      dilation=self.dilation, groups=self.groups)


def _nonzero(self: ms.Tensor, as_tuple: bool = False) -> Any:
    at = ops.nonzero(self)  # (count, ndim): the legacy NonZero kernel; as_tuple would call NonZeroExt
    return tuple(at[:, i] for i in range(at.shape[1])) if as_tuple else at


def _exp_float64(input: ms.Tensor) -> ms.Tensor:  # noqa: A002 - mint's own parameter name
    return _EXP(input.astype(ms.float64)).astype(input.dtype)


_EXP = mint.exp

SHIMS = [
    Patch(mint, "arange", _arange, "mint.arange -> ops.arange (no CPU kernel for Arange)"),
    Patch(mint.nn.Conv2d, "construct", _conv2d,
          "mint.nn.Conv2d -> ops.conv2d with the layer's own weights and settings (no CPU kernel for Conv2DExt)"),
    Patch(ms.Tensor, "nonzero", _nonzero, "Tensor.nonzero -> ops.nonzero (no CPU kernel for NonZeroExt)"),
]
"""What ``examples/pairs/unet2d_mindone.py`` declares as its ``shims``."""

PRECISE_EXP = Patch(mint, "exp", _exp_float64,
                    "mint.exp -> exp in float64, rounded back (MindSpore's CPU float32 exp is up to 64 ulp off)")
"""Not a kernel shim: a precision fix, what ``--set exp=float64`` of the SPEC adds (docs/pairs.md says why)."""
