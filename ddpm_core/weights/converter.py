"""The shared weight-conversion module: ``.pt``/``.pth``, ``.ckpt`` and ``.safetensors`` files <->
``{name: ndarray}`` dictionaries in PyTorch or MindSpore naming, converted strictly through the
parameter table in ``ddpm_core.weights.naming`` (docs/weights.md).

Rules it keeps:
  * Strict: a missing key, an unexpected key, a wrong shape, a dtype that is not floating point,
    or a non-finite value is an error, reported one line per offending key; nothing is dropped
    silently. Training extras (optimizer state, step counters, a wrapper cell's name prefix) are
    recognised by the named rules in ``TRAINING_SCALARS``/``OPTIMIZER_SLOTS`` and reported.
  * Exact: values are only renamed (and re-laid out by a named rule); a cast happens only when
    asked for (``dtype=``), and a cast that overflows is an error.
  * Safe: PyTorch files are read with ``torch.load(weights_only=True)``; a file that cannot be
    read is one ``WeightsError`` naming it; every write is atomic (``ddpm_core.runtime.atomic``).
  * Intact: every file written carries a checksum (``ddpm_core.weights.formats``), verified on reading; a file
    without one must hold plausible values (``implausible``); a manifest sidecar
    (``<file>.manifest.json``), when present, must match. Each refusal is one line.
  * Self-describing: safetensors files carry the U-Net and diffusion settings and the image size
    (``LoadedWeights.diffusion``, ``.image_size``; ``ddpm_core.weights.recorded`` adds a run's config.json);
    weights that fit another U-Net than the one assumed are named in one line (``naming.infer_config``).
  * Framework-neutral: torch, mindspore and safetensors are imported inside the reader or writer
    of their own format, never at import time.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ddpm_core.config import TUTORIAL_UNET, DiffusionConfig, UnetConfig
from ddpm_core.errors import WeightsError, type_and_first_sentence
from ddpm_core.runtime.atomic import atomic_write
from ddpm_core.weights.formats import (
    BFLOAT16_FORMATS,
    IMAGE_SIZE_KEY,
    READERS,
    WRITERS,
    RawFile,
    Skipped,
    format_of,
)
from ddpm_core.weights.integrity import check_sidecar, implausible, manifest_sidecar
from ddpm_core.weights.integrity import manifest, tensor_digest  # noqa: F401 - also public here, as before
from ddpm_core.weights.naming import LAYOUT_RULES, ParamSpec, infer_config, unet_parameters

NAMINGS = ("torch", "ms")
FILE_NAMING = {"torch": "torch", "mindspore": "ms"}
DTYPES = ("float16", "bfloat16", "float32", "float64")

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



def _check_naming(naming: str) -> None:
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")


def expected_parameters(cfg: UnetConfig, naming: str) -> dict[str, ParamSpec]:
    """name (in ``naming``) -> spec, for every parameter of ``Unet(cfg)``."""
    _check_naming(naming)
    return {(s.torch_name if naming == "torch" else s.ms_name): s for s in unet_parameters(cfg)}


def weight_problems(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> list[str]:
    """Every reason ``state`` is not exactly the parameters of ``Unet(cfg)`` in ``naming``; empty if it is.
    One cause is one line: tensors of the same wrong dtype, or holding NaN or inf, are named together, and
    more than ``LISTED`` missing, unexpected or misshapen tensors are counted in one line."""
    expected = expected_parameters(cfg, naming)
    missing = [f"{name} (expected shape {spec.shape})" for name, spec in expected.items() if name not in state]
    unexpected = [f"{name} (shape {np.shape(state[name])})" for name in state if name not in expected]
    shapes, dtypes, nonfinite = [], {}, []
    for name, spec in expected.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        if tuple(value.shape) != spec.shape:
            shapes.append(f"{name}: expected {spec.shape}, found {tuple(value.shape)}")
        elif not np.issubdtype(value.dtype, np.floating):
            dtypes.setdefault(value.dtype.name, []).append(name)
        elif not np.all(np.isfinite(value)):
            nonfinite.append((name, int(np.size(value) - np.count_nonzero(np.isfinite(value))), value.size))
    problems = [*_listed("missing", missing), *_listed("unexpected", unexpected), *_listed("shape mismatch", shapes)]
    for dtype, names in dtypes.items():
        if len(names) == 1:
            problems.append(f"dtype: {names[0]}: expected a floating-point tensor, found {dtype}")
        else:
            which = "every tensor is" if len(names) == len(expected) else f"{len(names)} tensors are"
            problems.append(f"dtype: {which} {dtype} (first: {names[0]}); expected floating-point tensors")
    if len(nonfinite) == 1:
        problems.append("non-finite values: {}: {} of {} are NaN or inf".format(*nonfinite[0]))
    elif nonfinite:
        problems.append(f"non-finite values: {sum(n for _, n, _ in nonfinite)} NaN or inf in {len(nonfinite)} tensors "
                        f"(first: {nonfinite[0][0]})")
    return problems


LISTED = 4
"""``weight_problems`` names up to this many missing (unexpected, misshapen) tensors one per line; more are one line."""


def _listed(kind: str, items: list[str]) -> list[str]:
    if len(items) <= LISTED:
        return [f"{kind}: {item}" for item in items]
    return [f"{kind}: {len(items)} tensors (first: {items[0]}; last: {items[-1]})"]


def check_weights(state: Mapping[str, np.ndarray], cfg: UnetConfig, naming: str) -> None:
    """Raise ``WeightsError`` listing every problem of ``state`` for ``Unet(cfg)`` in ``naming``."""
    problems = weight_problems(state, cfg, naming)
    if problems:
        raise WeightsError(problems, f"{len(problems)} problem(s) with {naming}-named weights for {cfg}")


def convert(state: Mapping[str, np.ndarray], cfg: UnetConfig, src: str, dst: str) -> dict[str, np.ndarray]:
    """``state`` in ``src`` naming -> a new dict in ``dst`` naming, in the model's parameter order.

    Checks ``state`` strictly first; values are not cast, only renamed and re-laid out.
    """
    _check_naming(dst)
    check_weights(state, cfg, src)
    out: dict[str, np.ndarray] = {}
    for spec in unet_parameters(cfg):
        to_ms, to_torch = LAYOUT_RULES[spec.rule]
        if src == "torch":
            value = np.asarray(state[spec.torch_name])
            out_name, value = (spec.ms_name, to_ms(value)) if dst == "ms" else (spec.torch_name, value)
        else:
            value = np.asarray(state[spec.ms_name])
            out_name, value = (spec.torch_name, to_torch(value)) if dst == "torch" else (spec.ms_name, value)
        out[out_name] = value
    return out


def torch_to_ms(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """PyTorch-named weights -> MindSpore-named weights (strict, exact)."""
    return convert(state, cfg, "torch", "ms")


def ms_to_torch(state: Mapping[str, np.ndarray], cfg: UnetConfig) -> dict[str, np.ndarray]:
    """MindSpore-named weights -> PyTorch-named weights (strict, exact)."""
    return convert(state, cfg, "ms", "torch")


def detect_naming(names: list[str] | Mapping[str, Any]) -> str:
    """``"ms"`` if any name ends in GroupNorm's MindSpore ``gamma``/``beta``, else ``"torch"``."""
    return "ms" if any(n.rsplit(".", 1)[-1] in ("gamma", "beta") for n in names) else "torch"


# ---------------------------------------------------------------- training extras
def _split_model(entries: Mapping[str, Any], cfg: UnetConfig) -> tuple[dict[str, Any], list[Skipped], str, list[str]]:
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


# ---------------------------------------------------------------- dtypes
def round_to_bfloat16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded (to nearest, ties to even) onto the bfloat16 grid, kept as float32."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = bits.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(a), np.float32(np.nan), out).reshape(np.shape(a))


def cast_weights(state: Mapping[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """``state`` cast to ``dtype`` (``None``: unchanged). ``bfloat16`` values stay float32 in memory, on
    the bfloat16 grid. A value that becomes inf (overflow) is an error naming each tensor."""
    if dtype is None:
        return dict(state)
    if dtype not in DTYPES:
        raise WeightsError([f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}"], "cannot cast")
    out, problems = {}, []
    for name, value in state.items():
        value = np.asarray(value)
        with np.errstate(over="ignore"):
            cast = round_to_bfloat16(value) if dtype == "bfloat16" else value.astype(dtype)
        overflow = int(np.count_nonzero(np.isfinite(value) & ~np.isfinite(cast)))
        if overflow:
            problems.append(f"overflow: {name}: {overflow} of {value.size} values (max |x| = "
                            f"{float(np.max(np.abs(value))):.6g}) become inf in {dtype}")
        out[name] = cast
    if problems:
        raise WeightsError(problems, f"cannot cast to {dtype}")
    return out


# ---------------------------------------------------------------- load / save
@dataclass
class LoadedWeights:
    """What ``load_weights`` found: the model's weights in the requested naming and how it read them."""

    state: dict[str, np.ndarray]
    config: UnetConfig
    naming: str
    file_naming: str
    skipped: list[Skipped]
    prefix: str
    dtype: str
    """the file's dtype of the model tensors (``"mixed"`` if they differ); bfloat16 is widened exactly
    to float32 in ``state``."""
    path: str
    diffusion: DiffusionConfig | None = None
    """the diffusion settings recorded with the weights (safetensors metadata), or None"""
    verified: bool = False
    """the file's checksum was verified (False: it carries none, and its values were found plausible)"""
    image_size: int | None = None
    """the image size recorded with the weights (safetensors metadata), or None"""


def _diffusion_from(raw: RawFile, path: Path) -> DiffusionConfig | None:
    text = raw.metadata.get("diffusion_config")
    if text is None:
        return None
    try:
        return DiffusionConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as e:
        raise WeightsError([f"diffusion_config in the metadata is not valid ({type_and_first_sentence(e)})"],
                           f"cannot read {path}") from None


def _image_size_from(raw: RawFile, cfg: UnetConfig, path: Path) -> int | None:
    text = raw.metadata.get(IMAGE_SIZE_KEY)
    if text is None:
        return None
    size = int(text) if text.isdigit() else 0
    if size <= 0 or size % cfg.size_multiple:
        raise WeightsError([f"{IMAGE_SIZE_KEY} {text!r} in the metadata is not a positive multiple of "
                            f"{cfg.size_multiple}"], f"cannot read {path}")
    return size


def _wrong_config(model: Mapping[str, Any], cfg: UnetConfig, assumed: bool) -> str | None:
    """One line naming the U-Net these weights do fit, when that is not ``cfg``."""
    found = infer_config({n: np.shape(v) for n, v in model.items()})
    if found is None or found == cfg:
        return None
    given = f"the tutorial's {cfg.short()} was assumed" if assumed else f"{cfg.short()} was given"
    groups = (" (resnet_block_groups does not show in the shapes: give the one it was trained with)"
              if not found.use_convnext else "")
    essentials = {k: list(v) if isinstance(v, tuple) else v for k, v in found.essentials().items()}
    return (f"these weights are a {found.short()}, but {given}; pass --config '{json.dumps(essentials)}' "
            f"(config= in Python){groups}")


def _config_from(raw: RawFile, config: UnetConfig | None, path: Path) -> tuple[UnetConfig, bool]:
    """(config, whether it was assumed) from the file's metadata, else ``config``, else the tutorial's."""
    text = raw.metadata.get("unet_config")
    if text is None:
        return (config, False) if config is not None else (TUTORIAL_UNET, True)
    try:
        found = UnetConfig.from_dict(json.loads(text))
    except (ValueError, TypeError) as e:
        raise WeightsError([f"unet_config in the metadata is not a valid UnetConfig ({type_and_first_sentence(e)})"],
                           f"cannot read {path}") from None
    if config is not None and config != found:
        raise WeightsError([f"the file records {found}, but {config} was given"], f"config mismatch for {path}")
    return found, False


def load_weights(path: str | os.PathLike, naming: str = "torch", config: UnetConfig | None = None) -> LoadedWeights:
    """Read a ``.pt``/``.pth``/``.ckpt``/``.safetensors`` file strictly; return its model weights in ``naming``.

    The config comes from the safetensors metadata when present, else ``config``, else the tutorial's
    ``TUTORIAL_UNET``. Training extras are skipped and listed; anything unrecognised is an error.
    """
    _check_naming(naming)
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise WeightsError(["no such file" if not path.exists() else "not a regular file"], f"cannot read {path}")
    raw = READERS[fmt](path)
    cfg, assumed = _config_from(raw, config, path)
    diffusion = _diffusion_from(raw, path)
    model, skipped, prefix, problems = _split_model(raw.entries, cfg)
    why = None if raw.verified else implausible(model)
    if why:
        raise WeightsError([f"{why}: the file carries no checksum, and values like these come from a damaged "
                            "file"], f"cannot read {path}")
    file_naming = raw.metadata.get("naming") or detect_naming(model)
    if file_naming not in NAMINGS:
        raise WeightsError([f"metadata naming {file_naming!r} is not one of {NAMINGS}"], f"cannot read {path}")
    problems += weight_problems(model, cfg, file_naming) if not problems else []
    wrong = _wrong_config(model, cfg, assumed) if problems else None
    if wrong:
        raise WeightsError([wrong], f"cannot load {path}")
    if problems:
        where = f" (wrapper prefix {prefix!r} removed)" if prefix else ""
        hint = ""
        if assumed and any(p.startswith(("missing", "unexpected", "shape")) for p in problems):
            hint = (f"no config given, so the tutorial's {TUTORIAL_UNET} was assumed; pass --config "
                    "(config= in Python) with the model's UnetConfig if it differs")
        if any(re.match(r"unexpected: \d", p) for p in problems):
            hint += ("; " if hint else "") + ("names like '0.0.mlp.1.weight' come from a MindSpore model saved "
                     "without the tutorial's rename loop: nn.CellList names collide and ms.save_checkpoint kept "
                     "one tensor per name, so the file lacks weights; save from ddpm_ms.Unet or after the rename loop")
        raise WeightsError(problems, f"{len(problems)} problem(s) with {file_naming}-named weights in {path}{where} "
                           f"for {cfg}", hint)
    dtypes = {raw.dtypes.get(prefix + n, raw.dtypes.get(n, "float32")) for n in model}
    state = convert(model, cfg, file_naming, naming)
    if manifest_sidecar(path).exists():
        check_sidecar(path, state if naming == "torch" else convert(model, cfg, file_naming, "torch"))
    return LoadedWeights(state, cfg, naming, file_naming, raw.extras + skipped, prefix,
                         dtypes.pop() if len(dtypes) == 1 else "mixed", str(path), diffusion, raw.verified,
                         _image_size_from(raw, cfg, path))


def save_weights(state: Mapping[str, np.ndarray], path: str | os.PathLike, naming: str = "torch",
                 config: UnetConfig = TUTORIAL_UNET, dtype: str | None = None,
                 diffusion: DiffusionConfig | None = None, image_size: int | None = None) -> dict[str, np.ndarray]:
    """Write ``state`` (in ``naming``, for ``Unet(config)``) to ``path`` atomically, strictly checked, with
    the format's checksum.

    ``.pt``/``.pth`` get torch naming (``load_state_dict`` ready), ``.ckpt`` ms naming
    (``ms.load_param_into_net`` ready), ``.safetensors`` keep ``naming`` and record it with the config,
    ``diffusion`` and ``image_size``. ``dtype`` casts (``None`` keeps the dtype). Returns what was written, in the file's
    naming. If anything fails the destination is untouched and no temporary file is left; temporary files
    of earlier writes to ``path`` whose process was killed are removed first (``ddpm_core.runtime.atomic``).
    """
    path = Path(path)
    fmt = format_of(path)
    if dtype == "bfloat16" and fmt not in BFLOAT16_FORMATS:
        raise WeightsError([f"a {fmt} file cannot hold bfloat16 here (numpy has no bfloat16); "
                            "use .pt or .ckpt, or another --dtype"], f"cannot write {path}")
    if image_size is not None and (image_size <= 0 or image_size % config.size_multiple):
        raise WeightsError([f"image size {image_size} is not a positive multiple of {config.size_multiple}"],
                           f"cannot write {path}")
    file_naming = FILE_NAMING.get(fmt, naming)
    out = cast_weights(convert(state, config, naming, file_naming), dtype)
    check_weights(out, config, file_naming)
    try:
        atomic_write(path, lambda tmp: WRITERS[fmt](tmp, out, file_naming, config, dtype, diffusion, image_size))
    except OSError as e:
        raise WeightsError([type_and_first_sentence(e)], f"cannot write {path}") from None
    return out
