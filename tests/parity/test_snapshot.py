"""Snapshots of MindSpore parameters are copies: ``Tensor.asnumpy()`` can share memory with a
Parameter, so a "before" snapshot taken that way changes when the optimizer steps, and an Adam check
would compare the new weights with themselves."""
import numpy as np

from tests.host import available
from tests.parity.conftest import SIZE, TINY, TINY_T

if available("mindspore"):
    from ddpm_ms.adapter import snapshot


def test_asnumpy_aliases_a_parameter_and_snapshot_does_not(fresh_pair):
    _, model_m = fresh_pair()
    p = model_m.init_conv.weight
    view, copy = p.asnumpy(), snapshot(p)
    assert not np.shares_memory(copy, p.asnumpy())
    before = copy.copy()
    p.copy_(p + 1.0)  # an in-place update, as an optimizer step does
    np.testing.assert_array_equal(copy, before)
    # documents the hazard this guards against (if MindSpore stops aliasing, the snapshot is still right)
    if np.shares_memory(view, p.asnumpy()):
        np.testing.assert_array_equal(view, before + 1.0)


def test_adam_states_and_initial_state_are_independent(sides, fresh_pair):
    """The side's state before, after step 1 and after step 2 are three different arrays: with an
    aliasing snapshot all three would be the final weights and every update would read as zero."""
    side_m = sides[1]
    _, model_m = fresh_pair()
    d = side_m.diffusion(TINY_T)
    rng = np.random.default_rng(0)
    batch = (rng.uniform(-1, 1, (2, 1, SIZE, SIZE)).astype(np.float32), np.array([1, 7], np.int32),
             rng.standard_normal((2, 1, SIZE, SIZE)).astype(np.float32))
    w0 = side_m.state(model_m)
    states = side_m.adam(model_m, d, [batch, batch], [1e-4, 1e-4], "huber")
    name = "downs.0.0.net.1.weight"
    d1, d2 = states[0][name] - w0[name], states[1][name] - w0[name]
    assert np.abs(d1).max() > 0 and np.abs(d2 - d1).max() > 0
    assert np.abs(d1).max() <= 1.01e-4  # Adam moves each weight by at most ~lr per step
    np.testing.assert_array_equal(side_m.state(model_m)[name], states[1][name])


def test_run_side_restores_the_weights_after_adam(sides, fresh_pair, run):
    model_t, model_m = fresh_pair(TINY, 1)
    before_t, before_m = sides[0].state(model_t), sides[1].state(model_m)
    report = run(model_t, model_m, checks=("adam",), seed=1)
    assert report.passed, report.text()
    for before, after in ((before_t, sides[0].state(model_t)), (before_m, sides[1].state(model_m))):
        for k in before:
            np.testing.assert_array_equal(before[k], after[k], err_msg=k)
