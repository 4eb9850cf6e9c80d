"""The MaskGIT port against shared/fixtures/maskgit_tiny (made with MaskGIT's own code): encode
indices exact, decodes and transformer logits to float32 tolerance, parallel decoding's
per-iteration sequences exact from the same key; sampling, editing, loading and errors."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cortex_jax.io import folders, sources
from cortex_jax.io.sources import load_vqgan
from cortex_jax.models import maskgit
from tests.helpers import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fx(fixtures):
    return fixtures / "maskgit_tiny"


@pytest.fixture(scope="module")
def io(fx):
    return dict(np.load(fx / "io.npz"))


@pytest.fixture(scope="module")
def model(fx):
    return sources.load_maskgit(fx)


def test_tokenizer_reproduces_maskgit(fx, io):
    tok = load_vqgan(fx / "tokenizer_checkpoint")  # the file; the folder is tested below
    assert isinstance(tok, maskgit.MaskGITTokenizer)
    cfg = json.loads((fx / "config.json").read_text())["vqvae"]
    assert tok.config.channel_multipliers == tuple(cfg["channel_multipliers"])
    assert (tok.config.filters, tok.config.num_res_blocks, tok.config.codebook_size) == (
        cfg["filters"],
        cfg["num_res_blocks"],
        cfg["codebook_size"],
    )
    assert tok.config.image_size == 32 and tok.grid_size == 8  # from the config.json beside it
    np.testing.assert_array_equal(np.asarray(tok.codebook), io["codebook"])
    # The project's pixels are in [-1, 1]: x = 2·(MaskGIT's [0, 1] pixels) − 1.
    ids = np.asarray(tok.encode(io["pixels"] * 2 - 1)).reshape(2, 8, 8)
    np.testing.assert_array_equal(ids, io["encode_indices"])
    dec = (np.asarray(tok.decode_code(io["codes"])) + 1) / 2
    np.testing.assert_allclose(dec, io["decoded"], atol=5e-5)
    rec = (np.asarray(tok.decode_code(io["encode_indices"])) + 1) / 2
    np.testing.assert_allclose(rec, io["reconstructed"], atol=5e-5)
    e = np.asarray(tok.embed(io["codes"]))  # E = codebook rows, as for every VQGAN
    np.testing.assert_array_equal(e, io["codebook"][io["codes"]])


def test_transformer_and_parallel_decode_reproduce_maskgit(model, io):
    c = model.transformer_config
    assert (c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_classes) == (
        75,
        32,
        2,
        4,
        10,
    )
    logits = np.asarray(maskgit.transformer_logits(c, model.transformer_params, io["seq"]))
    np.testing.assert_allclose(logits, io["logits"], atol=2e-5)

    def logits_fn(ids):
        return maskgit.transformer_logits(c, model.transformer_params, ids)[..., : c.codebook_size]

    steps, temperature = int(io["decode_num_iter"]), float(io["decode_choice_temperature"])
    key = jnp.asarray(io["decode_key"])
    out = maskgit.parallel_decode(logits_fn, io["decode_start"], key, steps, temperature)
    np.testing.assert_array_equal(np.asarray(out), io["sampled"])  # every iteration, exactly
    assert (np.asarray(out)[:, -1] != -1).all()  # nothing left masked at the end


def test_sampling_is_per_image_and_editing_keeps_the_rest(model):
    sc = maskgit.SampleConfig(num_iter=8)
    batch = model.sample_tokens([0, 3, 9], jax.random.PRNGKey(4), sc)
    assert batch.shape == (3, 8, 8) and batch.min() >= 0 and batch.max() < 64
    again = model.sample_tokens([0, 3, 9], jax.random.PRNGKey(4), sc)
    np.testing.assert_array_equal(batch, again)
    assert not np.array_equal(batch, model.sample_tokens([0, 3, 9], jax.random.PRNGKey(5), sc))
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:6] = True
    edited = model.edit_tokens(batch, mask, [1, 1, 1], jax.random.PRNGKey(6), sc)
    np.testing.assert_array_equal(edited[:, ~mask], batch[:, ~mask])
    assert edited.min() >= 0 and (edited[:, mask] != batch[:, mask]).any()
    # the ClassConditional interface: resample_region is edit_tokens under another name
    from cortex_jax.models import vqgm

    assert isinstance(model, vqgm.ClassConditional) and isinstance(model, vqgm.ResamplesRegion)
    again = model.resample_region(batch, mask, [1, 1, 1], jax.random.PRNGKey(6), sc)
    np.testing.assert_array_equal(again, edited)


def test_generation_on_eight_devices_matches_one(fx):
    from tests.helpers.devices import run_on

    outs = [run_on(n, "maskgit", str(fx)) for n in (8, 1)]
    assert [o["devices"] for o in outs] == [8, 1] and outs[0]["tokens"] == outs[1]["tokens"]


def test_bad_input_is_refused_in_one_line(fx, model, tmp_path):
    with pytest.raises(ValueError, match="not a MaskGIT tokenizer parameter tree"):
        sources.load_maskgit_tokenizer(fx / "maskgit_checkpoint")
    (tmp_path / "junk_checkpoint").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="is not a MaskGIT checkpoint"):
        sources.read_maskgit_params(tmp_path / "junk_checkpoint", "tokenizer")
    with pytest.raises(ValueError, match=r"class id 10 is outside the model's 10 classes"):
        model.sample_tokens([0, 10], jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="token id 64"):
        model.edit_tokens(np.full((1, 8, 8), 64), np.ones((8, 8), bool), 0, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"grid is 16x16 at image_size 64"):
        sources.load_maskgit(fx, image_size=64)
    with pytest.raises(FileNotFoundError, match="no MaskGIT tokenizer checkpoint"):
        sources.load_maskgit(tmp_path)
    with pytest.raises(ValueError, match=r"pixels span 0..1; expected \[-1, 1\]|pixels span"):
        model.vqgan.encode(np.full((1, 32, 32, 3), 3.0, np.float32))


# The commands as their flags run them, in this process: their start-up is not what this test
# checks (the CLI tests are), and one process compiles the MaskGIT sampler and the IEM once
_run = cli.in_process


@pytest.mark.slow
def test_generate_iem_tis_and_selection_end_to_end(fx, tmp_path):
    from cortex_jax.io import shards
    from cortex_jax.method import tis
    from cortex_jax.models import iem

    gen = ["train.generate", "--model", "maskgit", "--checkpoint", str(fx), "--num-iter", "8"]
    # train and val alike 4 a class (40 grids, one batch shape for the sampler)
    _run(*gen, "--per-class", "4", "--out", str(tmp_path / "train"))
    _run(*gen, "--per-class", "4", "--out", str(tmp_path / "val"), "--seed", "1")
    meta = json.loads((tmp_path / "train" / "meta.json").read_text())
    assert meta["vqgm"] == "maskgit" and meta["codebook_size"] == 64
    assert meta["sampling"] == {"num_iter": 8, "choice_temperature": 4.5}
    _run(
        "train.iem",
        "--config",
        "configs/iem_ce.py:variant=toy",
        f"--config.vqgan={fx}",
        "--config.n_classes=10",
        f"--config.data.train={tmp_path / 'train'}",
        f"--config.data.val={tmp_path / 'val'}",
        "--config.data.generate_if_missing=False",
        "--config.train.epochs=2",
        "--config.train.batch_size=16",
        "--workdir",
        str(tmp_path / "iem"),
    )
    cfg, v, names = folders.read_iem_folder(tmp_path / "iem" / "iem")
    predict = lambda e: iem.predict_fn(cfg)(v["params"], v["batch_stats"], e)
    vq = load_vqgan(fx)
    toks, labels, _ = shards.TokenDataset.open(tmp_path / "val").arrays()
    scores = tis.token_importance(
        predict, vq.embed(toks[:8]), labels[:8], jax.random.PRNGKey(0), n_samples=4
    )
    assert scores.shape == (8, 8, 8) and np.isfinite(np.asarray(scores)).all()
    # (the single-image edit on this VQGAN is Table 5's token_selection row below)
    _run(
        "explain.codebook",
        "--table5",
        "--vqgan",
        str(fx),
        "--iem-checkpoint",
        str(tmp_path / "iem" / "iem"),
        "--dataset",
        str(tmp_path / "val"),
        "--classifier",
        "random:resnet18:10:8",
        "--classifier-size",
        "32",
        "--pairs",
        "class0:class1",
        "--n-images",
        "2",
        "--steps",
        "4",
        "--log-every",
        "2",
        "--maskgit",
        str(fx),
        "--maskgit-iter",
        "8",
        "--out",
        str(tmp_path / "t5"),
    )
    t5 = json.loads((tmp_path / "t5" / "table5.json").read_text())["table"]
    assert {"maskgit_edit/final", "token_selection/final"} <= set(t5)
    assert 0 < t5["maskgit_edit/final"]["tokens_changed"] <= 16  # the centre 4×4 at most
    t5_tokens = json.loads((tmp_path / "t5" / "table5.json").read_text())
    assert t5_tokens["region_tokens"] == 16
