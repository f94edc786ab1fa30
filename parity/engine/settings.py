"""The settings check: before any numbers, compare what each matched pair of layers is configured to do.

Rule: modules are matched by structural name (torch ``named_modules`` == MindSpore
``cells_and_names``), never by call order. Each side translates its layers' configuration (its own reader:
``parity.sides.torch_settings``, ``parity.sides.ms_settings``) into one framework-neutral vocabulary (``kind`` + settings dict: GELU approximation, bias present, eps,
padding as (top, bottom, left, right), groups, kernel size, stride, dilation, softmax axis, ...),
and every difference is a failure that names the module, e.g.
``GELU approximate: tanh in MindSpore, none (exact) in PyTorch at `downs.1.0.net.2```.
Settings a layer keeps in code rather than attributes are measured where a probe can do it
(the channel LayerNorm's eps and variance ddof); anything else unknowable is left to the numeric
localisation (parity.engine.localise).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ddpm_core.contract import Side

T = TypeVar("T")
U = TypeVar("U")

INTERNAL = {"training", "requires_grad", "is_top_cell", "arguments_key", "grad_ops_label", "has_bprop", "phase",
            "cell_type", "cls_name", "enable_hook", "bprop_debug", "recompute_cell", "dump_data"}
"""Framework bookkeeping attributes that are no setting of a layer."""


def pair2(v: Any) -> tuple[int, ...]:
    """A size given as one int or a sequence, as a tuple (an int n as (n, n))."""
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def same_padding(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> Any:
    """'same' padding as (top, bottom, left, right) where it does not depend on the input (stride 1;
    both frameworks put an odd extra pixel at the bottom/right); else the string."""
    if any(s != 1 for s in stride):
        return "same"
    (th, tw) = (d * (k - 1) for k, d in zip(kernel, dilation))
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def custom_settings(module: Any) -> dict[str, Any]:
    """Public scalar attributes of a user-defined layer (``heads``, ``scale``, ``dim``, ...)."""
    out = {}
    for k, v in vars(module).items():
        if k.startswith("_") or k in INTERNAL or isinstance(v, bool):
            continue
        if isinstance(v, (int, float, str)) or (isinstance(v, tuple) and all(isinstance(x, (int, float)) for x in v)):
            out[k] = v
    return out


def _fmt(key: str, v: Any) -> str:
    if key == "approximate":
        return {"none": "none (exact)", "tanh": "tanh"}.get(str(v), str(v))
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def same_setting(a: Any, b: Any) -> bool:
    """Two settings' values agree: floats to 1e-3 relative (an epsilon written 1e-5 in one framework and
    1.0000000656873453e-05 after a float32 round trip in the other), anything else by ``==``."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-3, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    return bool(a == b)


@dataclass
class SettingMismatch:
    module: str
    kind: str
    key: str
    torch_value: Any
    ms_value: Any

    def describe(self) -> str:
        if self.key == "(module)":
            return f"{self.kind}: {self.ms_value} in MindSpore, {self.torch_value} in PyTorch at `{self.module}`"
        return (f"{self.kind} {self.key}: {_fmt(self.key, self.ms_value)} in MindSpore, "
                f"{_fmt(self.key, self.torch_value)} in PyTorch at `{self.module}`")

    def to_dict(self) -> dict:
        return {"module": self.module, "kind": self.kind, "key": self.key, "torch": repr(self.torch_value),
                "ms": repr(self.ms_value), "message": self.describe()}


def probe_channel_layer_norm(side: Side[Any, Any], module: Any) -> dict[str, Any]:
    """eps and variance ddof of a channel LayerNorm (normalises dim 1 of (B, C, H, W), gain ``g``/
    ``weight``/``gamma``), measured: feed x and -x (so any bias cancels) at a large and a tiny variance."""
    params = side.parameters_of(module)
    gain = next((params[k] for k in ("g", "weight", "gamma") if k in params), None)
    if gain is None or gain.size < 2:
        return {}
    c = gain.size
    g = gain.reshape(-1).astype(np.float64)
    use = np.abs(g) > 1e-3
    base = np.linspace(-1.0, 1.0, c) * np.where(np.arange(c) % 2, 1.0, -1.0)
    found = {}
    s2 = []
    for scale in (1.0, 1e-2):
        x = (base * scale).astype(np.float32).reshape(1, c, 1, 1)
        y_pos = side.run_module(module, (x,))[0].astype(np.float64).reshape(-1)
        y_neg = side.run_module(module, (-x,))[0].astype(np.float64).reshape(-1)
        n = (y_pos - y_neg) / 2.0 / np.where(use, g, 1.0)
        xc = x.astype(np.float64).reshape(-1) - x.astype(np.float64).mean()
        ok = use & (np.abs(n) > 1e-6)
        if not ok.any():
            return {}
        s2.append((float(np.median((xc[ok] / n[ok]) ** 2)), float(np.mean(xc**2))))
    (big, v_big), (small, v_small) = s2
    f = (big - small) / (v_big - v_small)  # var_ddof = f * var_population, f = C / (C - ddof)
    eps = small - f * v_small
    ddof = c * (1.0 - 1.0 / f)
    found["ddof"] = int(round(ddof)) if abs(ddof - round(ddof)) < 0.05 else round(ddof, 3)
    found["eps"] = float(f"{eps:.2g}") if eps > 0 else 0.0
    return found


def check_settings(side_t: Side[T, Any], model_t: T, side_m: Side[U, Any], model_m: U) -> tuple[list[SettingMismatch], int]:
    """Every settings mismatch between matched module pairs, in PyTorch's module order; and the
    number of pairs checked."""
    mods_t, mods_m = side_t.modules(model_t), side_m.modules(model_m)
    out: list[SettingMismatch] = []
    for name in [n for n in mods_m if n not in mods_t]:
        out.append(SettingMismatch(name or "(root)", type(mods_m[name]).__name__, "(module)", "absent", "present"))
    pairs = 0
    for name, mt in mods_t.items():
        if name not in mods_m:
            out.append(SettingMismatch(name or "(root)", type(mt).__name__, "(module)", "present", "absent"))
            continue
        (kt, st), (km, sm) = side_t.settings(mt), side_m.settings(mods_m[name])
        pairs += 1
        if kt != km:
            out.append(SettingMismatch(name or "(root)", "layer type", "(module)", kt, km))
            continue
        if kt.endswith("LayerNorm") and "eps" not in st and "eps" not in sm:
            st = {**st, **probe_channel_layer_norm(side_t, mt)}
            sm = {**sm, **probe_channel_layer_norm(side_m, mods_m[name])}
        for key in [k for k in st if k in sm]:
            if not same_setting(st[key], sm[key]):
                out.append(SettingMismatch(name or "(root)", kt, key, st[key], sm[key]))
    return out, pairs


def summarize(mismatches: list[SettingMismatch], limit: int = 3) -> list[str]:
    """One line per kind of mismatch: the first module, and how many more share it."""
    groups: dict[tuple, list[SettingMismatch]] = {}
    for m in mismatches:
        groups.setdefault((m.kind, m.key, repr(m.torch_value), repr(m.ms_value)), []).append(m)
    lines = []
    for ms_list in list(groups.values())[:limit]:
        more = len(ms_list) - 1
        lines.append(ms_list[0].describe() + (f" (and {more} more)" if more else ""))
    if len(groups) > limit:
        lines.append(f"... {len(groups) - limit} more kinds of settings mismatch (see --json)")
    return lines
