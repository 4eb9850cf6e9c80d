"""The LlamaGen port against shared/fixtures/llamagen_tiny (made with LlamaGen's own code): VQ
indices exact, latents, decodes and GPT logits within the fixture's tolerance, greedy CFG
rollouts (with and without cfg_interval) exact, the sampled rollout's filtered probabilities and
KV-cache logits equal at every step; checkpoint layouts, batching invariance and input errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.io import sources
from cortex_jax.models import llamagen
from tests.helpers import torchzip


def close(port, ref, rel=1e-4):
    """The fixture README's check for a float32 port: |port − ref| ≤ rel · max|ref|."""
    port, ref = np.asarray(port), np.asarray(ref)
    assert port.shape == ref.shape
    err, bound = float(np.abs(port - ref).max()), rel * float(np.abs(ref).max())
    assert err <= bound, f"max abs error {err:.3g} > {bound:.3g}"


@pytest.fixture(scope="module")
def fx(fixtures):
    return fixtures / "llamagen_tiny"


@pytest.fixture(scope="module")
def io(fx):
    return dict(np.load(fx / "io.npz"))


@pytest.fixture(scope="module")
def model(fx):
    return sources.load_llamagen(fx / "gpt_tiny.pt", fx / "vq_tiny.pt", config=fx / "config.json")


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def _greedy(io, **kw):
    return llamagen.SampleConfig(float(io["cfg_scale"]), top_k=0, sample_logits=False, **kw)


def test_tokenizer_reproduces_llamagen(fx, io):
    vq = sources.load_vqgan(fx / "vq_tiny.pt")  # as load_vqgan takes MaskGIT's and taming's
    assert isinstance(vq, llamagen.LlamaGenTokenizer)
    args = json.loads((fx / "config.json").read_text())["vq"]["model_args"]
    c = vq.config
    assert (c.codebook_size, c.codebook_embed_dim, c.z_channels, c.ch) == (
        args["codebook_size"],
        args["codebook_embed_dim"],
        args["z_channels"],
        32,
    )
    assert list(c.encoder_ch_mult) == args["encoder_ch_mult"] and c.num_res_blocks == 2
    assert c.image_size == 256 and vq.grid_size == 64  # not stored: the released default
    vq = sources.load_llamagen_tokenizer(fx / "vq_tiny.pt", image_size=32)
    close(vq.encode_latents(io["pixels"]), io["vq_z_e"])
    ids = np.asarray(vq.encode(io["pixels"])).reshape(io["vq_indices"].shape)
    sure = io["vq_index_margin"] > 1e-5
    assert sure.mean() > 0.99
    np.testing.assert_array_equal(ids[sure], io["vq_indices"][sure])
    e = np.asarray(vq.embed(io["vq_indices"]))  # E = the normalised codebook rows on the grid
    close(e, io["vq_quant"])
    np.testing.assert_allclose(np.linalg.norm(np.asarray(vq.codebook), axis=1), 1.0, atol=1e-6)
    close(vq.decode(e), io["vq_recon"])
    codes = np.concatenate([io["vq_indices"], io["vq_random_codes"]])  # one decoder compile
    decoded = np.asarray(vq.decode_code(codes))
    close(decoded[:4], io["vq_recon"])
    close(decoded[4:], io["vq_random_decoded"])
    px = vq.decode_pixels(codes)
    np.testing.assert_array_equal(px, np.clip(decoded, -1, 1))


def test_gpt_logits_reproduce_llamagen(model, io):
    c = model.gpt_config
    assert (c.dim, c.n_layer, c.n_head, c.ffn_hidden, c.num_classes, c.block_size) == (
        64,
        2,
        4,
        256,
        10,
        64,
    )
    labels, tokens, scale = io["gpt_labels"], io["gpt_tokens"], float(io["cfg_scale"])
    cond = model.logits(labels, tokens)
    assert cond.shape == (2, 65, 64)
    close(cond, io["gpt_logits_cond"])
    null = np.full_like(labels, int(io["gpt_null_label"]))
    close(llamagen.gpt_logits(c, model.gpt_params, null, tokens), io["gpt_logits_uncond"])
    close(model.logits(labels, tokens.reshape(2, 8, 8), cfg_scale=scale), io["gpt_logits_cfg"])


@pytest.mark.parametrize("case", ["greedy", "greedy_cfgint"])
def test_greedy_cfg_rollouts_are_exact(model, io, case):
    kw = {"cfg_interval": int(io["greedy_cfgint_interval"])} if case == "greedy_cfgint" else {}
    toks, step_logits = llamagen.rollout(
        model.gpt_config,
        model.gpt_params,
        io["gpt_labels"],
        jax.random.PRNGKey(0),
        _greedy(io, **kw),
    )
    # exact up to the first near tie (none in this fixture: min margin 0.013)
    tied = io[f"{case}_margin"] < 1e-3
    upto = int(np.argmax(tied.any(0))) if tied.any() else toks.shape[1]
    assert upto == 64
    np.testing.assert_array_equal(toks[:, :upto], io[f"{case}_tokens"][:, :upto])
    close(step_logits, io[f"{case}_step_logits"])
    grids = model.sample_tokens(
        io["gpt_labels"], jax.random.PRNGKey(0), top_k=0, sample_logits=False, **kw
    )
    np.testing.assert_array_equal(grids.reshape(2, 64), toks)


def _reference_probs(logits: np.ndarray, temperature: float, top_k: int, top_p: float):
    """LlamaGen's sample() filtering, written out independently in numpy (float64)."""
    out = []
    for row in logits.reshape(-1, logits.shape[-1]).astype(np.float64):
        x = row / max(temperature, 1e-5)
        x = np.where(x < np.sort(x)[-top_k], -np.inf, x)  # ties with the k-th are kept
        order = np.argsort(-x, kind="stable")
        p = np.exp(x[order] - x[order][0])
        remove = np.cumsum(p / p.sum()) > top_p
        remove[1:], remove[0] = remove[:-1].copy(), False  # the first crossing token stays
        x[order[remove]] = -np.inf
        e = np.exp(x - x.max())
        out.append(e / e.sum())
    return np.asarray(out).reshape(logits.shape)


def test_sampled_rollout_draws_from_llamagens_probabilities(model, io):
    sc = llamagen.SampleConfig(
        float(io["cfg_scale"]),
        temperature=float(io["sample_temperature"]),
        top_k=int(io["sample_top_k"]),
        top_p=float(io["sample_top_p"]),
    )
    logits = io["sample_step_logits"]
    ours = np.asarray(jax.nn.softmax(llamagen.sampling_logits(jnp.asarray(logits), sc), axis=-1))
    ref = _reference_probs(logits, sc.temperature, sc.top_k, sc.top_p)
    np.testing.assert_array_equal(ours > 0, ref > 0)  # the same tokens survive every step
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    np.testing.assert_allclose(ours, io["sample_step_probs"], atol=1e-6)
    assert ((ref > 0).sum(-1) < sc.top_k).any()  # top-p bites after top-k somewhere
    # the KV-cache path, teacher-forced with their sampled tokens, sees their step logits
    _, step_logits = llamagen.rollout(
        model.gpt_config,
        model.gpt_params,
        io["gpt_labels"],
        jax.random.PRNGKey(0),
        sc,
        forced_tokens=io["sample_tokens"],
    )
    close(step_logits, logits)


def test_sampling_is_per_image_whatever_the_batch(model):
    key = jax.random.PRNGKey(3)
    opts = dict(cfg_scale=2.0, top_k=16, temperature=1.5)
    batch = model.sample_tokens([4, 7], key, **opts)
    assert batch.shape == (2, 8, 8) and batch.min() >= 0 and batch.max() < 64
    alone = model.sample_tokens([7], jax.random.fold_in(key, 1)[None], **opts)
    np.testing.assert_array_equal(alone[0], batch[1])  # image 1 with its own key, by itself
    first = model.sample_tokens([4], key, **opts)  # image 0 of a batch of one: fold_in(key, 0)
    np.testing.assert_array_equal(first[0], batch[0])
    assert not np.array_equal(model.sample_tokens([4, 7], jax.random.PRNGKey(4), **opts), batch)


@pytest.mark.slow
def test_sampling_on_eight_devices_matches_one(fx):
    from tests.helpers.devices import run_on

    outs = [run_on(n, "llamagen", str(fx)) for n in (8, 1)]
    assert [o["devices"] for o in outs] == [8, 1] and outs[0]["tokens"] == outs[1]["tokens"]


def _write_state_dict(path, state_dict):
    """A bare torch.save state dict (the XXL/3B release layout), written without torch."""
    tensors, storages = {}, {}
    for i, (name, a) in enumerate(state_dict.items()):
        a = np.ascontiguousarray(a, np.float32)
        stride = [int(s // 4) for s in a.strides] if a.ndim else []
        tensors[name] = (str(i), np.float32, 0, list(a.shape), stride, a.size)
        storages[str(i)] = a.ravel()
    return torchzip.write(path, tensors, storages)


def test_checkpoint_layouts_and_bad_files(fx, io, model, tmp_path):
    from cortex_jax.io import torch_pickle

    sd = sources.unwrap_llamagen_checkpoint(torch_pickle.read_torch_file(fx / "gpt_tiny.pt"), "gpt")
    for wrapper in ("model", "module", "state_dict"):
        assert (
            sources.unwrap_llamagen_checkpoint({wrapper: sd, "epoch": 3}, "x").keys() == sd.keys()
        )
    bare = _write_state_dict(tmp_path / "bare.pt", sd | {"freqs_cis": np.zeros((65, 8, 2))})
    m = sources.load_llamagen(bare, fx / "vq_tiny.pt", config={"n_head": 4}, image_size=32)
    np.testing.assert_array_equal(
        m.logits(io["gpt_labels"], io["gpt_tokens"]),
        model.logits(io["gpt_labels"], io["gpt_tokens"]),
    )
    bad = sd | {"layers.1.attention.wo.weight": np.zeros((64, 63), np.float32)}
    with pytest.raises(
        ValueError,
        match=r"layers\.1\.attention\.wo\.weight has shape \(64, 63\); expected \(64, 64\)",
    ) as e:
        sources.load_llamagen(
            _write_state_dict(tmp_path / "bad.pt", bad), fx / "vq_tiny.pt", config={"n_head": 4}
        )
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="match no preset"):
        sources.load_llamagen(bare, fx / "vq_tiny.pt")
    with pytest.raises(ValueError, match="config says dim=768 but the checkpoint has 64"):
        sources.load_llamagen(bare, fx / "vq_tiny.pt", config="GPT-B")
    with pytest.raises(ValueError, match="is the tokenizer"):
        sources.load_llamagen(fx / "vq_tiny.pt", fx / "gpt_tiny.pt")
    with pytest.raises(ValueError, match="not a LlamaGen tokenizer"):
        sources.load_llamagen_tokenizer(fx / "gpt_tiny.pt")
    with pytest.raises(ValueError, match="image_size 30 is not a multiple of the tokenizer's 4"):
        sources.load_llamagen(
            fx / "gpt_tiny.pt", fx / "vq_tiny.pt", config={"n_head": 4}, image_size=30
        )


def test_bad_input_is_refused_in_one_line(model, io):
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"class id 10 is outside the model's 10 classes"):
        model.sample_tokens([0, 10], key)
    with pytest.raises(ValueError, match=r"tokens have shape \(2, 63\)"):
        model.logits(io["gpt_labels"], io["gpt_tokens"][:, :63])
    with pytest.raises(ValueError, match="token id 64"):
        model.logits(io["gpt_labels"], np.full((2, 64), 64))
    with pytest.raises(ValueError, match=r"class ids have shape \(2, 1\)"):
        model.logits(io["gpt_labels"][:, None], io["gpt_tokens"])
    with pytest.raises(ValueError, match="top_p=0"):
        model.sample_tokens([0], key, top_p=0.0)


def test_bfloat16_gpt_stays_near_float32(fx, io):
    m = sources.load_llamagen(
        fx / "gpt_tiny.pt", fx / "vq_tiny.pt", config=fx / "config.json", dtype=jnp.bfloat16
    )
    close(m.logits(io["gpt_labels"], io["gpt_tokens"]), io["gpt_logits_cond"], rel=5e-2)


@pytest.mark.slow
def test_train_generate_writes_llamagen_token_datasets(fx, model, tmp_path):
    from cortex_jax.io import shards
    from tests.helpers import cli

    gpt, vq = str(fx / "gpt_tiny.pt"), str(fx / "vq_tiny.pt")
    out = tmp_path / "ds"
    cli.run(
        *("train.generate", "--model", "llamagen", "--checkpoint", gpt, "--vq-checkpoint", vq),
        *("--gpt-config", str(fx / "config.json"), "--classes", "class0,class3"),
        *("--per-class", "2", "--top-k", "16", "--out", str(out)),
        check=True,
    )
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["vqgm"], meta["codebook_size"], meta["grid_size"]) == ("llamagen", 64, 8)
    assert meta["sampling"] | {"top_k": 16, "cfg_scale": 4.0, "top_p": 1.0} == meta["sampling"]
    toks, labels, _ = shards.TokenDataset.open(out).arrays()
    assert labels.tolist() == [0, 0, 3, 3]
    shard_key = jax.random.fold_in(jax.random.PRNGKey(0), 0)  # shard 0 of seed 0
    np.testing.assert_array_equal(toks, model.sample_tokens(labels, shard_key, top_k=16))
    r = cli.run(
        "train.generate", "--model", "llamagen", "--checkpoint", gpt, "--out", str(tmp_path / "x")
    )
    cli.one_line_error(r, "--vq-checkpoint VQ.pt", status=1)


def test_load_vqgan_still_reads_a_taming_pt(fixtures, tmp_path):
    """The .pt branch now sniffs LlamaGen's naming; taming's state dicts keep their path."""
    from cortex_jax.io.torch_pickle import read_state_dict
    from cortex_jax.models.vqgan import VQGAN

    sd = read_state_dict(fixtures / "taming_tiny" / "state_dict.npz")
    vq = sources.load_vqgan(_write_state_dict(tmp_path / "taming.pt", sd))
    assert type(vq) is VQGAN and vq.config.n_embed == sd["quantize.embedding.weight"].shape[0]


@pytest.mark.parametrize(
    "preset, millions",
    [("GPT-B", 111), ("GPT-L", 343), ("GPT-XL", 775), ("GPT-XXL", 1411), ("GPT-3B", 3097)],
)
def test_released_sizes_and_their_configs_read_back_from_shapes(preset, millions):
    """LlamaGen's README sizes (111M … 3.1B) pin the SwiGLU width rule; a release's shapes alone
    give back its config, the heads from the preset of the same width and depth."""
    from cortex_jax.io import convert

    cfg = llamagen.GPTConfig(**llamagen.GPT_PRESETS[preset], block_size=24 * 24)
    shapes = llamagen.gpt_param_shapes(cfg)
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert round(n / 1e6) == millions
    assert convert.infer_llamagen_gpt_config(shapes, {"block_size": 576}) == cfg
    if preset == "GPT-B":  # and the tokenizer: vq_ds16_c2i is 72M
        vq = llamagen.tokenizer_param_shapes(llamagen.TokenizerConfig())
        assert round(sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(vq)) / 1e6) == 72


def test_llamagen_satisfies_the_class_conditional_interface(model):
    from cortex_jax.models import vqgm

    assert isinstance(model, vqgm.ClassConditional)
    assert isinstance(model, vqgm.Encodes) and isinstance(model, vqgm.ResamplesRegion)
    grids = model.sample_tokens([1], jax.random.PRNGKey(0), llamagen.SampleConfig(top_k=16))
    assert model.encode(model.decode(grids)).shape == (1, 8, 8)


def test_resample_region_keeps_the_rest_and_samples_the_region_given_the_prefix(model):
    """Greedy, so every re-drawn token is checkable: it is the argmax of the CFG logits the
    model gives, teacher-forced, on the returned grid itself (prefix and kept tokens fed as
    they stand); positions outside the region are the base's."""
    greedy = llamagen.SampleConfig(2.0, top_k=0, sample_logits=False)
    key = jax.random.PRNGKey(5)
    base = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (2, 8, 8), 0, 64), np.int32)
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    out = model.resample_region(base, mask, [2, 6], key, greedy)
    np.testing.assert_array_equal(out[:, ~mask], base[:, ~mask])
    assert (out[:, mask] != base[:, mask]).any()
    chosen = model.logits([2, 6], out, cfg_scale=2.0)[:, :64].argmax(-1).reshape(2, 8, 8)
    np.testing.assert_array_equal(out[:, mask], chosen[:, mask])
    # a suffix region from a greedy rollout's own prefix gives that rollout back
    full = model.sample_tokens([2, 6], key, greedy)
    suffix = np.zeros((8, 8), bool)
    suffix[5:] = True
    np.testing.assert_array_equal(
        model.resample_region(np.where(suffix, base, full), suffix, [2, 6], key, greedy), full
    )
    with pytest.raises(ValueError, match="mask has shape"):
        model.resample_region(base, mask[:4], [2, 6], key)
