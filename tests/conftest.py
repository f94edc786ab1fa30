"""Shared fixtures. ``twin`` runs a behaviour test once per framework.

A ``Twin`` is the twin's own adapter (``ddpm_torch.adapter`` / ``ddpm_ms.adapter``, the one load path
the programs use): build a Unet from a ``UnetConfig``, load a ``{torch_name: ndarray}`` weight dict, run
a forward pass numpy in / numpy out, list the live parameters. Tests written against it run unchanged
for both twins.
"""
from ddpm_core.environment import pin_isa

pin_isa()  # MindSpore's oneDNN must see this before its first CPU kernel (docs/performance.md)

import functools  # noqa: E402
from typing import Any, Callable  # noqa: E402

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import ddpm_ms  # noqa: E402
import ddpm_torch  # noqa: E402
from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig, UnetConfig  # noqa: E402
from ddpm_core.naming import unet_parameters  # noqa: E402
from ddpm_ms.adapter import Adapter as MsAdapter  # noqa: E402
from ddpm_torch.adapter import Adapter as TorchAdapter  # noqa: E402

# In a process where MindSpore has run a CPU kernel, PyTorch's intra-op thread pool fights MindSpore's
# runtime threads: on the 2-core CI machine a tutorial-config forward took 3-5 s with 2 torch threads and
# 0.15-0.25 s with 1 (measured). The tests use tiny tensors; one thread loses nothing.
torch.set_num_threads(1)

NORM_MODULES = ("GroupNorm", "LayerNorm")


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


class TorchTwin(Twin, TorchAdapter):
    Unet = ddpm_torch.Unet
    GaussianDiffusion = ddpm_torch.GaussianDiffusion

    def parameters(self, model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
        return [(n, tuple(p.shape)) for n, p in model.named_parameters()]

    def toy_model(self) -> Callable:
        """eps(x, t) = 0.9 x + 0.001 t: cheap, with the numpy twin ``toy_model_np``."""
        return lambda x, t: x * 0.9 + t.to(x.dtype).reshape(-1, 1, 1, 1) * 0.001


class MsTwin(Twin, MsAdapter):
    Unet = ddpm_ms.Unet
    GaussianDiffusion = ddpm_ms.GaussianDiffusion

    def parameters(self, model: ms.nn.Cell) -> list[tuple[str, tuple[int, ...]]]:
        return [(p.name, tuple(p.shape)) for p in model.get_parameters()]

    def toy_model(self) -> Callable:
        return lambda x, t: x * 0.9 + t.astype(x.dtype).reshape(-1, 1, 1, 1) * 0.001


def toy_model_np(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The numpy twin of ``Twin.toy_model`` (float64)."""
    return x * 0.9 + t.astype(np.float64).reshape(-1, 1, 1, 1) * 0.001


TWINS = {"torch": TorchTwin(), "ms": MsTwin()}


@pytest.fixture(params=sorted(TWINS, reverse=True))
def twin(request) -> Twin:
    """Each twin in turn: ``torch`` then ``ms``."""
    return TWINS[request.param]


@pytest.fixture(scope="session")
def torch_twin() -> Twin:
    return TWINS["torch"]


@pytest.fixture(scope="session")
def ms_twin() -> Twin:
    return TWINS["ms"]


@functools.lru_cache(maxsize=None)
def seeded_weights(cfg: UnetConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic ``{torch_name: float32 ndarray}`` for ``Unet(cfg)``: PyTorch's default init under
    ``torch.manual_seed(seed)``, then every norm gain/bias moved off 1/0 by 0.1 * N(0, 1) (seeded) so a
    swapped or dropped norm parameter cannot hide behind the identity init. Arrays are read-only."""
    torch.manual_seed(seed)
    model = ddpm_torch.Unet.from_config(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    norm_names = {s.torch_name for s in unet_parameters(cfg) if s.module in NORM_MODULES}
    out = {}
    for name, p in model.state_dict().items():
        a = p.detach().clone()
        if name in norm_names:
            a += 0.1 * torch.randn(a.shape, generator=gen)
        arr = a.numpy().astype(np.float32)
        arr.setflags(write=False)
        out[name] = arr
    return out


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
