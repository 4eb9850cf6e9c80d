"""The audit statistics on simulated audits whose composition is known exactly.

The simulated concepts are built to break the easy statistics: each concept's token set also
occurs on the other concept's images (leak 0.5–0.7 of its own rate, as shared colour, background
or texture make it on real models), the two count distributions differ in shape (overdispersed,
zero-inflated, under-dispersed), and an image's two counts are negatively correlated (a position
holds one token).
"""

import numpy as np
import pytest
import scipy.stats

from cortex_jax.experiments import bias
from cortex_jax.method import audit, stats


def _counts(kind: str, is_a: np.ndarray, rng, setting: str) -> np.ndarray:
    """(n, 2) counts (c_A, c_B) for images whose concept is A where is_a."""
    n = len(is_a)
    size = rng.uniform(0.5, 1.5, n)  # object size: scales an image's own-concept tokens
    if setting == "leaky":
        own_a = 1 + rng.poisson(3.0 * size)
        own_b = rng.binomial(20, 0.4 * np.minimum(size, 1.2) / 1.2)  # under-dispersed
        leak_b_on_a, leak_a_on_b = rng.poisson(2.0, n), rng.poisson(2.0, n)
    elif setting == "heavy":
        own_a = rng.negative_binomial(2, 2 / (2 + 5.0 * size))  # overdispersed, mean 5·size
        own_b = np.where(rng.random(n) < 0.3, 0, rng.poisson(8.6 * size))  # zero-inflated
        leak_b_on_a, leak_a_on_b = rng.poisson(4.0, n), rng.poisson(3.5, n)
    else:
        raise ValueError(setting)
    positions = 64  # an 8×8 grid: the two counts compete for the same positions
    ca = np.where(is_a, own_a, leak_a_on_b)
    cb = np.where(is_a, leak_b_on_a, own_b)
    cb = np.minimum(cb, positions - np.minimum(ca, positions))
    return np.stack([np.minimum(ca, positions), cb], 1)


def _audit(share_a, rng, setting, n_neutral=600, n_ref=200):
    neutral = _counts("n", rng.random(n_neutral) < share_a, rng, setting)
    ref_a = _counts("a", np.ones(n_ref, bool), rng, setting)
    ref_b = _counts("b", np.zeros(n_ref, bool), rng, setting)
    return neutral, ref_a, ref_b


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["leaky", "heavy"])
@pytest.mark.parametrize("share_a", [0.5, 0.3, 0.85])
def test_verdict_interval_covers_the_true_share_at_its_nominal_rate(setting, share_a):
    rng = np.random.default_rng([int(share_a * 100), len(setting)])
    sims, covered, lean, raw_share = 300, 0, 0, []
    for i in range(sims):
        neutral, ref_a, ref_b = _audit(share_a, rng, setting)
        v = audit.audit_share(neutral, ref_a, ref_b, n_boot=999, seed=i)
        covered += v["ci"][0] <= share_a <= v["ci"][1]
        lean += v["lean"] != "none"
        raw_share.append(neutral[:, 0].mean() / neutral.sum(1).mean())
    # 95 % nominal; 300 audits give a binomial s.d. of 1.3 points.
    assert 0.92 <= covered / sims <= 0.985, covered / sims
    if share_a == 0.5:
        assert lean / sims <= 0.08  # an exactly even mixture is called biased ≤ 5 % + margin
    # The setting really breaks the naive token share (what the paper's counts suggest): its
    # bias is many Monte Carlo standard errors from 0.
    se = np.std(raw_share) / np.sqrt(sims)
    assert abs(np.mean(raw_share) - share_a) > 10 * se


def test_verdict_recovers_the_share_where_sets_leak_and_the_paper_statistic_does_not():
    rng = np.random.default_rng(7)
    neutral, ref_a, ref_b = _audit(0.5, rng, "heavy", n_neutral=4000, n_ref=2000)
    rep = audit.analyse(neutral, ref_a, ref_b, n_boot=999)
    assert rep["verdict"]["share_a"] == pytest.approx(0.5, abs=0.04)
    assert rep["verdict"]["lean"] == "none"
    assert rep["paper"]["ci"][1] < 0 or rep["paper"]["ci"][0] > 0  # δ calls even data biased
    assert rep["leak"]["a_tokens_on_b"] == pytest.approx(3.5 / 5.0, abs=0.1)
    assert rep["leak"]["b_tokens_on_a"] == pytest.approx(4.0 / 6.0, abs=0.1)
    assert rep["checks"]["sets_agree"] and rep["checks"]["contrast_z"] > 3
    for key in ("share_from_a_tokens", "share_from_b_tokens"):
        assert rep["checks"][key]["share_a"] == pytest.approx(0.5, abs=0.06)


def test_checks_flag_a_neutral_class_that_is_no_mixture_of_the_two():
    # Neutral images hold many A tokens *and* many B tokens: no mixture of A and B images does.
    rng = np.random.default_rng(3)
    _, ref_a, ref_b = _audit(0.5, rng, "leaky", n_ref=400)
    neutral = np.stack([1 + rng.poisson(3.0, 800), rng.binomial(20, 0.35, 800)], 1)
    rep = audit.analyse(neutral, ref_a, ref_b, n_boot=999)
    assert not rep["checks"]["sets_agree"]


def test_no_contrast_gives_no_share_and_no_lean():
    rng = np.random.default_rng(0)
    same = lambda: rng.poisson(3, (100, 2))
    ref_a = same()
    ref_b = ref_a + np.array([[2, 0]])  # A's tokens commoner on B's images: c_A − c_B is higher
    v = audit.audit_share(same(), ref_a, ref_b, n_boot=200)
    assert np.isnan(v["share_a"]) and v["lean"] == "none"
    with pytest.raises(ValueError, match=r"ref_b counts have shape \(3,\)"):
        audit.audit_share(same(), ref_a, np.zeros(3))


@pytest.mark.slow
def test_paired_delta_interval_covers_the_true_delta():
    # Negatively correlated pairs (a position holds one token); true δ from the marginals.
    rng = np.random.default_rng(11)

    def pairs(n):
        is_a = rng.random(n) < 0.5
        return _counts("n", is_a, rng, "leaky")

    big = pairs(400_000)
    truth = stats.cliffs_delta(big[:200_000, 0], big[200_000:, 1])  # independent draws
    sims, paired, independent = 200, 0, 0
    for i in range(sims):
        c = pairs(300)
        lo, hi = stats.paired_delta_ci(c[:, 0], c[:, 1], n_boot=999, seed=i)
        paired += lo <= truth <= hi
        res = scipy.stats.bootstrap(
            (c[:, 0], c[:, 1]),
            stats._delta,
            vectorized=True,
            n_resamples=999,
            method="percentile",
            rng=i,
        )
        independent += res.confidence_interval.low <= truth <= res.confidence_interval.high
    assert paired / sims >= 0.92, paired / sims
    assert independent < paired  # resampling the two vectors apart ignores the pairing


@pytest.mark.slow
def test_paired_permutation_test_holds_its_size_and_has_power():
    rng = np.random.default_rng(5)
    sims, rejected, detected = 200, 0, 0
    for i in range(sims):
        base = rng.poisson(4, 200)
        other = np.maximum(0, 8 - base + rng.integers(-2, 3, 200))  # correlated, exchangeable
        swap = rng.random(200) < 0.5
        x, y = np.where(swap, base, other), np.where(swap, other, base)
        rejected += stats.paired_delta_test(x, y, n_resamples=499, seed=i) < 0.05
        detected += stats.paired_delta_test(x + 2, y, n_resamples=499, seed=i) < 0.05
    assert rejected / sims <= 0.08 and detected / sims >= 0.9


def test_paper_statistic_fields():
    x, y = np.array([3, 4, 5, 6, 1]), np.array([1, 2, 2, 3, 1])
    p = audit.paper_statistic(x, y, n_boot=200, seed=0)
    assert p["cliffs_delta"] == pytest.approx(stats.cliffs_delta(x, y))
    assert p["cliffs_delta_halved"] == pytest.approx(p["cliffs_delta"] / 2)
    assert p["mean_a"] == 3.8 and p["mean_b"] == 1.8 and p["ci"][0] <= p["ci"][1]


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
