"""Training extras a checkpoint may carry beside the model: MindSpore's training scalars, optimizer slots and
a wrapper cell's name prefix, recognised by named rules, set aside and reported (docs/weights.md).

Rule: an entry is skipped only when a rule below names it (``TRAINING_SCALARS`` by its last name segment,
``OPTIMIZER_SLOTS`` as ``[wrapper.]<slot>.<model parameter>``); everything else stays, so the strict check
(``ddpm_core.weights.converter.weight_problems``) reports it as unexpected.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

from ddpm_core.config import UnetConfig
from ddpm_core.weights.formats import Skipped
from ddpm_core.weights.naming import unet_parameters

TRAINING_SCALARS = {
    "global_step": "optimizer step counter (every nn.Optimizer)",
    "learning_rate": "optimizer learning rate (every nn.Optimizer)",
    "beta1_power": "Adam bias-correction power (nn.Adam)",
    "beta2_power": "Adam bias-correction power (nn.Adam)",
    "momentum": "momentum coefficient (nn.Momentum, nn.SGD)",
    "scale_sense": "loss scale (nn.TrainOneStepWithLossScaleCell)",
    "current_iterator_step": "dataset position (Model.train checkpoints)",
    "last_overflow_iterator_step": "loss-scale overflow position (Model.train checkpoints)",
    "epoch_num": "training progress (ModelCheckpoint append_info)",
    "step_num": "training progress (ModelCheckpoint append_info)",
}
"""MindSpore training scalars, by last name segment (any wrapper prefix before it)."""

OPTIMIZER_SLOTS = {
    "moment1": "Adam first moment (nn.Adam, nn.AdaMax)",
    "moment2": "Adam second moment (nn.Adam, nn.AdaMax)",
    "adam_m": "AdamWeightDecay first moment",
    "adam_v": "AdamWeightDecay second moment",
    "moments": "Momentum velocity (nn.Momentum)",
    "accum": "accumulator (nn.SGD, nn.Adagrad)",
    "stat": "SGD state (nn.SGD)",
    "moment": "RMSProp moment (nn.RMSProp)",
    "mean_square": "RMSProp mean square (nn.RMSProp)",
    "lamb_m": "Lamb first moment (nn.Lamb)",
    "lamb_v": "Lamb second moment (nn.Lamb)",
}
"""MindSpore optimizer state ``[wrapper.]<slot>.<model parameter>`` (names as MindSpore 2.10 makes them)."""


def split_model(entries: Mapping[str, Any], cfg: UnetConfig) -> tuple[dict[str, Any], list[Skipped], str, list[str]]:
    """``entries`` -> (model entries with the wrapper prefix removed, skipped extras, prefix, problems).

    Model parameters are recognised by their full structural name (either naming) after one
    wrapper prefix shared by all of them (``net.`` from a custom training cell, ``module.`` from
    DataParallel); scalars and optimizer slots by the tables above. Everything else is kept, so
    ``weight_problems`` reports it as unexpected.
    """
    known = {n for s in unet_parameters(cfg) for n in (s.torch_name, s.ms_name)}

    def model_suffix(parts: list[str]) -> tuple[str, str] | None:
        for i in range(len(parts)):
            if ".".join(parts[i:]) in known:
                return "".join(p + "." for p in parts[:i]), ".".join(parts[i:])
        return None

    skipped, slots, candidates = [], [], {}
    for key in entries:
        parts = key.split(".")
        if parts[-1] in TRAINING_SCALARS:
            skipped.append(Skipped(key, TRAINING_SCALARS[parts[-1]]))
            continue
        slot = next((j for j, p in enumerate(parts[:-1]) if p in OPTIMIZER_SLOTS and model_suffix(parts[j + 1:])),
                    None)
        if slot is not None:
            slots.append((key, parts[slot], model_suffix(parts[slot + 1:])[0]))
            continue
        match = model_suffix(parts)
        if match:
            candidates[key] = match[0]
    prefixes = Counter(candidates.values())
    if len(prefixes) > 1:
        found = ", ".join(f"{p!r} ({n})" for p, n in sorted(prefixes.items()))
        return {}, skipped, "", [f"model parameters appear under several prefixes: {found}; "
                                 "cannot tell which is the model"]
    prefix = next(iter(prefixes), "")
    model: dict[str, Any] = {}
    problems: list[str] = []
    unrecognised = set()
    for key, slot_name, slot_prefix in slots:
        if slot_prefix in ("", prefix):
            skipped.append(Skipped(key, OPTIMIZER_SLOTS[slot_name]))
        else:
            unrecognised.add(key)
    skip = {s.name for s in skipped}
    for key, value in entries.items():
        if key in skip:
            continue
        name = key[len(prefix):] if prefix and key.startswith(prefix) and key not in unrecognised else key
        if name in model:
            problems.append(f"duplicate: {name} appears both with and without the prefix {prefix!r}")
        model[name] = value
    return model, skipped, prefix, problems


def describe_skipped(skipped: list[Skipped]) -> list[str]:
    """One line per rule: how many entries it skipped, and their names (slots as ``slot.<parameter>``)."""
    groups: dict[str, list[str]] = {}
    for s in skipped:
        groups.setdefault(s.reason, []).append(s.name)
    lines = []
    for reason, names in groups.items():
        shown = ", ".join(names) if len(names) <= 4 else f"{names[0]}, ..., {names[-1]}"
        lines.append(f"skipped {len(names)} {reason}: {shown}")
    return lines
