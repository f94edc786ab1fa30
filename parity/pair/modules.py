"""Module pairing: which MindSpore cell is the port of which PyTorch module, found through the weights.

Rules it keeps (framework-free: it sees module trees and the weight map, never a tensor):
  * two modules are a pair when the tensors below them (their own and their descendants') map exactly onto each
    other; names play no part, so wrappers, renames and reordered registration do not break the pairing; when
    wrappers and what they wrap hold the same tensors, the innermost pair with each other and the wrappers pair
    where their kinds line up (a Sequential with a SequentialCell), in order;
  * the roots are a pair;
  * a module without tensors (an activation, a pooling, a dropout) is paired by position between paired
    neighbours: inside a pair of parents, the children between two consecutive paired children (of the longest
    run of paired children in the same order on both sides) are paired in order when both sides have the same
    number there, else by kind where the kinds line up;
  * anything else stays unpaired and is never compared (it is listed, so nothing is skipped silently).
"""
from __future__ import annotations

from dataclasses import dataclass

from ddpm_core.weights.mapping import WeightMap, lcs


@dataclass(frozen=True)
class ModuleInfo:
    """One module of one side: its path ('' for the root), its kind (nearest framework class name), its
    direct children's paths in registration order, and the full names of the tensors it owns directly."""

    path: str
    kind: str
    children: tuple[str, ...]
    tensors: tuple[str, ...]


@dataclass
class ModulePairs:
    """PyTorch path -> MindSpore path for every paired module, and the paths left unpaired on each side."""

    to_ms: dict[str, str]
    unpaired_torch: list[str]
    unpaired_ms: list[str]

    @property
    def to_torch(self) -> dict[str, str]:
        return {m: t for t, m in self.to_ms.items()}


def _below(tree: dict[str, ModuleInfo]) -> dict[str, frozenset[str]]:
    """Every module's tensors, its own and its descendants'."""
    out: dict[str, frozenset[str]] = {}

    def visit(path: str) -> frozenset[str]:
        if path not in out:
            info = tree[path]
            out[path] = frozenset(info.tensors).union(*(visit(c) for c in info.children))
        return out[path]

    for p in tree:
        visit(p)
    return out


def _segments(children_t: tuple[str, ...], children_m: tuple[str, ...], pairs: dict[str, str]
              ) -> list[tuple[list[str], list[str]]]:
    """The runs of children between consecutive paired children, bounded by the longest run of paired children
    that are in the same order on both sides (a port may register two blocks the other way round)."""
    pos_m = {c: i for i, c in enumerate(children_m)}
    paired = [(i, pos_m[pairs[c]]) for i, c in enumerate(children_t) if c in pairs and pairs[c] in pos_m]
    in_order = lcs([j for _, j in paired], sorted(j for _, j in paired), lambda a, b: a == b)
    anchors = [paired[k] for k, _ in in_order]
    bounds = [(-1, -1), *anchors, (len(children_t), len(children_m))]
    return [(list(children_t[a[0] + 1:b[0]]), list(children_m[a[1] + 1:b[1]])) for a, b in zip(bounds, bounds[1:])]


def pair_modules(tree_t: list[ModuleInfo], tree_m: list[ModuleInfo], wm: WeightMap) -> ModulePairs:
    """Pair the two module trees (see the module docstring); trees are given in registration order."""
    by_t, by_m = {i.path: i for i in tree_t}, {i.path: i for i in tree_m}
    rename = wm.ms_name()
    below_t = {p: frozenset(rename[n] for n in s if n in rename) for p, s in _below(by_t).items()}
    below_m = _below(by_m)
    groups_t: dict[frozenset[str], list[str]] = {}
    groups_m: dict[frozenset[str], list[str]] = {}
    for tree, below, groups in ((tree_t, below_t, groups_t), (tree_m, below_m, groups_m)):
        for info in tree:
            if below[info.path] and info.path:
                groups.setdefault(below[info.path], []).append(info.path)
    pairs: dict[str, str] = {"": ""} if "" in by_t and "" in by_m else {}
    for key, outer_t in groups_t.items():
        outer_m = groups_m.get(key, [])
        if not outer_m:
            continue
        pairs[outer_t[-1]] = outer_m[-1]  # the innermost: the modules that own the tensors
        rest_t, rest_m = outer_t[:-1], outer_m[:-1]
        for i, j in lcs([by_t[p].kind for p in rest_t], [by_m[p].kind for p in rest_m], lambda a, b: a == b):
            pairs[rest_t[i]] = rest_m[j]

    queue = list(pairs.items())
    while queue:
        pt, pm = queue.pop(0)
        for seg_t, seg_m in _segments(by_t[pt].children, by_m[pm].children, pairs):
            free_t = [c for c in seg_t if c not in pairs and not below_t[c]]
            used = set(pairs.values())
            free_m = [c for c in seg_m if c not in used and not below_m[c]]
            if len(free_t) == len(free_m):
                matched = list(zip(free_t, free_m))
            else:
                idx = lcs([by_t[c].kind for c in free_t], [by_m[c].kind for c in free_m], lambda a, b: a == b)
                matched = [(free_t[i], free_m[j]) for i, j in idx]
            for ct, cm in matched:
                pairs[ct] = cm
                queue.append((ct, cm))
    used = set(pairs.values())
    return ModulePairs(pairs, [p for p in by_t if p not in pairs], [p for p in by_m if p not in used])
