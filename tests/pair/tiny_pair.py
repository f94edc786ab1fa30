"""A small hand-written pair for parity.pair's tests, and a SPEC file (``python -m parity.pair tests/pair/tiny_pair.py``).

A conv + BatchNorm + ReLU stem, then a transformer-ish block on the pixels as tokens (LayerNorm, Linear, GELU,
Linear, residual) and a Linear head, written once in PyTorch and once in MindSpore the way a careful porter would.
``slip`` plants one porting slip in the MindSpore side (or in the weight map):
  * "ln_eps": MindSpore's LayerNorm left at its default epsilon 1e-7 (PyTorch's default is 1e-5);
  * "gelu": MindSpore's GELU left at its default, the tanh approximation (PyTorch's default is exact);
  * "transpose": the head's (square) weight converted transposed;
  * "momentum": BatchNorm given PyTorch's momentum 0.1 (MindSpore's argument means 1 - that);
  * "" : none, the correct port.
``loss`` and ``optimizers`` make it compare one training step too (``--set optimizer=adam`` for Adam).
"""
from __future__ import annotations

import numpy as np

SLIPS = ("ln_eps", "gelu", "transpose", "momentum")
WIDTH = 8


def _torch_classes() -> tuple[type, type]:
    """The PyTorch side, built on first use: this file is also the SPEC of a MindSpore-only host's
    ``--compare`` (tests/pair/test_golden.py), where torch is not installed."""
    import torch
    from torch import nn as tnn

    class TorchBlock(tnn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.norm = tnn.LayerNorm(dim)
            self.fc1 = tnn.Linear(dim, 2 * dim)
            self.act = tnn.GELU()
            self.fc2 = tnn.Linear(2 * dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    class TinyTorch(tnn.Module):
        def __init__(self, dim: int = WIDTH):
            super().__init__()
            self.conv = tnn.Conv2d(3, dim, 3, padding=1)
            self.bn = tnn.BatchNorm2d(dim)
            self.relu = tnn.ReLU()
            self.block = TorchBlock(dim)
            self.head = tnn.Linear(dim, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.bn(self.conv(x)))               # (B, C, H, W)
            tokens = h.flatten(2).transpose(1, 2)              # (B, HW, C)
            return self.head(self.block(tokens).mean(dim=1))   # (B, C)

    return TorchBlock, TinyTorch


def _ms_classes() -> tuple[type, type]:
    from mindspore import nn, ops

    class MsBlock(nn.Cell):
        def __init__(self, dim: int, ln_eps: float, gelu_approximate: bool):
            super().__init__()
            self.norm = nn.LayerNorm((dim,), epsilon=ln_eps)
            self.fc1 = nn.Dense(dim, 2 * dim)
            self.act = nn.GELU(approximate=gelu_approximate)
            self.fc2 = nn.Dense(2 * dim, dim)

        def construct(self, x):
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    class TinyMs(nn.Cell):
        def __init__(self, dim: int = WIDTH, ln_eps: float = 1e-5, gelu_approximate: bool = False,
                     bn_momentum: float = 0.9):
            super().__init__()
            self.conv = nn.Conv2d(3, dim, 3, pad_mode="pad", padding=1, has_bias=True)
            self.bn = nn.BatchNorm2d(dim, momentum=bn_momentum)
            self.relu = nn.ReLU()
            self.block = MsBlock(dim, ln_eps, gelu_approximate)
            self.head = nn.Dense(dim, dim)

        def construct(self, x):
            h = self.relu(self.bn(self.conv(x)))
            tokens = ops.transpose(h.reshape(h.shape[0], h.shape[1], -1), (0, 2, 1))
            return self.head(self.block(tokens).mean(axis=1))

    return MsBlock, TinyMs


def torch_model(seed: int = 0) -> object:
    """The reference, with seeded weights and BatchNorm statistics that are not the defaults."""
    import torch

    torch.manual_seed(seed)
    model = _torch_classes()[1]()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    return model


def ms_model(slip: str = "") -> object:
    if slip and slip not in SLIPS:
        raise ValueError(f"unknown slip {slip!r} (known: {', '.join(SLIPS)})")
    _, TinyMs = _ms_classes()
    return TinyMs(ln_eps=1e-7 if slip == "ln_eps" else 1e-5, gelu_approximate=slip == "gelu",
                  bn_momentum=0.1 if slip == "momentum" else 0.9)


def name_map(slip: str = "") -> dict:
    return {"head.weight": ("head.weight", "transpose")} if slip == "transpose" else {}


def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((2, 3, 5, 5)).astype(np.float32)]


def loss(outputs: object) -> object:
    """The same expression on either framework's tensor."""
    return (outputs ** 2).mean()  # type: ignore[operator]


def optimizers(optimizer: str = "sgd") -> dict:
    """One step of each side's optimizer: "sgd" (the same rule in both) or "adam" (MindSpore's nn.Adam adds eps
    before the bias correction, PyTorch's after it: a known difference, docs/porting.md)."""
    def make(framework: str, ps: list) -> object:  # each framework imported when its side steps (one may be absent)
        if framework == "torch":
            import torch

            return torch.optim.SGD(ps, lr=0.1) if optimizer == "sgd" else torch.optim.Adam(ps, lr=1e-3, eps=1e-8)
        from mindspore import nn

        return nn.SGD(ps, learning_rate=0.1) if optimizer == "sgd" else nn.Adam(ps, learning_rate=1e-3, eps=1e-8)

    return {"torch": lambda ps: make("torch", ps), "ms": lambda ps: make("ms", ps)}
