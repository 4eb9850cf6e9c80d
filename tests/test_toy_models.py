"""The shipped toy models: they load, decode, generate deterministically and recognisably."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from cortex_jax.io import shards
from cortex_jax.models.vqgan import count_params
from cortex_jax.toy import (
    TOY_SAMPLING,
    WEIGHTS_DIR,
    load_toy_judge,
    load_toy_vqgm,
    world,
    write_encoded_dataset,
)
from tests.helpers import cli

# Measured 87.7 % (train.toy report, 700 samples); broken sampling would sit near chance (7 %).
RECOGNITION_THRESHOLD = 0.8
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vqgm():
    return load_toy_vqgm()


@pytest.fixture(scope="module")
def judge():
    return load_toy_judge()


def test_shipped_weights_load_and_are_small(vqgm):
    size = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert size < 12 * 2**20
    assert vqgm.grid_size == 8 and vqgm.vqgan.config.n_embed == 512
    assert vqgm.gpt_config.class_offset == 512
    assert vqgm.gpt_config.n_classes == len(world.CLASS_NAMES)
    assert count_params(vqgm.vqgan.params)[0] > 500_000


def test_reconstruction_is_recognised(vqgm, judge):
    b = world.render_balanced(140, seed=11, class_names=[c.name for c in world.CONCEPTS])
    rec, _ = vqgm.vqgan.reconstruct(b.pixels)
    acc = np.mean(np.argmax(np.asarray(judge(np.clip(rec, -1, 1))), -1) == b.labels)
    assert acc >= 0.9
    assert np.mean(((np.asarray(rec) - b.pixels) / 2) ** 2) < 0.01


def test_masks_line_up_with_decoded_object(vqgm, tmp_path):
    """Encoded red-circle images: decoded patches under the mask are red, the rest are not."""
    ds = write_encoded_dataset(vqgm.vqgan, [world.class_id("red-circle")], 32, tmp_path / "enc")
    tokens, labels, masks = ds.arrays()
    assert masks is not None and masks.shape == tokens.shape == (32, 8, 8)
    rgb = (np.asarray(vqgm.decode(tokens)) + 1) / 2  # (32, 32, 32, 3)
    patches = rgb.reshape(32, 8, 4, 8, 4, 3).mean(axis=(2, 4))  # per token position
    redness = patches[..., 0] - patches[..., 1:].mean(-1)
    assert redness[masks].mean() > 0.5  # object patches decode red
    assert redness[~masks].mean() < 0.15  # background patches do not
    assert np.mean(redness[masks] > 0.3) > 0.85


def test_generation_deterministic_for_seed(vqgm):
    a = vqgm.sample_tokens([0, 5, 15], jax.random.PRNGKey(3), TOY_SAMPLING)
    b = vqgm.sample_tokens([0, 5, 15], jax.random.PRNGKey(3), TOY_SAMPLING)
    c = vqgm.sample_tokens([0, 5, 15], jax.random.PRNGKey(4), TOY_SAMPLING)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (3, 8, 8) and int(a.max()) < 512


@pytest.mark.slow
def test_generated_images_recognised(vqgm, judge):
    names = [c.name for c in world.CONCEPTS]
    ids = np.repeat(np.arange(len(names)), 12)
    toks = vqgm.sample_tokens(ids, jax.random.PRNGKey(2024), TOY_SAMPLING)
    pred = np.argmax(np.asarray(judge(vqgm.decode(toks))), -1)
    assert np.mean(pred == ids) >= RECOGNITION_THRESHOLD


def test_bfloat16_generation_keeps_images_recognisable(vqgm, judge, tmp_path):
    from cortex_jax.experiments.generate import generate_dataset

    n = len(world.CONCEPTS)
    ds = generate_dataset(
        vqgm, range(n), 12, tmp_path / "bf16", 2024, TOY_SAMPLING, 64, dtype="bfloat16"
    )
    assert ds.meta["sampling"]["dtype"] == "bfloat16"
    tokens, labels, _ = ds.arrays()
    assert tokens.max() < vqgm.vqgan.config.n_embed
    pred = np.argmax(np.asarray(judge(vqgm.decode(tokens.astype(np.int32)))), -1)
    assert np.mean(pred == labels) >= RECOGNITION_THRESHOLD
    f32 = generate_dataset(vqgm, range(n), 12, tmp_path / "f32", 2024, TOY_SAMPLING, 64)
    assert "dtype" not in f32.meta["sampling"]
    assert not np.array_equal(f32.arrays()[0], tokens)  # the compute type did change


_run = cli.run


def test_generate_cli_writes_dataset_and_resumes(tmp_path):
    out = tmp_path / "gen"
    args = (
        "train.generate",
        "--classes",
        "red-circle,circle",
        "--per-class",
        "6",
        "--shard-size",
        "4",
        "--out",
        str(out),
        "--png",
    )
    r = _run(*args)
    assert r.returncode == 0, r.stderr
    ds = shards.TokenDataset.open(out)
    tokens, labels, masks = ds.arrays()
    assert tokens.shape == (12, 8, 8) and tokens.dtype == np.uint16 and masks is None
    assert list(labels) == [0] * 6 + [world.class_id("circle")] * 6
    assert (out / "samples.png").exists()
    assert json.loads((out / "meta.json").read_text())["source"] == "generated"
    # A killed run leaves complete shards; the rerun fills in the rest with the same bytes.
    before = (out / "shard-00001.tokens.npy").read_bytes()
    (out / "shard-00001.tokens.npy").unlink()
    (out / "shard-00001.labels.npy").unlink()
    assert _run(*args).returncode == 0
    assert (out / "shard-00001.tokens.npy").read_bytes() == before


def test_generate_cli_encoded_and_errors(tmp_path):
    out = tmp_path / "enc"
    r = _run(
        "train.generate",
        "--source",
        "encoded",
        "--classes",
        "blue-star",
        "--per-class",
        "3",
        "--out",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    assert shards.TokenDataset.open(out).masks is not None
    r = _run("train.generate", "--classes", "blue-stra", "--out", str(tmp_path / "x"))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: unknown toy class 'blue-stra'")
    assert "blue-star" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_train_toy_runlocal_builds_everything(tmp_path):
    r = _run("train.toy", "--config", "configs/toy.py:runlocal", "--workdir", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["stats"]) == {"vqgan", "judge", "prior"}
    rec = report["generated_recognised_by_judge"]
    assert set(rec["per_concept"]) == {c.name for c in world.CONCEPTS}
    assert rec["mean"] == pytest.approx(np.mean(list(rec["per_concept"].values())))
    assert (tmp_path / "samples.png").exists()
    # the folder loads as the shipped weights do (the command itself sampled from it: build()
    # scores its generated images through load_toy_vqgm(workdir), so no second compile here)
    vqgm = load_toy_vqgm(tmp_path)
    assert vqgm.grid_size == 8 and vqgm.gpt_config.n_classes == len(world.CLASS_NAMES)
