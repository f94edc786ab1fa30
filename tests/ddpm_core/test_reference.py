"""The float64 specification (``ddpm_core.reference``) against everything it specifies: the PyTorch twin
run in float64 (to float64 rounding: any logic difference fails), both twins in float32, the tutorial's
own code, and the twins' DDPM/DDIM math; planted bugs in the specification prove the float64 gate fails
on an epsilon, a GELU variant or one table value. Run with ``-s`` to see the measured errors."""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_DIFFUSION, TUTORIAL_UNET, DiffusionConfig, UnetConfig
from ddpm_core.reference import ReferenceDiffusion, ReferenceUnet, layers
from ddpm_core.schedules import make_schedule
from ddpm_core.weights.naming import unet_parameters
from parity.engine.compare import compare
from parity.engine.tolerances import tolerance
from tests.conftest import get_twin, seeded_weights
from tests.host import TWINS, framework

GATE64 = tolerance("prediction", "float64")
PRED32 = tolerance("prediction", "float32")
MATH32 = tolerance("diffusion_math", "float32")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESNET = UnetConfig(dim=16, channels=3, dim_mults=(1, 2, 4), use_convnext=False, resnet_block_groups=8)
CASES = {  # name: (config, image size, timesteps of the batch)
    "tutorial": (TUTORIAL_UNET, 28, (0, 100, 199)),
    "resnet": (RESNET, 8, (3, 150)),
}


class Case:
    """One configuration's seeded weights and input, the reference's output and module records, and the
    PyTorch twin's float64 output and forward-hook records on the same input."""

    def __init__(self, name: str):
        self.cfg, size, t = CASES[name]
        self.weights = seeded_weights(self.cfg, 0)
        self.t = np.array(t, np.int32)
        self.x = np.random.default_rng(1).standard_normal((len(t), self.cfg.channels, size, size))  # float64
        self.net = ReferenceUnet(self.cfg, self.weights)
        self.records: list[tuple[str, np.ndarray]] = []
        self.out = self.net(self.x, self.t, record=lambda path, y: self.records.append((path, y)))
        self.torch_records, self.torch_out = torch_float64_run(self.cfg, self.weights, self.x, self.t)


def torch_float64_run(cfg, weights, x, t):
    """``(hook records, output)`` of the PyTorch twin after ``model.double()``: every module call's
    (name, output) in the order its forward hook fires."""
    torch = framework("torch")
    model = get_twin("torch").build_loaded(cfg, weights).double()
    names = {id(m): n for n, m in model.named_modules()}
    records = []
    for m in model.modules():
        m.register_forward_hook(lambda m, args, out: records.append((names[id(m)], out.detach().numpy().copy())))
    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    return records, out


@functools.lru_cache(maxsize=None)
def make_case(name: str) -> Case:
    return Case(name)


@pytest.fixture(params=sorted(CASES, reverse=True))
def case(request) -> Case:
    return make_case(request.param)


@pytest.fixture
def tutorial_case() -> Case:
    return make_case("tutorial")


def passes(name, got, ref, tol):
    c = compare(name, got, ref, tol)
    print(f"\n{c.describe()}", end="")
    return c.passed


# ---------------------------------------------------------------- the package itself

def test_import_pulls_in_no_framework():
    code = ("import sys, ddpm_core.reference; "
            "print(sorted(m for m in ('torch', 'mindspore') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("change, message", [
    (lambda w: w.pop("downs.0.0.ds_conv.weight"), "missing: downs.0.0.ds_conv.weight"),
    (lambda w: w.update({"downs.0.0.extra": np.zeros(3)}), "unexpected: downs.0.0.extra"),
    (lambda w: w.update({"mid_attn.fn.norm.bias": np.zeros(7)}), "shape mismatch: mid_attn.fn.norm.bias"),
], ids=["missing", "extra", "shape"])
def test_weights_are_checked_strictly(change, message):
    weights = dict(seeded_weights(TUTORIAL_UNET, 0))
    change(weights)
    with pytest.raises(ValueError, match=message):
        ReferenceUnet(TUTORIAL_UNET, weights)


def test_weights_are_float64_copies():
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    weights = {k: np.array(v) for k, v in seeded_weights(cfg, 0).items()}
    net = ReferenceUnet(cfg, weights)
    x, t = np.ones((1, 1, 4, 4), np.float32), np.array([5])
    before = net(x, t)
    weights["init_conv.weight"] += 1.0  # the caller's arrays are not the model's
    state = net.state()
    state["init_conv.weight"] += 1.0  # nor are the ones state() hands out
    np.testing.assert_array_equal(net(x, t), before)
    assert sorted(state) == sorted(s.torch_name for s in unet_parameters(cfg))
    assert all(v.dtype == np.float64 for v in net.state().values()) and before.dtype == np.float64
    assert net.config == cfg


@pytest.mark.parametrize("x_shape, t, message", [
    ((1, 3, 4, 4), [5], "channels"),
    ((1, 1, 5, 5), [5], "multiple of 2"),
    ((1, 1, 4, 4), [5.0], "integer"),
    ((1, 1, 4, 4), None, "pass timesteps"),
], ids=["channels", "size", "float-t", "no-t"])
def test_bad_inputs_raise(x_shape, t, message):
    cfg = UnetConfig(dim=8, channels=1, dim_mults=(1, 2))
    net = ReferenceUnet(cfg, seeded_weights(cfg, 0))
    with pytest.raises(ValueError, match=message):
        net(np.zeros(x_shape), None if t is None else np.array(t))


# ---------------------------------------------------------------- the U-Net against the twins and the tutorial

def test_records_follow_torch_forward_hook_order(case):
    """Same module paths, same order (children before their container, Identity and Sequential included)."""
    assert [p for p, _ in case.records] == [p for p, _ in case.torch_records]
    assert case.records[-1][0] == "" and len(case.records) > 200


def test_prediction_and_every_module_match_torch_float64(case):
    assert passes("prediction", case.torch_out, case.out, GATE64)
    modules = (compare(path, a, r, GATE64) for (path, a), (_, r) in zip(case.torch_records, case.records))
    failing = [c.describe() for c in modules if not c.passed]
    assert not failing, failing[:3]


@pytest.mark.parametrize("twin_name", TWINS)
def test_twins_in_float32_match(case, twin_name):
    twin = get_twin(twin_name)
    x32 = case.x.astype(np.float32)
    got = twin.forward(twin.build_loaded(case.cfg, case.weights), x32, case.t)
    assert passes(f"{twin_name} float32", got, case.net(x32, case.t), PRED32)


def test_tutorial_code_matches():
    """The tutorial's own MindSpore model (its rename loop included), norm gains moved off 1/0, its weights
    read through the name table into the reference."""
    ms = framework("mindspore")
    from parity import tutorial_code as tut
    model = tut.build_tutorial_unet()
    rng = np.random.default_rng(0)
    for p in model.get_parameters():
        if p.name.endswith((".gamma", ".beta", ".g")):
            p.set_data(ms.Tensor(p.asnumpy() + 0.1 * rng.standard_normal(p.shape).astype(np.float32)))
    params = {p.name: p.asnumpy() for p in model.get_parameters()}
    net = ReferenceUnet(TUTORIAL_UNET, {s.torch_name: params[s.ms_name] for s in unet_parameters(TUTORIAL_UNET)})
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    t = np.array([0, 57, 199], np.int32)
    assert passes("tutorial code", model(ms.Tensor(x), ms.Tensor(t)).asnumpy(), net(x, t), PRED32)


def exact_gelu(m, x):
    torch = framework("torch")
    return m.output(0.5 * x * (1.0 + torch.erf(torch.from_numpy(x) / np.sqrt(2.0)).numpy()))


@pytest.mark.parametrize("plant", ["group_norm_eps_x1.2", "layer_norm_eps_x1.2", "exact_gelu"])
def test_float64_gate_fails_on_a_planted_bug(tutorial_case, monkeypatch, plant):
    """The gate can fail: each bug, planted in the reference, is far outside float64 rounding (while the
    float32 comparisons could not see some of them)."""
    if plant == "group_norm_eps_x1.2":
        monkeypatch.setattr(layers, "GROUP_NORM_EPS", 1.2e-5)
    elif plant == "layer_norm_eps_x1.2":
        monkeypatch.setattr(layers, "LAYER_NORM_EPS", 1.2e-5)
    else:
        monkeypatch.setattr(layers, "gelu", exact_gelu)
    c = tutorial_case
    assert not passes(plant, c.torch_out, c.net(c.x, c.t), GATE64)


# ---------------------------------------------------------------- the DDPM math

SMALL_T = DiffusionConfig(timesteps=10, schedule="cosine")
LOOP_T = DiffusionConfig(timesteps=10)
"""The loops run the probes' loop schedule (parity/engine/probes.py): linear, so the states stay ~N(0, 1) and the
float32 entry's atol applies unscaled (a cosine schedule's first steps multiply the states by ~100)."""
SHAPE = (3, 2, 4, 4)


def normal(shape, seed, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


def toy(x, t):
    """eps = 0.9 x + 0.001 t, the numpy twin of ``Twin.toy_model`` (the twins' own toy models below)."""
    return 0.9 * x + 0.001 * np.asarray(t, np.float64).reshape(-1, 1, 1, 1)


def test_tables_are_the_twins_float32_tables_upcast(twin):
    for cfg in (TUTORIAL_DIFFUSION, SMALL_T):
        ref, d = ReferenceDiffusion(cfg), twin.diffusion(cfg)
        for name, table in ref.tables.items():
            assert table.dtype == np.float64
            np.testing.assert_array_equal(table, twin.to_numpy(getattr(d, name)).astype(np.float64), err_msg=name)
        assert sorted(ref.tables) == sorted(make_schedule(cfg).tables())


def torch_diffusion_float64(cfg):
    """The PyTorch twin's diffusion run in float64: its tables (float32 values) as float64 tensors, as
    ``model.double()`` does to a module's buffers. Left float32, ``sqrt(posterior_variance_t)`` would be
    taken in float32 (measured: the step then differs from the specification by ~1e-8 relative)."""
    d = get_twin("torch").diffusion(cfg)
    for name in make_schedule(cfg).tables():
        setattr(d, name, getattr(d, name).double())
    return d


@pytest.mark.parametrize("cfg", [DiffusionConfig(p2_loss_weight_gamma=1.0), SMALL_T], ids=["linear-p2", "cosine10"])
def test_step_math_matches_torch_float64(cfg):
    """q_sample, the three losses (p2 weights on) and one ancestral step of the PyTorch twin in float64:
    float64 rounding apart."""
    ref, d = ReferenceDiffusion(cfg), torch_diffusion_float64(cfg)
    torch, toy_t = framework("torch"), get_twin("torch").toy_model()
    T = cfg.timesteps
    x0, noise = normal(SHAPE, 1), normal(SHAPE, 2, scale=3.0)  # |noise - eps| spans both huber branches
    t = np.array([0, T // 2, T - 1], np.int32)  # row 0 at t = 0: the mean alone
    assert passes("q_sample", d.q_sample(x0, t, noise).numpy(), ref.q_sample(x0, t, noise), GATE64)
    for loss_type in ("huber", "l1", "l2"):
        got = d.p_losses(toy_t, x0, t, noise, loss_type).numpy()
        assert passes(f"loss {loss_type}", got, ref.p_losses(toy, x0, t, noise, loss_type), GATE64)
    step = ref.p_step(toy, x0, t, noise)
    got = d.p_step(toy_t, torch.from_numpy(x0), torch.from_numpy(t), torch.from_numpy(noise)).numpy()
    assert passes("p_step", got, step, GATE64)
    np.testing.assert_array_equal(step[0], ref.p_mean(toy, x0, t)[0])  # posterior_variance[0] is exactly 0


@pytest.mark.parametrize("table, factor", [("posterior_variance", 1 + 1e-9), ("sqrt_recip_alphas", 1 + 1e-9)])
def test_float64_gate_fails_on_a_planted_table_error(table, factor):
    """One table entry off by 1e-9 relative (100x below float32 resolution) fails the float64 gate."""
    ref, d = ReferenceDiffusion(TUTORIAL_DIFFUSION), torch_diffusion_float64(TUTORIAL_DIFFUSION)
    ref.tables[table][120] *= factor
    x, noise, t = normal(SHAPE, 3), normal(SHAPE, 4), np.array([5, 120, 199], np.int32)
    torch = framework("torch")
    got = d.p_step(get_twin("torch").toy_model(), torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(noise))
    assert not passes(f"{table}[120] x {factor}", got.numpy(), ref.p_step(toy, x, t, noise), GATE64)


def test_loops_match_both_twins_float32(twin):
    """Ancestral loop and DDIM (eta 0 and 0.5), each twin in float32 on the same start and noise rows."""
    ref, d, cfg = ReferenceDiffusion(LOOP_T), twin.diffusion(LOOP_T), LOOP_T
    x_T, noise = normal(SHAPE, 5).astype(np.float32), normal((cfg.timesteps, *SHAPE), 6).astype(np.float32)
    got = np.stack(d.p_sample_loop(twin.toy_model(), SHAPE, img=x_T, noise=noise))
    expected = ref.p_sample_loop(toy, x_T, noise)
    assert expected.shape == (cfg.timesteps, *SHAPE)
    assert passes(f"{twin.name} ddpm loop", got, expected, MATH32)
    for eta in (0.0, 0.5):
        got = np.stack(d.ddim_sample_loop(twin.toy_model(), SHAPE, 4, eta, img=x_T, noise=noise[:4]))
        assert passes(f"{twin.name} ddim eta={eta}", got, ref.ddim_sample_loop(toy, x_T, 4, eta, noise[:4]), MATH32)


def test_ddpm_loop_uses_row_k_at_step_k_and_not_the_last_row():
    ref = ReferenceDiffusion(LOOP_T)
    x_T, noise = normal(SHAPE, 5), normal((10, *SHAPE), 6)
    base = ref.p_sample_loop(toy, x_T, noise)
    changed = noise.copy()
    changed[-1] = 100.0  # the last step (t = 0) returns the mean alone
    np.testing.assert_array_equal(ref.p_sample_loop(toy, x_T, changed), base)
    changed[3, 1] += 1.0
    other = ref.p_sample_loop(toy, x_T, changed)
    np.testing.assert_array_equal(other[:3], base[:3])
    np.testing.assert_array_equal(other[:, 0], base[:, 0])  # the other samples are untouched
    assert np.all(np.abs(other[3:, 1] - base[3:, 1]).max(axis=(1, 2, 3)) > 1e-3)
