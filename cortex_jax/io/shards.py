"""Token datasets: uint16 token grids + int32 labels in shards, with a small JSON of metadata.

Layout of a dataset folder:
  meta.json                 class names, the VQGM it came from, grid size, codebook size, source
  shard-00000.tokens.npy    (n, m, m) uint16 token ids
  shard-00000.labels.npy    (n,) int32 class ids
  shard-00000.masks.npy     (n, m, m) bool ground-truth object positions (encoded toy data only)

E is never stored: 256 uint16 ids are 512 bytes an image, against 256 KiB for a float32 E. Each
shard is written to a temporary name and renamed, so a shard on disk is always whole, and a
restarted writer skips the shards that exist.

A folder may be a gs:// URL (`core.paths`). There a file is one object uploaded whole from
memory (`atomic_write_bytes`: Cloud Storage makes an object visible only once its upload is
complete, so a killed writer leaves nothing, never a truncated object), and a shard is read
through a local copy (`local_copy`: cached under CORTEX_JAX_CACHE, default
~/.cache/cortex_jax, by object generation and checked against the object's size) which is then
memory-mapped like a local shard, so memory stays flat however large the dataset.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from etils import epath

from cortex_jax.core import paths

META_NAME = "meta.json"


def shard_path(folder: str | os.PathLike, index: int, kind: str) -> epath.Path:
    return paths.of(folder) / f"shard-{index:05d}.{kind}.npy"


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """np.save that never leaves a partial file behind."""
    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def _remote_fs(url: str | os.PathLike):
    """The fsspec file system epath itself uses for `url` (one instance: its listing cache
    sees our writes)."""
    from etils.epath import backend

    return backend.fsspec_backend.fs(os.fspath(url))


REMOTE_CHUNK = 50 * 2**20  # larger objects go up in chunks, as one resumable upload


def _remote_write(url: str, payload: bytes, exclusive: bool) -> None:
    # One upload from memory: the object appears whole when the upload completes, or not at all.
    # exclusive: the store's generation precondition (ifGenerationMatch=0) refuses an existing
    # object, so of two writers one gets FileExistsError; the exists() check before it serves
    # stores (emulators) that ignore preconditions.
    fs = _remote_fs(url)
    if exclusive and fs.exists(url):
        raise FileExistsError(url)
    mode = "create" if exclusive else "overwrite"
    fs.pipe_file(url, payload, mode=mode, chunksize=REMOTE_CHUNK)


def cache_dir() -> Path:
    """Where local copies of remote shards live: $CORTEX_JAX_CACHE/remote, default
    ~/.cache/cortex_jax/remote."""
    root = os.environ.get("CORTEX_JAX_CACHE") or Path.home() / ".cache" / "cortex_jax"
    return Path(root) / "remote"


def local_copy(url: str | os.PathLike) -> Path:
    """A local file with the bytes of the remote object `url`, downloaded once per object
    generation (a rewritten object gets a new copy) and checked against the object's size; the
    download is written atomically, so a killed reader never leaves a short copy behind."""
    url = os.fspath(url)
    fs = _remote_fs(url)
    info = fs.info(url)
    size = int(info["size"])
    tag = str(info.get("generation") or info.get("md5Hash") or info.get("etag") or size)
    bucket_key = url.split("://", 1)[1]
    local = cache_dir() / f"{bucket_key}@{''.join(c for c in tag if c.isalnum())}"
    if local.is_file() and local.stat().st_size == size:
        return local
    data = fs.cat_file(url)
    if len(data) != size:
        raise OSError(f"{url}: read {len(data)} bytes of its {size}; the copy is incomplete")
    local.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(local, data)
    return local


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """np.load of a .npy file, local or gs:// (through its `local_copy`); memory-mapped when
    `mmap`. No pickles."""
    local = local_copy(path) if paths.is_remote(path) else Path(path)
    return np.load(local, mmap_mode="r" if mmap else None, allow_pickle=False)


def file_sizes(root: str | os.PathLike) -> dict[str, int]:
    """Every file under `root` (a local folder or a gs:// prefix) by its relative name with '/'
    separators (hidden ones included, in name order) → its size in bytes; {} when there is
    none. On a bucket this is one listing, not a request per object."""
    if paths.is_remote(root):
        url = os.fspath(paths.of(root)).rstrip("/")
        fs = _remote_fs(url)
        fs.invalidate_cache(url)  # another process (host) may have written since we listed
        base = url.split("://", 1)[1] + "/"
        found = fs.find(url, detail=True)
        return {k[len(base) :]: int(found[k]["size"]) for k in sorted(found) if k.startswith(base)}
    folder = Path(root)
    if not folder.is_dir():
        return {}
    files = sorted(
        (p.relative_to(folder).as_posix(), p)
        for p in folder.rglob("*")
        if p.is_file() or p.is_symlink()
    )
    return {k: (p.stat() if p.is_file() else p.lstat()).st_size for k, p in files}


def list_files(root: str | os.PathLike) -> list[str]:
    """The relative names of `file_sizes(root)`, sorted."""
    return list(file_sizes(root))


def modified(path: str | os.PathLike) -> float:
    """When `path` was last written, in seconds since the epoch (a symlink's own time; an
    object's time as the store records it)."""
    if paths.is_remote(path):
        info = _remote_fs(path).info(os.fspath(paths.of(path)))
        return float(info["mtime"].timestamp())
    return Path(path).lstat().st_mtime


_UMASK = os.umask(0)
os.umask(_UMASK)
_HOST = socket.gethostname().replace("~", "-")
STALE_AFTER_S = 24 * 3600  # another host's temp file older than this is abandoned


def _temp_prefix(path: Path) -> str:
    # Our temp files name their writer, so a later writer can tell abandoned ones from live ones.
    return f".{path.name}~{_HOST}~{os.getpid()}~"


def atomic_write_bytes(path: str | os.PathLike, payload: bytes, exclusive: bool = False) -> None:
    """Writes a temporary sibling, fsyncs it and renames it over `path`, with the permissions a
    plain open() would give (0666 less the umask, not tempfile's 0600). A gs:// `path` is one
    upload of `payload`, which the store shows whole or not at all.

    exclusive: fail with FileExistsError if `path` already exists (a hard link instead of the
    rename, so two writers cannot both create it).
    """
    if paths.is_remote(path):
        return _remote_write(os.fspath(paths.of(path)), payload, exclusive)
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """PATH as indented JSON with a final newline, written atomically (parent made if needed)."""
    target = paths.of(path)
    if not paths.is_remote(target):
        target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, (json.dumps(obj, indent=2) + "\n").encode())


def _temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp") and name.count("~") >= 3


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Removes temp files our writers left in `folder` when killed between write and rename: those
    of a process of this host that no longer runs, and those of other hosts (shared filesystems)
    older than STALE_AFTER_S. Live writers' temp files are left alone. Returns what was removed.
    A gs:// folder has none (its writes make no temp objects)."""
    removed: list[Path] = []
    if paths.is_remote(folder):
        return removed
    now = time.time()
    for p in Path(folder).glob(".*~*~*~*.tmp"):
        try:
            host, pid = p.name.split("~")[1:3]
            stale = (
                (not _alive(int(pid))) if host == _HOST else now - p.stat().st_mtime > STALE_AFTER_S
            )
        except (ValueError, OSError):
            continue
        if stale:
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_meta(folder: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Creates the dataset folder with its meta.json, or checks that an existing one describes the
    same dataset. Creation is exclusive: of two runs started at once with different arguments,
    one creates meta.json and the other is told the folder holds a different dataset."""
    root = paths.of(folder)
    if not paths.is_remote(root):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"{root} is a file; expected a dataset folder") from None
    clean_stale_temps(root)
    target = root / META_NAME
    want = json.loads(json.dumps(meta))
    try:
        atomic_write_bytes(target, json.dumps(meta, indent=2).encode(), exclusive=True)
        return
    except FileExistsError:
        pass
    old = _read_meta(target)
    if old != want:
        raise ValueError(
            f"{root} already holds a different dataset, made with other settings "
            f"({differences(old, want)}); choose another folder for this one, or move that one away"
        )


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: Any) -> str:
    return repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "…"


def differences(old: dict[str, Any], new: dict[str, Any], n: int = 3) -> str:
    """The first `n` fields (dotted paths into nested dicts) where `old` and `new` differ, as
    'field: OLD there, NEW now; …'."""
    a, b = _flat(old), _flat(new)
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {_short(a.get(k))} there, {_short(b.get(k))} now" for k in keys[:n])


FINGERPRINT_NAME = "fingerprint.json"


def claim_fingerprint(folder: str | os.PathLike, fingerprint: dict[str, Any], what: str) -> None:
    """Marks `folder` as holding the `what` that `fingerprint` describes (what made it: settings,
    model hashes, format version), or checks that it already does. FINGERPRINT_NAME is created
    exclusively, so of two runs started at once with other settings one is refused. A folder
    made with other settings is refused in one line naming the fields that differ, and so is one
    holding files but no fingerprint (written before fingerprints existed): stored work is never
    reused unchecked."""
    root = paths.of(folder)
    if not paths.is_remote(root):
        root.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(root)
    target = root / FINGERPRINT_NAME
    want = json.loads(json.dumps(fingerprint))
    if not target.exists():
        others = [
            n for n in list_files(root) if n != FINGERPRINT_NAME and not _temp(n.rsplit("/", 1)[-1])
        ]
        if others and not target.exists():  # (another process may have just claimed it)
            raise ValueError(
                f"{root} holds {what} files but no {FINGERPRINT_NAME} saying what made them; "
                "move that folder away to compute them anew"
            )
        try:
            atomic_write_bytes(target, (json.dumps(want, indent=2) + "\n").encode(), True)
            return
        except FileExistsError:
            pass
    try:
        old = json.loads(target.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{target} is not valid JSON ({e}); move that folder away") from None
    if old != want:
        raise ValueError(
            f"{root} holds {what} made with other settings ({differences(old, want)}); it is "
            "never reused: choose another folder (or workdir), or move that one away"
        )


def _read_meta(path: epath.Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}); the dataset's meta.json is damaged"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("class_names"), list):
        raise ValueError(f"{path} has no class_names list; expected a token dataset's meta.json")
    return meta


def _load(path: epath.Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"dataset shard file missing: {path}")
    local = local_copy(path) if paths.is_remote(path) else path
    try:
        return np.load(local, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is damaged or not a .npy array ({e})") from None


def _open_shard(folder: epath.Path, i: int, meta: dict[str, Any]):
    """One shard's (tokens, labels, masks or None), memory-mapped and validated."""
    tp, lp, mp = (shard_path(folder, i, k) for k in ("tokens", "labels", "masks"))
    tokens, labels = _load(tp), _load(lp)
    if tokens.dtype != np.uint16 or tokens.ndim != 3 or tokens.shape[1] != tokens.shape[2]:
        raise ValueError(f"{tp} holds {tokens.dtype} {tokens.shape}; expected uint16 (n, m, m)")
    grid = meta.get("grid_size")
    if grid is not None and tokens.shape[1] != grid:
        raise ValueError(
            f"{tp} holds {tokens.shape[1]}×{tokens.shape[1]} grids; meta.json says {grid}"
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
        raise ValueError(f"{lp} holds {labels.dtype} {labels.shape}; expected int32 (n,) labels")
    if len(labels) != len(tokens):
        raise ValueError(
            f"{lp} has {len(labels)} labels for the {len(tokens)} token grids of {tp.name}"
        )
    k = meta.get("codebook_size")
    if len(tokens) and k is not None and int(tokens.max()) >= k:
        raise ValueError(
            f"{tp} holds token id {int(tokens.max())}; the codebook has {k} (0..{k - 1})"
        )
    n_classes = len(meta["class_names"])
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(
            f"{lp} holds labels {int(labels.min())}..{int(labels.max())}; meta.json names "
            f"{n_classes} classes (0..{n_classes - 1})"
        )
    masks = None
    if mp.exists():
        masks = _load(mp)
        if masks.dtype != np.bool_ or masks.shape != tokens.shape:
            raise ValueError(
                f"{mp} holds {masks.dtype} {masks.shape}; expected bool {tokens.shape}"
            )
    return tokens, labels, masks


def shard_done(folder: str | os.PathLike, index: int) -> bool:
    return shard_path(folder, index, "labels").exists()


def write_shard(
    folder: str | os.PathLike,
    index: int,
    tokens: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None = None,
) -> None:
    """Writes one shard; labels last, so its presence marks the shard complete."""
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

    folder: epath.Path
    meta: dict[str, Any]
    tokens: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    masks: Sequence[np.ndarray] | None

    @classmethod
    def open(cls, folder: str | os.PathLike) -> TokenDataset:
        """Opens and validates a dataset: every shard's dtype, shape, token ids (against the
        codebook size in meta.json), labels (against its class names) and counts are checked
        once here, and a damaged file is named in a one-line ValueError."""
        root = paths.of(folder)
        if paths.is_remote(root):  # another process may have written shards since we listed
            _remote_fs(root).invalidate_cache(os.fspath(root))
        meta_path = root / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(f"token dataset metadata not found: {meta_path}")
        meta = _read_meta(meta_path)
        shards = sorted(int(p.name[6:11]) for p in root.glob("shard-*.labels.npy"))
        if not shards:
            raise FileNotFoundError(f"{root} has no complete shard (shard-*.labels.npy)")
        tokens, labels, masks = [], [], []
        for i in shards:
            t, lab, m = _open_shard(root, i, meta)
            tokens.append(t)
            labels.append(lab)
            masks.append(m)
        grids = {t.shape[1] for t in tokens}
        if len(grids) > 1:
            raise ValueError(f"{root}: shards hold token grids of sizes {sorted(grids)}")
        return cls(root, meta, tokens, labels, None if any(m is None for m in masks) else masks)

    def __len__(self) -> int:
        return int(sum(len(x) for x in self.labels))

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """All shards concatenated into memory: (tokens, labels, masks or None)."""
        masks = np.concatenate(self.masks) if self.masks is not None else None
        return np.concatenate(self.tokens), np.concatenate(self.labels), masks


def write_arrays(
    folder: str | os.PathLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    codebook_size: int,
    vqgm: str,
    source: str = "arrays",
) -> TokenDataset:
    """Writes (tokens (N, m, m), labels (N,)) as a one-shard token dataset and opens it."""
    tokens = np.asarray(tokens)
    meta = {
        "class_names": list(class_names),
        "vqgm": vqgm,
        "grid_size": int(tokens.shape[1]),
        "codebook_size": int(codebook_size),
        "source": source,
    }
    write_meta(folder, meta)
    write_shard(folder, 0, tokens, np.asarray(labels))
    return TokenDataset.open(folder)


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

    def full_pass(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Every example once, in epoch 0's order, as this process's (tokens, labels, valid)
        batches of the usual shape: the last global batch is padded by repeating its first row,
        and `valid` (local_batch,) bool is False on the padding (for evaluation: no example is
        dropped, and every batch has the shape the compiled step expects)."""
        order = self._order(0)
        lo = self.process_index * self.local_batch
        for start in range(0, len(order), self.global_batch):
            rows = order[start : start + self.global_batch]
            valid = np.zeros(self.global_batch, bool)
            valid[: len(rows)] = True
            rows = np.concatenate([rows, np.full(self.global_batch - len(rows), rows[0])])
            tokens, labels = self._gather(rows[lo : lo + self.local_batch])
            yield tokens, labels, valid[lo : lo + self.local_batch]

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's (tokens (local_batch, m, m) uint16, labels (local_batch,) int32)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        rows = self._order(epoch)[i * self.global_batch : (i + 1) * self.global_batch]
        lo = self.process_index * self.local_batch
        return self._gather(rows[lo : lo + self.local_batch])
