"""Weight files, strictly: ``load_weights`` reads a ``.pt``/``.pth``, ``.ckpt`` or ``.safetensors`` file into
``{name: ndarray}`` in the naming asked for, ``save_weights`` writes one (docs/weights.md). The formats are
``ddpm_core.weights.formats``'; the checks and renaming ``ddpm_core.weights.converter``'s; the training extras
``ddpm_core.weights.extras``'.

Rules it keeps:
  * Strict: what ``converter.weight_problems`` finds is an error, one line per cause; training extras are
    skipped only by ``extras``' named rules, and listed.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ddpm_core.config import TUTORIAL_UNET, DiffusionConfig, UnetConfig
from ddpm_core.errors import WeightsError, type_and_first_sentence
from ddpm_core.runtime.atomic import atomic_write
from ddpm_core.weights.converter import (
    NAMINGS,
    cast_weights,
    check_naming,
    check_weights,
    convert,
    detect_naming,
    weight_problems,
)
from ddpm_core.weights.extras import split_model
from ddpm_core.weights.formats import BFLOAT16_FORMATS, IMAGE_SIZE_KEY, READERS, WRITERS, RawFile, Skipped, format_of
from ddpm_core.weights.integrity import check_sidecar, implausible, manifest_sidecar
from ddpm_core.weights.naming import infer_config

FILE_NAMING = {"torch": "torch", "mindspore": "ms"}
"""The naming each format's file holds (``.safetensors`` holds the one it records)."""


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
    check_naming(naming)
    path = Path(path)
    fmt = format_of(path)
    if not path.is_file():
        raise WeightsError(["no such file" if not path.exists() else "not a regular file"], f"cannot read {path}")
    raw = READERS[fmt](path)
    cfg, assumed = _config_from(raw, config, path)
    diffusion = _diffusion_from(raw, path)
    model, skipped, prefix, problems = split_model(raw.entries, cfg)
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
