"""Cliff's δ against the O(N²) definition, ties included; CI coverage; Mann–Whitney."""

import numpy as np
import pytest

from cortex_jax import stats


def _direct(x, y):
    return sum(np.sign(a - b) for a in x for b in y) / (len(x) * len(y))


@pytest.mark.parametrize("seed", range(5))
def test_cliffs_delta_matches_double_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 6, 57), rng.integers(1, 7, 43)  # many ties
    assert stats.cliffs_delta(x, y) == pytest.approx(_direct(x, y), abs=1e-12)
    halved = (sum(a > b for a in x for b in y) + 0.5 * sum(a == b for a in x for b in y)
              - len(x) * len(y) / 2) / (len(x) * len(y))  # fmt: skip
    assert stats.cliffs_delta_halved(x, y) == pytest.approx(halved, abs=1e-12)


def test_extremes_and_labels():
    assert stats.cliffs_delta([5, 6], [1, 2, 3]) == 1.0
    assert stats.cliffs_delta([1], [1]) == 0.0
    assert [stats.magnitude(d) for d in (0.1, -0.2, 0.4, 0.9)] == [
        "negligible", "small", "medium", "large"]  # fmt: skip
    with pytest.raises(ValueError, match="non-empty"):
        stats.cliffs_delta([], [1])


def test_bootstrap_ci_covers_truth_in_simulation():
    # Two normals shifted by 0.5: true δ = 2Φ(0.5/√2) − 1 ≈ 0.276.
    from math import erf, sqrt

    truth = 2 * (0.5 * (1 + erf(0.5 / sqrt(2) / sqrt(2)))) - 1
    rng = np.random.default_rng(0)
    covered = 0
    for i in range(40):
        x, y = rng.normal(0.5, 1, 80), rng.normal(0, 1, 80)
        lo, hi = stats.bootstrap_ci(x, y, n_boot=300, seed=i)
        covered += lo <= truth <= hi
    assert covered >= 33  # nominal 95 % of 40 = 38; allow sampling slack


def test_mann_whitney_against_known_values():
    u, p = stats.mann_whitney_u([1, 2, 3, 4, 5], [6, 7, 8, 9, 10])
    # Reference values: scipy.stats.mannwhitneyu(x, y, use_continuity=False, method="asymptotic")
    assert u == 0.0 and p == pytest.approx(0.0090234388, rel=1e-6)
    x, y = np.random.default_rng(1).integers(0, 4, (2, 30))  # heavy ties
    u, p = stats.mann_whitney_u(x, y)
    assert u == 514.5 and p == pytest.approx(0.3215516551, rel=1e-6)
    assert stats.cliffs_delta(x, y) == pytest.approx(2 * u / 900 - 1)
