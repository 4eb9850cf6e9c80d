"""gs:// paths (issue #25), against a local Cloud Storage emulator started per test
(tests/helpers/gcs.py; skips without the `test` extra's gcp-storage-emulator and gcsfs)."""

import contextlib
import json
import os
import struct

import jax
import numpy as np
import pytest
from etils import epath

from cortex_jax.core import errors, paths, trees
from cortex_jax.io import folders, shards
from tests.helpers import gcs


@pytest.fixture
def bucket():
    with gcs.emulator() as root:
        yield root


def _files(root) -> dict[str, bytes]:
    """Every file under `root` (local or gs://), relative name → bytes."""
    root = epath.Path(root)
    base = os.fspath(root).split("://", 1)[-1]  # fsspec's walk names folders without gs://
    out = {}
    for dirpath, _, names in root.walk():
        for name in names:
            rel = os.path.relpath(os.path.join(os.fspath(dirpath).split("://", 1)[-1], name), base)
            out[rel] = (root / rel).read_bytes()
    return out


def test_unsupported_urls_are_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^--out s3://b/x: s3:// is not supported"):
        paths.of("s3://b/x", "--out")
    with pytest.raises(ValueError, match=r"gs:/b/x: a gs:// URL that lost a '/'.*gs://b/x"):
        paths.of("gs:/b/x")
    assert not paths.is_remote(tmp_path / "a:b") and not paths.is_remote("C:/data")
    with pytest.raises(ValueError, match=r"^--out gs://b/x: this command writes local folders"):
        errors.writable_folder("gs://b/x")
    with pytest.raises(ValueError, match=r"s3:// is not supported"):
        shards.write_meta("s3://b/x", {"class_names": ["a"]})
    from configs import imagenet as imagenet_config
    from cortex_jax.experiments import recipe

    c = imagenet_config.get_config("runlocal")
    c.workdir = "s3://b/run"  # refused before any model is built or file written
    with pytest.raises(ValueError, match=r"^--config.workdir s3://b/run: s3:// is not supported"):
        recipe.generate(c)
    for step in (recipe.sample_level_step, recipe.codebook_level_step, recipe.tables, recipe.atlas):
        with pytest.raises(ValueError, match=r"^--config.workdir s3://b/run: s3:// is not"):
            step(c)
    # a command whose writer takes local folders only still says so in one line
    with pytest.raises(ValueError, match=r"^--out gs://b/x: explain.bias writes local folders"):
        folders.check_output("gs://b/x", "explain.bias")
    assert not list(tmp_path.iterdir())  # nothing written anywhere local


def test_token_shards_round_trip_byte_identical(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CORTEX_JAX_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 64, (10, 4, 4)).astype(np.uint16)
    labels = rng.integers(0, 3, 10).astype(np.int32)
    masks = rng.random((10, 4, 4)) < 0.5
    meta = {"class_names": ["a", "b", "c"], "vqgm": "t", "grid_size": 4, "codebook_size": 64}
    for root in (str(tmp_path / "local"), f"{bucket}/ds"):
        shards.write_meta(root, meta)
        shards.write_shard(root, 0, tokens[:6], labels[:6], masks[:6])
        shards.write_shard(root, 1, tokens[6:], labels[6:], masks[6:])
    local, remote = _files(tmp_path / "local"), _files(f"{bucket}/ds")
    assert local == remote and len(remote) == 7  # meta + 2 × (tokens, labels, masks)
    ds = shards.TokenDataset.open(f"{bucket}/ds")
    t, lab, m = ds.arrays()
    np.testing.assert_array_equal(t, tokens)
    np.testing.assert_array_equal(lab, labels)
    np.testing.assert_array_equal(m, masks)
    assert shards.shard_done(f"{bucket}/ds", 1) and not shards.shard_done(f"{bucket}/ds", 2)
    reader = shards.BatchReader(ds, 4, seed=1)  # rows gathered from the cached local copies
    np.testing.assert_array_equal(
        reader.batch(1)[0],
        shards.BatchReader(shards.TokenDataset.open(tmp_path / "local"), 4, 1).batch(1)[0],
    )
    # a second meta with other settings is refused, naming the field
    with pytest.raises(ValueError, match="different dataset.*vqgm: 't' there, 'u' now"):
        shards.write_meta(f"{bucket}/ds", {**meta, "vqgm": "u"})
    # the local copies were checked against the objects' sizes: a short copy is fetched again
    copies = sorted((tmp_path / "cache").rglob("*.npy@*"))
    assert len(copies) == 6
    whole = copies[0].read_bytes()
    copies[0].write_bytes(whole[:-3])
    np.testing.assert_array_equal(shards.TokenDataset.open(f"{bucket}/ds").arrays()[0], tokens)
    assert copies[0].read_bytes() == whole
    # a rewritten object (a new generation) is fetched anew, never served from the old copy
    shards.write_shard(f"{bucket}/ds", 0, tokens[:6] // 2, labels[:6], masks[:6])
    got = shards.TokenDataset.open(f"{bucket}/ds").arrays()[0]
    np.testing.assert_array_equal(got[:6], tokens[:6] // 2)


class Killed(BaseException):
    """The writer's process dying: not an Exception, so gcsfs's clean-up request (which the
    emulator does not implement) is not sent. fsspec's event-loop thread swallows it, so the
    writing call may return: what counts is what the store then shows."""


def _write(url, payload):
    with contextlib.suppress(Killed):
        shards.atomic_save_npy(url, payload)


def test_an_interrupted_upload_leaves_no_object_and_the_old_one_whole(bucket, monkeypatch):
    """A write that dies half-way (a resumable upload failing after its first chunk) is never
    taken for a whole object: the name shows the previous version, or nothing."""
    import gcsfs.core

    url = f"{bucket}/big.npy"
    monkeypatch.setattr(shards, "REMOTE_CHUNK", 2**18)  # chunked upload from 256 KiB
    payload = np.arange(2**17, dtype=np.int32)  # 512 KiB: two chunks
    real = gcsfs.core.upload_chunk
    calls = []

    async def dying(fs, location, data, offset, size, content_type):
        calls.append(offset)
        if offset > 0:
            raise Killed  # like SIGKILL: no handler runs, no clean-up request is sent
        return await real(fs, location, data, offset, size, content_type)

    monkeypatch.setattr(gcsfs.core, "upload_chunk", dying)
    _write(url, payload)
    assert calls == [0, 2**18] and not epath.Path(url).exists()
    monkeypatch.setattr(gcsfs.core, "upload_chunk", real)
    shards.atomic_save_npy(url, payload)
    monkeypatch.setattr(gcsfs.core, "upload_chunk", dying)
    _write(url, payload + 1)
    assert calls[-1] == 2**18  # it died again in its second chunk
    got = np.load(shards.local_copy(url))
    np.testing.assert_array_equal(got, payload)  # the old version, whole


def test_an_output_folder_on_a_bucket_is_owned_as_a_local_one(bucket):
    """The manifest of what a command wrote (folders.claim_output / finish_output) on gs://: an
    interrupted run's objects are its own (dated by the store's clock), a foreign object or
    another command's folder is refused in one line, a rebuild deletes only its own objects."""
    root = f"{bucket}/atlas"
    assert folders.claim_output(root, "explain.atlas", remote_ok=True) == epath.Path(root)
    shards.atomic_write_bytes(f"{root}/img/a.png", b"a")  # then the run is killed
    folders.check_output(root, "explain.atlas", remote_ok=True)  # a rerun may go on
    folders.finish_output(root, "explain.atlas")
    owner = json.loads(epath.Path(root, folders.OWNER_NAME).read_text())
    assert owner == {"command": "explain.atlas", "files": ["img/a.png"], "complete": True}
    with pytest.raises(ValueError, match=r"holds the output of explain.atlas; choose another"):
        folders.check_output(root, "explain.bias", remote_ok=True)
    shards.atomic_write_bytes(f"{root}/notes.txt", b"mine")  # someone's file
    with pytest.raises(ValueError, match=r"holds notes.txt, which explain.atlas did not write"):
        folders.claim_output(root, "explain.atlas", rebuild=True, remote_ok=True)
    epath.Path(root, "notes.txt").unlink()
    folders.claim_output(root, "explain.atlas", rebuild=True, remote_ok=True)
    assert shards.list_files(root) == [folders.OWNER_NAME]  # its own object went, and only it


def test_training_logs_on_a_bucket(bucket):
    """metrics.jsonl and the TensorBoard event file on gs://: lines reach the object when flushed
    (as at each checkpoint), a resumed run drops the lines past its checkpoint, events go whole."""
    from cortex_jax.io import events

    path = f"{bucket}/iem/metrics.jsonl"
    with events.MetricsFile(path) as metrics:
        for step in (1, 2, 3):
            metrics.append({"step": step, "loss": 1.0 / step})
        assert not epath.Path(path).exists()  # not yet uploaded …
        metrics.flush()
        assert len(epath.Path(path).read_text().splitlines()) == 3  # … and now whole
    events.MetricsFile(path, start_step=2).close()  # resumed from the checkpoint of step 2
    assert [json.loads(x)["step"] for x in epath.Path(path).read_text().splitlines()] == [1, 2]
    with events.ScalarLog(f"{bucket}/iem/tensorboard") as log:
        log.write(1, {"step": 1, "loss": 0.5})
    (name,) = shards.list_files(f"{bucket}/iem/tensorboard")
    assert _scalars(epath.Path(bucket, "iem/tensorboard", name).read_bytes()) == [(1, "loss", 0.5)]


def _scalars(event_file: bytes) -> list[tuple[int, str, float]]:
    """(step, tag, value) of every scalar in a TensorBoard event file (TFRecord framing: length,
    its CRC, the Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2

    out, at = [], 0
    while at < len(event_file):
        (n,) = struct.unpack("<Q", event_file[at : at + 8])
        event = event_pb2.Event.FromString(event_file[at + 12 : at + 12 + n])
        out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
        at += 12 + n + 4
    return out


def _restored(checkpoints) -> dict:
    """Each orbax checkpoint step under `checkpoints` (latest/N, best/N) restored as numpy."""
    import orbax.checkpoint as ocp

    out = {}
    for kind in ("latest", "best"):
        with ocp.CheckpointManager(epath.Path(checkpoints) / kind) as manager:
            for step in manager.all_steps():
                tree = manager.restore(step, args=ocp.args.StandardRestore())
                out[f"{kind}/{step}"] = jax.tree.map(np.asarray, tree)
    return out


# Files of the two runs that hold what only one run can know (compared by content instead):
# orbax's checkpoints (random data-file names, commit timestamps: compared restored), the
# TensorBoard event file (its name holds the start time and host, each record its wall time:
# compared as scalars), metrics.jsonl (`images_per_s` is measured: compared without it) and
# train.iem's manifest (it lists those files).
DIFFER = ("iem_ce/checkpoints/", "iem_ce/tensorboard/", "iem_ce/metrics.jsonl")
MANIFEST = "iem_ce/" + folders.OWNER_NAME


@pytest.mark.slow
def test_recipe_in_a_bucket_writes_what_a_local_run_writes(
    bucket, tmp_path, monkeypatch, entry_point
):
    """configs/imagenet.py:runlocal end to end, each step as its command runs it (train.generate,
    train.iem, explain.sample, explain.codebook, explain.report, explain.atlas) with
    --config.workdir=gs://… writes the same files, byte for byte, as with a local workdir (2
    classes, one image per class and split, one training step): every file but those DIFFER
    names, and those hold the same content."""
    from configs import imagenet as imagenet_config
    from cortex_jax.experiments import recipe
    from cortex_jax.models import classifier

    train_iem = entry_point("train.iem")
    monkeypatch.setenv("CORTEX_JAX_CACHE", str(tmp_path / "cache"))
    # the pixel classifiers: a small ResNet's folder, on the bucket for both runs (its name is in
    # report.json and the figures' titles, so it is one name for both)
    net = classifier.ResNetConfig("basic", (1, 1), width=4, image_size=32)
    weights = trees.random_init(lambda: classifier.init_variables(net))
    folders.save_classifier(f"{bucket}/models/classifier", net, weights)

    def config(workdir):
        c = imagenet_config.get_config("runlocal")
        c.workdir = workdir
        c.random_vqgan.update(ch_mult=(1, 2), attn_resolutions=(), resolution=16, n_embed=32)
        c.random_gpt.update(n_embd=16)  # a 8×8 grid of 32 codes from 16×16 images
        c.classifier = c.edit_classifier = f"{bucket}/models/classifier"
        c.classifier_size = 32
        c.generate.update(classes="10,11", train=1, val=1, test=1)
        c.train.update(batch_size=2, epochs=1)
        c.codebook.update(images_per_pair=1, steps=2, log_every=2)
        return c

    for workdir in (str(tmp_path / "run"), f"{bucket}/run"):
        c = config(workdir)
        recipe.generate(c)  # each step as its command (train.generate, …) calls it
        train_iem.run(c, c.iem_workdir)
        recipe.sample_level_step(c)
        recipe.codebook_level_step(c)
        recipe.tables(c)
        recipe.atlas(c)
    local, remote = _files(tmp_path / "run"), _files(f"{bucket}/run")
    same = lambda files: sorted(n for n in files if not n.startswith(DIFFER) and n != MANIFEST)
    assert same(remote) == same(local)
    for name in ("iem_ce/iem/flax_model.msgpack", "sample_ce/tis/tis-00000.npy",
                 "sample_ce/top_tokens.png", "table5/table5.json", "tables.md",
                 "atlas/index.html", "atlas/concepts/goldfinch.html"):  # fmt: skip
        assert name in remote
    for name in same(local):
        assert remote[name] == local[name], name
    # the files that differ hold the same content
    assert _restored(f"{bucket}/run/iem_ce/checkpoints").keys() == {"latest/1", "best/1"}
    jax.tree.map(
        np.testing.assert_array_equal,
        _restored(tmp_path / "run/iem_ce/checkpoints"),
        _restored(f"{bucket}/run/iem_ce/checkpoints"),
    )
    (ev_local,), (ev_remote,) = ([n for n in f if "tfevents" in n] for f in (local, remote))
    scalars = [
        [x for x in _scalars(f[n]) if x[1] != "images_per_s"]
        for f, n in ((local, ev_local), (remote, ev_remote))
    ]
    assert scalars[0] == scalars[1] and any(tag == "val_top1" for _, tag, _ in scalars[1])
    metrics = [
        [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in f[n].splitlines()]
        for f, n in ((local, "iem_ce/metrics.jsonl"), (remote, "iem_ce/metrics.jsonl"))
    ]
    assert metrics[0] == metrics[1] and "val_loss" in metrics[1][-1]
    owners = [json.loads(f[MANIFEST]) for f in (local, remote)]
    for owner in owners:
        owner["files"] = [n for n in owner["files"] if not ("iem_ce/" + n).startswith(DIFFER)]
    assert owners[0] == owners[1] and "iem/flax_model.msgpack" in owners[1]["files"]
    # the IEM names its VQGAN as the folder beside it, wherever the workdir is
    assert json.loads(remote["iem_ce/iem/config.json"])["vqgan"] == "../../models/vqgan"
    # a rerun on the bucket resumes: training from its last checkpoint (nothing left to do), the
    # atlas rebuilt over its own files; the same bytes again
    c = config(f"{bucket}/run")
    train_iem.run(c, c.iem_workdir)
    recipe.atlas(c)
    again = _files(f"{bucket}/run")
    assert same(again) == same(remote)
    assert all(again[n] == remote[n] for n in same(remote))
