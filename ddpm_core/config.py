"""Model and diffusion configuration both twins are built from, with the checks that
turn a bad configuration or a bad input into one clear ``ValueError``, and ``read_config``, the one
reader of a configuration the user gives as JSON text or a file.

The ``Unet`` constructor defaults are the tutorial's class signature (``dim_mults=(1, 2, 4, 8)``,
``channels=3``); ``TUTORIAL_UNET`` is the configuration the tutorial actually trains.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ddpm_core.errors import UserError
from ddpm_core.schema import json_problem, read_limited, shown

ATTENTION_HEADS = 4
ATTENTION_DIM_HEAD = 32
LOSS_TYPES = ("huber", "l1", "l2")
SCHEDULES = ("linear", "cosine", "quadratic", "sigmoid")


@dataclass(frozen=True)
class UnetConfig:
    """Arguments of ``Unet``: the tutorial's signature plus ``use_convnext``/``resnet_block_groups``."""

    dim: int
    init_dim: int | None = None
    out_dim: int | None = None
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)
    channels: int = 3
    with_time_emb: bool = True
    convnext_mult: int = 2
    use_convnext: bool = True
    resnet_block_groups: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.dim_mults, (list, tuple)):  # a string "12" would otherwise read as (1, 2)
            raise ValueError(f"dim_mults must be a list of positive integers, got {shown(self.dim_mults)}")
        mults = tuple(int(m) if _is_int(m) else m for m in self.dim_mults)  # numpy integers become ints
        object.__setattr__(self, "dim_mults", mults)
        check_unet_config(self)

    @property
    def resolved_init_dim(self) -> int:
        return self.init_dim if self.init_dim is not None else self.dim // 3 * 2

    @property
    def resolved_out_dim(self) -> int:
        return self.out_dim if self.out_dim is not None else self.channels

    @property
    def time_dim(self) -> int | None:
        return self.dim * 4 if self.with_time_emb else None

    @property
    def dims(self) -> list[int]:
        return [self.resolved_init_dim, *(self.dim * m for m in self.dim_mults)]

    @property
    def in_out(self) -> list[tuple[int, int]]:
        dims = self.dims
        return list(zip(dims[:-1], dims[1:]))

    @property
    def size_multiple(self) -> int:
        """Image height and width must be multiples of this (one factor 2 per up stage)."""
        return 2 ** (len(self.dim_mults) - 1)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["dim_mults"] = list(self.dim_mults)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def essentials(self) -> dict[str, Any]:
        """dim, channels, dim_mults and every other field that differs from its default (what ``--config`` needs)."""
        fields: dict[str, Any] = {"dim": self.dim, "channels": self.channels, "dim_mults": self.dim_mults}
        for f in dataclasses.fields(self):
            if f.name not in fields and getattr(self, f.name) != f.default:
                fields[f.name] = getattr(self, f.name)
        return fields

    def short(self) -> str:
        """``Unet(dim=16, channels=3, dim_mults=(1, 2), use_convnext=False)``: the ``essentials``."""
        return "Unet(" + ", ".join(f"{k}={v}" for k, v in self.essentials().items()) + ")"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UnetConfig":
        return cls(**_fields_of(cls, d, "Unet config"))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fields_of(cls: type, d: Any, what: str) -> dict[str, Any]:
    """``d`` if it is a JSON object holding every required field of the dataclass ``cls`` and no other key."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object of {what} fields, got {shown(d)}")
    fields = dataclasses.fields(cls)
    unknown = sorted(set(d) - {f.name for f in fields})
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(map(str, unknown))}")
    missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in d]
    if missing:
        raise ValueError(f"{missing[0]}: missing from the {what}")
    return d


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {shown(value)}")


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {shown(value)}")


def _finite(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {shown(value)}")


def check_unet_config(cfg: UnetConfig) -> None:
    """Raise ``ValueError`` naming the problem if the Unet cannot be built from ``cfg``."""
    _positive_int("dim", cfg.dim)
    _positive_int("channels", cfg.channels)
    _positive_int("convnext_mult", cfg.convnext_mult)
    _positive_int("resnet_block_groups", cfg.resnet_block_groups)
    _flag("with_time_emb", cfg.with_time_emb)
    _flag("use_convnext", cfg.use_convnext)
    if cfg.with_time_emb and (cfg.dim < 4 or cfg.dim % 2):
        raise ValueError(f"dim={cfg.dim}: the time embedding needs an even dim >= 4 (its sinusoids divide by "
                         f"dim // 2 - 1 and make 2 * (dim // 2) features for a layer that takes dim)")
    if cfg.init_dim is not None:
        _positive_int("init_dim", cfg.init_dim)
    elif cfg.dim // 3 * 2 <= 0:
        raise ValueError(f"dim={cfg.dim} gives init_dim = dim // 3 * 2 = 0; use dim >= 3 or pass init_dim")
    if cfg.out_dim is not None:
        _positive_int("out_dim", cfg.out_dim)
    if not cfg.dim_mults:
        raise ValueError("dim_mults must name at least one level")
    for i, m in enumerate(cfg.dim_mults):
        _positive_int(f"dim_mults[{i}]", m)
    if cfg.dim_mults[0] != 1:
        raise ValueError(
            f"dim_mults[0] must be 1: the final block takes dim={cfg.dim} channels but the up path "
            f"ends with dim * dim_mults[0] = {cfg.dim * cfg.dim_mults[0]}"
        )
    if not cfg.use_convnext:
        bad = sorted({c for c in [cfg.dim, *cfg.dims[1:]] if c % cfg.resnet_block_groups})
        if bad:
            raise ValueError(
                f"resnet_block_groups={cfg.resnet_block_groups} must divide every block width; "
                f"it does not divide {bad}"
            )


TUTORIAL_UNET = UnetConfig(dim=28, channels=1, dim_mults=(1, 2, 4))


def check_unet_input(cfg: UnetConfig, x_shape: Sequence[int], t_shape: Sequence[int] | None) -> None:
    """Raise ``ValueError`` if ``x``/``t`` of these shapes cannot go through a Unet built from ``cfg``."""
    if len(x_shape) != 4:
        raise ValueError(f"x must be (batch, channels, height, width), got shape {tuple(x_shape)}")
    b, c, h, w = x_shape
    if c != cfg.channels:
        raise ValueError(f"x has {c} channels but the model was built with channels={cfg.channels}")
    m = cfg.size_multiple
    if h % m or w % m or h == 0 or w == 0:
        raise ValueError(
            f"image size {h}x{w} is not a multiple of {m}: with {len(cfg.dim_mults)} levels the "
            f"down/up path halves and doubles the size {len(cfg.dim_mults) - 1} times"
        )
    if cfg.with_time_emb:
        if t_shape is None:
            raise ValueError("this model has a time embedding: pass timesteps t")
        if tuple(t_shape) != (b,):
            raise ValueError(f"t must have shape (batch,) = ({b},), got {tuple(t_shape)}")


@dataclass(frozen=True)
class DiffusionConfig:
    """The DDPM process: number of steps, beta schedule and training loss."""

    timesteps: int = 200
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    loss_type: str = "huber"
    p2_loss_weight_gamma: float = 0.0
    p2_loss_weight_k: float = 1.0

    def __post_init__(self) -> None:
        _positive_int("timesteps", self.timesteps)
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {self.timesteps}")
        for name in ("beta_start", "beta_end", "p2_loss_weight_gamma", "p2_loss_weight_k"):
            _finite(name, getattr(self, name))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")


    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DiffusionConfig":
        return cls(**_fields_of(cls, d, "diffusion config"))

    def short(self) -> str:
        return f"T={self.timesteps} {self.schedule}, {self.loss_type} loss"


TUTORIAL_DIFFUSION = DiffusionConfig()


def resolve_diffusion(recorded: DiffusionConfig | None, source: str, flags: dict[str, tuple[str, Any]],
                      default: DiffusionConfig = TUTORIAL_DIFFUSION) -> DiffusionConfig:
    """The diffusion settings to use with some weights: those ``recorded`` with them (in ``source``), else
    ``default`` changed by the explicit ``flags`` ({"--timesteps": ("timesteps", 50), ...}; a value None
    means the flag was not given). A flag that contradicts a recorded setting is a ``ValueError`` naming
    both: weights trained with one process do not sample with another."""
    given = {flag: (name, value) for flag, (name, value) in flags.items() if value is not None}
    if recorded is not None:
        clash = [f"{flag} {value}" for flag, (name, value) in given.items() if getattr(recorded, name) != value]
        if clash:
            raise ValueError(f"{', '.join(clash)} contradicts the diffusion settings recorded in {source} "
                             f"({recorded.short()}); leave the option out")
        return recorded
    return dataclasses.replace(default, **{name: value for name, value in given.values()})


def check_timestep_range(lo: int, hi: int, timesteps: int) -> None:
    """Raise ``ValueError`` unless every timestep lies in [0, timesteps)."""
    if lo < 0 or hi >= timesteps:
        raise ValueError(f"timesteps must lie in [0, {timesteps}), got values from {lo} to {hi}")


def check_noise_sequence(noise_shape: Sequence[int], steps: int, x_shape: Sequence[int]) -> None:
    """Per-step sampling noise must be (steps, *x_shape): row k is used at the k-th sampling step."""
    expected = (steps, *x_shape)
    if tuple(noise_shape) != expected:
        raise ValueError(f"per-step noise must have shape {expected} (steps, *x.shape), got {tuple(noise_shape)}")


def check_same_shape(name: str, shape: Sequence[int], expected: Sequence[int]) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(shape)}")


@dataclass(frozen=True)
class ConfigFile:
    """What a configuration given by the user holds: a run's config.json ({"unet", "diffusion",
    "image_size"}, each optional) or the fields of ``UnetConfig`` alone."""

    unet: UnetConfig | None
    diffusion: DiffusionConfig | None = None
    image_size: int | None = None


def read_config(text_or_path: str | os.PathLike, option: str = "--config") -> ConfigFile:
    """Parse ``option``'s value: JSON text (it starts with ``{``) or the path of a JSON file, holding a run's
    config.json or ``UnetConfig`` fields. Any problem is one ``UserError`` that names ``option`` (and the
    file) and what is wrong; nothing is guessed."""
    text = str(text_or_path)
    source = option
    if not text.lstrip().startswith("{"):
        try:
            text, source = read_limited(text).decode("utf-8"), f"{option} file {text}"
        except OSError as e:
            raise UserError(f"{option}: cannot read {text}: {e.strerror or type(e).__name__}") from None
        except ValueError as e:  # larger than the limit (/dev/zero), or not UTF-8
            raise UserError(f"{option} file {text}: {json_problem(e)}") from None
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{source}: {json_problem(e)}") from None
    if not isinstance(d, dict):
        raise UserError(f"{source}: expected a JSON object (UnetConfig fields, or a run's config.json), "
                        f"got {type(d).__name__}")
    try:
        if "unet" not in d and "diffusion" not in d:
            return ConfigFile(UnetConfig.from_dict(d))
        unet = UnetConfig.from_dict(d["unet"]) if "unet" in d else None
        diffusion = DiffusionConfig.from_dict(d["diffusion"]) if "diffusion" in d else None
        unknown = sorted(set(d) - {"unet", "diffusion", "image_size"})
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown field of a run's config.json (known: diffusion, image_size, unet)")
        image_size = d.get("image_size")
        if image_size is not None:
            _positive_int("image_size", image_size)
        return ConfigFile(unet, diffusion, image_size)
    except (TypeError, ValueError) as e:
        raise UserError(f"{source}: {e}") from None


def read_unet_config(text_or_path: str | os.PathLike, option: str = "--config") -> UnetConfig:
    """``read_config``'s ``UnetConfig``; a file without one is a ``UserError``."""
    found = read_config(text_or_path, option)
    if found.unet is None:
        raise UserError(f"{option} {text_or_path}: holds no \"unet\" settings")
    return found.unet
