"""Tiny synthetic token datasets and IEM settings shared by the training tests and their
multi-device / multi-process helper scripts."""

from pathlib import Path

import numpy as np

from cortex_jax.experiments import training
from cortex_jax.io import shards
from cortex_jax.models import iem

N_CLASSES, GRID, K, D = 4, 4, 32, 8


def make_dataset(folder: Path, n: int, seed: int, shard_size: int = 40) -> shards.TokenDataset:
    """Class c puts token 8c+j (j random in 0..7) in the top row: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_CLASSES, n).astype(np.int32)
    tokens = rng.integers(0, K, (n, GRID, GRID))
    tokens[:, 0, :] = 8 * labels[:, None] + rng.integers(0, 8, (n, GRID))
    names = [f"c{i}" for i in range(N_CLASSES)]
    meta = {"class_names": names, "vqgm": "tiny", "grid_size": GRID, "codebook_size": K}
    shards.write_meta(folder, {**meta, "source": "synthetic"})
    for s, start in enumerate(range(0, n, shard_size)):
        end = start + shard_size
        shards.write_shard(folder, s, tokens[start:end], labels[start:end])
    return shards.TokenDataset.open(folder)


def codebook() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((K, D)).astype(np.float32)


def model_config(arch: str = "ce") -> iem.IEMConfig:
    return iem.IEMConfig(
        arch, N_CLASSES, width=32, depth=1, hidden=32, heads=2, mlp=32, se_hidden=4
    )


def train_config(**kw) -> training.TrainConfig:
    base = dict(batch_size=16, epochs=2, learning_rate=3e-3, checkpoint_every=3, eval_every=5)
    return training.TrainConfig(**{**base, **kw})


def bart_tokenizer(folder: Path) -> Path:
    """A BART tokenizer folder: byte-level BPE over the characters of plain lower-case prompts,
    ids < 40 (the tiny DalleBart's text vocabulary is 100)."""
    from transformers import BartTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "Ġ": 4}  # Ġ: GPT-2's byte for a space
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
    BartTokenizerFast(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder
