"""ddpm_core.schedules: beta schedules and derived tables against closed forms, the tutorial's
float32 tables, and the DDIM plan's identities."""
import numpy as np
import pytest

from ddpm_core.config import TUTORIAL_DIFFUSION, DiffusionConfig
from ddpm_core.schedules import (
    beta_schedule,
    cosine_beta_schedule,
    ddim_plan,
    ddim_timesteps,
    derive_tables,
    linear_beta_schedule,
    make_schedule,
    quadratic_beta_schedule,
    sigmoid_beta_schedule,
)
from tests.host import available, needs

if available("mindspore"):
    from parity import tutorial_code as tut


def ulp_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Largest distance in float32 units in the last place (same-sign positive values)."""
    a = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    b = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
    return int(np.abs(a - b).max())


def test_linear_schedule_closed_form():
    b = linear_beta_schedule(200)
    assert b.dtype == np.float64 and b.shape == (200,)
    assert b[0] == 1e-4 and b[-1] == 0.02
    np.testing.assert_allclose(np.diff(b), (0.02 - 1e-4) / 199, rtol=1e-9)


def test_quadratic_and_sigmoid_endpoints():
    q = quadratic_beta_schedule(50, 1e-4, 0.02)
    assert q[0] == pytest.approx(1e-4, rel=1e-12) and q[-1] == pytest.approx(0.02, rel=1e-12)
    np.testing.assert_allclose(np.diff(np.sqrt(q)), (0.02**0.5 - 1e-4**0.5) / 49, rtol=1e-9)
    s = sigmoid_beta_schedule(50, 1e-4, 0.02)
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    assert s[0] == pytest.approx(sig(-6.0) * (0.02 - 1e-4) + 1e-4, rel=1e-12)
    assert s[-1] == pytest.approx(sig(6.0) * (0.02 - 1e-4) + 1e-4, rel=1e-12)


def test_cosine_schedule_reproduces_alpha_bar():
    T, s = 100, 0.008
    b = cosine_beta_schedule(T)
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    abar = np.cumprod(1 - b)
    # away from the clipped end, prod(1 - beta) = f(t) / f(0)
    np.testing.assert_allclose(abar[:90], f(np.arange(1, 91)) / f(0), rtol=1e-10)
    assert b.max() <= 0.9999 and b.min() >= 1e-4


@pytest.mark.parametrize("schedule", ["linear", "cosine", "quadratic", "sigmoid"])
def test_every_schedule_monotone_in_unit_interval(schedule):
    cfg = DiffusionConfig(timesteps=100, schedule=schedule)
    b = beta_schedule(cfg)
    assert b.shape == (100,)
    assert np.all((b > 0) & (b < 1))
    assert np.all(np.diff(b) >= 0), "betas must not decrease"
    s = make_schedule(cfg)
    assert np.all(np.diff(s.alphas_cumprod) < 0), "alpha_bar must strictly decrease"
    assert np.all((s.alphas_cumprod > 0) & (s.alphas_cumprod < 1))
    assert all(v.dtype == np.float32 and v.shape == (100,) for v in s.tables().values())


def test_derived_tables_closed_form():
    betas = linear_beta_schedule(200)
    t = derive_tables(betas, p2_gamma=0.5, p2_k=1.0)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    np.testing.assert_array_equal(t["alphas_cumprod"], abar)
    np.testing.assert_array_equal(t["alphas_cumprod_prev"], np.r_[1.0, abar[:-1]])
    np.testing.assert_allclose(t["sqrt_recip_alphas"], 1 / np.sqrt(alphas), rtol=1e-15)
    np.testing.assert_allclose(t["sqrt_alphas_cumprod"] ** 2 + t["sqrt_one_minus_alphas_cumprod"] ** 2, 1.0, rtol=1e-14)
    assert t["posterior_variance"][0] == 0.0
    # posterior variance beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t), and beta~_t < beta_t for t > 0
    np.testing.assert_allclose(t["posterior_variance"][1:], betas[1:] * (1 - abar[:-1]) / (1 - abar[1:]), rtol=1e-14)
    assert np.all(t["posterior_variance"][1:] < betas[1:])
    np.testing.assert_allclose(t["p2_loss_weight"], (1 + abar / (1 - abar)) ** -0.5, rtol=1e-14)


def test_p2_weight_is_one_for_gamma_zero():
    assert np.all(make_schedule(TUTORIAL_DIFFUSION).p2_loss_weight == 1.0)


def test_make_schedule_is_float64_cast_once():
    s = make_schedule(TUTORIAL_DIFFUSION)
    ref = derive_tables(linear_beta_schedule(200))
    assert s.timesteps == 200
    for name, table in s.tables().items():
        assert table.dtype == np.float32, name
        np.testing.assert_array_equal(table, ref[name].astype(np.float32), err_msg=name)


# Tutorial float32 tables; measured maximum difference from ours (float64 then cast), as float32 ulps
# and absolute. Where the tutorial computes 1 - alpha_bar in float32 near t = 0 it cancels, so the
# ulp distance is large on those two tables although the absolute difference stays below 1e-6.
TUTORIAL_TABLES = {
    # name: (tutorial array, max ulps, max abs)
    "betas": (lambda: tut.betas, 0, 0.0),
    "alphas": (lambda: tut.alphas, 0, 0.0),
    "alphas_cumprod": (lambda: tut.alphas_cumprod, 8, 2e-7),
    "alphas_cumprod_prev": (lambda: tut.alphas_cumprod_prev, 8, 2e-7),
    "sqrt_recip_alphas": (lambda: tut.sqrt_recip_alphas.asnumpy(), 2, 2e-7),
    "sqrt_alphas_cumprod": (lambda: tut.sqrt_alphas_cumprod.asnumpy(), 4, 2e-7),
    "sqrt_one_minus_alphas_cumprod": (lambda: tut.sqrt_one_minus_alphas_cumprod.asnumpy(), 1000, 1e-6),
    "posterior_variance": (lambda: tut.posterior_variance, 1500, 2e-8),
    "p2_loss_weight": (lambda: tut.p2_loss_weight.asnumpy(), 0, 0.0),
}


@needs("mindspore")  # the tutorial's tables
@pytest.mark.parametrize("name", sorted(TUTORIAL_TABLES))
def test_tables_agree_with_tutorial_float32(name):
    get, max_ulps, max_abs = TUTORIAL_TABLES[name]
    ref = np.asarray(get())
    ours = getattr(make_schedule(TUTORIAL_DIFFUSION), name)
    assert ref.dtype == np.float32 and ours.dtype == np.float32
    ulps = ulp_distance(ours, ref)
    abs_diff = float(np.abs(ours.astype(np.float64) - ref).max())
    assert ulps <= max_ulps and abs_diff <= max_abs, f"{name}: {ulps} ulps, {abs_diff:.3g} abs"


@needs("mindspore")  # the tutorial's tables
def test_ours_is_the_correctly_rounded_float64_table_where_tutorial_cancels():
    """The tutorial's float32 1 - alpha_bar is the less accurate of the two tables."""
    exact = np.sqrt(1 - np.cumprod(1 - linear_beta_schedule(200)))
    ours = make_schedule(TUTORIAL_DIFFUSION).sqrt_one_minus_alphas_cumprod
    tutorial = tut.sqrt_one_minus_alphas_cumprod.asnumpy()
    assert ulp_distance(ours, exact) <= 1
    assert ulp_distance(tutorial, exact) > 100


def test_ddim_timesteps():
    seq = ddim_timesteps(200, 10)
    assert seq[0] == 199 and seq[-1] == 0 and len(set(seq.tolist())) == 10
    assert np.all(np.diff(seq) < 0)
    np.testing.assert_array_equal(ddim_timesteps(5, 5), [4, 3, 2, 1, 0])
    for bad in (0, 201, 2.0, True):
        with pytest.raises(ValueError, match="DDIM steps"):
            ddim_timesteps(200, bad)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_plan_identities(eta):
    plan = ddim_plan(TUTORIAL_DIFFUSION, 20, eta)
    abar = derive_tables(linear_beta_schedule(200))["alphas_cumprod"]
    assert plan.steps == 20 and plan.t_prev[-1] == -1
    np.testing.assert_array_equal(plan.t_prev[:-1], plan.t[1:])
    np.testing.assert_allclose(plan.sqrt_alphas_cumprod, np.sqrt(abar[plan.t]), rtol=1e-6)
    a_prev = plan.sqrt_alphas_cumprod_prev.astype(np.float64) ** 2
    assert a_prev[-1] == 1.0
    # x_prev's total variance is kept: a_prev + dir^2 + sigma^2 = 1
    np.testing.assert_allclose(a_prev + plan.dir_coef.astype(np.float64) ** 2 + plan.sigma.astype(np.float64) ** 2,
                               1.0, atol=1e-6)
    if eta == 0.0:
        assert np.all(plan.sigma == 0)
    else:
        assert np.all(plan.sigma[:-1] > 0) and plan.sigma[-1] == 0
    # eta = 1 is the DDPM posterior std on consecutive steps
    if eta == 1.0:
        full = ddim_plan(TUTORIAL_DIFFUSION, 200, 1.0)
        np.testing.assert_allclose(full.sigma[:-1] ** 2, make_schedule(TUTORIAL_DIFFUSION).posterior_variance[::-1][:-1],
                                   rtol=1e-4)


def test_ddim_plan_rejects_negative_eta():
    with pytest.raises(ValueError, match="eta must be >= 0"):
        ddim_plan(TUTORIAL_DIFFUSION, 10, -0.1)
