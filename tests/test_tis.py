"""TIS against closed forms, its per-image independence, and the token sets against NumPy."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax import tis

B, M, D, C = 3, 4, 5, 6
W = np.random.default_rng(0).standard_normal((M * M * D, C)).astype(np.float32)


def linear(x, w):
    return x.reshape(x.shape[0], -1) @ w


predict = functools.partial(linear, w=jnp.asarray(W))


def _e(seed, scale=1.0):
    return scale * jax.random.normal(jax.random.PRNGKey(seed), (B, M, M, D))


def test_logit_objective_is_the_weight_slice():
    e, y = _e(0), jnp.array([0, 3, 5])
    got = tis.token_importance(predict, e, y, jax.random.PRNGKey(1), n_samples=7, objective="logit")
    want = np.abs(W[:, np.asarray(y)].T.reshape(B, M, M, D)).max(-1)  # ∇ logit_y = W[:, y]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    signed = tis.token_importance(predict, e, y, jax.random.PRNGKey(1), n_samples=7,
                                  objective="logit", signed=True)  # fmt: skip
    np.testing.assert_allclose(signed, W[:, np.asarray(y)].T.reshape(B, M, M, D).max(-1), rtol=1e-5)


def test_probability_objective_closed_form_without_noise():
    e, y = _e(2), jnp.array([1, 1, 4])
    got = tis.token_importance(predict, e, y, jax.random.PRNGKey(0), n_samples=3, alpha=0.0)
    p = jax.nn.softmax(predict(e), -1)
    # ∂p_y/∂x = p_y (W_y − Σ_j p_j W_j)
    grad = np.stack(
        [float(p[i, y[i]]) * (W[:, int(y[i])] - W @ np.asarray(p[i])) for i in range(B)]
    )
    np.testing.assert_allclose(got, np.abs(grad.reshape(B, M, M, D)).max(-1), rtol=1e-4, atol=1e-7)


def _nonlinear(x):
    h = jnp.tanh(x.reshape(x.shape[0], -1) @ jnp.asarray(W))
    return h * 3.0


def test_sigma_per_image_makes_scores_batch_independent():
    x1, x2, x3 = _e(3)[:1], _e(4)[:1], _e(5, scale=40.0)[:1]  # x3 has a far larger range
    rng = jax.random.PRNGKey(9)
    a = tis.token_importance(_nonlinear, jnp.concatenate([x1, x2]), 2, rng, n_samples=5)
    b = tis.token_importance(_nonlinear, jnp.concatenate([x1, x3]), 2, rng, n_samples=5)
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    assert not np.allclose(a[1], b[1])


def test_chunking_does_not_change_scores():
    e = _e(6)
    kw = dict(n_samples=7, image_ids=jnp.array([10, 11, 12]))
    whole = tis.token_importance(_nonlinear, e, 1, jax.random.PRNGKey(2), **kw)
    chunked = tis.token_importance(
        _nonlinear, e, 1, jax.random.PRNGKey(2), samples_per_chunk=3, **kw
    )
    np.testing.assert_allclose(whole, chunked, rtol=1e-5, atol=1e-7)


def test_image_tokens_against_numpy():
    rng = np.random.default_rng(1)
    scores = rng.random((5, 8, 8)).astype(np.float32)
    indices = rng.integers(0, 100, (5, 64))
    pos, ids = tis.image_tokens(jnp.asarray(scores), jnp.asarray(indices), 6)
    want_pos = np.argsort(-scores.reshape(5, -1), axis=1)[:, :6]
    np.testing.assert_array_equal(pos, want_pos)
    np.testing.assert_array_equal(ids, np.take_along_axis(indices, want_pos, 1))
    with pytest.raises(ValueError, match="n=65"):
        tis.image_tokens(jnp.asarray(scores), jnp.asarray(indices), 65)


def test_concept_tokens_and_frequency_baseline_against_numpy():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 30, (40, 5))
    labels = rng.integers(0, 3, 40)
    top, counts = tis.concept_tokens(jnp.asarray(ids), jnp.asarray(labels), 3, 30, 4)
    for c in range(3):
        cnt = np.bincount(ids[labels == c].ravel(), minlength=30)
        order = sorted(range(30), key=lambda t: (-cnt[t], t))[:4]
        np.testing.assert_array_equal(top[c], order)
        np.testing.assert_array_equal(counts[c], cnt[order])
    grid = rng.integers(0, 30, (40, 4, 4))
    base, _ = tis.frequency_baseline(jnp.asarray(grid), jnp.asarray(labels), 3, 30, 2)
    cnt0 = np.bincount(grid[labels == 0].ravel(), minlength=30)
    np.testing.assert_array_equal(base[0], sorted(range(30), key=lambda t: (-cnt0[t], t))[:2])


def test_score_dataset_shards_and_resumes(tmp_path):
    from cortex_jax import sample_level
    from tests.helpers import tiny

    ds = tiny.make_dataset(tmp_path / "d", 100, 0)
    lin = functools.partial(linear, w=jnp.asarray(np.random.default_rng(1).standard_normal(
        (tiny.GRID * tiny.GRID * tiny.D, tiny.N_CLASSES)).astype(np.float32)))  # fmt: skip
    cfg = sample_level.SampleLevelConfig(n_samples=3, batch=16, objective="logit")
    files = sample_level.score_dataset(lin, tiny.codebook(), ds, str(tmp_path / "tis"), cfg)
    assert len(files) == 3
    first = np.load(files[0])
    assert first.shape == (40, 4, 4) and first.dtype == np.float16
    before = (tmp_path / "tis" / "tis-00001.npy").read_bytes()
    (tmp_path / "tis" / "tis-00001.npy").unlink()
    again = sample_level.score_dataset(lin, tiny.codebook(), ds, str(tmp_path / "tis"), cfg)
    assert [p.rsplit("/", 1)[1] for p in again] == ["tis-00001.npy"]  # only the missing shard
    assert (tmp_path / "tis" / "tis-00001.npy").read_bytes() == before
