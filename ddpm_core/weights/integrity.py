"""What makes weights trustworthy, beyond the checksum each file format carries (``ddpm_core.weights.formats``):
per-tensor digests and the manifest, the manifest sidecar, and the plausibility of values read from a
file that carries no checksum. Each problem is one ``WeightsError`` line.

Rules it keeps: a manifest holds each tensor's ``ddpm_core.weights.digest.tensor_digest`` (dtype, shape and
little-endian bytes), so equal manifests mean bit-identical weights; a sidecar ``<weights file>.manifest.json`` is verified whenever it exists;
values from a file without a checksum must be finite and within ``PLAUSIBLE_MAX_ABS``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ddpm_core import schema
from ddpm_core.errors import UserError, WeightsError
from ddpm_core.weights.digest import tensor_digest

PLAUSIBLE_MAX_ABS = 1e4
"""The largest |weight| a file without a checksum may hold. The U-Net's weights stay within about +-10,
initialised or trained; a damaged byte in a float32's exponent makes values like 1e20 or NaN."""
MANIFEST_SUFFIX = ".manifest.json"
"""``<weights file><MANIFEST_SUFFIX>`` beside a weights file is its manifest sidecar (``parity.convert --manifest``)."""


MANIFEST_SCHEMA = schema.dict_of(schema.string(pattern="[0-9a-f]{64}"))
"""A manifest: {tensor name: sha256 as 64 lowercase hex digits}."""
MANIFEST_LIMIT = 16 << 20
"""The largest manifest read (16 MiB: some 100,000 tensors)."""


def manifest(state_torch_named: Mapping[str, np.ndarray]) -> dict[str, str]:
    """{torch name: sha256 of dtype, shape and little-endian values}, in the state's order."""
    return {name: tensor_digest(value) for name, value in state_torch_named.items()}


def manifest_sidecar(path: str | os.PathLike) -> Path:
    """Where the manifest of the weights file ``path`` is kept: ``<path>.manifest.json``."""
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def manifest_mismatch(state_torch_named: Mapping[str, np.ndarray], recorded: Mapping[str, str]) -> str | None:
    """How ``state`` differs from a ``manifest`` it should match, in one phrase; None when it matches."""
    actual = manifest(state_torch_named)
    differ = [n for n in actual if n in recorded and recorded[n] != actual[n]]
    missing, extra = sorted(set(recorded) - set(actual)), sorted(set(actual) - set(recorded))
    parts = [f"{len(differ)} of {len(actual)} tensors differ (first: {differ[0]})"] if differ else []
    parts += [f"{len(missing)} listed but absent (first: {missing[0]})"] if missing else []
    parts += [f"{len(extra)} present but not listed (first: {extra[0]})"] if extra else []
    return "; ".join(parts) or None


def implausible(state: Mapping[str, Any]) -> str | None:
    """Why ``state`` cannot be weights of a file that is intact (NaN or inf, |x| > ``PLAUSIBLE_MAX_ABS``), in
    one phrase; None when its values are plausible."""
    nonfinite, large = [], []
    for name, value in state.items():
        a = np.asarray(value)
        if not np.issubdtype(a.dtype, np.floating) or a.size == 0:
            continue
        finite = np.isfinite(a)
        if not finite.all():
            nonfinite.append((name, int(a.size - np.count_nonzero(finite))))
        top = float(np.max(np.abs(a[finite]), initial=0.0))
        if top > PLAUSIBLE_MAX_ABS:
            large.append((name, top))
    parts = []
    if nonfinite:
        parts.append(f"{sum(n for _, n in nonfinite)} NaN or inf value(s) in {len(nonfinite)} tensor(s) "
                     f"(first: {nonfinite[0][0]})")
    if large:
        name, top = max(large, key=lambda x: x[1])
        parts.append(f"{len(large)} tensor(s) beyond |x| = {PLAUSIBLE_MAX_ABS:g} (largest {top:.3g} in {name})")
    return "; ".join(parts) or None


def check_sidecar(path: Path, state_torch_named: Mapping[str, np.ndarray]) -> None:
    """A ``WeightsError`` (one line) unless the weights of ``path`` match its manifest sidecar."""
    sidecar = manifest_sidecar(path)
    try:
        recorded = schema.load_json(sidecar, limit=MANIFEST_LIMIT, schema=MANIFEST_SCHEMA)
    except UserError as e:
        raise WeightsError([f"its manifest is unreadable: {e}"], f"cannot read {path}") from None
    mismatch = manifest_mismatch(state_torch_named, recorded)
    if mismatch:
        raise WeightsError([f"does not match its manifest {sidecar}: {mismatch}"], f"cannot read {path}")
