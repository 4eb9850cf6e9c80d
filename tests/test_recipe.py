"""The ImageNet recipe (configs/imagenet.py): config wiring, and the whole dry run on 8 devices."""

import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from configs import imagenet as imagenet_config
from cortex_jax.experiments import recipe
from cortex_jax.io import shards
from tests.helpers import cli

REPO = Path(__file__).resolve().parents[1]


def test_config_paper_settings_and_workdir_override():
    c = imagenet_config.get_config(None)
    assert (c.generate.train, c.generate.val, c.generate.test) == (1000, 300, 50)
    assert (c.generate.top_k, c.generate.temperature) == (250, 1.0)
    assert (c.sample.n, c.sample.k, c.sample.n_samples) == (20, 100, 20)
    assert c.codebook.steps == 5000 and c.codebook.pairs[0] == (10, 20)
    assert (10, 20) in c.codebook.pairs and all(s != 15 for s, _ in c.codebook.pairs)
    assert c.n_classes == 1000 and c.train.batch_size == 256 and c.train.epochs == 80
    assert c.settings == "paper" and c.train.optimizer == "adam_step"
    te = imagenet_config.get_config("iem=te")
    assert (te.train.optimizer, te.train.learning_rate, te.train.weight_decay) == (
        "adamw_cosine",
        1e-3,
        1e-4,
    )
    assert te.model.attention_dropout == 0.2 and te.train.dtype == "bfloat16"
    authors = imagenet_config.get_config("iem=te,settings=authors")
    # the authors' train.py trains Net4 like the others: Adam, step decay, float32, batch 512,
    # and Net4's attention dropout is its one dropout rate (the default, None → 0.2)
    assert authors.train.batch_size == 512 and "attention_dropout" not in authors.model
    assert (authors.train.optimizer, authors.train.dtype) == ("adam_step", "float32")
    from cortex_jax.models.iem import IEMConfig

    assert IEMConfig("te", 1000, **authors.model).attention_rate == 0.2
    with pytest.raises(ValueError, match="unknown settings 'toy' for variant=imagenet"):
        imagenet_config.get_config("settings=toy")
    from configs import iem_base

    toy_te = iem_base.get_config("te", "variant=toy")  # what the shipped toy TE was trained with
    assert toy_te.settings == "toy" and (toy_te.train.learning_rate, toy_te.train.batch_size) == (
        5e-4,
        128,
    )
    c.workdir = "/data/run1"  # every path follows the workdir
    assert c.vqgan == "/data/run1/models/vqgan" and c.data.train == "/data/run1/tokens/train"
    assert c.iem_workdir == "/data/run1/iem_ce"
    r = imagenet_config.get_config("runlocal,iem=te")
    assert r.arch == "te" and r.checkpoint == "random" and r.iem_workdir.endswith("/iem_te")
    assert recipe.n_images(r) == {"train": 132, "val": 44, "test": 44}
    with pytest.raises(ValueError, match="unknown configs/imagenet.py options \\['colour'\\]"):
        imagenet_config.get_config("colour=red")
    with pytest.raises(ValueError, match="unknown IEM 'xe'"):
        imagenet_config.get_config("iem=xe")


def test_class_ids_resolve_names_indices_and_synsets():
    assert recipe.class_ids("goldfinch, 12,n01531178") == [11, 12, 11]
    assert len(recipe.class_ids("all")) == 1000
    with pytest.raises(ValueError, match="goldfinchh"):
        recipe.class_ids("goldfinchh")


def test_missing_checkpoint_names_what_to_download():
    c = imagenet_config.get_config(None)
    c.checkpoint = "/nowhere/last.ckpt"
    with pytest.raises(FileNotFoundError, match="cin_transformer.*checkpoints/last.ckpt"):
        recipe.load_vqgm(c)


def test_token_datasets_record_the_generator_and_refuse_another_one(tmp_path):
    """meta.json's "model" (recipe.vqgm_identity): random weights by their settings, a checkpoint
    by its sha256; a rerun into the same folder with another checkpoint at the same path is
    refused naming the field, before any shard of the other model is added."""
    c = imagenet_config.get_config("runlocal")
    rand = recipe.vqgm_identity(c)
    assert rand["family"] == "imagenet" and rand["random"]["random_vqgan"]["n_embed"] == 64
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights v1")
    c.checkpoint = str(ckpt)
    first = recipe.vqgm_identity(c)
    assert first["checkpoint"]["sha256"] == hashlib.sha256(b"weights v1").hexdigest()
    meta = {"class_names": ["a", "b"], "vqgm": "cin", "grid_size": 16, "codebook_size": 64}
    shards.write_meta(tmp_path / "d", {**meta, "model": first})
    shards.write_meta(tmp_path / "d", {**meta, "model": recipe.vqgm_identity(c)})  # same: reuse
    ckpt.write_bytes(b"weights v2")
    with pytest.raises(ValueError, match=r"different dataset.*\(model.checkpoint.sha256: '"):
        shards.write_meta(tmp_path / "d", {**meta, "model": recipe.vqgm_identity(c)})


_run = functools.partial(cli.run, check=True)  # every command here must succeed


@pytest.mark.slow
def test_runlocal_dry_run_on_8_devices_writes_every_artefact(tmp_path):
    """generate → train IEM (CE, TE) → TIS/T_concept/masking → Table 5 → tables, each the
    documented command, with 8 fake devices; then a restart rewrites only what was deleted. (RE
    trains through the same command: its config is checked above, its 8-device training in
    test_training; here its Table 1 row must say it was not run.)"""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu"
    )
    w = tmp_path / "run"
    cfg = lambda extra="": [
        f"--config=configs/imagenet.py:runlocal{extra}",
        f"--config.workdir={w}",
    ]
    _run("train.generate", *cfg(), env=env)
    for split, n in (("train", 132), ("val", 44), ("test", 44)):
        ds = shards.TokenDataset.open(w / "tokens" / split)
        tokens, labels, _ = ds.arrays()
        assert tokens.shape == (n, 16, 16) and tokens.max() < 64
        assert sorted(set(labels.tolist())) == list(range(10, 21))
        assert ds.meta["sampling"] == {"temperature": 1.0, "top_k": 20, "top_p": 1.0}
    pngs = sorted((w / "tokens" / "test" / "png").glob("*.png"))
    assert len(pngs) == 44 and pngs[0].name == "0000000.png"
    assert (w / "models" / "vqgan" / "flax_model.msgpack").exists()

    for arch in ("ce", "te"):
        _run("train.iem", *cfg(f",iem={arch}"), env=env)
        assert (w / f"iem_{arch}" / "iem" / "config.json").exists()
        lines = (w / f"iem_{arch}" / "metrics.jsonl").read_text().splitlines()
        assert any("val_top1" in json.loads(x) for x in lines)

    r = _run("explain.sample", *cfg(",iem=ce"), env=env)
    assert "CE: masking T_concept" in r.stdout
    tis_files = sorted((w / "sample_ce" / "tis").glob("tis-*.npy"))
    assert len(tis_files) == 5  # one per training shard (132 images, shards of 32)
    tis = np.concatenate([np.load(f) for f in tis_files])
    assert tis.dtype == np.float32 and tis.shape == (132, 16, 16) and np.isfinite(tis).all()
    rep = json.loads((w / "sample_ce" / "report.json").read_text())
    assert len(rep["concepts"]) == 11 and rep["test_images"] == 44
    row = rep["concepts"]["10"]
    assert len(row["cortex"]) == 10 and "accuracy_change" in row["masking_cortex"]
    assert rep["image_level_curve"]["n"] == [1, 5, 10]
    assert rep["concept_names"]["11"] == "goldfinch"
    # the same files as the toy study's (one writer), the Figure 3 grid of shown_concepts classes
    assert {p.name for p in (w / "sample_ce").iterdir()} == {"tis", "test_tis", *cli.SAMPLE_FILES}
    assert Image.open(w / "sample_ce" / "top_tokens.png").size[0] > 100
    assert "goldfinch,cortex,1," in (w / "sample_ce" / "token_sets.csv").read_text()

    # the README's flagship command on the recipe's layout, the one documented path
    flagship = ("--vqgan", str(w / "models/vqgan"), "--iem-checkpoint", str(w / "iem_ce/iem"))
    png = str(pngs[0])
    r = _run(
        "explain.codebook", "--concept", "goldfinch", *flagship, "--from-image", png,
        "--steps", "10", "--log-every", "5", "--out", str(tmp_path / "flagship"), env=env,
    )  # fmt: skip
    assert r.stdout.startswith("goldfinch: f_target ")

    _run("explain.codebook", *cfg(), env=env)
    t5 = json.loads((w / "table5" / "table5.json").read_text())
    assert t5["n_images"] == 4 and t5["region_tokens"] == 16
    assert set(t5["table"]) == {
        "random_tokens/start",
        "token_selection/final",
        "token_selection/best",
        "token_selection_from_image/final",
        "token_selection_from_image/best",
        "embedding_optimisation/final",
        "embedding_optimisation/best",
    }

    # The atlas of the recipe's workdir: one page per class, the size stated in the README.
    r = _run("explain.atlas", *cfg(",iem=ce"), env=env)
    assert (w / "atlas" / "index.html").is_file() and "(11 concepts," in r.stdout
    assert len(list((w / "atlas" / "concepts").glob("*.html"))) == 11
    print(r.stdout.strip())  # the size, for the README

    r = _run("explain.report", *cfg(), env=env)
    text = (w / "tables.md").read_text()
    assert r.stdout.strip() == text.strip()
    for needle in (
        "Table 1",
        "| CE |",
        "| TE |",
        "CORTEX CE",
        "frequency baseline",
        "token_selection/final",
        "53.07",
    ):
        assert needle in text, needle
    assert "| CORTEX RE | not run" in text  # explain.sample ran for CE only
    tables = json.loads((w / "tables.json").read_text())
    rows = [json.loads(x) for x in (w / "iem_te" / "metrics.jsonl").read_text().splitlines()]
    best_row = min((r for r in rows if "val_loss" in r), key=lambda r: r["val_loss"])
    assert tables["table1"]["te"]["val_top1"] == best_row["val_top1"]  # the best-loss row
    assert tables["table1"]["re"] is None and "| RE | not run | not run |" in text
    assert tables["table2"]["re"] is None

    # restart: finished work is skipped, deleted work is redone byte for byte
    shard = w / "tokens" / "train" / "shard-00003.tokens.npy"
    before = shard.read_bytes()
    keep = w / "tokens" / "train" / "shard-00000.tokens.npy"
    mtime = keep.stat().st_mtime_ns
    shard.unlink()
    (w / "tokens" / "train" / "shard-00003.labels.npy").unlink()
    pngs[5].unlink()
    tis_files[2].unlink()
    _run("train.generate", *cfg(), env=env)
    assert shard.read_bytes() == before and keep.stat().st_mtime_ns == mtime
    assert pngs[5].exists()
    old = json.loads((w / "sample_ce" / "report.json").read_text())
    _run("explain.sample", *cfg(",iem=ce"), env=env)
    np.testing.assert_array_equal(np.load(tis_files[2]), tis[64:96])
    assert json.loads((w / "sample_ce" / "report.json").read_text()) == old
