"""Token datasets: shard format, the deterministic per-process reader, reference import."""

import numpy as np
import pytest

from cortex_jax.experiments import generate
from cortex_jax.io import shards
from tests.helpers import tiny


@pytest.fixture
def ds(tmp_path):
    return tiny.make_dataset(tmp_path / "d", 100, 0)  # 3 shards of 40, 40, 20


def test_roundtrip_and_compact_format(ds):
    tokens, labels, masks = ds.arrays()
    assert tokens.dtype == np.uint16 and labels.dtype == np.int32 and masks is None
    assert len(ds) == 100 and tokens.shape == (100, 4, 4)
    assert ds.tokens[0].nbytes == 40 * 16 * 2  # two bytes a token id


def test_reader_deterministic_epochs_cover_all(ds):
    r = shards.BatchReader(ds, 20, seed=3)
    assert r.steps_per_epoch == 5
    epoch0 = np.concatenate([r.batch(s)[1] for s in range(5)])
    again = np.concatenate([shards.BatchReader(ds, 20, seed=3).batch(s)[1] for s in range(5)])
    np.testing.assert_array_equal(epoch0, again)
    _, labels, _ = ds.arrays()
    np.testing.assert_array_equal(np.sort(epoch0), np.sort(labels))  # each row once an epoch
    other = np.concatenate([r.batch(s)[1] for s in range(5, 10)])
    assert not np.array_equal(epoch0, other)  # a new order each epoch


def test_reader_resumes_mid_epoch_and_splits_processes(ds):
    full = shards.BatchReader(ds, 20, seed=1)
    resumed = shards.BatchReader(ds, 20, seed=1)
    np.testing.assert_array_equal(full.batch(7)[0], resumed.batch(7)[0])
    halves = [shards.BatchReader(ds, 20, 1, True, p, 2).batch(7) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), full.batch(7)[0])
    np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), full.batch(7)[1])


def test_reader_rejects_bad_batches(ds):
    with pytest.raises(ValueError, match="divisible by the 3 processes"):
        shards.BatchReader(ds, 20, process_count=3)
    with pytest.raises(ValueError, match="exceeds the 100 examples"):
        shards.BatchReader(ds, 128)


def test_existing_dataset_with_other_meta_refused(ds):
    with pytest.raises(ValueError, match="already holds a different dataset"):
        shards.write_meta(ds.folder, {**ds.meta, "source": "other"})


def test_open_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        shards.TokenDataset.open(tmp_path / "nothing")


def test_import_reference_indices_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    codebook = rng.standard_normal((32, 8)).astype(np.float32)
    ids = rng.integers(0, 32, (3, 4, 4))
    lines = ["filename,label,indices"]
    for i in range(3):
        e = codebook[ids[i]].transpose(2, 0, 1)  # (d, m, m) as the authors store it
        np.save(tmp_path / f"img{i}.npy", e)
        lines.append(f'img{i}.npy,{i % 2},"{ids[i].ravel().tolist()}"')
    (tmp_path / "with.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "without.csv").write_text(
        "\n".join(["filename,label"] + [f"img{i}.npy,{i % 2}" for i in range(3)]) + "\n"
    )
    a = generate.import_reference(tmp_path / "with.csv", tmp_path / "a", ["x", "y"], "ref")
    b = generate.import_reference(
        tmp_path / "without.csv", tmp_path / "b", ["x", "y"], "ref", codebook=codebook
    )
    np.testing.assert_array_equal(a.arrays()[0], ids)
    np.testing.assert_array_equal(b.arrays()[0], ids)
    np.testing.assert_array_equal(a.arrays()[1], [0, 1, 0])
    (tmp_path / "img1.npy").unlink()
    with pytest.raises(FileNotFoundError, match="img1.npy"):
        generate.import_reference(
            tmp_path / "without.csv", tmp_path / "c", ["x", "y"], "ref", codebook=codebook
        )


def test_import_reference_snaps_exactly_where_the_plain_expansion_cannot(tmp_path):
    """Rows far from the origin and close to each other: ‖r‖² + ‖c‖² − 2r·c in float32 loses
    the differences, the snap (selection.nearest_rows) does not."""
    rng = np.random.default_rng(1)
    codebook = (1e3 + 1e-2 * rng.standard_normal((64, 8))).astype(np.float32)
    ids = rng.integers(0, 64, (2, 4, 4))
    lines = ["filename,label"]
    for i in range(2):
        np.save(tmp_path / f"e{i}.npy", codebook[ids[i]].transpose(2, 0, 1))
        lines.append(f"e{i}.npy,{i}")
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    flat = codebook[ids.reshape(-1)]
    plain = ((flat**2).sum(1, keepdims=True) + (codebook**2).sum(1) - 2 * flat @ codebook.T).argmin(
        1
    )
    assert (plain != ids.reshape(-1)).any()  # the case is hard for the expansion
    ds = generate.import_reference(tmp_path / "r.csv", tmp_path / "o", ["x", "y"], "ref", codebook)
    np.testing.assert_array_equal(ds.arrays()[0], ids)
