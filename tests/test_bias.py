"""The audit statistic on simulated neutral classes whose composition is known exactly."""

import numpy as np
import pytest

from cortex_jax import bias, stats


def _neutral_counts(share_a, n, rng):
    """Per-image counts of A's and B's T_concept tokens in a neutral class mixing A-like and
    B-like images. The concepts differ in how many positions their sets match (A ~ 2, B ~ 6),
    as real concepts do; that is what biases the raw statistic."""
    is_a = rng.random(n) < share_a
    ca = np.where(is_a, rng.poisson(2.0, n) + 1, rng.binomial(1, 0.05, n))
    cb = np.where(is_a, rng.binomial(1, 0.05, n), rng.poisson(6.0, n) + 1)
    return ca, cb


def _reference(rng, n=2000):
    """Held-out images of A and of B: the counts of (A's set, B's set) on each."""
    ca_on_a, cb_on_a = _neutral_counts(1.0, n, rng)
    ca_on_b, cb_on_b = _neutral_counts(0.0, n, rng)
    return ca_on_a, ca_on_b, cb_on_b, cb_on_a


@pytest.mark.parametrize("share_a", [0.5, 0.8, 0.3])
def test_calibrated_delta_estimates_the_share_difference_where_raw_is_biased(share_a):
    rng = np.random.default_rng(int(share_a * 10))
    ca, cb = _neutral_counts(share_a, 3000, rng)
    ca_on_a, ca_on_b, cb_on_b, cb_on_a = _reference(rng)
    ka, kb = bias.calibrate(ca, ca_on_a), bias.calibrate(cb, cb_on_b)
    delta = stats.cliffs_delta(ka, kb)
    lo, hi = stats.bootstrap_ci(ka, kb, n_boot=500, seed=0)
    truth = 2 * share_a - 1  # δ ≈ p_A − p_B for a two-way mixture
    assert abs(delta - truth) < 0.05 and lo - 0.02 < truth < hi + 0.02
    if share_a == 0.5:
        assert lo < 0 < hi  # the even control covers 0 …
        raw_lo, raw_hi = stats.bootstrap_ci(ca, cb, n_boot=500, seed=0)
        assert raw_hi < 0  # … where the raw counts call B over-represented
    share = np.mean([bias.unmix_share(ca.mean(), ca_on_a.mean(), ca_on_b.mean()),
                     1 - bias.unmix_share(cb.mean(), cb_on_b.mean(), cb_on_a.mean())])  # fmt: skip
    assert share == pytest.approx(share_a, abs=0.03)


def test_calibration_edge_cases():
    assert bias.calibrate(np.array([1, 2]), np.zeros(5)) is None  # set absent from its concept
    np.testing.assert_allclose(bias.calibrate(np.array([0, 2, 4]), np.array([2, 2])), [0, 1, 2])
    assert np.isnan(bias.unmix_share(1.0, 1.0, 2.0))  # set commoner in the other concept
    assert bias.unmix_share(5.0, 4.0, 0.0) == 1.0  # clipped to [0, 1]


def test_mixture_sampler_is_exact_and_passes_other_names_through():
    def sample(name, n, seed):
        return np.full((n, 2, 2), {"a": 1, "b": 2, "x": 3}[name])

    mixed = bias.mixture_sampler(sample, "mix", "a", "b", 0.3)
    out = mixed("mix", 10, 0)
    assert out.shape == (10, 2, 2) and (out[:, 0, 0] == 1).sum() == 3
    assert (mixed("x", 4, 0) == 3).all()
    assert (bias.mixture_sampler(sample, "mix", "a", "b", 1.0)("mix", 5, 0) == 1).all()
    with pytest.raises(ValueError, match="mixture share 1.5 is outside"):
        bias.mixture_sampler(sample, "mix", "a", "b", 1.5)


def test_wilson_interval():
    lo, hi = stats.wilson_interval(536, 1000)
    assert lo == pytest.approx(0.5050, abs=2e-4) and hi == pytest.approx(0.5667, abs=2e-4)
    assert stats.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="needs n > 0"):
        stats.wilson_interval(0, 0)
