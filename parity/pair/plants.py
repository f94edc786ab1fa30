"""Bugs the self-test plants in a MindSpore port at run time, each undone after its run.

Rules it keeps: a plant changes one cell (or one parameter) and nothing else; it says where it is (the cell path)
and what it did; ``undo`` restores exactly what was there. The kinds, each a slip porters make:
  * ``eps``: a norm's epsilon x1.2 (MindSpore 2.10's BatchNorm, LayerNorm and GroupNorm: the epsilon their ops
    were built with, rebuilt; another norm class is listed as not plantable);
  * ``weight``: one weight tensor scaled by (1 + 1e-5), a 1e-5 relative error in a whole layer;
  * ``activation``: each activation cell's output replaced by its variant (``VARIANTS``) through a forward hook.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from mindspore import Tensor, ops

EPS_FACTOR = 1.2
WEIGHT_NUDGE = 1e-5

VARIANTS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "GELU": ("the other GELU (exact <-> tanh)",
             lambda c, x: ops.gelu(x, approximate="none" if str(c.approximate) in ("tanh", "True") else "tanh")),
    "ReLU": ("LeakyReLU(0.01)", lambda c, x: ops.leaky_relu(x, 0.01)),
    "ReLU6": ("ReLU (no cap at 6)", lambda c, x: ops.relu(x)),
    "SiLU": ("Hardswish", lambda c, x: ops.hardswish(x)),
    "Sigmoid": ("Hardsigmoid", lambda c, x: ops.hardsigmoid(x)),
    "LeakyReLU": ("ReLU (slope 0)", lambda c, x: ops.relu(x)),
}
"""Activation kind -> (its variant, how the variant computes the output from the cell's input)."""


@dataclass
class Plant:
    """One planted bug: what, where (the MindSpore cell), and how to undo it."""

    kind: str
    cell: str
    what: str
    undo: Callable[[], None]


def _norm_eps(cell: Any, kind: str) -> tuple[str, Callable[[], None]] | None:
    """Rebuild ``cell``'s norm op with epsilon x EPS_FACTOR; None where MindSpore's internals are unknown."""
    if kind.startswith("BatchNorm") and hasattr(cell, "bn_infer"):
        saved = (cell.eps, cell.bn_train, cell.bn_infer)
        eps = cell.eps * EPS_FACTOR
        cell.eps = eps
        cell.bn_train = ops.BatchNorm(is_training=True, epsilon=eps, momentum=cell.momentum, data_format=cell.format)
        cell.bn_infer = ops.BatchNorm(is_training=False, epsilon=eps, data_format=cell.format)

        def undo() -> None:
            cell.eps, cell.bn_train, cell.bn_infer = saved
        return f"eps {saved[0]:.3g} -> {eps:.3g}", undo
    if kind == "LayerNorm" and hasattr(cell, "layer_norm"):
        saved_ln = (cell.epsilon, cell.layer_norm)
        eps = cell.epsilon * EPS_FACTOR
        cell.epsilon = eps
        cell.layer_norm = ops.LayerNorm(begin_norm_axis=cell.begin_norm_axis,
                                        begin_params_axis=cell.begin_params_axis, epsilon=eps)

        def undo_ln() -> None:
            cell.epsilon, cell.layer_norm = saved_ln
        return f"epsilon {saved_ln[0]:.3g} -> {eps:.3g}", undo_ln
    if kind in ("GroupNorm", "LayerNorm") and isinstance(getattr(cell, "eps", None), float):
        old = cell.eps
        cell.eps = old * EPS_FACTOR

        def undo_eps() -> None:
            cell.eps = old
        return f"eps {old:.3g} -> {cell.eps:.3g}", undo_eps
    return None


def plant_eps(side: Any, path: str, kind: str) -> Plant | None:
    found = _norm_eps(side._cells[path], kind)
    return None if found is None else Plant("eps", path, found[0], found[1])


def plant_weight(side: Any, name: str) -> Plant:
    param = side._params[name]
    original = np.array(param.asnumpy(), copy=True)
    param.set_data(Tensor(original * np.float32(1 + WEIGHT_NUDGE), param.dtype))
    return Plant("weight", name.rsplit(".", 1)[0], f"{name} x (1 + {WEIGHT_NUDGE:g})",
                 lambda: param.set_data(Tensor(original, param.dtype)))


def plant_activation(side: Any, path: str, kind: str) -> Plant:
    what, variant = VARIANTS[kind]
    cell = side._cells[path]
    handle = cell.register_forward_hook(lambda c, args, out: variant(c, args[0]))
    return Plant("activation", path, f"{kind} -> {what}", handle.remove)
