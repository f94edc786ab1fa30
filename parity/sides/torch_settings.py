"""PyTorch's layers in the settings check's framework-neutral vocabulary (``parity.engine.settings``): what a
module is configured to do, read from its attributes. Imports no framework (it reads attributes only), so
any PyTorch side (the DDPM twin's, a user's pair) can use it.
"""
from __future__ import annotations

from typing import Any

from parity.engine.settings import custom_settings, pair2, same_padding

_KINDS = {"ConvTranspose2d": "ConvTranspose2d", "Linear": "Linear", "Sequential": "Sequential",
          "ModuleList": "ModuleList"}


def torch_settings(m: Any) -> tuple[str, dict[str, Any]]:
    """(kind, settings) of a torch module."""
    name = type(m).__name__
    kind = _KINDS.get(name, name)
    if name in ("Conv2d", "ConvTranspose2d"):
        pad = m.padding if isinstance(m.padding, str) else tuple(p for p in pair2(m.padding) for _ in (0, 1))
        if pad == "valid":
            pad = (0, 0, 0, 0)
        elif pad == "same":
            pad = same_padding(pair2(m.kernel_size), pair2(m.stride), pair2(m.dilation))
        s = {"in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": pair2(m.kernel_size),
             "stride": pair2(m.stride), "padding": pad, "dilation": pair2(m.dilation), "groups": m.groups,
             "bias": m.bias is not None, "padding_mode": m.padding_mode}
        if name == "ConvTranspose2d":
            s["output_padding"] = pair2(m.output_padding)
        return kind, s
    if name == "Linear":
        return kind, {"in_channels": m.in_features, "out_channels": m.out_features, "bias": m.bias is not None}
    if name == "GroupNorm":
        return kind, {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps, "affine": m.affine}
    if name == "GELU":
        return kind, {"approximate": m.approximate}
    if name in ("Softmax", "LogSoftmax"):
        return kind, {"axis": m.dim}
    if name == "LayerNorm" and hasattr(m, "normalized_shape"):
        return "LayerNorm(builtin)", {"normalized_shape": tuple(m.normalized_shape), "eps": m.eps,
                                      "affine": m.elementwise_affine}
    if name in ("SiLU", "Identity", "Sequential", "ModuleList"):
        return kind, {}
    return kind, custom_settings(m)
