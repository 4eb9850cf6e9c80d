"""Faithfulness curves, sanity checks and ground-truth scores against closed forms."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.method import attribution, stats
from cortex_jax.method import faithfulness as fa

M = 4
OBJ = np.zeros((M, M), bool)
OBJ[1:3, 1:3] = True  # 4 object positions of 16


def _count_model():
    """score(removed) = number of kept object positions: the object 'evidence'."""

    def score(removed):
        return (OBJ[None] & ~removed).reshape(len(removed), -1).sum(1).astype(float)

    return score


def test_step_counts_cover_both_ends():
    assert fa.step_counts(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert fa.step_counts(16, 100).tolist() == list(range(17))
    with pytest.raises(ValueError):
        fa.step_counts(16, 0)


def test_deletion_and_insertion_curves_match_closed_form():
    score = _count_model()
    perfect = fa.order_positions(OBJ[None].astype(float) + np.linspace(0, 0.1, 16).reshape(1, M, M))
    worst = fa.order_positions(-OBJ[None].astype(float))
    counts = fa.step_counts(16, 16)
    d = fa.curve(score, perfect, counts, "deletion")[0]
    i = fa.curve(score, perfect, counts, "insertion")[0]
    k = counts
    assert d.tolist() == np.maximum(4 - k, 0).tolist()
    assert i.tolist() == np.minimum(k, 4).tolist()
    # AUC over the fraction: deletion a triangle 4·(4/16)/2 = 0.5; insertion 4 − 0.5 = 3.5
    assert fa.auc(counts, d[None])[0] == pytest.approx(0.5)
    assert fa.auc(counts, i[None])[0] == pytest.approx(3.5)
    dw = fa.curve(score, worst, counts, "deletion")[0]
    assert dw.tolist() == np.minimum(4, 16 - k).tolist()
    assert fa.auc(counts, dw[None])[0] == pytest.approx(3.5)


def test_random_order_deletion_auc_is_half_the_evidence_in_expectation():
    score = _count_model()
    rng = np.random.default_rng(0)
    order = fa.order_positions(rng.random((400, M, M)))
    counts = fa.step_counts(16, 16)
    a = fa.auc(counts, fa.curve(score, order, counts, "deletion"))
    # E[kept object after k random removals] = 4·(1 − k/16): the trapezoid of a line = 2
    r = stats.mean_ci(a, n_boot=500)
    assert r["ci"][0] < 2.0 < r["ci"][1]


def test_replace_tokens_and_removed_mask():
    tokens = np.arange(16).reshape(1, M, M)
    order = np.arange(16)[None]
    rem = fa.removed_mask(order, 3, "deletion", M)
    assert rem.reshape(-1)[:3].all() and not rem.reshape(-1)[3:].any()
    assert (fa.removed_mask(order, 3, "insertion", M) == ~rem).all()
    out = fa.replace_tokens(tokens, 99, rem)
    assert out.reshape(-1)[:4].tolist() == [99, 99, 99, 3]


def test_mean_ci_covers_the_mean_and_degenerates_cleanly():
    r = stats.mean_ci(np.random.default_rng(1).normal(1.0, 1.0, 200), n_boot=500)
    assert r["ci"][0] < 1.0 < r["ci"][1]
    assert stats.mean_ci([2.0, 2.0]) == {"value": 2.0, "ci": [2.0, 2.0]}
    assert np.isnan(stats.mean_ci([np.nan])["value"])


def test_spearman_and_overlap():
    a = np.arange(16.0).reshape(1, M, M)
    assert fa.spearman_per_image(a, a)[0] == pytest.approx(1)
    assert fa.spearman_per_image(a, -a)[0] == pytest.approx(-1)
    # constant scores have no ranking: undefined, and a randomisation check then fails (a
    # method that returns zeros for a randomised model must not "pass" by agreeing with nothing)
    assert np.isnan(fa.spearman_per_image(a, np.zeros_like(a))[0])
    assert not fa.check_passes(np.array([0.0, 0.1, np.nan]))
    assert fa.check_passes(np.array([0.0, 0.1, -0.1, 0.05]))
    assert fa.top_overlap(a, a, 4)[0] == 1
    assert fa.top_overlap(a, -a, 4)[0] == 0


def test_ground_truth_scores():
    s = np.where(OBJ, 1.0, -1.0)[None] + np.linspace(0, 0.01, 16).reshape(1, M, M)
    g = fa.ground_truth_scores(s, OBJ[None], 4)
    assert g["precision"][0] == 1 and g["pointing"][0] == 1 and g["mass"][0] == pytest.approx(1)
    g = fa.ground_truth_scores(-s, OBJ[None], 4)
    assert g["precision"][0] == 0 and g["pointing"][0] == 0 and g["mass"][0] == 0


# ---- sanity checks that can fail -------------------------------------------------------------

D, H, C = 6, 8, 3


def _mlp(params, e):
    z = jnp.tanh(e @ params["l0"]["kernel"]) @ params["l1"]["kernel"]  # (B, m, m, C)
    return (z * params["l1"]["pos"][None, :, :, None]).sum((1, 2))


def _params(seed):
    r = np.random.default_rng(seed)
    return {
        "l0": {"kernel": jnp.asarray(r.normal(0, 1, (D, H)), jnp.float32)},
        "l1": {
            "kernel": jnp.asarray(r.normal(0, 1, (H, C)), jnp.float32),
            "pos": jnp.asarray(r.normal(0, 1, (M, M)), jnp.float32),
        },
    }


def _magnitude(predict, x, y, keys, o):  # ignores the model entirely
    return jnp.abs(x), jnp.abs(x).max(axis=-1)


def _scores(method, params, e, y):
    predict = functools.partial(_mlp, params)
    return attribution.token_attribution(predict, e, y, jax.random.PRNGKey(0), method).positions


def test_cascading_randomization_stages():
    p = _params(0)
    stages = fa.cascading_randomization(p, seed=1)
    assert [n for n, _ in stages] == ["l1", "l0"]
    top, full = stages[0][1], stages[1][1]
    assert np.array_equal(top["l0"]["kernel"], p["l0"]["kernel"])
    assert not np.array_equal(top["l1"]["kernel"], p["l1"]["kernel"])
    assert not np.array_equal(full["l0"]["kernel"], p["l0"]["kernel"])
    with pytest.raises(ValueError, match="not in the parameters"):
        fa.cascading_randomization(p, layers=["nope"])


def test_randomization_checks_fail_for_a_method_that_ignores_the_model(monkeypatch):
    monkeypatch.setitem(attribution.METHODS, "magnitude", attribution.Method(_magnitude, {}, {}))
    e = jnp.asarray(np.random.default_rng(2).normal(0, 1, (24, M, M, D)), jnp.float32)
    y = np.zeros(24, np.int32)
    p = _params(0)
    full = fa.cascading_randomization(p, seed=1)[-1][1]
    other = _params(7)  # stands in for an IEM trained on permuted labels: unrelated weights
    for method in ("magnitude", "gradient"):
        base = _scores(method, p, e, y)
        for q in (full, other):
            rho = fa.agreement(base, _scores(method, q, e, y), 4)["spearman"]
            if method == "magnitude":
                assert rho.min() == pytest.approx(1) and not fa.check_passes(rho)
            else:
                assert fa.check_passes(rho), rho.mean()


def test_infill_tokens_is_the_priors_best_other_token():
    from cortex_jax.models import cin

    cfg = cin.GPTConfig(20, 16, 1, 2, 16, image_vocab_size=16, class_offset=16, n_classes=4)
    params = cin.init_params(cfg, jax.random.PRNGKey(0))
    toks = np.random.default_rng(0).integers(0, 16, (3, 16))
    cls = np.array([0, 1, 3])
    got = np.asarray(cin.infill_tokens(cfg, params, cls, toks))
    lg = np.array(cin.logits(cfg, params, cls, toks))[..., :16]
    np.put_along_axis(lg, toks[..., None], -np.inf, axis=-1)
    assert (got == lg.argmax(-1)).all() and (got != toks).all()


def test_forward_order_follows_the_forward_pass_not_the_key_order():
    p = _params(0)
    shuffled = {"l1": p["l1"], "l0": p["l0"], "unused": {"w": jnp.ones(3)}}
    e = jnp.ones((1, M, M, D))
    order = fa.forward_order(lambda q: _mlp(q, e), shuffled)
    assert order == ["l0", "l1", "unused"]
    jitted = jax.jit(_mlp)
    assert fa.forward_order(lambda q: jitted(q, e), shuffled) == ["l0", "l1", "unused"]


def test_frequency_scores_count_ids_within_each_label():
    t = np.array([[[1, 1], [2, 3]], [[1, 2], [2, 2]], [[5, 5], [5, 1]]])
    s = fa.frequency_scores(t, np.array([0, 0, 1]))
    assert s[0].tolist() == [[3, 3], [4, 1]] and s[1].tolist() == [[3, 4], [4, 4]]
    assert s[2].tolist() == [[3, 3], [3, 1]]


def test_token_replacement_curve_on_a_token_counting_model():
    """f(grid) = number of object token ids left; removal by a non-object baseline token."""
    tokens = np.where(OBJ, 7, 1)[None].repeat(2, 0)
    score = lambda rem: (fa.replace_tokens(tokens, 0, rem) == 7).reshape(2, -1).sum(1)
    order = fa.order_positions((tokens == 7).astype(float))
    counts = fa.step_counts(16, 16)
    d = fa.curve(score, order, counts, "deletion")
    assert (d == np.maximum(4 - counts, 0)[None]).all()
    assert fa.auc(counts, d) == pytest.approx([0.5, 0.5])
