"""The recipe's sample-level step streamed over shards (`experiments.sample_stream`): the report
`sample_level.run` makes from arrays in memory, computed shard by shard and batch by batch from
stored TIS; no call ever sees more than one shard or batch; the report's sample of the test split
is capped per concept. And the atlas counts images holding a token without an (images, K) table."""

import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.experiments import sample_level, sample_stream
from cortex_jax.experiments.bundle import Models
from cortex_jax.figures.atlas import _ImagesHolding
from cortex_jax.io import shards
from cortex_jax.method import tis
from tests.test_reports import CODEBOOK, K, M, _models

# three classes, so per-concept sums are tested beyond two; batches of 4 cut across concepts
CFG4 = sample_level.SampleLevelConfig(
    n=2, k=3, curve_ns=(1, 2, 9, 10), batch=4, attribution={"method": "random"}
)


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n).astype(np.int32)
    tokens = rng.integers(0, K, (n, M, M))
    tokens[:, 0] = (3 * labels[:, None] + rng.integers(0, 3, (n, M))) % K
    return tokens, labels


def _dataset(folder, tokens, labels, shard_size: int) -> shards.TokenDataset:
    meta = {"class_names": ["a", "b", "c"], "grid_size": M, "codebook_size": K, "vqgm": "t"}
    shards.write_meta(folder, meta)
    for s, i in enumerate(range(0, len(labels), shard_size)):
        shards.write_shard(folder, s, tokens[i : i + shard_size], labels[i : i + shard_size])
    return shards.TokenDataset.open(folder)


W3 = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)


def _predict3(e):  # the top row's embeddings, linearly, to three classes
    return jnp.einsum("bijd,dc->bc", e[:, :1], W3)


def _models3() -> Models:
    base = _models()

    def classifier(px):  # three classes from the brightness of the top rows
        top = px[:, :2].mean((1, 2, 3))
        logits = np.stack([-4 * top, 0 * top, 4 * top], 1)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return Models(
        codebook=CODEBOOK,
        decode=base.decode,
        class_names=("a", "b", "c"),
        grid_size=M,
        predict=_predict3,
        predict_name="lin",
        classifier=classifier,
        classifier_name="brightness",
    )


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A train split of 3 shards and a test split of 3 shards, their TIS stored as the recipe
    stores them (the test images keyed after the training images)."""
    root = tmp_path_factory.mktemp("stream")
    ex, te = _split(36, 0), _split(24, 1)
    train = _dataset(root / "train", *ex, 12)
    test = _dataset(root / "test", *te, 8)
    predict = _models3().predict
    sample_level.score_dataset(predict, CODEBOOK, train, root / "tis", CFG4)
    sample_level.score_dataset(predict, CODEBOOK, test, root / "test_tis", CFG4, id_offset=36)
    return root, train, test, ex, te


def test_the_streamed_report_is_the_report_of_run_in_memory(stored):
    root, train, test, ex, te = stored
    ex_tis = np.concatenate([np.load(root / "tis" / f"tis-{s:05d}.npy") for s in range(3)])
    models = _models3()
    whole = sample_level.run(models, [0, 1, 2], ex, te, CFG4, explain_tis=ex_tis, model={"i": 1})
    streamed = sample_stream.report(
        models, train, root / "tis", test, root / "test_tis", [0, 1, 2], CFG4, {"i": 1}
    )
    for c in (0, 1, 2):
        a, b = whole.concepts[c], streamed.concepts[c]
        assert (a.cortex, a.cortex_counts) == (b.cortex, b.cortex_counts)
        assert (a.frequency, a.frequency_counts) == (b.frequency, b.frequency_counts)
        assert a.masking_cortex == pytest.approx(b.masking_cortex)
        assert a.masking_frequency == pytest.approx(b.masking_frequency)
    assert streamed.summary == pytest.approx(whole.summary)
    for key in ("n", "tis", "random", "tis_se", "random_se"):
        got, want = getattr(streamed.image_level_curve, key), getattr(whole.image_level_curve, key)
        assert got == pytest.approx(want), key
    assert streamed.image_level_curve.n == (1, 2, 9)  # n ≤ m·m only
    assert streamed.fingerprint == whole.fingerprint and streamed.test_images == 24
    assert streamed.concept_names == whole.concept_names
    assert whole.arrays is not None and streamed.arrays is not None
    np.testing.assert_array_equal(streamed.arrays.tokens, te[0])
    np.testing.assert_array_equal(streamed.arrays.labels, te[1])
    # the stored test TIS (score_dataset, id_offset) are the scores run computes in memory
    np.testing.assert_allclose(streamed.arrays.tis, whole.arrays.tis, rtol=1e-6)


def test_no_call_sees_more_than_a_shard_or_a_batch(stored, monkeypatch):
    """Memory stays flat: T_concept reads one shard's TIS at a time, the masking evaluation
    decodes and classifies at most `batch` images a call, and only the capped sample of the test
    split is kept."""
    root, train, test, ex, te = stored
    seen = {"image_tokens": 0, "decode": 0, "classifier": 0}
    image_tokens = tis.image_tokens

    def spy_image_tokens(scores, indices, n):
        seen["image_tokens"] = max(seen["image_tokens"], len(scores))
        return image_tokens(scores, indices, n)

    monkeypatch.setattr(tis, "image_tokens", spy_image_tokens)
    base = _models3()

    def spy(name, fn):
        def call(x):
            seen[name] = max(seen[name], len(x))
            return fn(x)

        return call

    models = Models(
        **{
            **{f: getattr(base, f) for f in ("codebook", "class_names", "grid_size", "predict")},
            "decode": spy("decode", base.decode),
            "classifier": spy("classifier", base.classifier),
        }
    )
    report = sample_stream.report(
        models, train, root / "tis", test, root / "test_tis", [0, 1, 2], CFG4, {}, None, 2
    )
    assert seen == {"image_tokens": 12, "decode": 4, "classifier": 4}
    assert report.test_images == 24  # all evaluated …
    labels = report.arrays.labels  # … the first 2 of each concept kept, in the split's order
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]
    first = np.concatenate([np.flatnonzero(te[1] == c)[:2] for c in (0, 1, 2)])
    np.testing.assert_array_equal(report.arrays.tokens, te[0][np.sort(first)])


def test_a_missing_tis_shard_is_named(stored, tmp_path):
    _, train, *_ = stored
    with pytest.raises(FileNotFoundError, match="tis-00000.npy is missing"):
        sample_stream.concept_sets(train, tmp_path, 2, 3, 3, K)


def test_score_dataset_keys_noise_after_the_offset_and_records_it(stored, tmp_path):
    root, _, test, _, te = stored
    want = sample_level.scores_for(_models3().predict, CODEBOOK, *te, CFG4, ids=36 + np.arange(24))
    got = np.concatenate([np.load(root / "test_tis" / f"tis-{s:05d}.npy") for s in range(3)])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    fp = sample_level.tis_fingerprint(CODEBOOK, test, CFG4, None, 36)
    assert fp["id_offset"] == 36
    assert "id_offset" not in sample_level.tis_fingerprint(CODEBOOK, test, CFG4)  # as before
    with pytest.raises(ValueError, match="id_offset: 36 there, None now"):  # never reused unchecked
        sample_level.score_dataset(_models3().predict, CODEBOOK, test, root / "test_tis", CFG4)


def test_the_atlas_counts_images_holding_a_token_as_a_dense_table_would():
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 40, (300, 4, 4)).astype(np.uint16)
    labels = rng.integers(0, 5, 300)
    present = np.zeros((300, 40), bool)
    np.put_along_axis(present, tokens.reshape(300, -1).astype(np.int64), True, axis=1)
    holding = _ImagesHolding(tokens, labels, chunk=64)
    for t in range(0, 42, 3):
        assert holding.count(t) == (present[:, t].sum() if t < 40 else 0)
        for c in range(5):
            assert holding.count(t, c) == (present[labels == c, t].sum() if t < 40 else 0)
