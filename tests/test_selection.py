"""Codebook-level token selection: the estimator, the mask, a known optimum, batching."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.method import selection

M, K, D, C = 4, 12, 3, 2
CODEBOOK = np.random.default_rng(0).standard_normal((K, D)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((M * M * D, C)).astype(np.float32)


def linear(e, w):
    return e.reshape(e.shape[0], -1) @ w


predict = functools.partial(linear, w=jnp.asarray(W))


def test_straight_through_forward_one_hot_backward_soft():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, K))
    key = jax.random.PRNGKey(3)
    y = selection.straight_through_gumbel(logits, key, 0.7)
    assert set(np.unique(np.asarray(y))) == {0.0, 1.0} and (np.asarray(y).sum(-1) == 1).all()
    w = jax.random.normal(jax.random.PRNGKey(1), (5, K))
    g_st = jax.grad(lambda lg: jnp.sum(w * selection.straight_through_gumbel(lg, key, 0.7)))(logits)
    g = jax.random.gumbel(key, logits.shape)
    g_soft = jax.grad(lambda lg: jnp.sum(w * jax.nn.softmax((lg + g) / 0.7, -1)))(logits)
    np.testing.assert_allclose(g_st, g_soft, rtol=1e-5, atol=1e-7)


def _base(b):
    return np.random.default_rng(5).integers(0, K, (b, M, M))


def test_finds_the_known_best_tokens_and_keeps_the_rest():
    mask = selection.region_mask(M, "1:3,1:3")
    base = _base(2)
    cfg = selection.SelectionConfig(steps=300, learning_rate=0.1, log_every=50)
    res = selection.select_tokens(
        predict, CODEBOOK, base, mask, [1, 0], [0, 1], jax.random.PRNGKey(0), cfg
    )
    # For a linear IEM, logit_y = Σ_p E_p · w_{y,p}: the best token at p maximises C_k · w_{y,p}.
    wpos = W.reshape(M * M, D, C)
    for i, y in enumerate([1, 0]):
        want = np.argmax(CODEBOOK @ wpos[res.positions, :, y].T, axis=0)
        np.testing.assert_array_equal(res.tokens[i], want)
    edited = res.edited(base)
    np.testing.assert_array_equal(edited[:, ~mask], base[:, ~mask])  # unmasked never change
    assert res.trajectory_tokens.shape == (2, 6, 4) and res.f_target.shape == (2, 6)
    assert (res.f_target[:, -1] > res.start_f_target).all()


def test_step_flops_counts_one_step_for_the_whole_batch():
    mask = selection.region_mask(M, "1:3,1:3")
    cfg = selection.SelectionConfig(steps=5, log_every=5)
    one, two = (
        selection.step_flops(predict, CODEBOOK, _base(b), mask, 0, jax.random.PRNGKey(0), cfg)
        for b in (1, 2)
    )
    assert one > 0 and two == pytest.approx(2 * one, rel=0.05)  # per image, not per call
    with pytest.raises(ValueError, match="token ids"):
        selection.step_flops(predict, CODEBOOK, _base(1) + K, mask, 0, jax.random.PRNGKey(0))


def test_batch_equals_per_image_loop():
    mask = selection.region_mask(M, "0:2,0:4")
    base = _base(3)
    cfg = selection.SelectionConfig(steps=40, log_every=20)
    rng = jax.random.PRNGKey(7)
    batch = selection.select_tokens(predict, CODEBOOK, base, mask, [0, 1, 1], 0, rng, cfg)
    for i, y in enumerate([0, 1, 1]):
        one = selection.select_tokens(
            predict, CODEBOOK, base[i : i + 1], mask, y, 0, rng, cfg, image_ids=[i]
        )
        np.testing.assert_array_equal(one.trajectory_tokens[0], batch.trajectory_tokens[i])
        np.testing.assert_allclose(one.f_target[0], batch.f_target[i], rtol=1e-5)


def _f_of_tokens(base, res, y):
    """The linear IEM's logit for class y of each edited grid, in float64 numpy."""
    grids = res.edited(base).reshape(len(base), -1)
    e = CODEBOOK.astype(np.float64)[grids].reshape(len(base), -1)
    return e @ W.astype(np.float64)[:, y]


def test_embedding_baseline_scores_the_snapped_codebook_rows():
    mask = selection.region_mask(M, "1:3,2:4")
    base = _base(2)
    cfg = selection.SelectionConfig(steps=200, learning_rate=0.05, log_every=100, init="image")
    res = selection.optimize_embedding(predict, CODEBOOK, base, mask, [1, 1], [0, 0], cfg)
    np.testing.assert_array_equal(res.edited(base)[:, ~mask], base[:, ~mask])
    # The reported f_target is that of the snapped tokens (codebook rows), not of the free E.
    np.testing.assert_allclose(res.f_target[:, -1], _f_of_tokens(base, res, 1), rtol=1e-5)
    np.testing.assert_array_equal(res.start_tokens, base.reshape(2, -1)[:, res.positions])
    assert (res.f_target[:, -1] > res.start_f_target).all()


def test_nearest_rows_is_the_brute_force_nearest_where_the_expansion_cancels():
    rng = np.random.default_rng(0)
    # Large rows close together: ‖r‖² + ‖c‖² − 2r·c cancels catastrophically in float32.
    cb = (300.0 + 1e-2 * rng.standard_normal((64, 16))).astype(np.float32)
    rows = (cb[rng.integers(0, 64, 200)] + 3e-3 * rng.standard_normal((200, 16))).astype(np.float32)
    brute = ((rows[:, None].astype(np.float64) - cb[None].astype(np.float64)) ** 2).sum(-1)
    want = brute.argmin(1)
    got = np.asarray(selection.nearest_rows(jnp.asarray(rows), jnp.asarray(cb)))
    np.testing.assert_array_equal(got, want)
    hi = jax.lax.Precision.HIGHEST
    expansion = (
        (rows**2).sum(-1, keepdims=True)
        + (cb**2).sum(-1)
        - 2 * np.asarray(jnp.matmul(rows, cb.T, precision=hi))
    )
    assert (expansion.argmin(1) != want).any()  # what the expansion alone would have snapped to


def test_selected_rows_are_gathered_exactly_with_the_straight_through_gradient():
    base = jnp.asarray(_base(1)[0])
    pos = jnp.asarray([1, 5, 6])
    logits = jax.random.normal(jax.random.PRNGKey(2), (3, K))
    y = selection.straight_through_gumbel(logits, jax.random.PRNGKey(0), 1.0)
    unused = np.setdiff1d(np.arange(K), np.concatenate([np.argmax(y, -1), np.ravel(base)]))[0]
    # A row used nowhere: a one-hot matmul would spread its NaN into every chosen row.
    poisoned = jnp.asarray(CODEBOOK).at[unused].set(jnp.nan)
    with jax.default_matmul_precision("bfloat16"):
        e, rows = selection.embed_selection(poisoned, base, pos, y)
    np.testing.assert_array_equal(rows, np.asarray(poisoned)[np.argmax(y, -1)])
    assert e.shape == (1, M, M, D) and np.isfinite(np.asarray(e)).all()
    # Backward: the gradient of onehot @ C, as the straight-through estimator needs.
    w = jax.random.normal(jax.random.PRNGKey(3), (3, D))
    cb = jnp.asarray(CODEBOOK)
    g = jax.grad(lambda o: jnp.sum(w * selection.embed_selection(cb, base, pos, o)[1]))(y)
    np.testing.assert_allclose(g, w @ cb.T, rtol=1e-6)


def test_selection_under_bfloat16_matmuls_scores_exact_codebook_rows():
    mask = selection.region_mask(M, "1:3,1:3")
    base = _base(2)
    cfg = selection.SelectionConfig(steps=40, learning_rate=0.1, log_every=20)
    with jax.default_matmul_precision("bfloat16"):
        res = selection.select_tokens(
            predict, CODEBOOK, base, mask, [1, 0], [0, 1], jax.random.PRNGKey(0), cfg
        )
    for i, y in enumerate([1, 0]):
        np.testing.assert_allclose(res.f_target[i, -1], _f_of_tokens(base, res, y)[i], rtol=2e-3)


@pytest.mark.parametrize(
    "region, message",
    [("0:9,0:2", "outside the 4x4"), ("2:1,0:2", "outside"), ("rows", "is not 'r0:r1,c0:c1'")],
)
def test_bad_regions_refused(region, message):
    with pytest.raises(ValueError, match=message):
        selection.region_mask(M, region)


def test_region_defaults():
    assert selection.region_mask(16).sum() == 16 and selection.region_mask(16)[7:11, 7:11].all()
    assert selection.region_mask(8, "full").all()


def test_scan_and_python_loops_agree():
    mask = selection.region_mask(M, "1:3,0:2")
    base = _base(2)
    cfg = selection.SelectionConfig(steps=30, log_every=10, learning_rate=0.05)
    args = (predict, CODEBOOK, base, mask, [1, 0], [0, 1], jax.random.PRNGKey(4), cfg)
    a = selection.select_tokens(*args, loop="scan")
    b = selection.select_tokens(*args, loop="python")
    np.testing.assert_array_equal(a.trajectory_tokens, b.trajectory_tokens)
    np.testing.assert_allclose(a.f_target, b.f_target, rtol=1e-5)
    np.testing.assert_allclose(a.start_f_original, b.start_f_original, rtol=1e-5)
    with pytest.raises(ValueError, match="loop='fast'"):
        selection.select_tokens(*args, loop="fast")


def test_pair_study_does_not_depend_on_how_images_are_batched():
    from cortex_jax.experiments import codebook_level
    from cortex_jax.experiments.bundle import Models

    base = _base(4)
    mask = selection.region_mask(M, "1:3,1:3")
    cfg = selection.SelectionConfig(steps=20, log_every=10, learning_rate=0.1)
    models = Models(
        codebook=CODEBOOK,
        decode=lambda g: CODEBOOK[np.asarray(g)],  # "pixels": the embedding itself
        class_names=("a", "b"),
        predict=predict,
        classifier=lambda px: np.asarray(jax.nn.softmax(predict(jnp.asarray(px)), -1)),
    )
    src, tgt = np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])
    whole = codebook_level.pair_study(models, base, src, tgt, mask, cfg, 3, image_ids=np.arange(4))
    halves = [
        codebook_level.pair_study(
            models, base[s], src[s], tgt[s], mask, cfg, 3, image_ids=np.arange(4)[s]
        )
        for s in (slice(0, 1), slice(1, 4))
    ]
    for row, cols in whole["table"].items():
        for k, v in cols.items():
            if k == "delta_judge_target_per_token":
                continue  # a ratio of means: not additive over halves
            mean = (halves[0]["table"][row][k] + 3 * halves[1]["table"][row][k]) / 4
            assert v == pytest.approx(mean, abs=1e-5), (row, k)
    # pair_study's own batching merges the same way, the per-token ratio taken after merging
    batched = codebook_level.pair_study(models, base, src, tgt, mask, cfg, 3, batch=3)
    for row, cols in whole["table"].items():
        for k, v in cols.items():
            assert batched["table"][row][k] == pytest.approx(v, abs=1e-5, nan_ok=True), (row, k)
    assert batched["n_images"] == 4
    assert set(whole["table"]) >= {"random_tokens/start", "token_selection_from_image/final"}
    for cols in whole["table"].values():
        if cols["tokens_changed"]:
            ratio = cols["delta_judge_target"] / cols["tokens_changed"]
            assert cols["delta_judge_target_per_token"] == pytest.approx(ratio)
