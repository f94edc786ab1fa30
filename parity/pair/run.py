"""``compare``: one PyTorch model against its port (a MindSpore cell, or PyTorch on another device), every input.

What a run guarantees:
  * the weights are the PyTorch model's, mapped onto the other side by ``ddpm_core.weights.mapping`` (a map with any
    problem stops the run: ``WeightsError``, exit 2) and read back bit-identical, or the weights row fails;
  * every input is run three times (PyTorch float32, the other side, PyTorch float64 as the arbiter) with every
    module call recorded; its outputs are judged under the machine-relative gate, its paired layers' settings
    are compared at that input's sizes, and a failing input is localised (``parity.pair.localise``);
  * a model with running statistics also gets one training-mode pass, and with a loss one training step, on the
    first input that passes (``parity.pair.train_pass``, ``parity.pair.train_step``); with a ``step`` and its
    ``loop``, the stochastic loop is run from one numpy tape and judged step by step (``parity.pair.loop``);
  * the port's shims are entered around every call into it and named in the report;
  * nothing is skipped silently: unpaired modules and dropped tensors are listed in the report.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from ddpm_core.errors import UserError
from ddpm_core.weights.mapping import WeightMap, map_weights
from parity.engine.compare import compare_many
from parity.engine.tolerances import device_class, tolerance
from parity.pair.judge import judge, with_overrides
from parity.pair.localise import Localiser
from parity.pair.loop import Tape, plan, run_loop
from parity.pair.modules import ModulePairs, pair_modules
from parity.pair.report import InputResult, PairReport
from parity.pair.settings import SettingDifference, compare_settings
from parity.pair.train_pass import training_pass
from parity.pair.train_step import training_step
from parity.pair.variants import TorchVariant

if TYPE_CHECKING:
    from parity.pair.torch_side import TorchPairSide


def as_args(item: Any, index: int) -> tuple[np.ndarray, ...]:
    """One input: an array, or a tuple/list of arrays (the model's positional arguments)."""
    items = item if isinstance(item, (tuple, list)) else (item,)
    if not items or not all(isinstance(a, np.ndarray) for a in items):
        raise UserError(f"input {index}: expected a numpy array or a tuple of numpy arrays, got "
                        f"{type(item).__name__}")
    return tuple(items)


def _small_integers(args: tuple[np.ndarray, ...]) -> dict[int, list[int]]:
    """The values of each integer argument of at most 4 elements (a timestep, a class label), by position."""
    return {k: [int(v) for v in a.ravel()] for k, a in enumerate(args) if a.dtype.kind in "iu" and a.size <= 4}


def other_side(model: Any, device: str, shims: Sequence[Any] = ()) -> Any:
    """The side for the port: PyTorch when it is an ``nn.Module`` (another device) or a ``TorchVariant`` (compiled,
    under autocast), else MindSpore (entering ``shims`` around every call into it). PyTorch is not imported for a
    MindSpore model (a host may lack it)."""
    torch = sys.modules.get("torch")  # an nn.Module exists only once torch is imported
    if isinstance(model, TorchVariant) or (torch is not None and isinstance(model, torch.nn.Module)):
        from parity.pair.torch_side import TorchPairSide

        if isinstance(model, TorchVariant):
            return TorchPairSide(model.model, device or "cpu", label=f"PyTorch {model.describe()}",
                                 compile=model.compile, autocast=model.autocast)
        return TorchPairSide(model, device or "cpu", label=f"PyTorch ({device or 'cpu'})")
    from parity.pair.ms_side import MsPairSide

    return MsPairSide(model, device or "CPU", shims)


def pair_map(side_t: Any, side_o: Any, name_map: Mapping[str, Any] | None) -> WeightMap:
    """The weight map of a pair (rules, structure, the user's ``name_map``), refused with every problem one line
    each (``WeightsError``): the one map ``compare`` loads with and ``parity.convert --map`` converts with."""
    wm = map_weights(side_t.tensors(), side_o.tensors(), name_map)
    wm.check()
    return wm


def _settings(side_t: Any, side_o: Any, pairs: ModulePairs, tree_t: Any) -> dict[str, list[SettingDifference]]:
    """Settings differences of every paired module at its first call's input size, by PyTorch path."""
    out: dict[str, list[SettingDifference]] = {}
    for c in tree_t.calls:
        if c.index != 0 or c.path not in pairs.to_ms:
            continue
        first = next((a for a in c.inputs if a is not None), None)
        shape = tuple(first.shape) if first is not None else None
        other = pairs.to_ms[c.path]
        diffs = compare_settings(c.path, other, side_t.settings(c.path), side_o.settings(other), shape, side_o.label)
        if diffs:
            out[c.path] = diffs
    return out


def judge_input(i: int, args: tuple, side_t: Any, side_o: Any, ref: Any, pairs: ModulePairs, gates: Any
                ) -> InputResult:
    """Input ``i``: the three runs with every module call recorded, the outputs judged, the settings at its sizes,
    and the first divergence localised. The sides may be live or recorded (``parity.pair.golden``)."""
    out_t, tree_t = side_t.forward(args, record=True)
    out_o, tree_o = side_o.forward(args, record=True)
    out_r, tree_r = ref.forward(args, record=True)
    output = judge("output", out_t, out_o, out_r, "pair_output", gates)
    settings = _settings(side_t, side_o, pairs, tree_t)
    loc = Localiser(tree_t, tree_o, tree_r, pairs.to_ms, side_o.run_module, ref.run_module, settings,
                    side_o.label, gates)
    div = loc.first_divergence(i)
    return InputResult(i, [tuple(a.shape) for a in args], output, div, [d for ds in settings.values() for d in ds],
                       loc.depth(), _small_integers(args))


def trained_input(results: Sequence[InputResult]) -> int:
    """The input the training-mode pass and the training step run on: the first that passes (input 0 if none
    does), so they test what the eval-mode comparison could not."""
    return next((r.index for r in results if r.passed), 0)


def has_statistics(side_t: Any, wm: WeightMap) -> bool:
    """Whether the model has running statistics the port holds too: a training-mode pass is then compared."""
    return any(b in wm.ms_name() for b in side_t.buffers())


def settings_by_module(result: InputResult) -> dict[str, list[SettingDifference]]:
    """An input's settings differences by PyTorch module path."""
    out: dict[str, list[SettingDifference]] = {}
    for d in result.settings:
        out.setdefault(d.torch_module, []).append(d)
    return out


def compare(torch_model: Any, other_model: Any, inputs: Sequence[Any], *, name_map: Mapping[str, Any] | None = None,
            torch_device: str = "cpu", other_device: str = "", train_pass: bool = True, name: str = "",
            tamper: Callable[[Any], None] | None = None, loss: Callable[[Any], Any] | None = None,
            optimizers: Mapping[str, Callable[[list], Any]] | None = None,
            tolerances: Mapping[str, Mapping[str, float]] | None = None, shims: Sequence[Any] = (),
            arbiter: Callable[[Any], Any] | None = None, step: Callable[..., Any] | None = None,
            loop: Mapping[str, Any] | None = None, tape: Tape | None = None, teacher_forced: bool = True
            ) -> PairReport:
    """Compare ``torch_model`` with its port ``other_model`` on every input (see the module docstring).
    ``tamper(side)`` is called with the other side once its weights are loaded and checked (``--self-test``
    plants its bugs with it, so what it plants is left to the numeric verdict). With ``loss`` (and ``optimizers``)
    one training step is compared too (``parity.pair.train_step``). ``tolerances`` overrides the machine-relative
    rules (``{"pair_output": {"k": 20}}``, see ``parity.pair.judge.with_overrides``). ``shims`` are the SPEC's
    context managers for the port (entered around each call into it), ``arbiter(model64)`` its fix to the float64
    copy; with ``step`` and ``loop`` the loop is compared (``tape`` replaces the one drawn from the loop's seed)."""
    if not inputs:
        raise UserError("no inputs: a run that compares nothing cannot pass")
    try:
        with_overrides("cpu", tolerances)
    except ValueError as e:
        raise UserError(str(e)) from None
    from parity.pair.torch_side import TorchPairSide

    all_args = [as_args(x, i) for i, x in enumerate(inputs)]
    amp = other_model.autocast if isinstance(other_model, TorchVariant) else None
    side_t = TorchPairSide(torch_model, torch_device, autocast=amp,  # autocast: the reference in that precision
                           label=f"PyTorch autocast {amp} (eager)" if amp else "")
    if step is not None:
        timesteps, drawn = plan(loop or {}, all_args)
        tape = tape or drawn
    side_o = other_side(other_model, other_device, shims)
    wm = pair_map(side_t, side_o, name_map)
    start = side_t.state()
    side_o.load(wm.to_ms(start))
    back = wm.to_torch(side_o.state())
    weights = compare_many("weights", [(e.torch, start[e.torch], back[e.torch]) for e in wm.entries],
                           tolerance("weights", "float32", "cpu"))
    if tamper is not None:
        tamper(side_o)
    ref = side_t.float64(arbiter)
    pairs = pair_modules(side_t.tree(), side_o.tree(), wm)
    other_torch = side_o.framework == "torch" and side_o.device.type != "cpu"
    gates = with_overrides(device_class(str(side_o.device if other_torch else side_t.device),
                                        "CPU" if side_o.framework == "torch" else side_o.device), tolerances,
                           amp or "float32")
    results = [judge_input(i, args, side_t, side_o, ref, pairs, gates) for i, args in enumerate(all_args)]
    train = trained = None
    k = trained_input(results)
    if train_pass and has_statistics(side_t, wm):
        train = training_pass(side_t, side_o, ref, wm, pairs, all_args[k], k, settings_by_module(results[k]), gates)
    if loss is not None:
        trained = training_step(side_t, side_o, ref, wm, all_args[k], k, loss, optimizers or {}, gates)
    looped = None
    if step is not None:
        looped = run_loop(side_t, side_o, ref, step, timesteps, tape, gates, teacher_forced)  # type: ignore[arg-type]
    notes = [n for n in (getattr(side_o, "note", lambda: "")(),) if n]
    report = PairReport(name or type(torch_model).__name__, side_t.label, side_o.label, wm, weights, pairs, results,
                        train, _environment(side_t, side_o), trained, notes)
    report.loop, report.shims = looped, [getattr(s, "description", None) or repr(s) for s in shims]
    return report


def _environment(side_t: "TorchPairSide", side_o: Any) -> dict[str, Any]:
    from parity.env import fingerprint

    if side_o.framework == "ms":
        return fingerprint(side_t.info, side_o.info, compiled=False)
    return {**fingerprint(side_t.info, None, None), "other_torch_setup": side_o.info,
            "other_torch_run": {"compile": side_o.backend, "autocast": side_o.autocast}}
