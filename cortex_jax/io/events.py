"""Training curves: metrics.jsonl, and the same scalars as TensorBoard event files beside it.

tensorboardX writes TensorBoard's event format with protobuf alone (no TensorFlow). A resumed run
opens its log with `purge_step` = the step after the one it resumes from: TensorBoard then drops
what an earlier, interrupted attempt logged after that step, as metrics.jsonl is truncated there.

Both live in a local folder or under a gs:// URL (`core.paths`). A bucket has no append: there the
event file and metrics.jsonl are kept in memory (a few MB for a long run) and each is uploaded
whole (`shards.atomic_write_bytes`, which the store shows whole or not at all) when flushed:
`MetricsFile.flush` at every checkpoint, so a resumed run finds every line up to the step it
resumes from, and both at least every `UPLOAD_EVERY_S` seconds and on close.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from cortex_jax.core import paths
from cortex_jax.io import shards

FOLDER = "tensorboard"  # under a training workdir: `tensorboard --logdir WORKDIR/tensorboard`
UPLOAD_EVERY_S = 60.0  # on a bucket: the longest a written line waits for its upload


class _StoreFile:
    """An event file on a bucket for tensorboardX's RecordWriter: its records in memory, the
    whole file uploaded when flushed (and changed)."""

    def __init__(self, url: str):
        self.url, self.buffer, self.uploaded = url, io.BytesIO(), -1

    def write(self, data: bytes) -> None:
        self.buffer.write(data)

    def flush(self) -> None:
        if self.buffer.tell() != self.uploaded:
            shards.atomic_write_bytes(self.url, self.buffer.getvalue())
            self.uploaded = self.buffer.tell()

    def close(self) -> None:
        self.flush()


class _StoreFiles:
    """tensorboardX's writer factory for gs:// (its own needs google-cloud-storage's client and
    credentials; ours goes through epath and gcsfs like every other path here)."""

    def open(self, url: str) -> _StoreFile:
        return _StoreFile(url)

    def directory_check(self, url: str) -> None:
        pass  # a bucket has no folders


def _tensorboardx():
    """tensorboardX's SummaryWriter and record_writer, imported on use (only training writes
    events) and without PyTorch: tensorboardX's writer imports torch when it can, only to accept
    torch tensors, which we never pass; with torch installed (the conformance extra) that import
    cost every train.iem 7 s on 2 cores. A torch already imported is left as it is."""
    block = "torch" not in sys.modules
    if block:
        sys.modules["torch"] = None  # `import torch` now raises ImportError
    try:
        from tensorboardX import SummaryWriter, record_writer
    finally:
        if block:
            del sys.modules["torch"]
    return SummaryWriter, record_writer


class ScalarLog:
    """Scalars per step into `folder` (created; local or gs://); a run starting from `start_step`
    (its state after that step; 0 for a run killed before its first checkpoint, too) purges what
    earlier attempts logged for later steps. Use as a context manager, or `close()`."""

    def __init__(self, folder: str | os.PathLike, start_step: int = 0):
        SummaryWriter, record_writer = _tensorboardx()

        root = paths.of(folder)
        if paths.is_remote(root):
            record_writer.register_writer_factory("gs", _StoreFiles())
        else:
            root.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(os.fspath(root), purge_step=start_step + 1, flush_secs=30)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            if name != "step":
                self._writer.add_scalar(name, float(value), step)

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ScalarLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MetricsFile:
    """metrics.jsonl: one JSON object a line, each with its "step". Opening it drops the lines
    past `start_step` (what a run killed after its last checkpoint logged: the resumed run logs
    those steps again). Locally a line is appended as it comes; on a bucket see the module's
    docstring. Use as a context manager, or `close()`."""

    def __init__(self, path: str | os.PathLike, start_step: int = 0):
        self.path = paths.of(path)
        self.remote = paths.is_remote(self.path)
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        kept = [ln for ln in lines if json.loads(ln)["step"] <= start_step]
        self.text = "".join(ln + "\n" for ln in kept)
        if kept != lines:
            shards.atomic_write_bytes(self.path, self.text.encode())
        self.uploaded, self.last = len(self.text), time.monotonic()

    def append(self, line: Mapping[str, Any]) -> None:
        row = json.dumps(dict(line)) + "\n"
        if not self.remote:
            with self.path.open("a") as f:
                f.write(row)
            return
        self.text += row
        if time.monotonic() - self.last > UPLOAD_EVERY_S:
            self.flush()

    def flush(self) -> None:
        """Every line appended so far is in the file (on a bucket: one upload, if any changed)."""
        if self.remote and len(self.text) != self.uploaded:
            shards.atomic_write_bytes(self.path, self.text.encode())
            self.uploaded = len(self.text)
        self.last = time.monotonic()

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> MetricsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
