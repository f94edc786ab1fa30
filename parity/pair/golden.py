"""Two processes or two hosts for one pair: ``--record GOLDEN`` where PyTorch is, ``--compare GOLDEN`` where the
port is (``python -m parity.pair SPEC.py``); the file is the golden v2 container of ``parity.engine.golden``
(kind "pair"), with its digests, size checks and one-line refusals.

What a recording holds (the PyTorch host's side of ``parity.pair.run.compare``): the inputs, the PyTorch weights,
the module tree, tensors and layer settings; per input the float32 and float64 (arbiter) outputs and every module
call (float32: inputs and outputs; float64: outputs), and for every float32 call the float64 module run alone on
that call's inputs (the single step the localiser asks for), or why it cannot run alone.

Rules it keeps:
  * the comparing host maps the recorded weights with the same ``map_weights`` and judges each input with the same
    ``judge_input``, through recorded sides that answer as the live ones did; the gates come from the recorded float32
    and float64 arrays exactly as in one process, so one process and two hosts give the same verdict and blame;
  * a golden file recorded for another pair is refused naming what differs: the SPEC's name, the options its
    PyTorch entries take, or its inputs (the recorded inputs' digest against this SPEC's ``inputs()``);
  * what it does not carry is said in the report: the training-mode pass and the training step need both
    frameworks live, and are not compared from a golden file.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ddpm_core.errors import EnvironmentRefused, type_and_first_sentence
from parity.engine.compare import compare_many
from parity.engine.golden import Golden, GoldenError, load_golden, save_pair_golden
from parity.engine.tape import tape_hash
from parity.engine.tolerances import device_class, tolerance
from parity.pair.calls import Call, CallTree
from parity.pair.judge import with_overrides
from ddpm_core.weights.mapping import Tensor
from parity.pair.modules import ModuleInfo, pair_modules
from parity.pair.report import PairReport
from parity.pair.run import as_args, judge_input, other_side, pair_map

TORCH_ENTRIES = ("torch_model", "inputs")
"""The SPEC entries whose options shape what is recorded: they must be the same on both hosts."""


def torch_options(spec: Any) -> dict[str, Any]:
    """The options the SPEC's PyTorch-side entries declare (read from their signatures, nothing is called)."""
    params = {p for n in TORCH_ENTRIES if callable(getattr(spec.module, n, None))
              for p in inspect.signature(getattr(spec.module, n)).parameters}
    return {k: v for k, v in sorted(spec.options.items()) if k in params}


def _inputs(spec: Any) -> dict[str, np.ndarray]:
    return {f"{i}/{j}": a for i, x in enumerate(spec.inputs) for j, a in enumerate(as_args(x, i))}


def _store(arrays: dict[str, np.ndarray], prefix: str, values: Sequence[Any]) -> list[bool]:
    """Put each array of ``values`` under ``prefix/k``; the mask of which positions hold one (None elsewhere)."""
    for k, v in enumerate(values):
        if v is not None:
            arrays[f"{prefix}/{k}"] = np.asarray(v)
    return [v is not None for v in values]


def _tree(arrays: dict[str, np.ndarray], prefix: str, tree: CallTree, inputs: bool) -> list[list]:
    return [[c.path, c.index, c.kind, c.parent, c.order, c.finished,
             _store(arrays, f"{prefix}/{c.order}/i", c.inputs) if inputs else [],
             _store(arrays, f"{prefix}/{c.order}/o", c.outputs)] for c in tree.calls]


def record(spec: Any, path: str | Path) -> dict:
    """Run the SPEC's PyTorch model (float32 and the float64 arbiter) on its inputs and write the golden file
    ``path`` (see the module docstring); returns its manifest."""
    from parity.env import fingerprint
    from parity.pair.torch_side import TorchPairSide

    side_t = TorchPairSide(spec.torch_model, spec.devices.get("torch", "cpu"))
    ref = side_t.float64()
    inputs = _inputs(spec)
    out: dict[str, np.ndarray] = {}
    runs = []
    for i, x in enumerate(spec.inputs):
        args = as_args(x, i)
        out_t, tree_t = side_t.forward(args, record=True)
        out_r, tree_r = ref.forward(args, record=True)
        assert tree_t is not None and tree_r is not None  # record=True
        steps: dict[str, Any] = {}
        for c in tree_t.calls:
            try:
                steps[str(c.order)] = _store(out, f"{i}/s/{c.order}", ref.run_module(c.path, c.inputs))
            except EnvironmentRefused:
                raise
            except Exception as e:  # noqa: BLE001 - a module that cannot run alone: the localiser says so
                steps[str(c.order)] = f"`{c.key}` cannot run alone on its recorded inputs ({type_and_first_sentence(e)})"
        runs.append({"t": {"outputs": _store(out, f"{i}/t/o", out_t), "calls": _tree(out, f"{i}/t", tree_t, True)},
                     "r": {"outputs": _store(out, f"{i}/r/o", out_r), "calls": _tree(out, f"{i}/r", tree_r, False)},
                     "steps": steps})
    settings = {m.path: side_t.settings(m.path) for m in side_t.tree()}
    pair = {"spec": {"name": spec.path.name, "options": torch_options(spec)}, "label": side_t.label,
            "device": str(side_t.device), "inputs": [len(as_args(x, i)) for i, x in enumerate(spec.inputs)],
            "tensors": [[t.name, list(t.shape), t.owner, t.kind] for t in side_t.tensors()],
            "tree": [[m.path, m.kind, list(m.children), list(m.tensors)] for m in side_t.tree()],
            "settings": {p: s for p, s in settings.items() if s is not None}, "runs": runs}
    return save_pair_golden(path, json.loads(json.dumps(pair, default=str)), inputs, side_t.state(), out,
                            fingerprint(side_t.info, None, None))


def _tuples(v: Any) -> Any:
    """JSON's lists back to the tuples the settings vocabulary uses."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, dict):
        return {k: _tuples(x) for k, x in v.items()}
    return v


class RecordedSide:
    """PyTorch's side of a pair as a golden file recorded it, answering as ``TorchPairSide`` does (``which``: "t"
    the float32 model, "r" the float64 arbiter)."""

    framework = "torch"

    def __init__(self, golden: Golden, which: str):
        pair, self.g, self.which = golden.manifest["pair"], golden, which
        self.label = pair["label"] if which == "t" else "PyTorch float64"
        self.device = pair["device"]
        self._settings = {p: (s[0], _tuples(s[1])) for p, s in pair["settings"].items()}
        self._inputs = [tuple(golden.tape[f"{i}/{j}"] for j in range(n)) for i, n in enumerate(pair["inputs"])]
        self._runs = pair["runs"]

    def tensors(self) -> list[Tensor]:
        return [Tensor(n, tuple(s), o, k) for n, s, o, k in self.g.manifest["pair"]["tensors"]]

    def tree(self) -> list[ModuleInfo]:
        return [ModuleInfo(p, k, tuple(c), tuple(t)) for p, k, c, t in self.g.manifest["pair"]["tree"]]

    def state(self) -> dict[str, np.ndarray]:
        return dict(self.g.weights)

    def settings(self, path: str) -> tuple[str, dict[str, Any]] | None:
        return self._settings.get(path)

    def _arrays(self, prefix: str, mask: list[bool]) -> tuple:
        return tuple(self.g.outputs[f"{prefix}/{k}"] if present else None for k, present in enumerate(mask))

    def _index(self, args: Sequence[np.ndarray]) -> int:
        for i, rec in enumerate(self._inputs):
            if len(rec) == len(args) and all(np.array_equal(a, b) for a, b in zip(rec, args)):
                return i
        raise GoldenError("the golden file holds no run on this input")

    def forward(self, args: Sequence[np.ndarray], record: bool = False) -> tuple[tuple, CallTree | None]:
        i = self._index(args)
        run, prefix = self._runs[i][self.which], f"{i}/{self.which}"
        calls = [Call(p, k, kind, parent, order, self._arrays(f"{prefix}/{order}/i", ins),
                      self._arrays(f"{prefix}/{order}/o", outs), finished)
                 for p, k, kind, parent, order, finished, ins, outs in run["calls"]]
        return self._arrays(f"{prefix}/o", run["outputs"]), CallTree(calls) if record else None

    def run_module(self, path: str, inputs: tuple) -> tuple:
        """The arbiter's recorded single step of module ``path`` on these (PyTorch float32's recorded) inputs."""
        for i, run in enumerate(self._runs):
            for p, k, kind, parent, order, finished, ins, outs in run["t"]["calls"]:
                if p != path:
                    continue
                rec = self._arrays(f"{i}/t/{order}/i", ins)
                if len(rec) == len(inputs) and all((a is None and b is None) or (a is not None and b is not None and
                                                   np.array_equal(a, b)) for a, b in zip(rec, inputs)):
                    step = run["steps"][str(order)]
                    if isinstance(step, str):
                        raise RuntimeError(step)
                    return self._arrays(f"{i}/s/{order}", step)
        raise RuntimeError(f"the golden file holds no float64 run of `{path}` on these inputs")


def _check_identity(golden: Golden, path: str | Path, spec: Any) -> None:
    """``GoldenError`` naming what differs when the golden file was recorded for another pair."""
    rec = golden.manifest["pair"]["spec"]
    if rec["name"] != spec.path.name:
        raise GoldenError(f"{path} was recorded from SPEC {rec['name']}, not {spec.path.name}")
    here = json.loads(json.dumps(torch_options(spec), default=str))
    if rec["options"] != here:
        raise GoldenError(f"{path} was recorded with the options {rec['options']} of the SPEC's PyTorch entries, "
                          f"not {here}: record it again with these")
    mine = tape_hash(_inputs(spec))
    if mine != golden.manifest["tape_sha256"]:
        raise GoldenError(f"{path}: its inputs (sha256 {golden.manifest['tape_sha256'][:12]}) are not this SPEC's "
                          f"inputs() (sha256 {mine[:12]}): recorded from another SPEC or version of it")


def compare_golden(spec: Any, path: str | Path) -> PairReport:
    """The SPEC's port (built here) against the PyTorch side recorded in the golden file ``path``."""
    golden = load_golden(path, kind="pair")
    try:
        side_t, ref = RecordedSide(golden, "t"), RecordedSide(golden, "r")
        _check_identity(golden, path, spec)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, GoldenError):
            raise
        raise GoldenError(f"{path}: manifest field 'pair' is not usable ({type_and_first_sentence(e)})") from None
    side_o = other_side(spec.ms_model, spec.devices.get("ms", ""))
    wm = pair_map(side_t, side_o, spec.name_map)
    start = side_t.state()
    side_o.load(wm.to_ms(start))
    back = wm.to_torch(side_o.state())
    weights = compare_many("weights", [(e.torch, start[e.torch], back[e.torch]) for e in wm.entries],
                           tolerance("weights", "float32", "cpu"))
    pairs = pair_modules(side_t.tree(), side_o.tree(), wm)
    gates = with_overrides(device_class(side_t.device, side_o.device), spec.tolerances)
    args = [tuple(golden.tape[f"{i}/{j}"] for j in range(n)) for i, n in enumerate(golden.manifest["pair"]["inputs"])]
    results = [judge_input(i, a, side_t, side_o, ref, pairs, gates) for i, a in enumerate(args)]
    recorded = golden.manifest.get("environment", {})
    note = (f"compared with the golden file {Path(path).name}, recorded by {side_t.label} "
            f"{recorded.get('torch', '')} on {recorded.get('cpu_model', 'another host')}: PyTorch's float32 and float64 runs and single steps are the recording's; the training-mode pass and the "
            "training step need both frameworks live and are not compared from a golden file")
    from parity.env import fingerprint

    return PairReport(spec.path.stem, side_t.label, side_o.label, wm, weights, pairs, results, None,
                      {**fingerprint(None, side_o.info, compiled=False), "recorded": recorded}, None, [note])
