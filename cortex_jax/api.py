"""The few calls a researcher makes, for any VQGM: the protocol a model must satisfy, a token
dataset from arrays, and IEM training that returns the `predict` callable every method takes.

A VQGM is explained through its codebook and its decoder only (`VQGMLike`): E is the codebook
rows on the token grid, the IEM reads E, TIS differentiates the IEM in E, selection searches the
codebook, and the decoder turns grids back into pixels for evaluation and figures. Anything with
those attributes works, whatever built it; `encode` (pixels → ids) and `sample_tokens` (class ids
→ grids) are optional, used by the commands that start from images or generate their own shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import numpy as np

from cortex_jax.experiments import training
from cortex_jax.experiments.bundle import VQGMLike
from cortex_jax.io import shards, sources
from cortex_jax.models import iem

Array = jax.Array
Predict = Callable[[Array], Array]  # E (B, m, m, d) → logits (B, classes)


def token_dataset(
    folder: str | os.PathLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    codebook_size: int,
    name: str = "user",
) -> shards.TokenDataset:
    """Writes (tokens (N, m, m), labels (N,)) as a one-shard token dataset and opens it."""
    return shards.write_arrays(folder, tokens, labels, class_names, codebook_size, name)


def train_iem(
    model: VQGMLike,
    train: shards.TokenDataset,
    val: shards.TokenDataset,
    workdir: str | os.PathLike,
    iem_config: iem.IEMConfig | None = None,
    train_config: training.TrainConfig | None = None,
) -> tuple[Predict, dict[str, float]]:
    """Trains an information extractor on E of the model's tokens (resumable, checkpointed in
    workdir); returns `predict(E) -> logits` of its best-validation state and that validation.

    The defaults are toy-sized, for the toy world and quick trials: a CE IEM of width 64, depth
    2, hidden 256, trained 8 epochs at batch 32. For a real model pass `iem_config` and
    `train_config` (configs/iem_ce.py:variant=imagenet holds the paper's settings)."""
    n_classes = len(train.class_names)
    mcfg = iem_config or iem.IEMConfig("ce", n_classes, width=64, depth=2, hidden=256)
    tcfg = train_config or training.TrainConfig(batch_size=32, epochs=8, decay_every=100)
    return training.fit_iem(mcfg, tcfg, train, val, model.codebook, workdir)


class LoadedIEM(NamedTuple):
    """An IEM ready to explain with: its config, variables, `predict(E) -> logits` and class
    names (a tuple, so `config, variables, predict, names = cx.load_iem(...)` works)."""

    config: iem.IEMConfig
    variables: dict[str, Any]
    predict: Predict
    class_names: tuple[str, ...]


def load_iem(
    source: str | os.PathLike, arch: Literal["ce", "re", "te"] | None = None, heads: int = 8
) -> LoadedIEM:
    """An IEM folder written by train.iem, or the CORTEX authors' trained IEM: their `.pth`
    state dict of ClassificationNet1 / 3 / 4 (`cx.load_iem("net3.pth", arch="re")`), converted
    without torch. The architecture is read off the file (`arch`, when given, must agree);
    `heads` is TE's head count (Net4: 8), which the shapes do not show."""
    config, variables, meta = sources.load_iem(source, arch, heads)
    return LoadedIEM(
        config, variables, iem.predictor(config, variables), tuple(meta["class_names"])
    )
