"""Two processes or two hosts for one pair: ``--record GOLDEN`` where PyTorch is, ``--compare GOLDEN`` where the
port is (``python -m parity.pair SPEC.py``); the file is the golden v2 container of ``parity.engine.golden``
(kind "pair"), with its digests, size checks and one-line refusals.

What a recording holds (the PyTorch host's side of ``parity.pair.run.compare``): the inputs, the PyTorch weights,
the module tree, tensors and layer settings; per input the float32 and float64 (arbiter, with the SPEC's
``arbiter`` applied) outputs and every module call (float32: inputs and outputs; float64: outputs), and for every
float32 call the float64 module run alone on that call's inputs (the single step the localiser asks for), or why it
cannot run alone. With the SPEC's ``loss``: per input, PyTorch float32's and float64's training step (loss,
gradients by name, the parameters after one step of its PyTorch optimizer): the comparing host judges the input one
process would pick (the first that passes). With ``step`` and ``loop``: the loop's tape, and PyTorch float32's and
float64's free-running states and the float64 step from each float32 state (teacher-forced); the comparing host
runs the port's free-running loop and its step from each recorded float32 state, exactly what one process feeds it.

Rules it keeps:
  * the comparing host maps the recorded weights with the same ``map_weights`` and judges each input with the same
    ``judge_input``, through recorded sides that answer as the live ones did; the gates come from the recorded float32
    and float64 arrays exactly as in one process, so one process and two hosts give the same verdict and blame;
  * the training step and the loop are judged by the one-process functions (``judge_step``, ``judge_loop``) on the
    recorded PyTorch arrays and the port's live ones, and the port runs with the SPEC's ``shims``;
  * a golden file recorded for another pair is refused naming what differs: the SPEC's name, the options its
    PyTorch entries take, the loop's timesteps, or its inputs and loop tape (their digest against this SPEC's);
    a file without the training step or the loop the SPEC defines (recorded by an older version) is refused
    naming the missing member, never compared on less than the SPEC implies; so is one without the training-mode
    pass a model with running statistics implies, unless the comparing host says ``--no-train-pass``;
  * the report's note says what was compared from the file (the runs and single steps, the training-mode pass).
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ddpm_core.errors import EnvironmentRefused, UserError, type_and_first_sentence
from ddpm_core.weights.mapping import Tensor
from parity.engine.compare import compare_many
from parity.engine.golden import Golden, GoldenError, load_golden, save_pair_golden
from parity.engine.tape import tape_hash
from parity.engine.tolerances import device_class, tolerance
from parity.pair.calls import Call, CallTree
from parity.pair.judge import with_overrides
from parity.pair.loop import Tape, forced_run, free_run, judge_loop, plan
from parity.pair.modules import ModuleInfo, pair_modules
from parity.pair.report import PairReport
from parity.pair.run import (
    as_args,
    has_statistics,
    judge_input,
    other_side,
    pair_map,
    settings_by_module,
    trained_input,
)
from parity.pair.train_step import Trained, judge_step, step_on

TORCH_ENTRIES = ("torch_model", "inputs", "optimizers", "loop")
"""The SPEC entries whose options shape what is recorded: they must be the same on both hosts."""


def torch_options(spec: Any) -> dict[str, Any]:
    """The options the SPEC's PyTorch-side entries declare (read from their signatures, nothing is called)."""
    params = {p for n in TORCH_ENTRIES if callable(getattr(spec.module, n, None))
              for p in inspect.signature(getattr(spec.module, n)).parameters}
    return {k: v for k, v in sorted(spec.options.items()) if k in params}


def _tape(spec: Any) -> tuple[dict[str, np.ndarray], list[int], Tape | None]:
    """The recorded tape (every input's arrays; with a loop, its start and noises), the loop's timesteps and tape."""
    args = [as_args(x, i) for i, x in enumerate(spec.inputs)]
    arrays = {f"{i}/{j}": a for i, x in enumerate(args) for j, a in enumerate(x)}
    if spec.step is None:
        return arrays, [], None
    timesteps, tape = plan(spec.loop, args)
    arrays["loop/start"] = tape.start
    arrays.update({f"loop/noise/{k}": n for k, n in enumerate(tape.noise)})
    return arrays, timesteps, tape


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


def _record_input(side_t: Any, ref: Any, args: tuple, i: str, out: dict[str, np.ndarray],
                  buffers: Sequence[str] = ()) -> dict:
    """Input ``i``'s float32 and float64 runs with every call, then ``buffers`` of both sides (running statistics
    after a training-mode pass), and the float64 single step of every float32 call."""
    out_t, tree_t = side_t.forward(args, record=True)
    out_r, tree_r = ref.forward(args, record=True)
    assert tree_t is not None and tree_r is not None  # record=True
    for which, side in (("t", side_t), ("r", ref)):
        state = side.state() if buffers else {}
        out.update({f"{i}/b/{which}/{n}": state[n] for n in buffers})
    steps: dict[str, Any] = {}
    for c in tree_t.calls:
        try:
            steps[str(c.order)] = _store(out, f"{i}/s/{c.order}", ref.run_module(c.path, c.inputs))
        except EnvironmentRefused:
            raise
        except Exception as e:  # noqa: BLE001 - a module that cannot run alone: the localiser says so
            steps[str(c.order)] = f"`{c.key}` cannot run alone on its recorded inputs ({type_and_first_sentence(e)})"
    return {"t": {"outputs": _store(out, f"{i}/t/o", out_t), "calls": _tree(out, f"{i}/t", tree_t, True)},
            "r": {"outputs": _store(out, f"{i}/r/o", out_r), "calls": _tree(out, f"{i}/r", tree_r, False)},
            "steps": steps}


def _store_trained(out: dict[str, np.ndarray], prefix: str, trained: Trained) -> None:
    value, grads, after = trained
    out[f"{prefix}/loss"] = np.asarray(value)
    out.update({f"{prefix}/g/{n}": g for n, g in grads.items()})
    out.update({f"{prefix}/w/{n}": w for n, w in (after or {}).items()})


def _trained(golden: Golden, prefix: str) -> Trained:
    """A recorded training step back as ``(loss, gradients, parameters after the step or None)``, in the order
    PyTorch gave them (the manifest's ``train_step``: the gradients' names, and the stepped parameters' or None)."""
    names, out = golden.manifest["pair"]["train_step"], golden.outputs
    return (out[f"{prefix}/loss"], {n: out[f"{prefix}/g/{n}"] for n in names["gradients"]},
            None if names["stepped"] is None else {n: out[f"{prefix}/w/{n}"] for n in names["stepped"]})


def record(spec: Any, path: str | Path, train_pass: bool = True) -> dict:
    """Run the SPEC's PyTorch model (float32 and the float64 arbiter) on its inputs, its training-mode pass (with
    running statistics, unless not ``train_pass``), its training step and its loop, and write the golden file
    ``path`` (see the module docstring); returns its manifest."""
    from parity.env import fingerprint
    from parity.pair.torch_side import TorchPairSide

    side_t = TorchPairSide(spec.torch_model, spec.devices.get("torch", "cpu"))
    ref = side_t.float64(spec.arbiter)
    tape, timesteps, loop_tape = _tape(spec)
    all_args = [as_args(x, i) for i, x in enumerate(spec.inputs)]
    out: dict[str, np.ndarray] = {}
    runs = [_record_input(side_t, ref, args, str(i), out) for i, args in enumerate(all_args)]
    settings = {m.path: side_t.settings(m.path) for m in side_t.tree()}
    buffers = side_t.buffers()
    pair: dict[str, Any] = {"spec": {"name": spec.path.name, "options": torch_options(spec)}, "label": side_t.label,
            "device": str(side_t.device), "inputs": [len(a) for a in all_args],
            "tensors": [[t.name, list(t.shape), t.owner, t.kind] for t in side_t.tensors()],
            "tree": [[m.path, m.kind, list(m.children), list(m.tensors)] for m in side_t.tree()],
            "settings": {p: s for p, s in settings.items() if s is not None}, "runs": runs,
            "buffers": buffers}
    start = side_t.state()
    if train_pass and buffers:  # every input: the comparing host picks the one one process would
        passes = []
        for i, args in enumerate(all_args):
            try:
                with side_t.train_mode(), ref.train_mode():
                    passes.append(_record_input(side_t, ref, args, f"T{i}", out, buffers))
            finally:
                side_t.load(start)
                ref.load(start)
        pair["train_pass"] = {"runs": passes}
    if spec.loss is not None:  # every input: the comparing host picks the one one process would
        for i, args in enumerate(all_args):
            for which, side in (("t", side_t), ("r", ref)):
                trained = step_on(side, args, spec.loss, spec.optimizers.get("torch"), start)
                _store_trained(out, f"train/{i}/{which}", trained)
        _, grads, after = trained
        pair["train_step"] = {"gradients": list(grads), "stepped": None if after is None else list(after)}
    if loop_tape is not None:
        free_t, free_r = (free_run(side, spec.step, timesteps, loop_tape) for side in (side_t, ref))
        for name, states in (("t", free_t), ("r", free_r),
                             ("rf", forced_run(ref, spec.step, timesteps, loop_tape, free_t, free_r))):
            _store(out, f"loop/{name}", states)
        pair["loop"] = {"timesteps": timesteps}
    return save_pair_golden(path, json.loads(json.dumps(pair, default=str)), tape, start, out,
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
    the float32 model, "r" the float64 arbiter; ``train``: its training-mode passes and single steps)."""

    framework = "torch"

    def __init__(self, golden: Golden, which: str, train: bool = False):
        pair, self.g, self.which = golden.manifest["pair"], golden, which
        self._mode = "T" if train else ""
        """the recorded runs' key prefix: "" eval mode, "T" training mode"""
        self.label = pair["label"] if which == "t" else "PyTorch float64"
        self.device = pair["device"]
        self._settings = {p: (s[0], _tuples(s[1])) for p, s in pair["settings"].items()}
        self._inputs = [tuple(golden.tape[f"{i}/{j}"] for j in range(n)) for i, n in enumerate(pair["inputs"])]
        self._runs = pair["train_pass"]["runs"] if train else pair["runs"]

    def tensors(self) -> list[Tensor]:
        return [Tensor(n, tuple(s), o, k) for n, s, o, k in self.g.manifest["pair"]["tensors"]]

    def tree(self) -> list[ModuleInfo]:
        return [ModuleInfo(p, k, tuple(c), tuple(t)) for p, k, c, t in self.g.manifest["pair"]["tree"]]

    def state(self) -> dict[str, np.ndarray]:
        return dict(self.g.weights)

    def settings(self, path: str) -> tuple[str, dict[str, Any]] | None:
        return self._settings.get(path)

    def buffers(self) -> list[str]:
        return list(self.g.manifest["pair"]["buffers"])

    def passed(self, index: int) -> tuple:
        """Input ``index``'s recorded training-mode pass as ``parity.pair.train_pass.pass_on`` returns it."""
        out, tree = self.forward(self._inputs[index], record=True)
        prefix = f"T{index}/b/{self.which}"
        return out, tree, {n: self.g.outputs[f"{prefix}/{n}"] for n in self.buffers()}

    def _arrays(self, prefix: str, mask: list[bool]) -> tuple:
        return tuple(self.g.outputs[f"{prefix}/{k}"] if present else None for k, present in enumerate(mask))

    def _index(self, args: Sequence[np.ndarray]) -> int:
        for i, rec in enumerate(self._inputs):
            if len(rec) == len(args) and all(np.array_equal(a, b) for a, b in zip(rec, args)):
                return i
        raise GoldenError("the golden file holds no run on this input")

    def forward(self, args: Sequence[np.ndarray], record: bool = False) -> tuple[tuple, CallTree | None]:
        i = self._index(args)
        run, prefix = self._runs[i][self.which], f"{self._mode}{i}/{self.which}"
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
                rec = self._arrays(f"{self._mode}{i}/t/{order}/i", ins)
                if len(rec) == len(inputs) and all((a is None and b is None) or (a is not None and b is not None and
                                                   np.array_equal(a, b)) for a, b in zip(rec, inputs)):
                    step = run["steps"][str(order)]
                    if isinstance(step, str):
                        raise RuntimeError(step)
                    return self._arrays(f"{self._mode}{i}/s/{order}", step)
        raise RuntimeError(f"the golden file holds no float64 run of `{path}` on these inputs")


def _train_pass_missing(path: str | Path, what: str) -> GoldenError:
    return GoldenError(f"{path}: {what} is missing: the model has running statistics and the file holds no "
                       "training-mode pass (recorded by an older parity.pair, or with --no-train-pass): record it "
                       "again, or compare with --no-train-pass")


def _check_identity(golden: Golden, path: str | Path, spec: Any) -> tuple[list[int], Tape | None]:
    """``GoldenError`` naming what differs when the golden file was recorded for another pair, or lacks what the
    SPEC implies (a training step, a loop); else the loop's timesteps and tape, drawn here as on the recording host."""
    pair = golden.manifest["pair"]
    rec = pair["spec"]
    if rec["name"] != spec.path.name:
        raise GoldenError(f"{path} was recorded from SPEC {rec['name']}, not {spec.path.name}")
    here = json.loads(json.dumps(torch_options(spec), default=str))
    if rec["options"] != here:
        raise GoldenError(f"{path} was recorded with the options {rec['options']} of the SPEC's PyTorch entries, "
                          f"not {here}: record it again with these")
    for entry, field, member in (("loss", "train_step", "out/train/0/t/loss"), ("step", "loop", "out/loop/t/0")):
        if getattr(spec, entry) is not None and field not in pair:
            raise GoldenError(f"{path}: member {member}.npy is missing; SPEC {spec.path.name} defines {entry}() and "
                              f"this file holds no {field.replace('_', ' ')} (recorded by an older parity.pair or "
                              "another version of the SPEC): record it again")
    arrays, timesteps, tape = _tape(spec)
    if tape is not None and pair["loop"]["timesteps"] != timesteps:
        raise GoldenError(f"{path}: its loop runs the timesteps {pair['loop']['timesteps']}, this SPEC's loop "
                          f"{timesteps}: record it again")
    mine = tape_hash(arrays)
    if mine != golden.manifest["tape_sha256"]:
        what = "inputs() and loop tape" if tape is not None else "inputs()"
        raise GoldenError(f"{path}: its {what.replace('()', '')} (sha256 {golden.manifest['tape_sha256'][:12]}) are "
                          f"not this SPEC's {what} (sha256 {mine[:12]}): recorded from another SPEC or version of it")
    return timesteps, tape


def compare_golden(spec: Any, path: str | Path, train_pass: bool = True) -> PairReport:
    """The SPEC's port (built here, with its shims) against the PyTorch side recorded in the golden file ``path``:
    every input, then the training-mode pass (unless not ``train_pass``), the training step and the loop when the
    model and the SPEC call for them, each judged by the code one process judges with."""
    golden = load_golden(path, kind="pair")
    try:
        side_t, ref = RecordedSide(golden, "t"), RecordedSide(golden, "r")
        timesteps, tape = _check_identity(golden, path, spec)
        if train_pass and "buffers" not in golden.manifest["pair"]:  # older: which buffers it had is unknown
            raise _train_pass_missing(path, "manifest field pair.buffers")
        passes = [RecordedSide(golden, w, train=True) for w in ("t", "r")] if "train_pass" in golden.manifest["pair"] \
            else []
        n = len(golden.manifest["pair"]["inputs"])
        steps = [(_trained(golden, f"train/{i}/t"), _trained(golden, f"train/{i}/r")) for i in range(n)
                 if spec.loss is not None]
        free_t, free_r, forced_r = ([golden.outputs[f"loop/{w}/{k}"] for k in range(len(timesteps))]
                                    for w in ("t", "r", "rf"))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, GoldenError):
            raise
        raise GoldenError(f"{path}: manifest field 'pair' is not usable ({type_and_first_sentence(e)})") from None
    side_o = other_side(spec.ms_model, spec.devices.get("ms", ""), spec.shims)
    wm = pair_map(side_t, side_o, spec.name_map)
    start = side_t.state()
    side_o.load(wm.to_ms(start))
    back = wm.to_torch(side_o.state())
    weights = compare_many("weights", [(e.torch, start[e.torch], back[e.torch]) for e in wm.entries],
                           tolerance("weights", "float32", "cpu"))
    pairs = pair_modules(side_t.tree(), side_o.tree(), wm)
    try:
        gates = with_overrides(device_class(side_t.device, side_o.device), spec.tolerances)
    except ValueError as e:
        raise UserError(str(e)) from None
    args = [tuple(golden.tape[f"{i}/{j}"] for j in range(n)) for i, n in enumerate(golden.manifest["pair"]["inputs"])]
    results = [judge_input(i, a, side_t, side_o, ref, pairs, gates) for i, a in enumerate(args)]
    trained = looped = train = None
    k = trained_input(results)
    if train_pass and has_statistics(side_t, wm):
        if not passes:
            raise _train_pass_missing(path, "member out/T0/t/o/0.npy")
        train = _train_pass(passes, side_o, wm, pairs, args[k], k, settings_by_module(results[k]), start, gates)
    if spec.loss is not None:
        o = step_on(side_o, args[k], spec.loss, spec.optimizers.get("ms"), wm.to_ms(start))
        trained = judge_step(k, steps[k][0], o, steps[k][1], wm, side_o.label, False, gates)
    if tape is not None:
        free_o = free_run(side_o, spec.step, timesteps, tape)
        forced_o = forced_run(side_o, spec.step, timesteps, tape, free_t, free_o)
        looped = judge_loop(timesteps, free_t, free_o, free_r, forced_o, forced_r, gates, side_o.label)
    recorded = golden.manifest.get("environment", {})
    done = ", ".join(["PyTorch's float32 and float64 runs and single steps"] + ["its training-mode pass"] * bool(train)
                     + ["its training step"] * bool(trained) + ["its loop states"] * bool(looped))
    note = (f"compared with the golden file {Path(path).name}, recorded by {side_t.label} "
            f"{recorded.get('torch', '')} on {recorded.get('cpu_model', 'another host')}: {done} are the recording's")
    from parity.env import fingerprint

    report = PairReport(spec.path.stem, side_t.label, side_o.label, wm, weights, pairs, results, train,
                        {**fingerprint(None, side_o.info, compiled=False), "recorded": recorded}, trained, [note])
    report.loop, report.shims = looped, [getattr(s, "description", None) or repr(s) for s in spec.shims]
    return report


def _train_pass(passes: list[RecordedSide], side_o: Any, wm: Any, pairs: Any, args: tuple, k: int,
                by_module: dict[str, list], start: dict[str, np.ndarray], gates: Any) -> Any:
    """The port's training-mode pass on input ``k`` against PyTorch's recorded ones, judged by ``judge_pass``."""
    from parity.pair.train_pass import judge_pass, pass_on

    side_t, ref = passes
    try:
        with side_o.train_mode():
            o = pass_on(side_o, args, lambda s: wm.to_torch(s.state()))
            return judge_pass(side_t.passed(k), o, ref.passed(k), side_o.run_module, ref.run_module, pairs, wm,
                              {m.path: m.kind for m in side_t.tree()}, side_t.buffers(), k, by_module, side_o.label,
                              gates)
    finally:
        side_o.load(wm.to_ms(start))
