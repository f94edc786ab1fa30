"""Fixtures for the parity harness tests: small configurations, the two sides, and a ``run`` helper
that checks a fresh (or shared) pair of twins loaded with the harness's seeded initial weights.

Small on purpose (dim 8-16, 8x8 images, T=10, batch 2) so the whole directory stays within the CI
budget; the tutorial configuration runs once, through the CLI (test_check_cli.py).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import pytest

from ddpm_core.config import DiffusionConfig, UnetConfig
from ddpm_core.runtime.environment import child_env
from parity.engine.initial import initial_weights
from tests.host import need

TINY = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
TINY_RESNET = UnetConfig(dim=8, channels=1, dim_mults=(1, 2), use_convnext=False)
TINY_T = DiffusionConfig(timesteps=10)
SIZE = 8
FORWARD_CHECKS = ("settings", "weights", "predict", "reference")


@pytest.fixture(scope="session")
def sides() -> tuple[Any, Any]:
    """A session's (TorchSide, MsSide): kept so MindSpore's compiled steps are reused across runs on the
    shared models. Skips a test where either framework cannot be imported."""
    need("torch", "mindspore")
    from parity.sides.ms import MsSide
    from parity.sides.torch import TorchSide

    return TorchSide(), MsSide()


def _pair(sides: tuple[Any, Any], cfg: UnetConfig, seed: int) -> tuple[Any, Any]:
    side_t, side_m = sides
    model_t, model_m = side_t.build(cfg), side_m.build(cfg)
    weights = initial_weights(cfg, seed)
    side_t.load(model_t, weights)
    side_m.load(model_m, weights)
    return model_t, model_m


@pytest.fixture(scope="session")
def shared_models(sides) -> Callable[[UnetConfig], tuple[Any, Any]]:
    """``shared_models(cfg)`` -> the session's model pair for cfg (built once; reload weights per use)."""
    cache: dict[UnetConfig, tuple[Any, Any]] = {}

    def get(cfg: UnetConfig) -> tuple[Any, Any]:
        if cfg not in cache:
            cache[cfg] = _pair(sides, cfg, 0)
        return cache[cfg]

    return get


@pytest.fixture
def fresh_pair(sides) -> Callable[..., tuple[Any, Any]]:
    """``fresh_pair(cfg=TINY, seed=0)`` -> a new (torch, ms) model pair holding the seeded weights."""
    return lambda cfg=TINY, seed=0: _pair(sides, cfg, seed)


@pytest.fixture
def run(sides) -> Callable[..., Any]:
    """``run(model_t, model_m, checks=..., seed=0, **options)`` -> Report on the tiny diffusion."""
    from parity.api import check_models

    def go(model_t: Any, model_m: Any, checks=FORWARD_CHECKS, seed: int = 0, **options: Any) -> Any:
        options.setdefault("diffusion", TINY_T)
        options.setdefault("image_size", SIZE)
        options.setdefault("ddim_steps", 5)
        return check_models(model_t, model_m, seed=seed, checks=checks, sides=sides, **options)

    return go


@pytest.fixture(scope="session")
def cli_env() -> dict[str, str]:
    """Environment for ``python -m parity.check`` subprocesses run from the repository root."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return child_env(pythonpath=root, GLOG_v="3")


@pytest.fixture(scope="session")
def tutorial_ckpt(tmp_path_factory):
    """The tutorial's model (rename loop included) with its norms moved off 1/0, saved as the tutorial
    user would: ``ms.save_checkpoint(unet_model, path)``; and its noise predictions."""
    need("mindspore")
    import mindspore as ms

    from parity.tutorial_code import build_tutorial_unet

    model = build_tutorial_unet()
    rng = np.random.default_rng(0)
    for p in model.trainable_params():
        if p.name.rsplit(".", 1)[-1] in ("gamma", "beta", "g"):
            p.set_data(ms.Tensor(p.asnumpy() + 0.1 * rng.standard_normal(p.shape).astype(np.float32)))
    path = tmp_path_factory.mktemp("tutorial") / "tutorial.ckpt"
    ms.save_checkpoint(model, str(path))
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    t = np.array([0, 100, 199], np.int32)
    eps = model(ms.Tensor(x), ms.Tensor(t)).asnumpy()
    return path, x, t, eps
