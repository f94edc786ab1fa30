"""parity.pair's stochastic loop (parity.pair.loop) on a PyTorch-against-PyTorch pair: a toy sampler whose step is
x <- a_t x + b_t model(x) + s_t noise. The correct port passes every step under gates that follow the timestep;
a slip in one timestep's coefficient is its own error there (teacher-forced) and inherited after it (drift), blamed
on the port; the tape is drawn once from its seed, and an injected one is used as given."""
from __future__ import annotations

import re

import numpy as np
import pytest

from ddpm_core.errors import UserError
from parity.pair.loop import Tape, plan
from parity.pair.spec import load_spec
from tests.host import needs

TIMESTEPS = [900, 500, 100, 0]


def _model() -> object:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(4, 2, 1))


def _step(slip_at: int | None = None):
    """A DDPM-like step whose coefficients depend on t (the port's step differs at ``slip_at`` by 1e-3)."""

    def step(model, x, t, noise):
        a = 1.0 / (1.0 + t / 1000.0)
        if model.slipped and t == slip_at:
            a *= 1.001
        return a * x + 0.1 * model(x) + (t / 1000.0) * noise

    return step


def _pair(slip_at: int | None = None, **options: object) -> object:
    from parity.pair import compare

    torch_model, port = _model(), _model()
    torch_model.slipped, port.slipped = False, True
    return compare(torch_model, port, [np.ones((1, 2, 6, 6), np.float32)], step=_step(slip_at),
                   loop={"timesteps": TIMESTEPS, "seed": 3}, train_pass=False, **options)


@needs("torch")
def test_the_correct_port_passes_every_step_and_each_gate_is_its_own() -> None:
    report = _pair()
    assert report.passed and report.loop.passed and len(report.loop.steps) == 4
    gates = [s.free.comparison.tolerance.atol for s in report.loop.steps]
    assert len(set(gates)) == 4  # each step's gate comes from its own float32 rounding, not one global atol
    d = report.to_dict()["loop"]["steps"]
    assert [s["timestep"] for s in d] == TIMESTEPS and all("forced" in s for s in d)


@needs("torch")
def test_a_slip_at_one_timestep_is_own_there_inherited_after_and_blamed_on_the_port() -> None:
    report = _pair(slip_at=500)
    steps = report.loop.steps
    assert [s.passed for s in steps] == [True, False, False, False]
    assert steps[1].own and steps[1].blame == "PyTorch (cpu)"  # from PyTorch's state it still differs
    assert not steps[2].own and steps[2].forced.passed  # drift: from PyTorch's state step 2 agrees
    first = report.to_dict()["first_divergence"]
    assert (first["timestep"], first["error"], first["blame"]) == (500, "loop step: own", "PyTorch (cpu)")
    assert "the loop differs at t=500, t=100, t=0 and matches at t=900" in report.text()


@needs("torch")
def test_the_tape_is_drawn_once_from_the_seed_and_an_injected_one_is_used_as_given() -> None:
    inputs = [(np.zeros((1, 2, 6, 6), np.float32),)]
    steps, tape = plan({"timesteps": TIMESTEPS, "seed": 3}, inputs)
    again = plan({"timesteps": TIMESTEPS, "seed": 3}, inputs)[1]
    assert steps == TIMESTEPS and len(tape.noise) == 4 and tape.start.shape == (1, 2, 6, 6)
    assert all(np.array_equal(a, b) for a, b in zip([tape.start, *tape.noise], [again.start, *again.noise]))
    big = Tape(tape.start * 100, [n * 100 for n in tape.noise])  # float32 rounds a 100x larger state 100x coarser
    drawn, injected = _pair(), _pair(tape=big)
    assert injected.passed
    ratio = injected.loop.steps[0].free.comparison.tolerance.atol / drawn.loop.steps[0].free.comparison.tolerance.atol
    assert 10 < ratio < 1000  # the gate follows the injected tape's rounding
    with pytest.raises(UserError, match="loop: expected"):
        plan({"timesteps": []}, inputs)


BASE = "def torch_model(): pass\ndef ms_model(): pass\ndef inputs(): return [1]\n"


@pytest.mark.parametrize("body, says", [
    ("def step(model, x, t, noise): return x\n", "a stochastic loop needs both step(model, x, t, noise) and loop"),
    ("loop = {'timesteps': [1]}\n", "a stochastic loop needs both"),
    ("def step(model, x): return x\nloop = {'timesteps': [1]}\n", "step must be a function step(model, x, t, noise)"),
    ("shims = [print]\n", "shims must be a list of context managers"),
    ("arbiter = 3\n", "arbiter must be a function of the float64 PyTorch model"),
])
def test_a_bad_loop_shim_or_arbiter_entry_is_a_user_error(tmp_path, body: str, says: str) -> None:
    path = tmp_path / "spec.py"
    path.write_text(BASE + body)
    with pytest.raises(UserError, match=r"SPEC spec.py: " + re.escape(says)):
        load_spec(path)


def test_the_steps_own_options_are_bound_and_no_other_entry_needs_to_declare_them(tmp_path) -> None:
    path = tmp_path / "spec.py"
    path.write_text(BASE + "def step(model, x, t, noise, scale=1.0): return x * scale\nloop = {'timesteps': [1]}\n")
    spec = load_spec(path, {"scale": 2.0})
    assert spec.step(None, 3.0, 0, None) == 6.0 and spec.loop == {"timesteps": [1]}
