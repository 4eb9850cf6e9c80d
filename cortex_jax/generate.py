"""Sampling a token dataset from a class-conditional VQGM, in shards that a restart skips.

Entry i of the dataset is class `classes[i // per_class]`; shard s holds entries
[s·shard_size, (s+1)·shard_size) and draws its randomness from fold_in(seed, s) alone, so a
restarted run writes the same bytes as an uninterrupted one and only the missing shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from cortex_jax import cin, data
from cortex_jax.vqgm import ClassConditionalVQGM


def generate_dataset(
    vqgm: ClassConditionalVQGM,
    class_ids: Sequence[int],
    per_class: int,
    out: str | os.PathLike,
    seed: int = 0,
    sample_config: cin.SampleConfig = cin.SampleConfig(),
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
) -> data.TokenDataset:
    """Samples `per_class` token grids for each class id into `out`; returns the dataset.

    `progress(n)` is called with the number of images finished (skipped shards included).
    """
    if per_class <= 0:
        raise ValueError(f"per_class={per_class}; expected a positive number of images per class")
    labels_all = np.repeat(np.asarray(class_ids, np.int32), per_class)
    data.write_meta(
        out,
        {
            "class_names": list(vqgm.class_names),
            "vqgm": vqgm.name,
            "grid_size": vqgm.grid_size,
            "codebook_size": vqgm.vqgan.config.n_embed,
            "source": "generated",
            "seed": seed,
            "per_class": per_class,
            "classes": [int(c) for c in class_ids],
            "shard_size": shard_size,
            "sampling": {
                "temperature": sample_config.temperature,
                "top_k": sample_config.top_k,
                "top_p": sample_config.top_p,
            },
        },
    )
    base = jax.random.PRNGKey(seed)
    for s, start in enumerate(range(0, len(labels_all), shard_size)):
        labels = labels_all[start : start + shard_size]
        if not data.shard_done(out, s):
            toks = vqgm.sample_tokens(labels, jax.random.fold_in(base, s), sample_config)
            data.write_shard(out, s, np.asarray(toks), labels)
        progress(start + len(labels))
    return data.TokenDataset.open(out)
