"""``python -m parity.convert SRC DST --map SPEC.py``: a pair's weights file converted with the very map
``parity.pair`` computes for that SPEC, so a converted checkpoint and the compared one are the same thing.

Rules it keeps:
  * the map is ``parity.pair.run.pair_map`` on the SPEC's two models (its rules, its structure, its ``name_map``),
    the function ``compare`` uses; a map with problems (a tensor unmapped, a target mapped two ways) is refused,
    one line each (``WeightsError``, exit 2);
  * PyTorch to MindSpore: SRC (``.pt``/``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``)
    in PyTorch's names becomes a ``.ckpt`` in MindSpore's names and layouts; every tensor the map needs must be
    in SRC with its shape, and every tensor of SRC must be mapped or dropped by the map, else one line each;
  * MindSpore to PyTorch (``.ckpt`` SRC): the same map read backwards (``WeightMap.to_torch``); the tensors the
    map drops (``num_batches_tracked``) are taken from the SPEC's PyTorch model, and a line on stderr says so;
  * values move, never change (a layout transposes or reshapes): converting there and back is bit-identical;
  * the write is atomic with the format's checksum (a ``.ckpt`` gets MindSpore's CRC footer; ``ddpm_core.weights.ckpt``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ddpm_core.errors import UserError, WeightsError
from ddpm_core.runtime.atomic import atomic_write
from ddpm_core.runtime.paths import check_space
from ddpm_core.weights.digest import SAFETENSORS_FRAME, state_digest
from ddpm_core.weights.formats import (
    READERS,
    SAFETENSORS_CHECKSUM,
    SAFETENSORS_FORMAT,
    SAFETENSORS_VERSION,
    format_of,
)
from ddpm_core.weights.mapping import WeightMap


def _check(state: Mapping[str, np.ndarray], need: Mapping[str, tuple[int, ...]], dropped: set[str], side: str,
           src: str) -> None:
    """Every tensor the map needs present with its shape, and nothing in ``state`` the map does not know."""
    problems = [f"{src} has no {side} tensor {n!r} {s}, which the map needs" for n, s in need.items() if n not in state]
    problems += [f"{src}: {side} tensor {n!r} is {tuple(np.shape(state[n]))}, the model's is {s}"
                 for n, s in need.items() if n in state and tuple(np.shape(state[n])) != tuple(s)]
    problems += [f"{src}: {side} tensor {n!r} {tuple(np.shape(v))} maps to nothing in the SPEC's models"
                 for n, v in state.items() if n not in need and n not in dropped]
    if problems:
        raise WeightsError(problems, f"{src} does not fit the map", "is SRC the SPEC's model, with its --set options?")


def spec_map(spec: Any) -> tuple[WeightMap, dict[str, np.ndarray]]:
    """The SPEC's weight map, as ``compare`` computes it, and the PyTorch model's own state (for dropped tensors)."""
    from parity.pair.run import other_side, pair_map
    from parity.pair.torch_side import TorchPairSide

    side_t = TorchPairSide(spec.torch_model, spec.devices.get("torch", "cpu"))
    side_o = other_side(spec.ms_model, spec.devices.get("ms", ""))
    if side_o.framework != "ms":
        raise UserError(f"--map {spec.path.name}: its ms_model() is a PyTorch model; --map converts to MindSpore")
    return pair_map(side_t, side_o, spec.name_map), side_t.state()


def _write(path: Path, state: Mapping[str, np.ndarray]) -> None:
    fmt = format_of(path)
    if fmt == "mindspore":
        from ddpm_core.weights import ckpt

        atomic_write(path, lambda tmp: ckpt.write(tmp, state, crc_check=True))
    elif fmt == "torch":
        from ddpm_core.runtime.frameworks import require

        torch = require("torch")
        atomic_write(path, lambda tmp: torch.save({n: torch.from_numpy(np.array(v)) for n, v in state.items()}, tmp))
    else:
        from safetensors.numpy import save_file

        tensors = {n: np.ascontiguousarray(v) for n, v in state.items()}
        meta = {"format": SAFETENSORS_FORMAT, "format_version": SAFETENSORS_VERSION, "naming": "torch",
                SAFETENSORS_CHECKSUM: state_digest(tensors, SAFETENSORS_FRAME)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def convert_with_map(src: str, dst: str, spec: Any) -> str:
    """Convert ``src`` to ``dst`` (formats from the extensions) with ``spec``'s map; returns the line to print."""
    src_fmt, dst_fmt = format_of(src), format_of(dst)
    to_ms = src_fmt != "mindspore"
    if to_ms != (dst_fmt == "mindspore"):
        raise UserError(f"--map converts PyTorch weights (.pt, .pth, .safetensors) to a MindSpore .ckpt or back; "
                        f"got {Path(src).suffix} -> {Path(dst).suffix}")
    wm, own = spec_map(spec)
    raw = READERS[src_fmt](Path(src))
    state = {n: np.asarray(v) for n, v in raw.entries.items()}
    dropped = {n for n, _ in wm.dropped}
    if to_ms:
        _check(state, {e.torch: wm.torch_shapes[e.torch] for e in wm.entries}, dropped, "PyTorch", src)
        out = wm.to_ms(state)
    else:
        _check(state, {e.ms: wm.ms_shapes[e.ms] for e in wm.entries}, set(), "MindSpore", src)
        out = {**wm.to_torch(state), **{n: own[n] for n in dropped}}
        if dropped:
            print(f"{len(dropped)} tensor(s) the map drops come from the SPEC's PyTorch model: "
                  f"{', '.join(sorted(dropped))}", file=sys.stderr)
    check_space("DST", dst, sum(v.nbytes for v in out.values()) + 256 * len(out) + (1 << 16))
    _write(Path(dst), out)
    counts = ", ".join(f"{v} {k}" for k, v in wm.counts().items() if v)
    return f"wrote {dst}: {len(out)} tensors from {src}, mapped by {spec.path.name} ({counts})"
