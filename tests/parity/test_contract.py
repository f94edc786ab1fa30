"""Every implementation meets its contract (``ddpm_core.contract``): the twins' adapters, the parity sides,
the float64 specification's side, the trainers and the distributed modules. ``runtime_checkable``
Protocols check that each promised member exists; the behaviour behind them is what the rest of the
suite tests."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from ddpm_core.config import UnetConfig
from ddpm_core.contract import Distributed, InferenceSide, Side, Trainer, TwinAdapter
from ddpm_core.reference.side import ReferenceSide
from tests.host import PROGRAM_FRAMEWORKS, TWINS, need

TINY = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
SIDES = {"torch": "TorchSide", "ms": "MsSide"}


def twin_module(twin: str, name: str):
    """``ddpm_<twin>.<name>``."""
    return importlib.import_module(f"ddpm_{twin}.{name}")


@pytest.mark.parametrize("twin", TWINS)
def test_adapters_are_twin_adapters(twin):
    assert isinstance(twin_module(twin, "adapter").Adapter(), TwinAdapter)


@pytest.mark.parametrize("twin", TWINS)
def test_parity_sides_are_full_sides_and_adapters(twin):
    impl = getattr(importlib.import_module(f"parity.sides.{twin}"), SIDES[twin])()
    assert isinstance(impl, Side) and isinstance(impl, InferenceSide) and isinstance(impl, TwinAdapter)


def test_the_specification_is_an_inference_side_without_gradients():
    assert isinstance(ReferenceSide(), InferenceSide)
    assert not isinstance(ReferenceSide(), Side)  # it defines the forward math only


@pytest.mark.parametrize("twin", TWINS)
def test_trainers_declare_the_trainer_members(twin):
    need(*PROGRAM_FRAMEWORKS[twin])
    module = twin_module(twin, "train")
    members = [m for m in Trainer.__dict__ if not m.startswith("_")] + list(Trainer.__annotations__)
    missing = [m for m in members if not hasattr(module.Trainer, m)]
    assert not missing, missing


@pytest.mark.parametrize("twin", TWINS)
def test_distributed_modules_have_the_members(twin):
    module = twin_module(twin, "distributed")
    members = [m for m in Distributed.__dict__ if not m.startswith("_")] + list(Distributed.__annotations__)
    missing = [m for m in members if not hasattr(module, m)]
    assert not missing, missing


@pytest.mark.parametrize("twin", TWINS)
def test_the_one_load_path_is_strict(twin, make_weights):
    """A missing key, an extra key and a wrong shape are each refused, naming the key."""
    adapter = twin_module(twin, "adapter").Adapter()
    weights = make_weights(TINY)
    model = adapter.build(TINY)
    name = next(iter(weights))
    bad = [{k: v for k, v in weights.items() if k != name},
           {**weights, "extra.weight": np.zeros(3, np.float32)},
           {**weights, name: np.zeros((1, *weights[name].shape), np.float32)}]
    for state in bad:
        with pytest.raises((ValueError, RuntimeError), match=r"extra\.weight|" + name.replace(".", r"\.")):
            adapter.load(model, state)
    adapter.load(model, weights)
    back = adapter.state(model)
    assert sorted(back) == sorted(weights) and all(np.array_equal(back[k], weights[k]) for k in weights)
