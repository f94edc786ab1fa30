"""The settings check of a pair: what each paired layer is configured to do, in one vocabulary, per call.

Rules it keeps (framework-free; each side's reader translates its layers into the vocabulary of
``parity.engine.settings``: kind + settings dict, padding as (top, bottom, left, right), BatchNorm momentum in
PyTorch's convention, GELU approximation as "none"/"tanh"):
  * only layers whose kind both readers know are compared (a user's own class has no settings to read; its
    numbers are still compared); two known activations of different kinds are a difference (ReLU against ReLU6);
  * padding a layer computes from the input ("same" with a stride) is resolved at the size of the call's input,
    so a difference that exists at some input sizes and not others is reported at the sizes where it exists;
  * a difference names the module on each side, the setting, and both values, e.g.
    ``MaxPool2d padding: (0, 1, 0, 1) in MindSpore ('same' at 32x32), (1, 1, 1, 1) in PyTorch at `maxpool```.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from parity.engine.settings import same_setting

ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU", "Mish", "Hardswish",
               "Hardsigmoid", "Softplus", "PReLU", "SELU", "CELU")
"""Layers whose kind alone says which function they compute: a pair of two different ones is a difference."""


_MS_NOTES = {"momentum": "in PyTorch's convention: MindSpore's momentum argument is 1 minus this"}


@dataclass(frozen=True)
class SettingDifference:
    """One setting that differs between a pair of layers at one call."""

    torch_module: str
    other_module: str
    kind: str
    key: str
    torch_value: Any
    other_value: Any
    other_label: str = "MindSpore"
    note: str = ""

    def describe(self) -> str:
        where = f"`{self.torch_module or '(root)'}`" + (
            f" / `{self.other_module or '(root)'}`" if self.other_module != self.torch_module else "")
        if self.key == "(kind)":
            return f"layer type: {self.other_value} in {self.other_label}, {self.torch_value} in PyTorch at {where}"
        note = f" ({self.note})" if self.note else ""
        return (f"{self.kind} {self.key}: {_fmt(self.other_value)} in {self.other_label}{note}, "
                f"{_fmt(self.torch_value)} in PyTorch at {where}")

    def to_dict(self) -> dict:
        return {"torch_module": self.torch_module, "other_module": self.other_module, "kind": self.kind,
                "key": self.key, "torch": repr(self.torch_value), "other": repr(self.other_value),
                "note": self.note, "message": self.describe()}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
                 dilation: tuple[int, ...]) -> tuple[int, ...]:
    """'same' padding at this input size as (top, bottom, left, right): output ceil(n / s), the odd extra pixel
    at the bottom/right (both frameworks' convention)."""
    out = []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        out += [total // 2, total - total // 2]
    return tuple(out)


def resolve(settings: dict[str, Any], input_shape: tuple[int, ...] | None) -> tuple[dict[str, Any], str]:
    """``settings`` with a "same" padding resolved at the input's spatial size (the last two axes), and a note
    saying so ('' when nothing was resolved)."""
    if settings.get("padding") != "same" or not input_shape or len(input_shape) < 3:
        return settings, ""
    size = tuple(int(n) for n in input_shape[-2:])
    kernel = tuple(settings.get("kernel_size", (1, 1)))
    stride = tuple(settings.get("stride", (1, 1)))
    dilation = tuple(settings.get("dilation", (1, 1)))
    pad = same_padding(size, kernel, stride, dilation)
    return {**settings, "padding": pad}, f"'same' at {size[0]}x{size[1]}"


def compare_settings(torch_module: str, other_module: str, torch_read: tuple[str, dict] | None,
                     other_read: tuple[str, dict] | None, input_shape: tuple[int, ...] | None,
                     other_label: str = "MindSpore") -> list[SettingDifference]:
    """The differences between one pair of layers at one call (empty when either reader does not know it)."""
    if torch_read is None or other_read is None:
        return []
    (kt, st), (ko, so) = torch_read, other_read
    if kt != ko:
        if kt in ACTIVATIONS and ko in ACTIVATIONS:
            return [SettingDifference(torch_module, other_module, kt, "(kind)", kt, ko, other_label)]
        return []
    st, _ = resolve(st, input_shape)
    so, note = resolve(so, input_shape)
    notes = {"padding": note, **(_MS_NOTES if other_label == "MindSpore" else {})}
    return [SettingDifference(torch_module, other_module, kt, key, st[key], so[key], other_label, notes.get(key, ""))
            for key in st if key in so and not same_setting(st[key], so[key])]
