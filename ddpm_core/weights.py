"""The shared weight-conversion module: {name: ndarray} dictionaries in PyTorch or MindSpore naming,
converted strictly through the parameter table in ``ddpm_core.naming``.

Strict means: a missing key, an unexpected key, a wrong shape, a dtype that is not floating point,
or a non-finite value is an error, reported one line per offending key; nothing is dropped.
Conversion is exact: values are only renamed (and re-laid out by a named rule), never cast.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ddpm_core.config import UnetConfig
from ddpm_core.naming import LAYOUT_RULES, ParamSpec, unet_parameters

NAMINGS = ("torch", "ms")


class WeightsError(ValueError):
    """Weights that do not fit a model: ``problems`` holds one message per offending key."""

    def __init__(self, problems: list[str], context: str = "weights do not match the model"):
        self.problems = list(problems)
        super().__init__(f"{context}:\n  " + "\n  ".join(self.problems))


def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")


def expected_parameters(cfg: UnetConfig, naming: str) -> dict[str, ParamSpec]:
    """name (in ``naming``) -> spec, for every parameter of ``Unet(cfg)``."""
    _check_naming(naming)
    return {(s.torch_name if naming == "torch" else s.ms_name): s for s in unet_parameters(cfg)}


def weight_problems(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> list[str]:
    """Every reason ``state`` is not exactly the parameters of ``Unet(cfg)`` in ``naming``; empty if it is."""
    expected = expected_parameters(cfg, naming)
    problems = [f"missing: {name} (expected shape {spec.shape})" for name, spec in expected.items() if name not in state]
    problems += [f"unexpected: {name} (shape {tuple(np.shape(state[name]))})" for name in state if name not in expected]
    for name, spec in expected.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        if tuple(value.shape) != spec.shape:
            problems.append(f"shape mismatch: {name}: expected {spec.shape}, found {tuple(value.shape)}")
        elif not np.issubdtype(value.dtype, np.floating):
            problems.append(f"dtype: {name}: expected a floating-point tensor, found {value.dtype}")
        elif not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            problems.append(f"non-finite values: {name}: {bad} of {value.size} are NaN or inf")
    return problems


def check_weights(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> None:
    """Raise ``WeightsError`` listing every problem of ``state`` for ``Unet(cfg)`` in ``naming``."""
    problems = weight_problems(state, cfg, naming)
    if problems:
        raise WeightsError(problems, f"{len(problems)} problem(s) with {naming}-named weights for {cfg}")


def convert(state: Mapping[str, np.ndarray], cfg: UnetConfig, src: str, dst: str) -> dict[str, np.ndarray]:
    """``state`` in ``src`` naming -> a new dict in ``dst`` naming, in the model's parameter order.

    Checks ``state`` strictly first; values are not cast, only renamed and re-laid out.
    """
    _check_naming(dst)
    check_weights(state, cfg, src)
    out: dict[str, np.ndarray] = {}
    for spec in unet_parameters(cfg):
        to_ms, to_torch = LAYOUT_RULES[spec.rule]
        if src == "torch":
            value = np.asarray(state[spec.torch_name])
            out_name, value = (spec.ms_name, to_ms(value)) if dst == "ms" else (spec.torch_name, value)
        else:
            value = np.asarray(state[spec.ms_name])
            out_name, value = (spec.torch_name, to_torch(value)) if dst == "torch" else (spec.ms_name, value)
        out[out_name] = value
    return out


def torch_to_ms(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """PyTorch-named weights -> MindSpore-named weights (strict, exact)."""
    return convert(state, cfg, "torch", "ms")


def ms_to_torch(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """MindSpore-named weights -> PyTorch-named weights (strict, exact)."""
    return convert(state, cfg, "ms", "torch")
