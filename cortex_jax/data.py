"""Token datasets: uint16 token grids + int32 labels in shards, with a small JSON of metadata.

Layout of a dataset folder:
  meta.json                 class names, the VQGM it came from, grid size, codebook size, source
  shard-00000.tokens.npy    (n, m, m) uint16 token ids
  shard-00000.labels.npy    (n,) int32 class ids
  shard-00000.masks.npy     (n, m, m) bool ground-truth object positions (encoded toy data only)

E is never stored: 256 uint16 ids are 512 bytes an image, against 256 KiB for a float32 E. Each
shard is written to a temporary name and renamed, so a shard on disk is always whole, and a
restarted writer skips the shards that exist.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

META_NAME = "meta.json"


def shard_path(folder: Path, index: int, kind: str) -> Path:
    return Path(folder) / f"shard-{index:05d}.{kind}.npy"


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save that never leaves a partial file behind."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(Path(path), buf.getvalue())


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Writes a temporary sibling, fsyncs it and renames it over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_meta(folder: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Writes meta.json, or checks that an existing one describes the same dataset."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / META_NAME
    if path.exists():
        old = json.loads(path.read_text())
        if old != json.loads(json.dumps(meta)):
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise ValueError(
                f"{folder} already holds a different dataset (meta.json differs in {diff}); "
                f"choose another --out or delete it"
            )
        return
    atomic_write_bytes(path, json.dumps(meta, indent=2).encode())


def shard_done(folder: str | os.PathLike, index: int) -> bool:
    return shard_path(Path(folder), index, "labels").exists()


def write_shard(
    folder: str | os.PathLike,
    index: int,
    tokens: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None = None,
) -> None:
    """Writes one shard; labels last, so its presence marks the shard complete."""
    folder = Path(folder)
    if tokens.ndim != 3 or tokens.shape[1] != tokens.shape[2]:
        raise ValueError(f"tokens have shape {tokens.shape}; expected (n, m, m)")
    if tokens.max(initial=0) > np.iinfo(np.uint16).max or tokens.min(initial=0) < 0:
        raise ValueError("token ids do not fit uint16")
    if len(labels) != len(tokens):
        raise ValueError(f"{len(labels)} labels for {len(tokens)} token grids")
    atomic_save_npy(shard_path(folder, index, "tokens"), tokens.astype(np.uint16))
    if masks is not None:
        atomic_save_npy(shard_path(folder, index, "masks"), masks.astype(bool))
    atomic_save_npy(shard_path(folder, index, "labels"), np.asarray(labels, np.int32))


@dataclasses.dataclass(frozen=True)
class TokenDataset:
    """A dataset folder opened for reading (shards memory-mapped).

    Attributes: folder, meta, tokens (list of (n, m, m) uint16 arrays per shard), labels, masks
    (None unless every shard has masks).
    """

    folder: Path
    meta: dict[str, Any]
    tokens: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    masks: Sequence[np.ndarray] | None

    @classmethod
    def open(cls, folder: str | os.PathLike) -> TokenDataset:
        folder = Path(folder)
        meta_path = folder / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(f"token dataset metadata not found: {meta_path}")
        meta = json.loads(meta_path.read_text())
        shards = sorted(int(p.name[6:11]) for p in folder.glob("shard-*.labels.npy"))
        if not shards:
            raise FileNotFoundError(f"{folder} has no complete shard (shard-*.labels.npy)")
        tokens = [np.load(shard_path(folder, i, "tokens"), mmap_mode="r") for i in shards]
        labels = [np.load(shard_path(folder, i, "labels"), mmap_mode="r") for i in shards]
        mask_files = [shard_path(folder, i, "masks") for i in shards]
        masks = (
            [np.load(p, mmap_mode="r") for p in mask_files]
            if all(p.exists() for p in mask_files)
            else None
        )
        return cls(folder, meta, tokens, labels, masks)

    def __len__(self) -> int:
        return int(sum(len(x) for x in self.labels))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All shards concatenated into memory: (tokens, labels, masks or None)."""
        masks = np.concatenate(self.masks) if self.masks is not None else None
        return np.concatenate(self.tokens), np.concatenate(self.labels), masks


class BatchReader:
    """Deterministic, resumable, per-process batches from a TokenDataset.

    Batch `step` is a pure function of (seed, step): epoch = step // steps_per_epoch, the epoch's
    order is a permutation seeded by (seed, epoch), and process p of P reads rows
    [p·B/P, (p+1)·B/P) of the global batch B. Resuming at step s is just reading from step s, and
    every process reads only its own rows (gathered from the memory-mapped shards).
    """

    def __init__(
        self,
        dataset: TokenDataset,
        global_batch: int,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        n = len(dataset)
        if global_batch <= 0 or global_batch % process_count:
            raise ValueError(
                f"global batch {global_batch} must be positive and divisible by the "
                f"{process_count} processes"
            )
        if global_batch > n:
            raise ValueError(f"global batch {global_batch} exceeds the {n} examples in the dataset")
        self.dataset, self.global_batch, self.seed, self.shuffle = (
            dataset,
            global_batch,
            seed,
            shuffle,
        )
        self.local_batch = global_batch // process_count
        self.process_index = process_index
        self.steps_per_epoch = n // global_batch  # the last partial batch of an epoch is dropped
        self._offsets = np.cumsum([0] + [len(x) for x in dataset.labels])
        self._order_cache: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = int(self._offsets[-1])
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(n)
                if self.shuffle
                else np.arange(n)
            )
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self._offsets, rows, side="right") - 1
        tokens = np.empty((len(rows), *self.dataset.tokens[0].shape[1:]), np.uint16)
        labels = np.empty(len(rows), np.int32)
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            local = rows[sel] - self._offsets[s]
            tokens[sel] = self.dataset.tokens[s][local]
            labels[sel] = self.dataset.labels[s][local]
        return tokens, labels

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's (tokens (local_batch, m, m) uint16, labels (local_batch,) int32)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        rows = self._order(epoch)[i * self.global_batch : (i + 1) * self.global_batch]
        lo = self.process_index * self.local_batch
        return self._gather(rows[lo : lo + self.local_batch])


def _parse_indices(text: str) -> list[int]:
    return [int(t) for t in text.replace("[", " ").replace("]", " ").replace(",", " ").split()]


def import_reference(
    csv_path: str | os.PathLike,
    out: str | os.PathLike,
    class_names: Sequence[str],
    vqgm: str,
    codebook: np.ndarray | None = None,
    npy_folder: str | os.PathLike | None = None,
    shard_size: int = 65536,
) -> TokenDataset:
    """Converts the authors' layout (a CSV of `filename,label[,indices]` + one float32 .npy E
    (d, m, m) per image) into a token dataset.

    Token ids come from the `indices` column when the CSV has one; otherwise each .npy (in
    `npy_folder`, default: next to the CSV) is snapped to its nearest `codebook` row, which is
    exact since E is made of codebook rows.
    """
    import csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"reference CSV not found: {csv_path}")
    with csv_path.open(newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{csv_path} has no data rows; expected a header and filename,label rows")
    header = [h.strip().lower() for h in rows[0]]
    col_indices = header.index("indices") if "indices" in header else None
    col_label = header.index("label") if "label" in header else 1
    folder = Path(npy_folder) if npy_folder else csv_path.parent
    if col_indices is None and codebook is None:
        raise ValueError(f"{csv_path} has no 'indices' column; pass the VQGAN codebook to snap E")
    cb = None if codebook is None else np.asarray(codebook, np.float32)
    tokens, labels = [], []
    for row in rows[1:]:
        labels.append(int(row[col_label]))
        if col_indices is not None:
            ids = np.asarray(_parse_indices(row[col_indices]))
        else:
            path = folder / row[0]
            if not path.is_file():
                raise FileNotFoundError(
                    f"embedding file listed in {csv_path.name} not found: {path}"
                )
            e = np.load(path).astype(np.float32)  # (d, m, m) channels-first
            flat = e.reshape(e.shape[0], -1).T
            dist = (flat**2).sum(1, keepdims=True) + (cb**2).sum(1) - 2 * flat @ cb.T
            ids = dist.argmin(1)
        m = int(round(len(ids) ** 0.5))
        if m * m != len(ids):
            raise ValueError(f"{row[0]}: {len(ids)} token ids do not form a square grid")
        tokens.append(ids.reshape(m, m))
    tok = np.stack(tokens)
    lab = np.asarray(labels, np.int32)
    if lab.min() < 0 or lab.max() >= len(class_names):
        raise ValueError(
            f"labels span {lab.min()}..{lab.max()}; expected 0..{len(class_names) - 1}"
        )
    meta = {"class_names": list(class_names), "vqgm": vqgm, "grid_size": int(tok.shape[1]),
            "codebook_size": None if cb is None else int(cb.shape[0]), "source": "reference",
            "imported_from": str(csv_path)}  # fmt: skip
    write_meta(out, meta)
    for s, start in enumerate(range(0, len(tok), shard_size)):
        write_shard(out, s, tok[start : start + shard_size], lab[start : start + shard_size])
    return TokenDataset.open(out)
