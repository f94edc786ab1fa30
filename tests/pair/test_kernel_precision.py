"""A fact behind the diffusers/mindone pair (docs/pairs.md, docs/porting.md row 40): MindSpore 2.10's CPU float32
``exp`` is tens of ulps off where PyTorch's is within one, on the exponents of a sinusoidal time embedding's
frequencies (exp(-ln(10000) i / half), i < half: [-9.22, 0]). A MindSpore release that fixes it fails this test,
and the pair's SPEC can then drop its ``exp=float64`` fix."""
from __future__ import annotations

import numpy as np

from tests.host import needs


@needs("torch", "mindspore")
def test_mindspores_cpu_float32_exp_is_tens_of_ulps_off_and_pytorchs_is_within_one() -> None:
    import torch

    from ddpm_core.runtime.environment import pin_isa

    pin_isa()
    import mindspore as ms
    from mindspore import mint

    from parity.env import setup_mindspore

    setup_mindspore("CPU")
    x = np.linspace(-9.22, 0.0, 20001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)

    def ulps(y: np.ndarray) -> float:
        return float(np.max(np.abs(y.astype(np.float64) - exact) / ulp))

    assert ulps(torch.exp(torch.from_numpy(x)).numpy()) <= 1.0
    assert ulps(mint.exp(ms.Tensor(x)).asnumpy()) > 20.0  # 64 measured on 10^5 points (AMD EPYC)
    assert ulps(mint.exp(ms.Tensor(x.astype(np.float64))).asnumpy().astype(np.float32)) <= 1.0  # the SPEC's fix
