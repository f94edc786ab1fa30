"""SPEC: torchvision's ``resnet18`` against mindcv 0.3.0's ``resnet18`` (``pip install 'ddpm-parity[pairs]'``).

    python -m parity.pair examples/pairs/resnet18_mindcv.py                   # as mindcv ships it
    python -m parity.pair examples/pairs/resnet18_mindcv.py --set maxpool=pad  # with the one difference removed

The weights are torchvision's seeded initialisation with BatchNorm statistics and affine parameters drawn away
from their defaults (so every BatchNorm does something), mapped onto mindcv by the rules alone. The inputs are
one image at each of ``sizes`` (64x64 and 65x65 by default: ``--set sizes=[64,66,67]`` for others).

``maxpool``: "same" keeps mindcv's stem pooling as shipped (``nn.MaxPool2d(3, 2, pad_mode="same")``);
"pad" replaces it with torchvision's (3x3, stride 2, one pixel of padding on every side). docs/pairs.md says what
the tool finds and why.

Each framework is imported only where it is used, so the file is also the SPEC of two hosts (``--record GOLDEN``
where torchvision runs, ``--compare GOLDEN`` where mindcv runs).
"""
from __future__ import annotations

from typing import Any

import numpy as np


def torch_model(seed: int = 0) -> Any:
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_((torch.rand(n, generator=g) - 0.5) * 0.4)
    return model


def ms_model(maxpool: str = "same") -> object:
    import mindcv
    from mindspore import nn

    if maxpool not in ("same", "pad"):
        raise ValueError(f"maxpool must be 'same' (as shipped) or 'pad' (torchvision's), got {maxpool!r}")
    model = mindcv.create_model("resnet18", pretrained=False)
    if maxpool == "pad":
        model.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
    return model


def inputs(sizes: list[int] = [64, 65], seed: int = 0) -> list[np.ndarray]:  # noqa: B006 - read only
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, s, s)).astype(np.float32) for s in sizes]
