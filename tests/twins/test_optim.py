"""The optimizers: MindSpore's nn.Adam rule (eps before bias correction), reproduced by
ddpm_torch.optim.MindSporeAdam, and the tutorial's learning-rate list."""
from __future__ import annotations

import numpy as np
import pytest

from parity.api import assert_close
from ddpm_core.schedules import cosine_decay_lr
from tests.host import available, needs

if available("mindspore"):
    import mindspore as ms
    from mindspore import nn as msnn
if available("torch"):
    import torch

    from ddpm_torch.optim import MindSporeAdam

GRADS = [np.array([0.5, -2.0, 1e-4], np.float32), np.array([0.25, 1.0, -3e-4], np.float32),
         np.array([-1.0, 0.5, 2e-4], np.float32)]
START = np.array([1.0, 2.0, -0.5], np.float32)


def tf_rule_oracle(lrs, eps, beta1=0.9, beta2=0.999):
    """MindSpore's documented Adam update in float64: eps added to the uncorrected sqrt(v)."""
    w, m, v = START.astype(np.float64), np.zeros(3), np.zeros(3)
    for k, g in enumerate(GRADS):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        lr_t = lrs[k] * np.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1))
        w = w - lr_t * m / (np.sqrt(v) + eps)
    return w


def run_torch(optimizer_cls, **kw):
    p = torch.nn.Parameter(torch.from_numpy(START.copy()))
    opt = optimizer_cls([p], **kw)
    for g in GRADS:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
    return p.detach().numpy().astype(np.float64)


def run_mindspore(lrs, eps):
    p = ms.Parameter(ms.Tensor(START.copy()), name="w")
    opt = msnn.Adam([p], learning_rate=list(lrs), beta1=0.9, beta2=0.999, eps=eps)
    for g in GRADS:
        opt((ms.Tensor(g.copy()),))
    return p.asnumpy().astype(np.float64)


@needs("torch", "mindspore")
@pytest.mark.parametrize("eps", [1e-8, 0.1])
def test_mindspore_adam_rule_matches_nn_adam_and_the_oracle(eps):
    lrs = [0.1, 0.05, 0.02]
    oracle = tf_rule_oracle(lrs, eps)
    ours = run_torch(MindSporeAdam, lr=lrs, betas=(0.9, 0.999), eps=eps)
    theirs = run_mindspore(lrs, eps)
    assert_close("nn.Adam vs the oracle", theirs, oracle, "optimizer_rule")
    assert_close("MindSporeAdam vs the oracle", ours, oracle, "optimizer_rule")
    assert_close("MindSporeAdam vs nn.Adam", ours, theirs, "optimizer_rule")


@needs("torch")
def test_torch_adam_is_a_different_rule():
    """With a visible eps, torch.optim.Adam (eps after bias correction) lands elsewhere."""
    lrs, eps = [0.1, 0.1, 0.1], 0.1
    torch_adam = run_torch(torch.optim.Adam, lr=0.1, betas=(0.9, 0.999), eps=eps)
    assert np.max(np.abs(torch_adam - tf_rule_oracle(lrs, eps))) > 1e-2


@needs("torch")
def test_learning_rate_list_is_stepped_per_global_step():
    """Step k uses lr[k]; a list of zeros after the first step freezes the weights."""
    frozen = run_torch(MindSporeAdam, lr=[0.1, 0.0, 0.0], eps=1e-8)
    one_step = START - 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9) * (0.1 * GRADS[0]) / (
        np.sqrt(0.001 * GRADS[0] ** 2) + 1e-8)
    assert_close("lr [0.1, 0, 0] vs one step", frozen, one_step, "optimizer_rule")


@needs("torch")
def test_state_dict_round_trip_continues_identically():
    p1 = torch.nn.Parameter(torch.from_numpy(START.copy()))
    opt1 = MindSporeAdam([p1], lr=[0.1, 0.05, 0.02])
    p1.grad = torch.from_numpy(GRADS[0].copy())
    opt1.step()
    p2 = torch.nn.Parameter(p1.detach().clone())
    opt2 = MindSporeAdam([p2], lr=[0.1, 0.05, 0.02])
    opt2.load_state_dict(opt1.state_dict())
    for g in GRADS[1:]:
        for p, opt in ((p1, opt1), (p2, opt2)):
            p.grad = torch.from_numpy(g.copy())
            opt.step()
    assert torch.equal(p1, p2) and opt2.global_step == 3


@needs("mindspore")
@pytest.mark.parametrize("args", [(1e-7, 1e-4, 10 * 3750, 3750, 10), (0.0, 1e-3, 25, 4, 3), (1e-5, 2e-4, 7, 7, 1)])
def test_cosine_decay_lr_equals_mindspore(args):
    assert cosine_decay_lr(*args) == msnn.cosine_decay_lr(*args)


@needs("torch")
@pytest.mark.parametrize("bad", [dict(lr=[]), dict(lr=-1.0), dict(lr=0.1, eps=0.0), dict(lr=0.1, betas=(1.0, 0.9))])
def test_bad_hyper_parameters_raise(bad):
    with pytest.raises(ValueError):
        MindSporeAdam([torch.nn.Parameter(torch.zeros(2))], **bad)


def _trained(dtype: torch.dtype, eps: float, foreach: bool, lr_as_tensor: bool = False):
    """Weights and moments after five steps of MindSporeAdam on three tensors of mixed shapes, gradients from 1e-9
    to 1 in scale, one tensor without a gradient at step 2 (skipped, as it must be)."""
    rng = np.random.default_rng(1)
    shapes = [(5, 3), (7,), (2, 2, 3, 3)]
    params = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s)).to(dtype)) for s in shapes]
    opt = MindSporeAdam(params, lr=[0.1, 0.05, 0.02, 0.01], eps=eps, foreach=foreach)
    for k in range(5):
        for i, p in enumerate(params):
            g = rng.standard_normal(p.shape) * 10.0 ** rng.integers(-9, 1)
            p.grad = None if (k, i) == (2, 1) else torch.from_numpy(g).to(dtype)
        if lr_as_tensor:  # the CUDA-graph step's way: the host's scalars, lr_t in a 0-d tensor
            for group, lr_t in zip(opt.param_groups, opt.advance()):
                opt.update(group, torch.tensor(lr_t, dtype=torch.float32))
        else:
            opt.step()
    moments = [opt.state[p][k] for p in params for k in ("m", "v")]
    return [p.detach().clone() for p in params] + moments


@needs("torch")
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])  # names: the same test ids where torch is missing
@pytest.mark.parametrize("eps", [1e-8, 0.1])
def test_foreach_update_is_bit_identical_to_one_parameter_at_a_time(dtype_name, eps):
    """``foreach=True`` (the CUDA default) and a 0-d tensor learning rate (the CUDA graph's) change no bit of the
    weights or moments: the same float32 operations in the same order."""
    dtype = getattr(torch, dtype_name)
    loop = _trained(dtype, eps, foreach=False)
    for kw in (dict(foreach=True), dict(foreach=True, lr_as_tensor=True), dict(foreach=False, lr_as_tensor=True)):
        other = _trained(dtype, eps, **kw)
        assert all(torch.equal(a, b) for a, b in zip(loop, other)), kw
    assert not torch.equal(loop[0], _trained(dtype, eps * 2, foreach=True)[0])  # the comparison can fail


@needs("torch")
def test_foreach_follows_the_oracle():
    lrs, eps = [0.1, 0.05, 0.02], 1e-8
    assert_close("MindSporeAdam foreach vs the oracle", run_torch(MindSporeAdam, lr=lrs, eps=eps, foreach=True),
                 tf_rule_oracle(lrs, eps), "optimizer_rule")
