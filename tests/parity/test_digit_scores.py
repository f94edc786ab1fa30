"""The scores of ``python -m parity.quality``: the KID estimator against its definition written as loops,
and the classifier-based set scores on hand-made probabilities."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from parity.digit_scores import kid, set_scores


def kid_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 under k(a, b) = (a . b / d + 1)^3, term by term (Binkowski et al. 2018, eq. 4)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(9, 5))
    assert kid(x, y) == pytest.approx(kid_by_definition(x, y), rel=1e-12)
    assert kid(x, y) == pytest.approx(kid(y, x), rel=1e-12)


def test_kid_separates_a_shift_from_resampling():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, shifted = kid(a, b), kid(a, b + 0.25)
    assert abs(same) < 0.01 < shifted


def test_kid_refuses_mismatched_sets():
    with pytest.raises(ValueError):
        kid(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError):
        kid(np.zeros((4, 3)), np.zeros((4, 2)))


def test_set_scores():
    p = np.full((10, 10), 0.01)
    p[np.arange(10), [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]] = 0.91  # 8 zeros, a one and a two, all confident
    p[9] = 0.1  # ... except the last: uniform, read as class 0
    s = set_scores(p)
    assert s.n == 10 and s.classes_covered == 2 and s.confident_share == pytest.approx(0.9)
    assert s.largest_class_share == pytest.approx(0.9) and s.smallest_class_share == 0
    assert s.confidence == pytest.approx((9 * 0.91 + 0.1) / 10)
