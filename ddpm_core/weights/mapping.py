"""Weights that map themselves: a PyTorch state (parameters and buffers) onto a MindSpore port's names. The one
weight-mapping engine: ``parity.pair`` maps any pair with it, and the twins' U-Net maps through it with its parameter
table as the explicit map (``ddpm_core.weights.naming.unet_weight_map``, used by ``ddpm_core.weights.converter``).

Rules it keeps (framework-free: it sees names, shapes and the class of each tensor's owner module, never a tensor):
  * the explicit map (``name_map``: the user's, or the U-Net's table) is applied first and is final (a key is a
    PyTorch parameter or module path, a value the MindSpore parameter or cell path it becomes, ``None`` to drop
    it, or ``(name, layout)`` with a layout of ``LAYOUTS``, the one layout vocabulary);
  * then the rules, in order: the identical name, then a leaf rename the owner's kind calls for (``LEAF_RULES``:
    norm ``weight``/``bias`` -> ``gamma``/``beta``, BatchNorm statistics, Embedding's ``embedding_table``), with
    a layout (``LAYOUTS``) where the shapes differ only by one (Conv1d's extra axis); a ``DROPPED`` leaf that
    found no target goes;
  * then the structure: modules whose remaining tensors have the same leaves and shapes are aligned in module
    order (a longest common subsequence), so renamed modules (``fc`` -> ``classifier``) map without a rule;
  * every PyTorch tensor left unmapped, every MindSpore tensor without a source, and every target claimed twice
    is one line in ``problems``: a map with problems is never used (``WeightMap.check`` raises ``WeightsError``).
Conversion is exact: a layout moves values, it never computes them, so ``to_torch(to_ms(s))`` gives ``s`` back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ddpm_core.errors import WeightsError

NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm1d",
         "InstanceNorm2d", "InstanceNorm3d")
BATCH_NORMS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm")


@dataclass(frozen=True)
class Tensor:
    """One tensor of one side: its full name, shape, and the path and kind (nearest framework class) of the
    module that owns it directly."""

    name: str
    shape: tuple[int, ...]
    owner: str
    kind: str

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class LeafRule:
    """A PyTorch leaf name that MindSpore's layer of the same kind calls differently, and why."""

    kinds: tuple[str, ...]
    torch_leaf: str
    ms_leaf: str
    reason: str


@dataclass(frozen=True)
class Drop:
    """A PyTorch leaf that MindSpore's layer has no counterpart for, and why dropping it is safe."""

    kinds: tuple[str, ...]
    leaf: str
    reason: str


LEAF_RULES: tuple[LeafRule, ...] = (
    LeafRule(NORMS, "weight", "gamma", "MindSpore's norm layers call the scale gamma"),
    LeafRule(NORMS, "bias", "beta", "MindSpore's norm layers call the shift beta"),
    LeafRule(BATCH_NORMS, "running_mean", "moving_mean", "MindSpore's BatchNorm calls its running mean moving_mean"),
    LeafRule(BATCH_NORMS, "running_var", "moving_variance", "MindSpore's BatchNorm calls its running variance "
             "moving_variance"),
    LeafRule(("Embedding",), "weight", "embedding_table", "MindSpore's Embedding calls its table embedding_table"),
)
DROPPED: tuple[Drop, ...] = (
    Drop(BATCH_NORMS, "num_batches_tracked", "a step count MindSpore's BatchNorm does not keep; PyTorch reads it only "
         "when momentum=None (a cumulative average), which a port to MindSpore cannot express"),
)


@dataclass(frozen=True)
class Layout:
    """How one tensor's values are laid out on the MindSpore side; ``to_ms``/``to_torch`` move values only."""

    name: str
    to_ms: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
    to_torch: Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
    reason: str


def _copy(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.array(a, copy=True)


def _reshape(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.array(a, copy=True).reshape(shape)


def _transpose(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).T)


LAYOUTS: dict[str, Layout] = {
    "same": Layout("same", _copy, _copy, "the same shape and order"),
    "conv1d": Layout("conv1d", _reshape, _reshape, "MindSpore's Conv1d stores its kernel (out, in, 1, k), PyTorch's "
                     "(out, in, k): the same values with one more axis"),
    "transpose": Layout("transpose", _transpose, _transpose, "the user's map says this matrix is stored transposed"),
}


@dataclass(frozen=True)
class Entry:
    """One mapped tensor: its name on each side, how the mapping was found, and its layout."""

    torch: str
    ms: str
    how: str
    layout: str = "same"


@dataclass
class WeightMap:
    """The whole mapping: entries, dropped PyTorch tensors (name, reason) and problems (one line each)."""

    entries: list[Entry] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    torch_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    ms_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def check(self) -> None:
        """Raise ``WeightsError`` with every problem, one line each, if there is any."""
        if self.problems:
            raise WeightsError(self.problems, "the weights do not map", "give `name_map` in the SPEC for the rest")

    def to_ms(self, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The PyTorch state under MindSpore's names and layouts (dropped tensors left out)."""
        return {e.ms: LAYOUTS[e.layout].to_ms(np.asarray(state[e.torch]), self.ms_shapes[e.ms]) for e in self.entries}

    def to_torch(self, ms_state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A MindSpore state back under PyTorch's names and layouts (for the exact weights check)."""
        return {e.torch: LAYOUTS[e.layout].to_torch(np.asarray(ms_state[e.ms]), self.torch_shapes[e.torch])
                for e in self.entries}

    def ms_name(self) -> dict[str, str]:
        return {e.torch: e.ms for e in self.entries}

    def counts(self) -> dict[str, int]:
        """How many tensors each method mapped (``identical``, ``rule``, ``structure``, ``user``), and dropped."""
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.how] = out.get(e.how, 0) + 1
        out["dropped"] = len(self.dropped)
        return out

    def to_dict(self) -> dict:
        return {"counts": self.counts(), "problems": list(self.problems),
                "dropped": [{"torch": n, "reason": r} for n, r in self.dropped],
                "entries": [{"torch": e.torch, "ms": e.ms, "how": e.how, "layout": e.layout} for e in self.entries]}


def _fits(t: Tensor, ms_shape: tuple[int, ...]) -> str | None:
    """The layout that carries ``t`` onto a MindSpore tensor of ``ms_shape``, or None."""
    if t.shape == ms_shape:
        return "same"
    if t.kind == "Conv1d" and len(t.shape) == 3 and ms_shape == (t.shape[0], t.shape[1], 1, t.shape[2]):
        return "conv1d"
    return None


def layout_shape(t: Tensor, layout: str) -> tuple[int, ...] | None:
    """The MindSpore shape ``layout`` gives ``t`` (None where it cannot apply)."""
    if layout == "transpose" and len(t.shape) == 2:
        return t.shape[::-1]
    if layout == "conv1d" and len(t.shape) == 3:
        return (t.shape[0], t.shape[1], 1, t.shape[2])
    return t.shape if layout == "same" else None


def _candidates(t: Tensor) -> list[tuple[str, str]]:
    """(MindSpore name, how) to try for ``t`` by rule: its own name, then each leaf rename its kind calls for."""
    prefix = t.name[: -len(t.leaf)]
    out = [(t.name, "identical")]
    out += [(prefix + r.ms_leaf, "rule") for r in LEAF_RULES if t.kind in r.kinds and r.torch_leaf == t.leaf]
    return out


def _leaf_options(t: Tensor) -> set[str]:
    return {t.leaf} | {r.ms_leaf for r in LEAF_RULES if t.kind in r.kinds and r.torch_leaf == t.leaf}


def lcs(a: Sequence[object], b: Sequence[object], same: Callable[[object, object], bool]) -> list[tuple[int, int]]:
    """Index pairs of a longest common subsequence of ``a`` and ``b`` under ``same`` (in order)."""
    n, m = len(a), len(b)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if same(a[i], b[j]) else max(table[i + 1][j], table[i][j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if same(a[i], b[j]) and table[i][j] == table[i + 1][j + 1] + 1:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return pairs


def _by_owner(tensors: Sequence[Tensor]) -> list[tuple[str, list[Tensor]]]:
    groups: dict[str, list[Tensor]] = {}
    for t in tensors:
        groups.setdefault(t.owner, []).append(t)
    return list(groups.items())


def _pair_leaves(ts: list[Tensor], ms: list[Tensor]) -> list[tuple[Tensor, Tensor, str]] | None:
    """Each PyTorch tensor of a module with the MindSpore tensor of the other module that has one of its leaf
    names and a shape it fits, one to one; None if the two modules' tensors do not correspond."""
    if len(ts) != len(ms):
        return None
    left = {m.leaf: m for m in ms}
    out = []
    for t in ts:
        hit = next((left[leaf] for leaf in sorted(_leaf_options(t)) if leaf in left and _fits(t, left[leaf].shape)),
                   None)
        if hit is None:
            return None
        out.append((t, hit, _fits(t, hit.shape) or "same"))
        del left[hit.leaf]
    return out


def _user_entries(user: Mapping[str, object], torch_t: Sequence[Tensor], ms_t: Sequence[Tensor],
                  wm: WeightMap) -> list[tuple[Tensor, str | None, str]]:
    """The user's map expanded to single tensors: (PyTorch tensor, MindSpore name or None to drop, layout)."""
    by_name = {t.name: t for t in torch_t}
    ms_names = {t.name for t in ms_t}
    out = []
    for key, value in user.items():
        target, layout = (value if isinstance(value, tuple) else (value, "same"))
        if layout not in LAYOUTS:
            wm.problems.append(f"name_map[{key!r}]: unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
            continue
        if key in by_name:
            if target is not None and target not in ms_names:
                wm.problems.append(f"name_map[{key!r}] = {target!r}: no MindSpore parameter of that name")
                continue
            out.append((by_name[key], target, layout))
            continue
        members = [t for t in torch_t if t.name.startswith(key + ".")]
        if not members:
            wm.problems.append(f"name_map: {key!r} is neither a PyTorch parameter nor a module that owns one")
            continue
        for t in members:
            ms_name = None if target is None else f"{target}.{t.name[len(key) + 1:]}"
            if ms_name is not None and ms_name not in ms_names:  # the module's leaves may still need their rule
                prefix = ms_name[: -len(t.leaf)]
                ms_name = next((prefix + leaf for leaf in sorted(_leaf_options(t)) if prefix + leaf in ms_names),
                               ms_name)
            out.append((t, ms_name, layout))
    return out


def map_weights(torch_tensors: Sequence[Tensor], ms_tensors: Sequence[Tensor],
                name_map: Mapping[str, object] | None = None) -> WeightMap:
    """Map every PyTorch tensor onto MindSpore's (see the module docstring for the order and the rules)."""
    wm = WeightMap(torch_shapes={t.name: t.shape for t in torch_tensors}, ms_shapes={t.name: t.shape for t in ms_tensors})
    ms_by = {t.name: t for t in ms_tensors}
    claimed: dict[str, str] = {}
    done: set[str] = set()

    def claim(t: Tensor, ms_name: str, how: str, layout: str) -> None:
        done.add(t.name)
        if ms_name in claimed:
            wm.problems.append(f"MindSpore parameter {ms_name!r} is mapped two ways: from {claimed[ms_name]!r} and "
                               f"from {t.name!r}")
            return
        claimed[ms_name] = t.name
        wm.entries.append(Entry(t.name, ms_name, how, layout))

    for t, target, layout in _user_entries(name_map or {}, torch_tensors, ms_tensors, wm):
        if target is None:
            done.add(t.name)
            wm.dropped.append((t.name, "dropped by the user's name_map"))
            continue
        want = ms_by[target].shape
        fitted = _fits(t, want) if layout == "same" else layout if layout_shape(t, layout) == want else None
        if fitted is None:
            done.add(t.name)
            wm.problems.append(f"name_map: {t.name!r} {t.shape} does not fit {target!r} {want} (layout {layout!r})")
            continue
        claim(t, target, "user", fitted)

    for t in torch_tensors:
        if t.name in done:
            continue
        for ms_name, how in _candidates(t):
            layout = _fits(t, ms_by[ms_name].shape) if ms_name in ms_by and ms_name not in claimed else None
            if layout is not None:
                claim(t, ms_name, how, layout)
                break
        drop = next((d for d in DROPPED if t.kind in d.kinds and d.leaf == t.leaf), None)
        if t.name not in done and drop is not None:
            done.add(t.name)
            wm.dropped.append((t.name, drop.reason))

    rest_t = _by_owner([t for t in torch_tensors if t.name not in done])
    rest_m = _by_owner([t for t in ms_tensors if t.name not in claimed])
    for i, j in lcs(rest_t, rest_m, lambda a, b: _pair_leaves(a[1], b[1]) is not None):  # type: ignore[index]
        for t, m, layout in _pair_leaves(rest_t[i][1], rest_m[j][1]) or []:
            claim(t, m.name, "structure" if m.leaf == t.leaf else "structure+rule", layout)

    for t in torch_tensors:
        if t.name not in done:
            wm.problems.append(f"PyTorch tensor {t.name!r} {t.shape} ({t.kind}) maps to no MindSpore parameter")
    for m in ms_tensors:
        if m.name not in claimed:
            wm.problems.append(f"MindSpore parameter {m.name!r} {m.shape} ({m.kind}) has no PyTorch source")
    return wm
