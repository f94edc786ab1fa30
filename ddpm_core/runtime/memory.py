"""Memory a command will need, estimated from its sizes before anything is allocated, and the memory this
machine has available: a request that cannot fit (``--n``, ``--batch-size``, ``--image-size``, a huge ``dim``)
is refused in one line (``TooLarge``, exit status 2) instead of an allocator's traceback, or an hour of work
that ends in one.

Rules it keeps:
  * every estimate is a lower bound: it counts only tensors that must exist at the same time (the parameters
    and the copies of them a command keeps, the feature maps one forward pass of a batch produces, the samples
    and the picture a sampling run returns), float32 unless said; the framework's own memory and workspaces are
    left out. So a refusal is never wrong, and a request that passes may still need more;
  * the memory available is ``MemAvailable`` (``/proc/meminfo``), capped by the cgroup's limit less its usage
    where one is set; where none of these can be read, nothing is refused;
  * estimates are arithmetic on Python integers: an absurd size (dim 100000, --n 100000000) is priced without
    allocating anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ddpm_core.config import ATTENTION_DIM_HEAD, ATTENTION_HEADS, UnetConfig
from ddpm_core.errors import UserError
from ddpm_core.weights.naming import parameter_count

FLOAT32 = 4
GIB = 1 << 30
MEMINFO = Path("/proc/meminfo")
CGROUP_LIMITS = (  # (limit, usage): cgroup v2, then v1
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)
_QKV = 3 * ATTENTION_HEADS * ATTENTION_DIM_HEAD
"""channels of an attention layer's to_qkv output"""


class TooLarge(UserError):
    """A request whose memory, estimated before any work, exceeds what this machine has available."""


@dataclass(frozen=True)
class Need:
    """A lower bound of the bytes a command needs, and what it is made of (name -> bytes), for the message."""

    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def available_bytes(meminfo: Path = MEMINFO, cgroups: tuple[tuple[Path, Path], ...] = CGROUP_LIMITS) -> int | None:
    """Bytes this process can still allocate without swapping: ``MemAvailable``, capped by a cgroup's limit
    less its usage; None where none of these can be read."""
    found = []
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in cgroups:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < 1 << 60:  # "max" or a huge number: no limit
            found.append(max(0, limit - usage))
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None


def _block(din: int, dout: int, cfg: UnetConfig) -> list[int]:
    """Channels of the tensors a block keeps for its backward pass: ConvNeXt: the time-conditioned
    depthwise output, its GroupNorm, the widened conv, GELU and GroupNorm, and the block's output; ResNet: each
    Block's conv, GroupNorm and SiLU, and the output."""
    if cfg.use_convnext:
        wide = dout * cfg.convnext_mult
        return [din, din, wide, wide, wide, dout]
    return [dout, dout, dout, dout, dout, dout, dout]


def _linear_attention(c: int) -> list[int]:
    """PreNorm's GroupNorm, q, k and v (softmaxed), the heads' output, the LayerNorm's input and the residual."""
    return [c, _QKV, ATTENTION_HEADS * ATTENTION_DIM_HEAD, c, c]


def feature_maps(cfg: UnetConfig, size: int) -> list[int]:
    """Elements per image of the tensors one forward pass of ``Unet(cfg)`` at ``size`` x ``size`` keeps for its
    backward pass (ddpm_core/reference/unet.py walks the same path), in order; the last level's full attention
    adds its (heads, n, n) attention matrix."""
    maps = [cfg.resolved_init_dim * size * size]
    levels = len(cfg.in_out)
    s = size
    for i, (din, dout) in enumerate(cfg.in_out):
        area = s * s
        maps += [c * area for c in _block(din, dout, cfg) + _block(dout, dout, cfg)]
        maps += [c * area for c in _linear_attention(dout)]
        if i < levels - 1:
            s //= 2
            maps.append(dout * s * s)  # the downsampled map
    mid, area = cfg.dims[-1], s * s
    maps += [c * area for c in _block(mid, mid, cfg)]
    maps += [mid * area, _QKV * area, ATTENTION_HEADS * area * area, mid * area]  # full attention
    maps += [c * area for c in _block(mid, mid, cfg)]
    for din, dout in reversed(cfg.in_out[1:]):
        area = s * s
        maps.append(2 * dout * area)  # the concatenation with the skip
        maps += [c * area for c in _block(2 * dout, din, cfg) + _block(din, din, cfg)]
        maps += [c * area for c in _linear_attention(din)]
        s *= 2
        maps.append(din * s * s)  # the upsampled map
    maps += [c * s * s for c in _block(cfg.dim, cfg.dim, cfg)]
    return maps


def activation_bytes(cfg: UnetConfig, batch: int, size: int, training: bool) -> int:
    """Training: every map ``feature_maps`` lists, for the batch (autograd keeps them all until the backward
    pass). Inference: only the largest of them, which must exist at some point."""
    maps = feature_maps(cfg, size)
    return batch * FLOAT32 * (sum(maps) if training else max(maps))


def training_need(cfg: UnetConfig, batch: int, size: int) -> Need:
    """One training step: the weights, their gradients and Adam's two moments, and the batch's feature maps."""
    params = parameter_count(cfg) * FLOAT32
    return Need({"weights, gradients and Adam's moments": 4 * params,
                 f"feature maps of a batch of {batch} at {size}x{size}": activation_bytes(cfg, batch, size, True)})


def gib(n: int) -> str:
    """Bytes as GiB with two significant figures at least (``0.0012 GiB``, ``313 GiB``)."""
    value = n / GIB
    return f"{value:.3g} GiB" if value < 1000 else f"{value:,.0f} GiB"


def require(need: Need, what: str, advice: str, available: int | None = None) -> None:
    """Raise ``TooLarge`` naming ``what``, the estimate, its largest part and ``advice`` when ``need`` exceeds
    the memory available (``available_bytes()`` unless given); nothing when the machine cannot say."""
    available = available_bytes() if available is None else available
    if available is None or need.total <= available:
        return
    part, size = max(need.parts.items(), key=lambda kv: kv[1])
    raise TooLarge(f"{what} needs at least {gib(need.total)} of memory ({part}: {gib(size)}), but this machine "
                   f"has {gib(available)} available; {advice}")
