"""Shared fixtures. ``twin`` runs a behaviour test once per framework.

A ``Twin`` is the twin's own adapter (``ddpm_torch.adapter`` / ``ddpm_ms.adapter``, the one load path
the programs use): build a Unet from a ``UnetConfig``, load a ``{torch_name: ndarray}`` weight dict, run
a forward pass numpy in / numpy out, list the live parameters. Tests written against it run unchanged
for both twins.

No framework is imported here unless it is installed: each twin is built when a test first asks for it, and
a test whose framework is missing skips, saying so (tests/host.py: ``needs``, ``need``, ``framework``;
``--require-frameworks`` / ``DDPM_PARITY_REQUIRE`` turn a missing framework into a stop).
"""
from ddpm_core.runtime.environment import pin_isa

pin_isa()  # MindSpore's oneDNN must see this before its first CPU kernel (docs/performance.md)

import functools  # noqa: E402
import os  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig, UnetConfig  # noqa: E402
from ddpm_core.weights.naming import unet_parameters  # noqa: E402
from parity.engine.initial import initial_weights  # noqa: E402
from tests.host import REQUIRE_VARIABLE, TWIN_FRAMEWORK, TWINS, available, missing, need, needs, required  # noqa: E402

if available("torch"):
    import torch

    # In a process where MindSpore has run a CPU kernel, PyTorch's intra-op thread pool fights MindSpore's
    # runtime threads: on the 2-core CI machine a tutorial-config forward took 3-5 s with 2 torch threads and
    # 0.15-0.25 s with 1 (measured). The tests use tiny tensors; one thread loses nothing.
    torch.set_num_threads(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--require-frameworks", default=os.environ.get(REQUIRE_VARIABLE, ""),
                     metavar="torch,torchvision,mindspore",
                     help="stop, instead of skipping their tests, when one of these frameworks cannot be imported "
                          f"(default: ${REQUIRE_VARIABLE}; tests/host.py)")


def pytest_configure(config: pytest.Config) -> None:
    try:
        gone = [f for f in required(config.getoption("--require-frameworks")) if missing(f)]
    except ValueError as e:
        raise pytest.UsageError(f"--require-frameworks / {REQUIRE_VARIABLE}: {e}") from None
    if gone:
        raise pytest.UsageError(f"--require-frameworks / {REQUIRE_VARIABLE} requires {', '.join(gone)}, which this "
                                f"Python cannot import ({'; '.join(missing(f) for f in gone)})")


TWIN_ARGUMENTS = ("twin", "twin_name")
"""A test parametrized over one of these with ``"torch"`` or ``"ms"`` needs that twin's framework."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test parametrized over a twin's name with ``needs`` that twin's framework."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        for arg in TWIN_ARGUMENTS:
            if isinstance(params.get(arg), str) and params[arg] in TWIN_FRAMEWORK:
                item.add_marker(needs(TWIN_FRAMEWORK[params[arg]]))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        need(*mark.args)


class Twin:
    """What a behaviour test needs from one framework, numpy in and numpy out: the twin's adapter (its one
    load path) plus the classes and a few test-only views."""

    name: str
    Unet: type
    GaussianDiffusion: type

    def diffusion(self, cfg: DiffusionConfig = TUTORIAL_DIFFUSION) -> Any:
        return self.GaussianDiffusion(cfg)

    def build_loaded(self, cfg: UnetConfig, weights: dict[str, np.ndarray]) -> Any:
        return self.load_model(weights, cfg)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x) if isinstance(x, (np.ndarray, float, int)) else self.numpy(x)

    def table_names(self, cfg: UnetConfig) -> list[tuple[str, tuple[int, ...]]]:
        return [(s.torch_name if self.name == "torch" else s.ms_name, s.shape) for s in unet_parameters(cfg)]

    def __repr__(self) -> str:
        return f"Twin({self.name})"


def _torch_twin() -> Twin:
    import ddpm_torch
    from ddpm_torch.adapter import Adapter

    class TorchTwin(Twin, Adapter):
        Unet = ddpm_torch.Unet
        GaussianDiffusion = ddpm_torch.GaussianDiffusion

        def parameters(self, model: Any) -> list[tuple[str, tuple[int, ...]]]:
            return [(n, tuple(p.shape)) for n, p in model.named_parameters()]

        def toy_model(self) -> Callable:
            """eps(x, t) = 0.9 x + 0.001 t: cheap, with the numpy twin ``toy_model_np``."""
            return lambda x, t: x * 0.9 + t.to(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    return TorchTwin()


def _ms_twin() -> Twin:
    import ddpm_ms
    from ddpm_ms.adapter import Adapter

    class MsTwin(Twin, Adapter):
        Unet = ddpm_ms.Unet
        GaussianDiffusion = ddpm_ms.GaussianDiffusion

        def parameters(self, model: Any) -> list[tuple[str, tuple[int, ...]]]:
            return [(p.name, tuple(p.shape)) for p in model.get_parameters()]

        def toy_model(self) -> Callable:
            return lambda x, t: x * 0.9 + t.astype(x.dtype).reshape(-1, 1, 1, 1) * 0.001

    return MsTwin()


def toy_model_np(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The numpy twin of ``Twin.toy_model`` (float64)."""
    return x * 0.9 + t.astype(np.float64).reshape(-1, 1, 1, 1) * 0.001


@functools.lru_cache(maxsize=None)
def get_twin(name: str) -> Twin:
    """The ``torch`` or ``ms`` twin, built on first use; skips the calling test where its framework cannot be
    imported (tests/host.py)."""
    need(TWIN_FRAMEWORK[name])
    return {"torch": _torch_twin, "ms": _ms_twin}[name]()


@pytest.fixture(params=TWINS)
def twin(request) -> Twin:
    """Each twin in turn: ``torch`` then ``ms`` (each skipped where its framework cannot be imported)."""
    return get_twin(request.param)


@pytest.fixture(scope="session")
def torch_twin() -> Twin:
    return get_twin("torch")


@pytest.fixture(scope="session")
def ms_twin() -> Twin:
    return get_twin("ms")


@functools.lru_cache(maxsize=None)
def seeded_weights(cfg: UnetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic ``{torch_name: float32 ndarray}`` for ``Unet(cfg)``, read-only, computed in numpy (no
    framework): the harness's ``parity.engine.initial.initial_weights``, PyTorch's default distributions with
    every norm gain/bias moved off 1/0 by 0.1 * N(0, 1), so a swapped or dropped norm parameter cannot hide
    behind the identity init."""
    return initial_weights(cfg, seed)


@pytest.fixture(scope="session")
def make_weights() -> Callable[..., dict[str, np.ndarray]]:
    """``make_weights(cfg, seed=0)`` -> cached deterministic torch-named weights (see ``seeded_weights``)."""
    return lambda cfg, seed=0: dict(seeded_weights(cfg, seed))


def damage_tensor_bytes(path, value: np.ndarray, count: int = 8) -> int:
    """Flip ``count`` bytes in the middle of ``value``'s data inside the weights file ``path`` (found by its
    bytes, which every format stores as they are); returns the offset. The file keeps its size and layout:
    only a checksum can tell."""
    data = bytearray(open(path, "rb").read())
    raw = np.ascontiguousarray(value, dtype=np.asarray(value).dtype.newbyteorder("<")).tobytes()
    start = data.find(raw)
    assert start >= 0 and len(raw) >= 4 * count, f"{path}: the tensor's bytes are not stored as they are"
    at = start + len(raw) // 2
    data[at:at + count] = bytes(b ^ 0x5A for b in data[at:at + count])
    with open(path, "wb") as f:
        f.write(bytes(data))
    return at
