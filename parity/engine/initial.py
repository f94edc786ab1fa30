"""Seeded initial weights computed in numpy from the parameter table, so that any machine can
rebuild them without either framework, and their hash.

Rule: ``initial_weights(cfg, seed)`` is a pure function of (cfg, seed, numpy's PCG64 stream). Each
parameter draws from its own generator seeded by (seed, crc32 of its PyTorch name), so adding or
reordering parameters does not shift the others. The distributions are PyTorch's defaults
(``kaiming_uniform_(a=sqrt(5))`` for weights, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the same
bound for biases), with one deliberate change: norm gains and biases (identity 1/0 by default) get
``+ 0.1 * N(0, 1)``, so a dropped, swapped or mis-named norm parameter cannot hide behind the
identity. ``weights_hash`` is the sha256 over the canonical PyTorch-named state.
"""
from __future__ import annotations

import zlib
from typing import Mapping

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.weights.digest import manifest_digest
from ddpm_core.weights.naming import unet_parameters

NORM_MODULES = ("GroupNorm", "LayerNorm")
NORM_JITTER = 0.1


def _fan_in(shape: tuple[int, ...]) -> int:
    """PyTorch's fan_in: size(1) times the receptive field (also for ConvTranspose weights)."""
    return int(shape[1] * np.prod(shape[2:], dtype=np.int64)) if len(shape) > 1 else int(shape[0])


def initial_weights(cfg: UnetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """``{torch_name: float32 ndarray}`` for every parameter of ``Unet(cfg)``, in table order, read-only."""
    specs = unet_parameters(cfg)
    weight_shape = {s.torch_name.rsplit(".", 1)[0]: s.shape for s in specs if s.torch_name.endswith(".weight")}
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        rng = np.random.Generator(np.random.PCG64([seed, zlib.crc32(spec.torch_name.encode())]))
        prefix, leaf = spec.torch_name.rsplit(".", 1)
        if spec.module in NORM_MODULES:
            base = 1.0 if leaf in ("weight", "g") else 0.0
            value = base + NORM_JITTER * rng.standard_normal(spec.shape)
        else:
            shape = spec.shape if leaf == "weight" else weight_shape[prefix]
            bound = 1.0 / np.sqrt(_fan_in(shape))
            value = rng.uniform(-bound, bound, spec.shape)
        arr = value.astype(np.float32)
        arr.setflags(write=False)
        out[spec.torch_name] = arr
    return out


def weights_hash(state_torch_named: Mapping[str, np.ndarray]) -> str:
    """sha256 over the sorted (name, tensor digest) pairs of a PyTorch-named state (``manifest_digest``)."""
    return manifest_digest(state_torch_named)
