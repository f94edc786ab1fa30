"""Mixed precision for the MindSpore twin: a model put under a named policy, and the dtypes it runs in;
mirrors ddpm_torch/amp.py.

``apply_policy(model, Policy("ms", "O2", "float16"))`` is ``mindspore.amp.auto_mixed_precision(model, "O2",
ms.float16)``, unchanged: O2/O3 return a ``_OutputTo32`` cell around the model (parameter names unchanged,
structural paths under ``_backbone``, see ``backbone``), "auto" the model itself with its construct under an
amp strategy (output in the low dtype), O1 a network rewritten by ``mindspore.rewrite`` -- which cannot
parse the tutorial's ``Residual`` (it passes ``*args`` on to ``PreNorm(x)``), so O1 raises
``UnsupportedPolicy`` naming that. The returned network keeps the model's ``config``.
``observed_dtypes`` records, with forward hooks (PyNative), the dtype every cell call receives and returns.
"""
from __future__ import annotations

from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, amp, nn

from ddpm_core.runtime.amp import DtypeRecord, Policy

DTYPES = {"float16": ms.float16, "bfloat16": ms.bfloat16}


class UnsupportedPolicy(RuntimeError):
    """MindSpore refuses to put this model under the policy; the message says why, in one line."""


def dtype_name(dtype: ms.Type) -> str:
    """"float16", "float32", "bfloat16", ... for a MindSpore dtype."""
    return str(dtype).lower()


def apply_policy(model: nn.Cell, policy: Policy) -> nn.Cell:
    """``auto_mixed_precision(model, policy.level, dtype)``: the network to call from now on (it shares
    ``model``'s parameters). ``UnsupportedPolicy`` where MindSpore cannot apply the level to this model."""
    if policy.full:
        return model
    try:
        net = amp.auto_mixed_precision(model, policy.level, dtype=DTYPES[policy.dtype])
    except (RuntimeError, TypeError) as e:  # which one depends on what the process built before (measured)
        raise UnsupportedPolicy(f"mindspore.amp.auto_mixed_precision(level={policy.level!r}) fails on this model: "
                                f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]} (O1 rewrites the network's "
                                "Python source with mindspore.rewrite, which cannot map the tutorial's Residual(*args) "
                                "onto PreNorm.construct(x), nor read the source of MindSpore's own primitives)") from None
    net.config = model.config
    net.precision_policy = policy
    return net


def backbone(model: nn.Cell) -> nn.Cell:
    """The U-Net whose cells carry the structural paths (inside O2/O3's ``_OutputTo32``)."""
    return getattr(model, "_backbone", model)


def observed_dtypes(model: nn.Cell, x: np.ndarray, t: np.ndarray) -> list[DtypeRecord]:
    """Every cell call of ``model(x, t)`` (PyNative), in the order calls finish, with its dtypes; ``model`` as
    ``apply_policy`` returned it."""
    inner = backbone(model)
    names = {id(c): n for n, c in inner.cells_and_names()}
    records: list[DtypeRecord] = []

    def hook(cell: nn.Cell, args: tuple, output: Any) -> None:
        ins = tuple(dtype_name(a.dtype) for a in args if isinstance(a, Tensor) and a.dtype in (ms.float16, ms.float32,
                                                                                               ms.bfloat16, ms.float64))
        records.append(DtypeRecord(names[id(cell)], type(cell).__name__, ins, dtype_name(output.dtype)))

    handles = [c.register_forward_hook(hook) for _, c in inner.cells_and_names()]
    try:
        model(Tensor(np.array(x)), Tensor(np.array(t)))
    finally:
        for h in handles:
            h.remove()
    return records
