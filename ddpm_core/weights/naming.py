"""THE parameter table of the U-Net: every parameter's PyTorch name, MindSpore name, shape and
layout, derived from a ``UnetConfig`` by walking the architecture once.

Naming rules (the only places the two frameworks' names differ):
  * GroupNorm affine parameters: PyTorch ``weight``/``bias`` <-> MindSpore ``gamma``/``beta``.
  * Everything else keeps its structural path (``downs.1.0.net.1.weight``) in both, which is
    the name the tutorial's checkpoints carry after its rename loop.
Layouts: every tensor has the same layout in both frameworks today (``same``). Layouts are named in the
weight-mapping engine's one vocabulary (``ddpm_core.weights.mapping.LAYOUTS``, tested both ways there).

The table is the mapping engine's explicit map for the U-Net: ``unet_weight_map(cfg)`` is
``map_weights`` over the table's tensors with the table as ``name_map``, and the strict converter
renames and re-lays out through it, so the DDPM check and ``parity.pair`` map weights with one engine.

Tests check this table against both twins' live parameters for many configurations, so a
twin that drifts from the other (or from the tutorial) fails there first.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator, Mapping

from ddpm_core.config import ATTENTION_DIM_HEAD, ATTENTION_HEADS, UnetConfig
from ddpm_core.weights.mapping import Tensor, WeightMap, layout_shape, map_weights

GROUP_NORM_RENAMES = {"weight": "gamma", "bias": "beta"}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its name in each framework, its (PyTorch) shape, the module kind, and its layout (a name in
    ``ddpm_core.weights.mapping.LAYOUTS``)."""

    torch_name: str
    ms_name: str
    shape: tuple[int, ...]
    module: str
    layout: str = "same"


def _param(prefix: str, leaf: str, shape: tuple[int, ...], module: str) -> ParamSpec:
    ms_leaf = GROUP_NORM_RENAMES[leaf] if module == "GroupNorm" else leaf
    return ParamSpec(f"{prefix}.{leaf}", f"{prefix}.{ms_leaf}", shape, module)


def _conv(prefix: str, cin: int, cout: int, k: int, bias: bool = False, groups: int = 1) -> Iterator[ParamSpec]:
    yield _param(prefix, "weight", (cout, cin // groups, k, k), "Conv2d")
    if bias:
        yield _param(prefix, "bias", (cout,), "Conv2d")


def _conv_transpose(prefix: str, cin: int, cout: int, k: int) -> Iterator[ParamSpec]:
    yield _param(prefix, "weight", (cin, cout, k, k), "ConvTranspose2d")


def _dense(prefix: str, cin: int, cout: int) -> Iterator[ParamSpec]:
    yield _param(prefix, "weight", (cout, cin), "Linear")
    yield _param(prefix, "bias", (cout,), "Linear")


def _group_norm(prefix: str, c: int) -> Iterator[ParamSpec]:
    yield _param(prefix, "weight", (c,), "GroupNorm")
    yield _param(prefix, "bias", (c,), "GroupNorm")


def _convnext_block(p: str, din: int, dout: int, time_dim: int | None, mult: int) -> Iterator[ParamSpec]:
    if time_dim is not None:
        yield from _dense(f"{p}.mlp.1", time_dim, din)
    yield from _conv(f"{p}.ds_conv", din, din, 7, groups=din)
    yield from _group_norm(f"{p}.net.0", din)
    yield from _conv(f"{p}.net.1", din, dout * mult, 3)
    yield from _group_norm(f"{p}.net.3", dout * mult)
    yield from _conv(f"{p}.net.4", dout * mult, dout, 3)
    if din != dout:
        yield from _conv(f"{p}.res_conv", din, dout, 1)


def _resnet_block(p: str, din: int, dout: int, time_dim: int | None) -> Iterator[ParamSpec]:
    if time_dim is not None:
        yield from _dense(f"{p}.mlp.1", time_dim, dout)
    for name, cin in (("block1", din), ("block2", dout)):
        yield from _conv(f"{p}.{name}.proj", cin, dout, 3)
        yield from _group_norm(f"{p}.{name}.norm", dout)
    if din != dout:
        yield from _conv(f"{p}.res_conv", din, dout, 1)


def _linear_attention(p: str, dim: int) -> Iterator[ParamSpec]:
    hidden = ATTENTION_HEADS * ATTENTION_DIM_HEAD
    yield from _conv(f"{p}.fn.fn.to_qkv", dim, hidden * 3, 1)
    yield from _conv(f"{p}.fn.fn.to_out.0", hidden, dim, 1, bias=True)
    yield _param(f"{p}.fn.fn.to_out.1", "g", (1, dim, 1, 1), "LayerNorm")
    yield from _group_norm(f"{p}.fn.norm", dim)


def _attention(p: str, dim: int) -> Iterator[ParamSpec]:
    hidden = ATTENTION_HEADS * ATTENTION_DIM_HEAD
    yield from _conv(f"{p}.fn.fn.to_qkv", dim, hidden * 3, 1)
    yield from _conv(f"{p}.fn.fn.to_out", hidden, dim, 1, bias=True)
    yield from _group_norm(f"{p}.fn.norm", dim)


def unet_parameters(cfg: UnetConfig) -> list[ParamSpec]:
    """Every parameter of ``Unet(cfg)``, in registration (state_dict) order."""

    def block(p: str, din: int, dout: int, time_dim: int | None) -> Iterator[ParamSpec]:
        if cfg.use_convnext:
            return _convnext_block(p, din, dout, time_dim, cfg.convnext_mult)
        return _resnet_block(p, din, dout, time_dim)

    td = cfg.time_dim
    specs: list[ParamSpec] = [*_conv("init_conv", cfg.channels, cfg.resolved_init_dim, 7, bias=True)]
    if td is not None:
        specs += [*_dense("time_mlp.1", cfg.dim, td), *_dense("time_mlp.3", td, td)]
    in_out = cfg.in_out
    for i, (din, dout) in enumerate(in_out):
        specs += [*block(f"downs.{i}.0", din, dout, td), *block(f"downs.{i}.1", dout, dout, td)]
        specs += _linear_attention(f"downs.{i}.2", dout)
        if i < len(in_out) - 1:
            specs += _conv(f"downs.{i}.3", dout, dout, 4)
    for i, (din, dout) in enumerate(reversed(in_out[1:])):
        specs += [*block(f"ups.{i}.0", dout * 2, din, td), *block(f"ups.{i}.1", din, din, td)]
        specs += _linear_attention(f"ups.{i}.2", din)
        specs += _conv_transpose(f"ups.{i}.3", din, din, 4)
    mid = cfg.dims[-1]
    specs += [*block("mid_block1", mid, mid, td), *_attention("mid_attn", mid), *block("mid_block2", mid, mid, td)]
    specs += [*block("final_conv.0", cfg.dim, cfg.dim, None), *_conv("final_conv.1", cfg.dim, cfg.resolved_out_dim, 1)]
    return _registration_order(specs)


_TOP_LEVEL_ORDER = ("init_conv", "time_mlp", "downs", "ups", "mid_block1", "mid_attn", "mid_block2", "final_conv")


def _registration_order(specs: list[ParamSpec]) -> list[ParamSpec]:
    """Both frameworks register ``downs`` and ``ups`` (empty) before the middle blocks."""
    rank = {name: i for i, name in enumerate(_TOP_LEVEL_ORDER)}
    return sorted(specs, key=lambda s: rank[s.torch_name.split(".", 1)[0]])


def torch_to_ms_names(cfg: UnetConfig) -> dict[str, str]:
    """PyTorch name -> MindSpore name for ``Unet(cfg)``."""
    return {s.torch_name: s.ms_name for s in unet_parameters(cfg)}


def unet_tensors(cfg: UnetConfig, naming: str) -> list[Tensor]:
    """The table's tensors of ``Unet(cfg)`` as the mapping engine sees them, in ``naming`` (``torch`` or ``ms``):
    name, shape (on that side, after the layout), owner module path and kind."""
    out = []
    for s in unet_parameters(cfg):
        name = s.torch_name if naming == "torch" else s.ms_name
        if naming == "ms":  # a layout that cannot apply keeps the shape, and the map reports the misfit
            shape = layout_shape(Tensor(s.torch_name, s.shape, "", s.module), s.layout) or s.shape
        else:
            shape = s.shape
        out.append(Tensor(name, shape, name.rsplit(".", 1)[0], s.module))
    return out


def unet_weight_map(cfg: UnetConfig) -> WeightMap:
    """The mapping engine's ``WeightMap`` for ``Unet(cfg)``: ``map_weights`` over the table's PyTorch and
    MindSpore tensors with the table (names and layouts) as the explicit ``name_map``. Every entry comes from
    the table (``how == "user"``) and ``problems`` is empty (tests/ddpm_core/test_naming.py shows both)."""
    table = {s.torch_name: (s.ms_name, s.layout) for s in unet_parameters(cfg)}
    return map_weights(unet_tensors(cfg, "torch"), unet_tensors(cfg, "ms"), name_map=table)


def parameter_count(cfg: UnetConfig) -> int:
    """Number of scalar parameters in ``Unet(cfg)``."""
    return sum(math.prod(s.shape) for s in unet_parameters(cfg))  # exact for any size: Python ints


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> UnetConfig | None:
    """The ``UnetConfig`` whose parameter table has exactly these names (either naming) and shapes, or None.

    Read from a few telling shapes (``init_conv``, ``final_conv.1``, each level's attention output), then
    confirmed against the whole table. ``resnet_block_groups`` shows in no shape: the default 8 is taken
    when it divides the widths, else the largest number that does."""
    to_torch = {v: k for k, v in GROUP_NORM_RENAMES.items()}
    found = {".".join([*n.split(".")[:-1], to_torch.get(n.split(".")[-1], n.split(".")[-1])]): tuple(s)
             for n, s in shapes.items()}
    try:
        init_dim, channels = found["init_conv.weight"][:2]
        out_dim, dim = found["final_conv.1.weight"][:2]
        levels = 1 + max(int(m.group(1)) for n in found if (m := re.match(r"downs\.(\d+)\.", n)))
        widths = [found[f"downs.{i}.2.fn.fn.to_out.0.bias"][0] for i in range(levels)]
        use_convnext = "downs.0.0.ds_conv.weight" in found
        mult = found["downs.0.0.net.1.weight"][0] // widths[0] if use_convnext else 2
    except (KeyError, ValueError, IndexError):
        return None
    if dim <= 0 or any(w % dim for w in widths):
        return None
    common = math.gcd(dim, *widths)
    for groups in [8, *(g for g in range(common, 0, -1) if common % g == 0)]:
        try:
            cfg = UnetConfig(dim=dim, channels=channels, dim_mults=tuple(w // dim for w in widths),
                             init_dim=None if init_dim == dim // 3 * 2 else init_dim,
                             out_dim=None if out_dim == channels else out_dim,
                             with_time_emb="time_mlp.1.weight" in found, convnext_mult=max(mult, 1),
                             use_convnext=use_convnext, resnet_block_groups=groups)
        except ValueError:
            continue
        return cfg if {s.torch_name: s.shape for s in unet_parameters(cfg)} == found else None
    return None
