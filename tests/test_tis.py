"""TIS against closed forms, its per-image independence, and the token sets against NumPy."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.method import tis

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
    signed = tis.token_importance(
        predict, e, y, jax.random.PRNGKey(1), n_samples=7, objective="logit", signed=True
    )
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


V = np.random.default_rng(4).standard_normal((M * M * D, C)) / 4


def _tanh_model(x):
    return jnp.tanh(x.reshape(x.shape[0], -1)) @ jnp.asarray(V, jnp.float32)


def _smoothgrad_reference(
    e, y, rng, n, alpha, *, abs_first=False, batch_sigma=False, shared_noise=False
):
    """SmoothGrad of softmax(tanh(u) @ V)_y in float64 NumPy, with its gradient in closed form:
    ∇_u p_y = (V @ p_y (e_y − p)) ⊙ (1 − tanh² u). The noise is the documented draw for image id i,
    copy s: normal(fold_in(fold_in(rng, i), s)) · σ_i. The keyword switches build the wrong
    variants a faithful implementation must not match."""
    e = np.asarray(e, np.float64)
    flat = e.reshape(len(e), -1)
    span = flat.max(1) - flat.min(1)
    sigma = alpha * (np.full(len(e), flat.max() - flat.min()) if batch_sigma else span)
    out = []
    for i in range(len(e)):
        key = jax.random.fold_in(rng, 0 if shared_noise else i)
        grads = []
        for s in range(n):
            eps = np.asarray(jax.random.normal(jax.random.fold_in(key, s), e.shape[1:]), np.float64)
            u = (e[i] + sigma[i] * eps).reshape(-1)
            z = np.tanh(u) @ V
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            dz = p[y[i]] * (np.eye(C)[y[i]] - p)
            grads.append(((V @ dz) * (1 - np.tanh(u) ** 2)).reshape(e.shape[1:]))
        grads = np.stack(grads)
        s_map = np.abs(grads).mean(0) if abs_first else np.abs(grads.mean(0))
        out.append(s_map.max(-1))
    return np.stack(out)


def test_smoothgrad_against_an_independent_numpy_reference():
    # Images with very different value ranges, so a batch-wide σ differs from the per-image one.
    e = jnp.concatenate([_e(11)[:1], _e(12, scale=6.0)[:1], _e(13, scale=0.3)[:1]])
    y, rng = np.array([2, 0, 5]), jax.random.PRNGKey(21)
    got = np.asarray(
        tis.token_importance(
            _tanh_model, e, jnp.asarray(y), rng, n_samples=12, alpha=0.2, samples_per_chunk=5
        )
    )
    want = _smoothgrad_reference(e, y, rng, 12, 0.2)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-8)
    # The test can tell the faithful estimator from its usual mistakes: each differs by far more
    # than the tolerance above.
    for wrong in ("abs_first", "batch_sigma", "shared_noise"):
        other = _smoothgrad_reference(e, y, rng, 12, 0.2, **{wrong: True})
        assert np.abs(other - want).max() > 50 * (2e-4 * np.abs(want).max()), wrong


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


def _ranked(cnt, k):
    order = [t for t in sorted(range(len(cnt)), key=lambda t: (-cnt[t], t)) if cnt[t] > 0]
    return order[:k]


def test_concept_tokens_count_images_not_positions_by_default():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 12, (40, 5))  # many ids repeat inside one image's T_image
    labels = rng.integers(0, 3, 40)
    top, counts = tis.concept_tokens(jnp.asarray(ids), jnp.asarray(labels), 3, 30, 4)
    top_a, counts_a = tis.concept_tokens(
        jnp.asarray(ids), jnp.asarray(labels), 3, 30, 4, counting="authors"
    )
    differs = False
    for c in range(3):
        rows = ids[labels == c]
        per_image = np.array([sum(t in set(r) for r in rows) for t in range(30)])  # eq. 5
        per_position = np.bincount(rows.ravel(), minlength=30)
        np.testing.assert_array_equal(top[c], _ranked(per_image, 4))
        np.testing.assert_array_equal(counts[c], per_image[_ranked(per_image, 4)])
        np.testing.assert_array_equal(top_a[c], _ranked(per_position, 4))
        np.testing.assert_array_equal(counts_a[c], per_position[_ranked(per_position, 4)])
        assert counts[c].max() <= (labels == c).sum()  # a number of images
        differs |= not np.array_equal(top[c], top_a[c])
    assert differs  # the two readings really rank differently on this data
    with pytest.raises(ValueError, match="counting='rows'"):
        tis.token_counts(jnp.asarray(ids), jnp.asarray(labels), 3, 30, counting="rows")


def test_fewer_distinct_ids_than_k_returns_fewer_never_padding():
    ids = np.array([[3, 3, 5], [5, 5, 5], [7, 7, 7]])
    labels = np.array([0, 0, 2])  # concept 1 has no images at all
    top, counts = tis.concept_tokens(jnp.asarray(ids), jnp.asarray(labels), 3, 10, 4)
    assert [t.tolist() for t in top] == [[5, 3], [], [7]]
    assert [c.tolist() for c in counts] == [[2, 1], [], [1]]
    base, bc = tis.frequency_baseline(jnp.asarray(ids.reshape(3, 1, 3)), labels, 3, 10, 4)
    assert [t.tolist() for t in base] == [[5, 3], [], [7]] and bc[0].tolist() == [4, 2]


def test_frequency_baseline_against_numpy():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    grid = rng.integers(0, 30, (40, 4, 4))
    base, _ = tis.frequency_baseline(jnp.asarray(grid), jnp.asarray(labels), 3, 30, 2)
    for c in range(3):
        cnt = np.bincount(grid[labels == c].ravel(), minlength=30)
        np.testing.assert_array_equal(base[c], _ranked(cnt, 2))


def test_score_dataset_shards_and_resumes(tmp_path):
    from cortex_jax.experiments import sample_level
    from tests.helpers import tiny

    ds = tiny.make_dataset(tmp_path / "d", 100, 0)
    lin = functools.partial(
        linear,
        w=jnp.asarray(
            np.random.default_rng(1)
            .standard_normal((tiny.GRID * tiny.GRID * tiny.D, tiny.N_CLASSES))
            .astype(np.float32)
        ),
    )
    cfg = sample_level.SampleLevelConfig(n_samples=3, batch=16, objective="logit")
    files = sample_level.score_dataset(lin, tiny.codebook(), ds, str(tmp_path / "tis"), cfg)
    assert len(files) == 3
    first = np.load(files[0])
    assert first.shape == (40, 4, 4) and first.dtype == np.float32
    before = (tmp_path / "tis" / "tis-00001.npy").read_bytes()
    (tmp_path / "tis" / "tis-00001.npy").unlink()
    again = sample_level.score_dataset(lin, tiny.codebook(), ds, str(tmp_path / "tis"), cfg)
    assert [p.rsplit("/", 1)[1] for p in again] == ["tis-00001.npy"]  # only the missing shard
    assert (tmp_path / "tis" / "tis-00001.npy").read_bytes() == before


def test_stored_scores_are_reused_only_with_the_settings_that_made_them(tmp_path):
    """OUT/fingerprint.json: the same settings skip the finished shards; another n_samples, alpha
    or IEM is refused in one line naming the field, and the stored scores stay as they were."""
    from cortex_jax.experiments import sample_level
    from tests.helpers import tiny

    ds = tiny.make_dataset(tmp_path / "d", 40, 0)
    w = np.random.default_rng(1).standard_normal((tiny.GRID * tiny.GRID * tiny.D, tiny.N_CLASSES))
    lin = functools.partial(linear, w=jnp.asarray(w.astype(np.float32)))
    cfg = sample_level.SampleLevelConfig(n_samples=2, batch=40, objective="logit")
    out, iem = str(tmp_path / "tis"), {"iem": "ce", "sha256": "aa"}

    def score(c=cfg, m=iem):
        return sample_level.score_dataset(lin, tiny.codebook(), ds, out, c, model=m)

    assert len(score()) == 1
    stored = (tmp_path / "tis" / "tis-00000.npy").read_bytes()
    assert score() == []  # same settings: reused
    other = dataclasses.replace(cfg, n_samples=3)
    with pytest.raises(ValueError, match=r"other settings \(method.n_samples: 2 there, 3 now\)"):
        score(other)
    with pytest.raises(ValueError, match=r"method.alpha: 0.2 there, 0.5 now"):
        score(dataclasses.replace(cfg, alpha=0.5))
    with pytest.raises(ValueError, match=r"model.sha256: 'aa' there, 'bb' now"):
        score(cfg, {"iem": "ce", "sha256": "bb"})
    assert (tmp_path / "tis" / "tis-00000.npy").read_bytes() == stored
    assert score(dataclasses.replace(cfg, batch=8, n=3)) == []  # n, batch: no score changes
    (tmp_path / "tis" / "fingerprint.json").unlink()  # scores nobody can vouch for
    with pytest.raises(ValueError, match="holds scores files but no fingerprint.json"):
        score()


@pytest.mark.slow
def test_stored_scores_give_the_same_image_tokens_as_computed_ones(tmp_path):
    """On the shipped toy world (CE, probability objective), T_image read back from the stored
    shards equals T_image of the float32 scores for every image; a float16 store would not."""
    from cortex_jax import toy
    from cortex_jax.experiments import sample_level

    vqgm = toy.load_toy_vqgm()
    _, _, predict = toy.load_toy_iem("ce")
    ds = toy.write_encoded_dataset(vqgm.vqgan, range(14), 12, tmp_path / "d", shard_size=84)
    cfg = sample_level.SampleLevelConfig(n_samples=8, batch=64)
    sample_level.score_dataset(predict, vqgm.vqgan.codebook, ds, str(tmp_path / "tis"), cfg)
    stored = np.concatenate([np.load(tmp_path / "tis" / f"tis-{i:05d}.npy") for i in (0, 1)])
    toks, labels, _ = ds.arrays()
    computed = sample_level.scores_for(predict, vqgm.vqgan.codebook, toks, labels, cfg)
    top = lambda s: np.asarray(tis.image_tokens(jnp.asarray(s), jnp.asarray(toks), 20)[0])
    np.testing.assert_array_equal(top(stored), top(computed))
    changed = (np.sort(top(computed.astype(np.float16)), 1) != np.sort(top(computed), 1)).any(1)
    assert changed.any()  # the float16 store this replaced lost the ranking on some images
