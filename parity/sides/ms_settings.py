"""MindSpore's cells in the settings check's framework-neutral vocabulary (``parity.engine.settings``, PyTorch's
words: ``Dense`` is ``Linear``, ``epsilon`` is ``eps``): what a cell is configured to do, read from its
attributes. Imports no framework (it reads attributes only), so any MindSpore side can use it.
"""
from __future__ import annotations

from typing import Any

from parity.engine.settings import custom_settings, pair2, same_padding

_KINDS = {"Conv2dTranspose": "ConvTranspose2d", "Dense": "Linear", "SequentialCell": "Sequential",
          "CellList": "ModuleList"}


def _ms_layer_name(c: Any) -> str:
    """The name of ``c``'s class, or of the MindSpore layer it extends: ``ddpm_ms``'s ``ComposedGroupNorm`` is an
    ``nn.GroupNorm`` computed from primitive ops, with the same settings."""
    for cls in type(c).__mro__:
        if cls.__module__.startswith("mindspore.nn.layer"):
            return cls.__name__
    return type(c).__name__


def ms_settings(c: Any) -> tuple[str, dict[str, Any]]:
    """(kind, settings) of a MindSpore cell, in torch_settings' vocabulary."""
    name = _ms_layer_name(c)
    kind = _KINDS.get(name, name)
    if name in ("Conv2d", "Conv2dTranspose"):
        if c.pad_mode == "pad":
            p = c.padding
            pad = (p, p, p, p) if isinstance(p, int) else tuple(int(x) for x in p)
        elif c.pad_mode == "valid":
            pad = (0, 0, 0, 0)
        else:
            pad = same_padding(pair2(c.kernel_size), pair2(c.stride), pair2(c.dilation))
        s = {"in_channels": c.in_channels, "out_channels": c.out_channels, "kernel_size": pair2(c.kernel_size),
             "stride": pair2(c.stride), "padding": pad, "dilation": pair2(c.dilation), "groups": c.group,
             "bias": bool(c.has_bias), "padding_mode": getattr(c, "padding_mode", "zeros")}
        if name == "Conv2dTranspose":
            s["output_padding"] = pair2(getattr(c, "output_padding", 0))
        return kind, s
    if name == "Dense":
        s = {"in_channels": c.in_channels, "out_channels": c.out_channels, "bias": bool(c.has_bias)}
        if c.activation_flag:
            s["activation"] = type(c.activation).__name__
        return kind, s
    if name == "GroupNorm":
        return kind, {"num_groups": c.num_groups, "num_channels": c.num_channels, "eps": c.eps, "affine": c.affine}
    if name == "GELU":
        return kind, {"approximate": c.approximate}
    if name in ("Softmax", "LogSoftmax"):
        axis = c.axis if hasattr(c, "axis") else getattr(getattr(c, "softmax", None), "axis", None)
        return kind, {"axis": axis[0] if isinstance(axis, (tuple, list)) and len(axis) == 1 else axis}
    if name == "LayerNorm" and hasattr(c, "normalized_shape"):
        return "LayerNorm(builtin)", {"normalized_shape": tuple(c.normalized_shape), "eps": c.epsilon, "affine": True}
    if name in ("SiLU", "Identity", "SequentialCell", "CellList"):
        return kind, {}
    return kind, custom_settings(c)
