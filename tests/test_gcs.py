"""gs:// paths (issue #25), against a local Cloud Storage emulator started per test
(tests/helpers/gcs.py; skips without the `test` extra's gcp-storage-emulator and gcsfs)."""

import contextlib
import os

import numpy as np
import pytest
from etils import epath

from cortex_jax.core import errors, paths
from cortex_jax.io import shards
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
    c.workdir = "gs://b/run"  # a step that writes local folders only so far
    with pytest.raises(ValueError, match=r"^--config.workdir gs://b/run: explain.sample reads"):
        recipe.sample_level_step(c)
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


@pytest.mark.slow
def test_recipe_generate_to_a_bucket_equals_a_local_run(bucket, tmp_path, monkeypatch):
    """train.generate's recipe step (configs/imagenet.py:runlocal, 1 class, 3 images) with a
    gs:// workdir writes the same files, byte for byte, as with a local one."""
    from configs import imagenet as imagenet_config
    from cortex_jax.experiments import recipe

    monkeypatch.setenv("CORTEX_JAX_CACHE", str(tmp_path / "cache"))
    # One random VQGM for both runs (the same seeded weights either way): the second run reuses
    # the first one's compiled sampler and decoder instead of building them again.
    load, made = recipe.load_vqgm, []
    monkeypatch.setattr(
        recipe, "load_vqgm", lambda c: made[0] if made else made.append(load(c)) or made[0]
    )
    runs = {}
    for name, workdir in (("local", str(tmp_path / "run")), ("gs", f"{bucket}/run")):
        c = imagenet_config.get_config("runlocal")
        c.workdir = workdir
        c.generate.update(classes="10", train=1, val=1, test=1)
        runs[name] = recipe.generate(c)
    assert runs["local"] == runs["gs"] == {"train": 1, "val": 1, "test": 1, "test_png": 1}
    local, remote = _files(tmp_path / "run"), _files(f"{bucket}/run")
    assert sorted(remote) == sorted(local) and "tokens/test/png/0000000.png" in remote
    assert "models/vqgan/flax_model.msgpack" in remote
    for name in local:
        assert remote[name] == local[name], name
