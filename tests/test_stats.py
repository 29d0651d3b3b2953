"""bench/report/stats.py's Mann-Whitney U p-values against SciPy's (a test-only reference).

The suite computes the test itself (no SciPy at run time): the exact null distribution for small
untied samples, the normal approximation with tie and continuity corrections otherwise. SciPy's
`mannwhitneyu` with the matching `method` is the reference for both.
"""

from __future__ import annotations

import random

import pytest
from scipy.stats import mannwhitneyu

from bench.report.stats import mann_whitney_u_pvalue


def reference(x, y, method):
    return mannwhitneyu(x, y, alternative="two-sided", method=method, use_continuity=True).pvalue


@pytest.mark.parametrize("m, n, shift", [(1, 1, 0.0), (3, 4, 0.0), (5, 5, 1.0), (10, 12, 0.3), (7, 30, -0.5),
                                         (40, 50, 0.2)])
def test_exact_distribution_matches_scipy(m, n, shift):
    rng = random.Random(m * 100 + n)
    x = [rng.gauss(shift, 1) for _ in range(m)]
    y = [rng.gauss(0, 1) for _ in range(n)]
    assert mann_whitney_u_pvalue(x, y) == pytest.approx(reference(x, y, "exact"), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ties_use_the_corrected_normal_approximation(seed):
    rng = random.Random(seed)
    x = [round(rng.gauss(0.3, 1), 1) for _ in range(15)]  # rounding makes ties
    y = [round(rng.gauss(0, 1), 1) for _ in range(18)]
    assert len(set(x + y)) < len(x + y)
    assert mann_whitney_u_pvalue(x, y) == pytest.approx(reference(x, y, "asymptotic"), rel=1e-9)


def test_large_samples_use_the_normal_approximation():
    rng = random.Random(7)
    x = [rng.random() for _ in range(60)]
    y = [rng.random() + 0.1 for _ in range(60)]  # m * n > 2500: no exact table
    assert mann_whitney_u_pvalue(x, y) == pytest.approx(reference(x, y, "asymptotic"), rel=1e-9)


def test_textbook_values():
    # completely separated samples of 5 and 5: the smallest exact two-sided p, 2 / C(10, 5)
    assert mann_whitney_u_pvalue([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_u_pvalue([1.0, 1.0], [1.0, 1.0]) == 1.0  # no variance at all: no evidence
    with pytest.raises(ValueError):
        mann_whitney_u_pvalue([], [1.0])
