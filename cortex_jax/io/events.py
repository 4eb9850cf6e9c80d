"""Training curves as TensorBoard event files, beside metrics.jsonl.

tensorboardX writes TensorBoard's event format with protobuf alone (no TensorFlow). A resumed run
opens its log with `purge_step` = the step after the one it resumes from: TensorBoard then drops
what an earlier, interrupted attempt logged after that step, as metrics.jsonl is truncated there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FOLDER = "tensorboard"  # under a training workdir: `tensorboard --logdir WORKDIR/tensorboard`


class ScalarLog:
    """Scalars per step into `folder` (created); a run starting from `start_step` (its state
    after that step; 0 for a run killed before its first checkpoint, too) purges what earlier
    attempts logged for later steps. Use as a context manager, or `close()`."""

    def __init__(self, folder: str | os.PathLike, start_step: int = 0):
        from tensorboardX import SummaryWriter  # imported on use: only training writes events

        Path(folder).mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(str(folder), purge_step=start_step + 1, flush_secs=30)

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
