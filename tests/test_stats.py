"""Cliff's δ against the O(N²) definition, ties included; CI coverage; Mann–Whitney."""

import numpy as np
import pytest

from cortex_jax.method import stats


def _direct(x, y):
    return sum(np.sign(a - b) for a in x for b in y) / (len(x) * len(y))


@pytest.mark.parametrize("seed", range(5))
def test_cliffs_delta_matches_double_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 6, 57), rng.integers(1, 7, 43)  # many ties
    assert stats.cliffs_delta(x, y) == pytest.approx(_direct(x, y), abs=1e-12)
    halved = (
        sum(a > b for a in x for b in y)
        + 0.5 * sum(a == b for a in x for b in y)
        - len(x) * len(y) / 2
    ) / (len(x) * len(y))
    assert stats.cliffs_delta_halved(x, y) == pytest.approx(halved, abs=1e-12)


def test_extremes_and_labels():
    assert stats.cliffs_delta([5, 6], [1, 2, 3]) == 1.0
    assert stats.cliffs_delta([1], [1]) == 0.0
    assert [stats.magnitude(d) for d in (0.1, -0.2, 0.4, 0.9)] == [
        "negligible",
        "small",
        "medium",
        "large",
    ]
    with pytest.raises(ValueError, match="non-empty"):
        stats.cliffs_delta([], [1])


def test_delta_is_vectorised_over_leading_axes():
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 5, (3, 20)), rng.integers(0, 5, (3, 20))
    np.testing.assert_allclose(
        stats.cliffs_delta(x, y), [_direct(a, b) for a, b in zip(x, y, strict=True)], atol=1e-12
    )


def test_delta_from_ranks_matches_mann_whitney_u():
    from scipy.stats import mannwhitneyu

    x, y = np.random.default_rng(1).integers(0, 4, (2, 30))  # heavy ties
    u = mannwhitneyu(x, y).statistic  # U of x = #[x > y] + ½#[x = y]
    assert stats.cliffs_delta(x, y) == pytest.approx(2 * u / 900 - 1)


def test_paired_inputs_are_checked():
    with pytest.raises(ValueError, match=r"one length ≥ 2 \(got \(3,\) and \(4,\)\)"):
        stats.paired_delta_ci([1, 2, 3], [1, 2, 3, 4])
    assert stats.paired_delta_test([1, 2, 3], [1, 2, 3]) == 1.0


def test_mixture_share_recovers_a_known_share_and_needs_contrast():
    rng = np.random.default_rng(2)
    neutral = np.where(rng.random(4000) < 0.3, rng.normal(2, 1, 4000), rng.normal(0, 1, 4000))
    est = stats.mixture_share(neutral, rng.normal(2, 1, 1500), rng.normal(0, 1, 1500), 999)
    assert est["share"] == pytest.approx(0.3, abs=0.03) and est["ci"][0] < 0.3 < est["ci"][1]
    assert est["contrast"] == pytest.approx(2.0, abs=0.1)
    flat = stats.mixture_share(neutral, rng.normal(0, 1, 50), rng.normal(1, 1, 50), 99)
    assert np.isnan(flat["share"]) and flat["contrast"] < 0
    with pytest.raises(ValueError, match=r"ref_b has shape \(1,\)"):
        stats.mixture_share(neutral, neutral, [1.0])
