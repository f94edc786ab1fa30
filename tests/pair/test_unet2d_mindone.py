"""A real port nobody here wrote: diffusers 0.39's UNet2DModel + DDPMScheduler against mindone 0.5.0's
(examples/pairs/unet2d_mindone.py, 16x16, MindSpore on the CPU with the SPEC's kernel shim).

As shipped, mindone's time embedding is farther from float64 than float32 rounding allows: MindSpore's CPU float32
``exp`` is up to 64 ulp off, and the embedding multiplies that by t. The tool must find that module at every
timestep, blame MindSpore, and pass the forward pass, the training step and the 10-step loop once the SPEC's
``exp=float64`` removes it; a scheduler slip only the loop can see must be caught there; without the shim the run
must stop with exit 3 naming the op and the cell.
"""
from __future__ import annotations

import pytest

import json
from pathlib import Path

from parity.pair import compare
from parity.pair.spec import load_spec
from tests import one_framework
from tests.host import available, needs
from tests.reliability.corpus import ROOT

pytestmark = needs("torch", "mindspore")  # on a one-framework host each test skips, saying why
if available("torch") and available("mindspore"):  # diffusers imports torch, mindone MindSpore
    try:
        import diffusers  # noqa: F401
        import mindone.diffusers  # noqa: F401
    except ModuleNotFoundError as e:  # loud: the reason is in every -ra summary; a broken install fails
        if e.name not in ("diffusers", "mindone"):
            raise
        pytest.skip(f"the diffusers/mindone pair needs diffusers and mindone ({e}): pip install 'ddpm-parity[pairs]'",
                    allow_module_level=True)

SPEC = ROOT / "examples" / "pairs" / "unet2d_mindone.py"


def _run(*, loop: bool = True, train: bool = True, **options: object) -> object:
    spec = load_spec(SPEC, options)
    return compare(spec.torch_model, spec.ms_model, spec.inputs, name_map=spec.name_map, name=SPEC.stem,
                   loss=spec.loss if train else None, optimizers=spec.optimizers, shims=spec.shims,
                   arbiter=spec.arbiter, step=spec.step if loop else None, loop=spec.loop)


def test_as_shipped_the_time_embedding_is_mindspores_own_error_at_every_timestep() -> None:
    report = _run(loop=False, train=False, timesteps=[10, 999])
    assert report.weight_map.counts() == {"identical": 144, "dropped": 0}
    assert "shim (the SPEC's): mint.arange -> ops.arange" in report.text()  # the shim is named, never silent
    assert [r.values[1] for r in report.inputs] == [[10], [999]]
    for r in report.inputs:
        d = r.divergence
        assert (d.torch_module, d.own, d.blame, d.different_function) == ("time_proj", True, "MindSpore", False)
        assert d.err_other > 10 * d.err_torch  # MindSpore's embedding: far from float64, not just rounding
    at10, at999 = report.inputs
    assert at10.output.passed and at10.divergence.hidden  # at t=10 the layers after it hide it
    assert not at999.output.passed  # at t=999 it reaches the output
    # the error grows with t (exp's error times t): per-timestep, one global atol would not fit both
    assert at999.divergence.output.comparison.max_abs > 30 * at10.divergence.output.comparison.max_abs


def test_with_exp_in_float64_the_forward_pass_training_step_and_10_step_loop_pass() -> None:
    report = _run(exp="float64", timesteps=[10, 999])
    assert report.passed, report.text()
    assert all(r.output.comparison.max_abs > 0 for r in report.inputs)  # two implementations: compared
    assert len(report.step.grads) == 144 and len(report.step.stepped) == 144
    steps = report.loop.steps
    assert [s.timestep for s in steps] == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert all(s.forced is not None and s.free.comparison.max_abs > 0 for s in steps)
    gates = [s.free.comparison.tolerance.atol for s in steps]
    assert len(set(gates)) == len(gates)  # each step's own gate, from its own float32 rounding


def test_a_scheduler_slip_only_the_loop_sees_is_caught_there_and_blamed_on_mindspore() -> None:
    """mindone's scheduler with variance_type "fixed_large" (beta_t where the posterior variance belongs): the
    model agrees at every input; the loop's first step already differs from PyTorch's state (its own error)."""
    report = _run(exp="float64", ms_variance="fixed_large", timesteps=[10], steps=4, train=False)
    assert all(r.passed for r in report.inputs) and not report.passed
    first = report.first_divergence()
    assert (first["timestep"], first["error"], first["blame"]) == (750, "loop step: own", "MindSpore"), first
    last = report.loop.steps[-1]  # t=0 adds no noise: the slip has nothing to scale, the drift stays
    assert last.timestep == 0 and last.forced.passed and not last.free.passed and not last.own


def test_without_the_shim_the_run_stops_naming_the_op_and_the_cell(capsys: pytest.CaptureFixture) -> None:
    from mindspore import mint

    from parity.pair.__main__ import main

    conv = mint.nn.Conv2d.construct
    assert main([str(SPEC), "--set", "shim=false", "--set", "timesteps=[10]"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: MindSpore has no CPU kernel for Arange, in cell `time_proj` (Timesteps); pass a shim of "
                   "standard ops in the SPEC"]
    assert mint.nn.Conv2d.construct is conv  # shims are entered per call and left: the process never keeps them


def test_two_hosts_give_the_one_process_verdict_with_the_arbiter_and_the_shims(tmp_path: Path) -> None:
    """Recorded where only PyTorch is (the SPEC's float64 time embedding in the arbiter's records), compared where
    only MindSpore is (the SPEC's kernel shims around the port, else exit 3): as shipped, the forward pass, the
    training step and a 2-step loop give every figure and the verdict of one process."""
    options = ["--set", "timesteps=[999]", "--set", "steps=2"]
    golden = tmp_path / "unet2d.npz"
    rec = one_framework.run("torch", "parity.pair", [SPEC, "--record", golden, *options])
    assert rec.returncode == 0, rec.stderr[-2000:]
    res = one_framework.run("ms", "parity.pair", [SPEC, "--compare", golden, *options, "--json", tmp_path / "two.json"])
    assert res.returncode == 1 and "error:" not in res.stderr, res.stderr[-2000:]
    two = json.loads((tmp_path / "two.json").read_text())
    one = _run(timesteps=[999], steps=2).to_dict()
    assert {k: v for k, v in two.items() if k not in ("notes", "environment")} == \
        {k: v for k, v in one.items() if k not in ("notes", "environment")}
    assert two["first_divergence"]["module"]["torch"] == "time_proj" and two["first_divergence"]["blame"] == "MindSpore"
    assert len(two["training_step"]["gradients"]) == 144 and [s["timestep"] for s in two["loop"]["steps"]] == [500, 0]
    assert "mint.arange -> ops.arange" in " ".join(two["shims"])
