"""The settings recorded with a model's weights — the U-Net, the diffusion process (T, schedule, loss) and the
image size it was trained at — found the same way by every command that reads weights:
``python -m ddpm_<twin>.sample``, ``python -m parity.check --weights`` and ``python -m parity.convert``.

Rules it keeps:
  * they come from ``--config`` (JSON text or a file) when given, else from a run's ``config.json`` beside the
    weights (or beside the run folder of a ``checkpoints/`` file), and from the weights file's own metadata
    (safetensors, ``ddpm_core.weights.formats``), which wins over the config and must agree with it: a disagreement is
    one ``UserError`` naming both sources;
  * nothing is guessed: a setting recorded nowhere is None, and the command says what it assumes instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ddpm_core.config import ConfigFile, DiffusionConfig, read_config
from ddpm_core.errors import UserError
from ddpm_core.weights.files import LoadedWeights, load_weights


def find_config(weights: str | os.PathLike) -> Path | None:
    """config.json beside the weights, or beside the run folder of a ``checkpoints/`` file."""
    weights = Path(weights)
    for folder in (weights.parent, weights.parent.parent if weights.parent.name == "checkpoints" else None):
        if folder is not None and (folder / "config.json").is_file():
            return folder / "config.json"
    return None


@dataclass(frozen=True)
class Recorded:
    """Weights (``loaded``) and the settings recorded with them; None where nothing records one."""

    loaded: LoadedWeights
    diffusion: DiffusionConfig | None
    source: str
    """where ``diffusion`` came from (the weights file, the config file or ``--config``), for messages"""
    image_size: int | None
    config_file: Path | None
    """the config.json found beside the weights and read, if any"""


def load_recorded(weights: str | os.PathLike, config: str | None = None, naming: str = "torch") -> Recorded:
    """Read ``weights`` (strictly, ``ddpm_core.weights.files.load_weights``) with the settings recorded with them;
    ``config`` is ``--config``'s value (None: a config.json beside the weights, if there is one)."""
    weights = Path(weights)
    beside = None if config else find_config(weights)
    found = config or beside
    given = read_config(found, "--config" if config else "config") if found else ConfigFile(None)
    loaded = load_weights(weights, naming=naming, config=given.unet)
    source = given_by = "--config" if config and config.lstrip().startswith("{") else str(found or weights)
    diffusion, image_size = given.diffusion, given.image_size
    if loaded.diffusion is not None:
        if diffusion is not None and diffusion != loaded.diffusion:
            raise UserError(f"{given_by} gives {diffusion.short()}, but {weights} records {loaded.diffusion.short()}")
        diffusion, source = loaded.diffusion, str(weights)
    if loaded.image_size is not None:
        if image_size is not None and image_size != loaded.image_size:
            raise UserError(f"{given_by} gives image size {image_size}, but {weights} records {loaded.image_size}")
        image_size = loaded.image_size
    return Recorded(loaded, diffusion, source, image_size, beside)
