"""The cin minGPT port against taming's tiny fixture, and its KV-cache sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.io import convert
from cortex_jax.models import cin


@pytest.fixture(scope="module")
def fixture_model(fixtures):
    d = fixtures / "taming_cin_tiny"
    sd = dict(np.load(d / "state_dict.npz"))
    params = convert.convert_taming_gpt_state_dict(sd)
    config = convert.infer_gpt_config(params, n_head=2, n_classes=10)
    return config, params, dict(np.load(d / "io.npz"))


def test_converted_tree_matches_init(fixture_model):
    config, params, _ = fixture_model
    assert config == cin.GPTConfig(64, 16, 2, 2, 32, image_vocab_size=64, n_classes=10)
    shapes = jax.eval_shape(lambda: cin.init_params(config, jax.random.PRNGKey(0)))
    same = jax.tree_util.tree_map(lambda a, b: a.shape == b.shape, shapes, params)
    assert all(jax.tree_util.tree_leaves(same))
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    assert n == 30_080


def test_teacher_forced_logits(fixture_model):
    config, params, io = fixture_model
    seq = cin.training_sequence(config, io["class_ids"], io["image_tokens"])
    np.testing.assert_array_equal(seq, io["input_sequence"])
    lg = cin.logits(config, params, io["class_ids"], io["image_tokens"])
    np.testing.assert_allclose(lg, io["logits"], atol=1e-5, rtol=0)


def test_next_token_filtering(fixture_model):
    config, params, io = fixture_model
    full = cin.GPT(config).apply({"params": params}, jnp.asarray(io["prefix"], jnp.int32))
    np.testing.assert_allclose(full[:, -1], io["next_token_logits"], atol=1e-5, rtol=0)
    t, k = float(io["sample_temperature"]), int(io["sample_top_k"])
    filt = np.asarray(cin.filter_logits(jnp.asarray(io["next_token_logits"]) / t, k))
    want = io["next_token_filtered_logits"]
    np.testing.assert_array_equal(np.isfinite(filt), np.isfinite(want))
    np.testing.assert_allclose(filt[np.isfinite(want)], want[np.isfinite(want)], atol=1e-5)
    np.testing.assert_allclose(jax.nn.softmax(filt), io["next_token_probs"], atol=1e-6)
    np.testing.assert_array_equal(np.argmax(filt, -1), io["next_token_argmax"])


def test_greedy_kv_cache_matches_fixture_and_teacher_forcing(fixture_model):
    config, params, io = fixture_model
    greedy = cin.SampleConfig(temperature=0.0)
    toks, step_logits = cin.sample(
        config, params, io["class_ids"], jax.random.PRNGKey(0), greedy, return_logits=True
    )
    np.testing.assert_array_equal(toks, io["greedy_tokens"])
    np.testing.assert_allclose(step_logits, io["greedy_step_logits"], atol=1e-5, rtol=0)
    # Step by step, the cached logits are the teacher-forced logits on the tokens so far.
    forced = cin.logits(config, params, io["class_ids"], toks)
    np.testing.assert_allclose(step_logits, forced, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(np.argmax(forced, -1), toks)


def _toy_config(**kw):
    base = dict(
        vocab_size=20,
        block_size=9,
        n_layer=1,
        n_head=2,
        n_embd=16,
        image_vocab_size=16,
        class_offset=16,
        n_classes=4,
    )
    return cin.GPTConfig(**{**base, **kw})


def test_sampling_never_emits_ids_outside_image_vocab():
    config = _toy_config()
    params = cin.init_params(config, jax.random.PRNGKey(1))
    # ln_f outputs all ones, so each logit is the sum of its head column: 16 for the class ids
    # (16..19), 0 for image ids. Unmasked, a class id would be sampled almost always.
    params["ln_f"] = {"scale": jnp.zeros(16), "bias": jnp.ones(16)}
    params["head"]["kernel"] = jnp.concatenate([jnp.zeros((16, 16)), jnp.ones((16, 4))], axis=1)
    lg = cin.GPT(config).apply({"params": params}, jnp.zeros((1, 9), jnp.int32))
    np.testing.assert_allclose(lg[0, 0], [0.0] * 16 + [16.0] * 4)
    toks = cin.sample(
        config,
        params,
        np.arange(4).repeat(16),
        jax.random.PRNGKey(0),
        cin.SampleConfig(temperature=1.0, top_k=None),
    )
    assert toks.shape == (64, 9) and int(toks.max()) < 16
    assert len(np.unique(toks)) == 16  # uniform over the 16 image ids once the rest is masked


def test_sampling_deterministic_per_seed():
    config = _toy_config()
    params = cin.init_params(config, jax.random.PRNGKey(2))
    sc = cin.SampleConfig(temperature=1.0, top_k=8)
    a = cin.sample(config, params, [0, 1, 2, 3], jax.random.PRNGKey(5), sc)
    b = cin.sample(config, params, [0, 1, 2, 3], jax.random.PRNGKey(5), sc)
    c = cin.sample(config, params, [0, 1, 2, 3], jax.random.PRNGKey(6), sc)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_top_p_against_numpy():
    rng = np.random.default_rng(0)
    lg = rng.standard_normal((5, 30)).astype(np.float32)
    got = np.isfinite(np.asarray(cin.filter_logits(jnp.asarray(lg), top_p=0.7)))
    for row, keep in zip(lg, got, strict=True):
        order = np.argsort(-row)
        p = np.exp(row[order] - row.max())
        cum = np.cumsum(p / p.sum())
        n_keep = int(np.searchsorted(cum, 0.7, side="right")) + 1  # first index whose mass > p
        want = np.zeros(30, bool)
        want[order[:n_keep]] = True
        np.testing.assert_array_equal(keep, want)


def test_bad_class_id_refused():
    config = _toy_config()
    params = cin.init_params(config, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"class id 4 is outside \[0, 4\)"):
        cin.sample(config, params, [0, 4], jax.random.PRNGKey(0))


def test_config_checks():
    with pytest.raises(ValueError, match="not divisible"):
        _toy_config(n_embd=15)
    with pytest.raises(ValueError, match="do not fit vocab_size"):
        _toy_config(n_classes=5)


def test_top_k_larger_than_vocabulary_keeps_everything():
    lg = jnp.arange(6.0)[None]
    np.testing.assert_array_equal(cin.filter_logits(lg, top_k=250), lg)


def test_sampling_on_eight_devices_matches_one(fixtures):
    from tests.helpers.devices import run_on

    outs = [run_on(n, "cin", str(fixtures / "taming_cin_tiny")) for n in (8, 1)]
    assert [o["devices"] for o in outs] == [8, 1] and outs[0]["tokens"] == outs[1]["tokens"]
