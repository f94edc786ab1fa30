"""parity.engine.compare against hand-computed cases: the element-wise rule, the aggregates, the smallest
passing tolerance, non-finite values and shapes."""
import math

import numpy as np
import pytest

from parity.engine.compare import Summary, compare, compare_many
from parity.engine.tolerances import Tolerance

LOOSE_AGG = dict(max_rel_l2=1.0, min_cosine=-1.0, reason="test")


def tol(atol, rtol, **kw):
    return Tolerance(atol, rtol, **{**LOOSE_AGG, **kw})


def test_elementwise_rule_uses_reference_magnitude():
    b = np.array([1.0, 100.0])
    # |a-b| = [0.019, 1.0]; allowed = 0.01 + 0.01*|b| = [0.02, 1.01]
    c = compare("x", np.array([1.019, 101.0]), b, tol(0.01, 0.01))
    assert c.elementwise_ok and c.passed
    assert c.max_abs == pytest.approx(1.0)
    assert c.max_rel == pytest.approx(0.019)
    assert not compare("x", np.array([1.021, 101.0]), b, tol(0.01, 0.01)).elementwise_ok
    # the rule is asymmetric: swapping a and b changes |b|
    c2 = compare("x", np.array([1.0, 100.0]), np.array([1.02, 98.9]), tol(0.01, 0.01))
    assert not c2.elementwise_ok  # 1.1 > 0.01 + 0.989


def test_smallest_passing_atol_and_rtol():
    a, b = np.array([1.5, 2.0, 0.0]), np.array([1.0, 2.2, 0.1])
    c = compare("x", a, b, tol(0.0, 0.1))
    # |a-b| - 0.1*|b| = [0.5-0.1, 0.2-0.22, 0.1-0.01] -> atol needed 0.4
    assert c.atol_needed == pytest.approx(0.4)
    assert c.worst_index == (0,)
    assert not c.elementwise_ok
    # at atol 0: rtol needed = max(|a-b|/|b|) = max(0.5, 0.0909, 1.0) = 1.0
    assert c.rtol_needed == pytest.approx(1.0)
    assert compare("x", a, b, tol(c.atol_needed + 1e-12, 0.1)).elementwise_ok


def test_rtol_needed_is_infinite_where_reference_is_zero():
    c = compare("x", np.array([1e-3]), np.array([0.0]), tol(0.0, 0.0))
    assert c.rtol_needed == math.inf and c.atol_needed == pytest.approx(1e-3)
    assert c.cosine is None  # a single number has no aggregate


def test_aggregates_relative_l2_and_cosine():
    b = np.array([3.0, 4.0])            # |b| = 5
    a = np.array([3.0, 4.5])            # |a - b| = 0.5
    c = compare("x", a, b, tol(1.0, 0.0, max_rel_l2=0.2, min_cosine=0.99))
    assert c.rel_l2 == pytest.approx(0.1)
    assert c.cosine == pytest.approx((9 + 18) / (5 * math.hypot(3, 4.5)))
    assert c.passed
    c = compare("x", a, b, tol(1.0, 0.0, max_rel_l2=0.05, min_cosine=0.99))
    assert c.elementwise_ok and not c.aggregate_ok and not c.passed


def test_small_elementwise_error_but_wrong_direction_fails_on_cosine():
    b = np.ones(1000) * 1e-3
    a = -b  # every element within atol 1e-2, but the opposite vector
    c = compare("x", a, b, Tolerance(1e-2, 0.0, 10.0, 0.999, "test"))
    assert c.elementwise_ok and c.cosine == pytest.approx(-1.0) and not c.passed


def test_identical_arrays_are_exact():
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    c = compare("x", x, x.copy(), Tolerance(0.0, 0.0, 0.0, 1.0, "exact"))
    assert c.passed and c.cosine == 1.0 and c.rel_l2 == 0.0 and c.max_abs == 0.0


def test_a_nonfinite_value_fails_naming_the_side_and_the_place():
    """NaN against NaN used to read max abs 0, cosine 1, pass: a run of NaN on both sides passed."""
    both = compare("predict/t=0", np.array([[np.nan, 1.0], [np.nan, 2.0]]), np.array([[np.nan, 1.0], [np.nan, 2.0]]),
                   tol(1.0, 1.0))
    assert not both.passed and both.nonfinite == ("PyTorch", "MindSpore")
    assert both.problem == ("PyTorch produced NaN at predict/t=0[0, 0] (and 1 more of 4); "
                            "MindSpore produced NaN at predict/t=0[0, 0] (and 1 more of 4)")
    assert math.isnan(both.max_abs) and math.isnan(both.cosine)  # no figure that reads as agreement
    one = compare("loss/l2", np.array(1.0), np.array(np.inf), tol(1.0, 1.0), ("PyTorch (golden file)", "MindSpore"))
    assert not one.passed and one.describe() == "MindSpore produced inf at loss/l2"
    assert not compare("x", np.array([np.inf]), np.array([-np.inf]), tol(1.0, 1.0)).passed


def test_nonfinite_values_a_tolerance_declares_must_sit_at_the_same_places():
    declared = Tolerance(0.0, 0.0, 1.0, -1.0, "test", nonfinite="test: a mask of -inf logits on both sides")
    same = compare("x", np.array([np.nan, -np.inf, 1.0]), np.array([np.nan, -np.inf, 1.0]), declared)
    assert same.passed and "non-finite at the same 2 place(s) in both, as declared" in same.note
    for b in (np.array([np.nan, np.inf, 1.0]), np.array([1.0, -np.inf, 1.0]), np.array([np.nan, -np.inf, np.nan])):
        c = compare("x", np.array([np.nan, -np.inf, 1.0]), b, declared)
        assert not c.passed and "non-finite values at different places" in c.problem


def test_shape_mismatch_is_a_failure_not_a_broadcast():
    c = compare("x", np.zeros((2, 1)), np.zeros((2,)), tol(1.0, 1.0))
    assert not c.passed and "shape" in c.problem


def test_describe_names_path_and_tolerance():
    c = compare("grad/downs.1.0.net.1.weight", np.array([0.0, 1.0]), np.array([0.0, 0.5]), tol(0.1, 0.1))
    text = c.describe()
    assert text.startswith("grad/downs.1.0.net.1.weight:") and "needs atol" in text and "[1]" in text


def test_summary_worst_and_first_failure():
    t = tol(0.1, 0.0)
    s = compare_many("g", [("a", np.array([0.0]), np.array([0.05])), ("b", np.array([0.0]), np.array([0.5])),
                           ("c", np.array([0.0]), np.array([0.2]))], t)
    assert isinstance(s, Summary) and not s.passed
    assert s.first_failure.name == "b"
    assert s.figure("max_abs") == pytest.approx(0.5)
    assert s.to_dict()["members"][0]["name"] == "a"
