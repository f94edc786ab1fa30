"""Weights between the two namings, strictly: ``{name: ndarray}`` in PyTorch or MindSpore naming, checked
against the parameter table in ``ddpm_core.weights.naming``, renamed and re-laid out by the weight-mapping engine
with that table as its explicit map (``naming.unet_weight_map``, ``WeightMap.to_ms``/``to_torch``), and cast only
when asked (docs/weights.md). ``ddpm_core.weights.files`` reads and writes files with it.

Rules it keeps:
  * Strict: a missing key, an unexpected key, a wrong shape, a dtype that is not floating point,
    or a non-finite value is an error, reported one line per offending key; nothing is dropped
    silently.
  * Exact: values are only renamed (and re-laid out by a named layout); a cast happens only when
    asked for (``dtype=``), and a cast that overflows is an error.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.errors import WeightsError
from ddpm_core.weights.naming import ParamSpec, unet_parameters, unet_weight_map

NAMINGS = ("torch", "ms")
DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")


def expected_parameters(cfg: UnetConfig, naming: str) -> dict[str, ParamSpec]:
    """name (in ``naming``) -> spec, for every parameter of ``Unet(cfg)``."""
    check_naming(naming)
    return {(s.torch_name if naming == "torch" else s.ms_name): s for s in unet_parameters(cfg)}


def weight_problems(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> list[str]:
    """Every reason ``state`` is not exactly the parameters of ``Unet(cfg)`` in ``naming``; empty if it is.
    One cause is one line: tensors of the same wrong dtype, or holding NaN or inf, are named together, and
    more than ``LISTED`` missing, unexpected or misshapen tensors are counted in one line."""
    expected = expected_parameters(cfg, naming)
    missing = [f"{name} (expected shape {spec.shape})" for name, spec in expected.items() if name not in state]
    unexpected = [f"{name} (shape {np.shape(state[name])})" for name in state if name not in expected]
    shapes, dtypes, nonfinite = [], {}, []
    for name, spec in expected.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        if tuple(value.shape) != spec.shape:
            shapes.append(f"{name}: expected {spec.shape}, found {tuple(value.shape)}")
        elif not np.issubdtype(value.dtype, np.floating):
            dtypes.setdefault(value.dtype.name, []).append(name)
        elif not np.all(np.isfinite(value)):
            nonfinite.append((name, int(np.size(value) - np.count_nonzero(np.isfinite(value))), value.size))
    problems = [*_listed("missing", missing), *_listed("unexpected", unexpected), *_listed("shape mismatch", shapes)]
    for dtype, names in dtypes.items():
        if len(names) == 1:
            problems.append(f"dtype: {names[0]}: expected a floating-point tensor, found {dtype}")
        else:
            which = "every tensor is" if len(names) == len(expected) else f"{len(names)} tensors are"
            problems.append(f"dtype: {which} {dtype} (first: {names[0]}); expected floating-point tensors")
    if len(nonfinite) == 1:
        problems.append("non-finite values: {}: {} of {} are NaN or inf".format(*nonfinite[0]))
    elif nonfinite:
        problems.append(f"non-finite values: {sum(n for _, n, _ in nonfinite)} NaN or inf in {len(nonfinite)} tensors "
                        f"(first: {nonfinite[0][0]})")
    return problems


LISTED = 4
"""``weight_problems`` names up to this many missing (unexpected, misshapen) tensors one per line; more are one line."""


def _listed(kind: str, items: list[str]) -> list[str]:
    if len(items) <= LISTED:
        return [f"{kind}: {item}" for item in items]
    return [f"{kind}: {len(items)} tensors (first: {items[0]}; last: {items[-1]})"]


def check_weights(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> None:
    """Raise ``WeightsError`` listing every problem of ``state`` for ``Unet(cfg)`` in ``naming``."""
    problems = weight_problems(state, cfg, naming)
    if problems:
        raise WeightsError(problems, f"{len(problems)} problem(s) with {naming}-named weights for {cfg}")


def convert(state: Mapping[str, np.ndarray], cfg: UnetConfig, src: str, dst: str) -> dict[str, np.ndarray]:
    """``state`` in ``src`` naming -> a new dict in ``dst`` naming, in the model's parameter order.

    Checks ``state`` strictly first; values are not cast, only renamed and re-laid out by the U-Net's
    ``WeightMap`` (whose entries follow the table, so the order is the model's).
    """
    check_naming(dst)
    check_weights(state, cfg, src)
    if src == dst:
        return {name: np.asarray(state[name]) for name in expected_parameters(cfg, src)}
    weight_map = unet_weight_map(cfg)
    return weight_map.to_ms(state) if dst == "ms" else weight_map.to_torch(state)


def torch_to_ms(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """PyTorch-named weights -> MindSpore-named weights (strict, exact)."""
    return convert(state, cfg, "torch", "ms")


def ms_to_torch(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """MindSpore-named weights -> PyTorch-named weights (strict, exact)."""
    return convert(state, cfg, "ms", "torch")


def detect_naming(names: list[str] | Mapping[str, Any]) -> str:
    """``"ms"`` if any name ends in GroupNorm's MindSpore ``gamma``/``beta``, else ``"torch"``."""
    return "ms" if any(n.rsplit(".", 1)[-1] in ("gamma", "beta") for n in names) else "torch"


# ---------------------------------------------------------------- dtypes
def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest, ties to even) onto the bfloat16 grid, kept as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = bits.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), np.float32(np.nan), out).reshape(np.shape(a))


def cast_weights(state: Mapping[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """``state`` cast to ``dtype`` (``None``: unchanged). ``bfloat16`` values stay float32 in memory, on
    the bfloat16 grid. A value that becomes inf (overflow) is an error naming each tensor."""
    if dtype is None:
        return dict(state)
    if dtype not in DTYPES:
        raise WeightsError([f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}"], "cannot cast")
    out, problems = {}, []
    for name, value in state.items():
        value = np.asarray(value)
        with np.errstate(over="ignore"):
            cast = round_to_bfloat16(value) if dtype == "bfloat16" else value.astype(dtype)
        overflow = int(np.count_nonzero(np.isfinite(value) & ~np.isfinite(cast)))
        if overflow:
            problems.append(f"overflow: {name}: {overflow} of {value.size} values (max |x| = "
                            f"{float(np.max(np.abs(value))):.6g}) become inf in {dtype}")
        out[name] = cast
    if problems:
        raise WeightsError(problems, f"cannot cast to {dtype}")
    return out
