"""Sampling a token dataset from a class-conditional VQGM, in shards that a restart skips.

Entry i of the dataset is class `classes[i // per_class]`; shard s holds entries
[s·shard_size, (s+1)·shard_size) and draws its randomness from fold_in(seed, s) alone, so a
restarted run writes the same bytes as an uninterrupted one and only the missing shards.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.io import shards
from cortex_jax.models import cin, maskgit
from cortex_jax.models.maskgit import MaskGITVQGM
from cortex_jax.models.vqgm import ClassConditionalVQGM


def write_sampled(
    sample: Callable[[np.ndarray, jax.Array], np.ndarray],
    labels_all: np.ndarray,
    out: str | os.PathLike,
    meta: dict,
    seed: int = 0,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
) -> shards.TokenDataset:
    """The shard loop shared by every generator: `sample(labels, rng) -> (n, m, m)` token grids
    for shard s with rng = fold_in(seed, s). Shard s belongs to process s mod P, which writes it
    atomically; finished shards are skipped, so a restart resumes. With several processes the
    returned dataset holds the shards finished so far (the others' may still be running)."""
    if len(labels_all) == 0:  # refuse before writing: a stub meta.json would block the folder
        raise ValueError("no images to generate (an empty class selection)")
    shards.write_meta(out, {**meta, "seed": seed, "shard_size": shard_size, "source": "generated"})
    base = jax.random.PRNGKey(seed)
    for s, start in enumerate(range(0, len(labels_all), shard_size)):
        labels = labels_all[start : start + shard_size]
        mine = s % jax.process_count() == jax.process_index()  # each process its own shards
        if mine and not shards.shard_done(out, s):
            tokens = np.asarray(sample(labels, jax.random.fold_in(base, s)))
            shards.write_shard(out, s, tokens, labels)
        progress(start + len(labels))
    return shards.TokenDataset.open(out)


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
) -> shards.TokenDataset:
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


def write_prompt_dataset(
    sample,
    prompts: list[str],
    per_prompt: int,
    out: str | os.PathLike,
    seed: int = 0,
    shard_size: int = 256,
    progress=lambda n: None,
    decode=None,
    png_per_prompt: int = 8,
):
    """Token dataset of `per_prompt` images per prompt (label = prompt index), in the IEM format,
    from a `prompt_sampler`; resumable by shard like every generator here. With `decode` (token
    grids → pixels in [-1, 1]) also OUT/samples.png: the first `png_per_prompt` images a prompt."""

    labels_all = np.repeat(np.arange(len(prompts), dtype=np.int32), per_prompt)

    def by_labels(labels, rng):
        base = int(jax.random.randint(rng, (), 0, 2**30))
        grids = None
        for lab in np.unique(labels):
            idx = np.flatnonzero(labels == lab)
            g = sample(prompts[lab], len(idx), base + int(lab))
            if grids is None:
                grids = np.zeros((len(labels), *g.shape[1:]), np.int64)
            grids[idx] = g
        return grids

    meta = {"class_names": list(prompts), "vqgm": "dallebart", "per_class": per_prompt}
    ds = write_sampled(by_labels, labels_all, out, meta, seed, shard_size, progress)
    if decode is not None:
        from cortex_jax.io.images import save_grid

        tokens, labels, _ = ds.arrays()
        k = min(png_per_prompt, per_prompt)
        first = np.concatenate([np.flatnonzero(labels == i)[:k] for i in range(len(prompts))])
        px = np.clip(np.asarray(decode(tokens[first].astype(np.int32))), -1, 1)
        save_grid(
            Path(out) / "samples.png",
            px,
            k,
            [p[:14] for p in prompts],
            scale=max(1, 128 // px.shape[1]),
        )
    return ds
