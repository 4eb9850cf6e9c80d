"""DalleBart port against dalle-mini's tiny fixture (both layouts), its sampler and the audit."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.experiments import bias, families, generate
from cortex_jax.io import folders
from cortex_jax.models import dalle


@pytest.fixture(scope="module")
def io(fixtures):
    return dict(np.load(fixtures / "dallebart_tiny" / "io.npz"))


@pytest.fixture(scope="module", params=["scan", "noscan"])
def model(request, fixtures):
    return folders.read_dallebart_folder(fixtures / "dallebart_tiny" / request.param)


def test_fixture_logits(model, io):
    cfg, p = model
    enc = dalle.encode(cfg, p, io["input_ids"], io["attention_mask"])
    m = io["attention_mask"].astype(bool)[..., None]  # padded positions do not matter
    want = io["encoder_last_hidden_state"]
    np.testing.assert_allclose(np.where(m, enc, 0), np.where(m, want, 0), atol=1e-5)
    lg = dalle.logits(cfg, p, io["input_ids"], io["attention_mask"], io["decoder_input_ids"])
    lu = dalle.logits(
        cfg, p, io["input_ids_uncond"], io["attention_mask_uncond"], io["decoder_input_ids"]
    )
    np.testing.assert_allclose(lg, io["logits"], atol=1e-5)
    np.testing.assert_allclose(lu, io["logits_uncond"], atol=1e-5)
    sc = dalle.superconditioned(lg[:, -1], lu[:, -1], float(io["condition_scale"]))
    np.testing.assert_allclose(sc, io["logits_superconditioned"], atol=5e-5)


def test_greedy_kv_cache_equals_teacher_forcing(model, io):
    cfg, p = model
    toks, raw = dalle.generate(
        cfg,
        p,
        io["input_ids"],
        io["attention_mask"],
        jax.random.PRNGKey(0),
        64,
        condition_scale=1.0,
        temperature=0.0,
        return_logits=True,
    )
    fed = jnp.concatenate([jnp.full((2, 1), 64), toks[:, :-1]], axis=1)
    forced = dalle.logits(cfg, p, io["input_ids"], io["attention_mask"], fed)
    np.testing.assert_allclose(raw, forced, atol=1e-5)
    np.testing.assert_array_equal(np.argmax(np.asarray(forced)[..., :64], -1), toks)


def test_sampling_masks_ids_beyond_the_codebook_and_is_deterministic(model, io):
    cfg, p = model
    args = (cfg, p, np.repeat(io["input_ids"], 8, 0), np.repeat(io["attention_mask"], 8, 0))
    kw = dict(
        condition_scale=10.0,
        uncond_ids=np.repeat(io["input_ids_uncond"], 8, 0),
        uncond_mask=np.repeat(io["attention_mask_uncond"], 8, 0),
        top_k=None,
    )
    a = dalle.generate(*args, jax.random.PRNGKey(1), 20, **kw)
    b = dalle.generate(*args, jax.random.PRNGKey(1), 20, **kw)
    c = dalle.generate(*args, jax.random.PRNGKey(2), 20, **kw)
    assert a.shape == (16, 16) and int(a.max()) < 20  # ids ≥ 20 (incl. the start token 64) masked
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    unmasked = dalle.generate(*args, jax.random.PRNGKey(1), 65, **kw)
    assert int(unmasked.max()) >= 20  # without the mask those ids do get sampled


OPTIONS = Path(__file__).parent / "data" / "dallebart_options"


@pytest.mark.parametrize("case", sorted(p.name for p in OPTIONS.iterdir() if p.is_dir()))
def test_option_variants_match_the_original(case, io):
    """rmsnorm/preln/FFN/bias, cogview/head scale/cosine attention, subln, swinv2/swin positions/
    sinkhorn: logits from dalle-mini 0.1.5 itself (tests/data/make_dallebart_options.py)."""
    cfg, p = folders.read_dallebart_folder(OPTIONS / case)
    ref = dict(np.load(OPTIONS / case / "io.npz"))
    lg = dalle.logits(cfg, p, io["input_ids"], io["attention_mask"], io["decoder_input_ids"])
    lu = dalle.logits(
        cfg, p, io["input_ids_uncond"], io["attention_mask_uncond"], io["decoder_input_ids"]
    )
    np.testing.assert_allclose(lg, ref["logits"], atol=1e-5)
    np.testing.assert_allclose(lu, ref["logits_uncond"], atol=1e-5)
    toks, raw = dalle.generate(
        cfg,
        p,
        io["input_ids"],
        io["attention_mask"],
        jax.random.PRNGKey(0),
        64,
        condition_scale=1.0,
        temperature=0.0,
        return_logits=True,
    )
    fed = jnp.concatenate([jnp.full((2, 1), 64), toks[:, :-1]], axis=1)
    forced = dalle.logits(cfg, p, io["input_ids"], io["attention_mask"], fed)
    np.testing.assert_allclose(raw, forced, atol=1e-5)  # the KV cache handles every option


def test_unsupported_options_refused(fixtures):
    import json

    raw = json.loads((fixtures / "dallebart_tiny" / "scan" / "config.json").read_text())
    with pytest.raises(ValueError, match="use_alibi=True is not supported"):
        dalle.DalleBartConfig.from_dict({**raw, "use_alibi": True})
    with pytest.raises(ValueError, match="ln_positions='sandwich'"):
        dalle.DalleBartConfig.from_dict({**raw, "ln_positions": "sandwich"})
    assert dalle.DalleBartConfig.from_dict({**raw, "ln_positions": "deepnet"}).ln_positions == (
        "postln"
    )


@pytest.mark.slow
def test_audit_runs_end_to_end_on_tiny_dallebart(fixtures, tmp_path):
    cfg, p = folders.read_dallebart_folder(fixtures / "dallebart_tiny" / "scan")
    words = {}

    def tokenize(text):  # stand-in for BartTokenizerFast: one id per word, 4..99
        return [0] + [words.setdefault(w, 4 + len(words) % 96) for w in text.lower().split()] + [2]

    # every draw one batch of 16 (a, b and the neutral prompt): one compiled sampler
    sample = dalle.prompt_sampler(cfg, p, tokenize, n_image_codes=64, batch=16)
    codebook = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    acfg = bias.AuditConfig(
        per_concept=16, neutral=16, n_samples=2, n_boot=50, epochs=1, batch_size=16
    )
    report = bias.run_audit(
        sample, codebook, "a white doctor", "a black doctor", "a doctor", tmp_path, acfg
    )
    assert [r["n"] for r in report["per_n"]] == [5, 10]  # n = 20 exceeds the 4×4 grid
    for r in report["per_n"]:
        assert r["paper"]["ci"][0] <= r["paper"]["cliffs_delta"] <= r["paper"]["ci"][1]
        assert set(r["verdict"]) == {"share_a", "share_a_unclipped", "ci", "lean"}
        assert set(r["leak"]) == {"a_tokens_on_b", "b_tokens_on_a"}
        assert 1 <= len(r["tokens_a"]) <= 10  # fewer when fewer distinct ids occur
    assert report["arrays"]["neutral_tokens"].shape == (16, 4, 4)
    assert (tmp_path / "iem" / "metrics.jsonl").exists()


def test_generation_on_eight_devices_matches_one(fixtures):
    from tests.helpers.devices import run_on

    outs = [run_on(n, "dalle", str(fixtures / "dallebart_tiny")) for n in (8, 1)]
    assert [o["devices"] for o in outs] == [8, 1]
    assert outs[0]["tokens"] == outs[1]["tokens"]  # batch split over devices changes nothing


def test_bfloat16_generation(model, io):
    cfg, p = model
    kw = dict(condition_scale=1.0, temperature=0.0, return_logits=True)
    t32, l32 = dalle.generate(
        cfg, p, io["input_ids"], io["attention_mask"], jax.random.PRNGKey(0), 64, **kw
    )
    t16, l16 = dalle.generate(
        cfg,
        p,
        io["input_ids"],
        io["attention_mask"],
        jax.random.PRNGKey(0),
        64,
        dtype=jnp.bfloat16,
        **kw,
    )
    assert t16.shape == t32.shape and l16.dtype == jnp.float32
    np.testing.assert_allclose(l16[:, 0], l32[:, 0], atol=0.05)  # first step: same inputs


def test_prompt_dataset_written_and_resumed(fixtures, tmp_path):
    from cortex_jax.io import shards

    cfg, p = folders.read_dallebart_folder(fixtures / "dallebart_tiny" / "scan")
    words = {}
    tokenize = lambda t: [0] + [words.setdefault(w, 4 + len(words)) for w in t.split()] + [2]
    sample = dalle.prompt_sampler(cfg, p, tokenize, n_image_codes=64, batch=4)
    prompts = ["a red circle", "a blue circle"]
    from cortex_jax.io.sources import load_vqgan

    vq = load_vqgan(fixtures / "vqgan_jax_tiny")  # 64 codes, like the tiny DalleBart
    ds = generate.write_prompt_dataset(
        sample, prompts, 5, tmp_path / "d", shard_size=4, decode=vq.decode_code, png_per_prompt=3
    )
    assert (tmp_path / "d" / "samples.png").stat().st_size > 0
    tokens, labels, _ = ds.arrays()
    assert tokens.shape == (10, 4, 4) and tokens.dtype == np.uint16 and int(tokens.max()) < 64
    assert labels.tolist() == [0] * 5 + [1] * 5 and ds.class_names == prompts
    before = (tmp_path / "d" / "shard-00001.tokens.npy").read_bytes()
    for kind in ("tokens", "labels"):
        (tmp_path / "d" / f"shard-00001.{kind}.npy").unlink()
    generate.write_prompt_dataset(sample, prompts, 5, tmp_path / "d", shard_size=4)
    assert (tmp_path / "d" / "shard-00001.tokens.npy").read_bytes() == before
    assert shards.TokenDataset.open(tmp_path / "d").meta["vqgm"] == "dallebart"


@pytest.fixture(scope="module")
def family_args(fixtures, tmp_path_factory):
    """The registry's LoadArgs for the tiny DalleBart, a tiny BART tokenizer and the tiny VQGAN
    (64 codes, like the DalleBart's image vocabulary)."""
    from tests.helpers import tiny

    tok = tiny.bart_tokenizer(tmp_path_factory.mktemp("tok"))
    scan, vq = fixtures / "dallebart_tiny" / "scan", fixtures / "vqgan_jax_tiny"
    return families.LoadArgs(str(scan), str(vq), tokenizer=str(tok))


def test_dallebart_through_the_registry_samples_as_prompt_sampler(family_args):
    from cortex_jax.io import sources
    from cortex_jax.models.vqgm import ClassConditional, PromptConditional

    fam = families.get("dallebart", "prompt")
    model = fam.load(family_args)
    assert isinstance(model, PromptConditional) and not isinstance(model, ClassConditional)
    assert fam.sampling == dalle.SampleConfig(condition_scale=10.0, top_k=50)
    got = model.sample_prompt("a red circle", 4, 5, fam.sampling)
    # what bundle.from_dallebart sampled before the registry: prompt_sampler on the same files
    cfg, p = sources.load_dallebart(family_args.checkpoint)
    tok = sources.load_bart_tokenizer(family_args.tokenizer)
    sample = dalle.prompt_sampler(cfg, p, lambda t: tok(t)["input_ids"], 64, condition_scale=10.0)
    want = sample("a red circle", 4, 5)
    assert got.shape == (4, 4, 4) and len(np.unique(want)) > 1
    np.testing.assert_array_equal(got, want)
    models = fam.bundle(model, fam.sampling)  # explain.bias --dalle's bundle
    np.testing.assert_array_equal(models.sample_named("a red circle", 4, 5), want)
    assert models.class_names == () and models.codebook.shape == (64, 32)


def test_train_generate_writes_a_prompt_dataset(family_args, tmp_path, entry_point):
    from absl import flags

    from cortex_jax.io import shards

    generate = entry_point("train.generate")
    out, prompts = tmp_path / "ds", ["a red circle", "a blue square"]
    a = family_args
    load = ["--checkpoint", a.checkpoint, "--vq-checkpoint", a.vq_checkpoint, "--tokenizer"]
    flags.FLAGS(["train.generate", "--model", "dallebart", *load, a.tokenizer, "--per-class", "4"])
    flags.FLAGS(["train.generate", "--prompts", "|".join(prompts), "--out", str(out)])
    generate.main([])
    ds = shards.TokenDataset.open(out)
    assert ds.meta["prompts"] == ds.class_names == prompts and ds.meta["vqgm"] == "dallebart"
    assert ds.meta["sampling"]["condition_scale"] == 10.0 and ds.meta["grid_size"] == 4
    tokens, labels, _ = ds.arrays()
    assert labels.tolist() == [0] * 4 + [1] * 4
    # write_prompt_dataset's seeds: shard 0's key draws a base, prompt i samples from base + i
    base = int(jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(0), 0), (), 0, 2**30))
    model = families.DALLEBART.load(family_args)
    for i, prompt in enumerate(prompts):
        want = model.sample_prompt(prompt, 4, base + i)
        np.testing.assert_array_equal(tokens[labels == i], want)


def test_a_vqgan_of_another_codebook_is_refused(family_args):
    import dataclasses

    from cortex_jax.io import sources

    cfg, _ = sources.load_dallebart(family_args.checkpoint)
    vq = sources.load_vqgan(family_args.vq_checkpoint).config
    sources.check_dallebart_vqgan(cfg, vq, "d with v")  # the pair it was made with
    for n in (32, 128):
        with pytest.raises(ValueError, match=rf"^d with v: .*image_vocab_size=64 .* n_embed={n};"):
            sources.check_dallebart_vqgan(cfg, dataclasses.replace(vq, n_embed=n), "d with v")
