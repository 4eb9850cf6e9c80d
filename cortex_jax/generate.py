"""Sampling a token dataset from a class-conditional VQGM, in shards that a restart skips.

Entry i of the dataset is class `classes[i // per_class]`; shard s holds entries
[s·shard_size, (s+1)·shard_size) and draws its randomness from fold_in(seed, s) alone, so a
restarted run writes the same bytes as an uninterrupted one and only the missing shards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax import cin, data, maskgit
from cortex_jax.maskgit import MaskGITVQGM
from cortex_jax.vqgm import ClassConditionalVQGM


def write_sampled(
    sample: Callable[[np.ndarray, jax.Array], np.ndarray],
    labels_all: np.ndarray,
    out: str | os.PathLike,
    meta: dict,
    seed: int = 0,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
) -> data.TokenDataset:
    """The shard loop shared by every generator: `sample(labels, rng) -> (n, m, m)` token grids
    for shard s with rng = fold_in(seed, s). Shard s belongs to process s mod P, which writes it
    atomically; finished shards are skipped, so a restart resumes. With several processes the
    returned dataset holds the shards finished so far (the others' may still be running)."""
    if len(labels_all) == 0:  # refuse before writing: a stub meta.json would block the folder
        raise ValueError("no images to generate (an empty class selection)")
    data.write_meta(out, {**meta, "seed": seed, "shard_size": shard_size, "source": "generated"})
    base = jax.random.PRNGKey(seed)
    for s, start in enumerate(range(0, len(labels_all), shard_size)):
        labels = labels_all[start : start + shard_size]
        mine = s % jax.process_count() == jax.process_index()  # each process its own shards
        if mine and not data.shard_done(out, s):
            tokens = np.asarray(sample(labels, jax.random.fold_in(base, s)))
            data.write_shard(out, s, tokens, labels)
        progress(start + len(labels))
    return data.TokenDataset.open(out)


def generate_dataset(
    vqgm: ClassConditionalVQGM | MaskGITVQGM,
    class_ids: Sequence[int],
    per_class: int,
    out: str | os.PathLike,
    seed: int = 0,
    sample_config: cin.SampleConfig | maskgit.SampleConfig = cin.SampleConfig(),
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
    dtype: str = "float32",
) -> data.TokenDataset:
    """Samples `per_class` token grids for each class id into `out`; returns the dataset.
    `dtype`: the transformer's compute type ("float32" or "bfloat16"), recorded in meta.json.

    `progress(n)` is called with the number of images finished (skipped shards included).
    """
    if per_class <= 0:
        raise ValueError(f"per_class={per_class}; expected a positive number of images per class")
    labels_all = np.repeat(np.asarray(class_ids, np.int32), per_class)
    meta = {
        "class_names": list(vqgm.class_names),
        "vqgm": vqgm.name,
        "grid_size": vqgm.grid_size,
        "codebook_size": vqgm.vqgan.config.n_embed,
        "per_class": per_class,
        "classes": [int(c) for c in class_ids],
        "sampling": dataclasses.asdict(sample_config),
    }
    if dtype != "float32":  # older datasets have no key: float32
        meta["sampling"]["dtype"] = dtype
    compute = jnp.dtype(dtype)
    sample = lambda labels, rng: vqgm.sample_tokens(labels, rng, sample_config, compute)
    return write_sampled(sample, labels_all, out, meta, seed, shard_size, progress)
