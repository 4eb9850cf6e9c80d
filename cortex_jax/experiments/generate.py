"""Sampling a token dataset from a VQGM, in shards that a restart skips.

`generate_dataset` samples a class-conditional VQGM, `generate_prompt_dataset` a
prompt-conditioned one (label = prompt index). Entry i of the dataset is class
`classes[i // per_class]` (prompt `prompts[i // per_prompt]`); shard s holds entries
[s·shard_size, (s+1)·shard_size) and draws its randomness from fold_in(seed, s) alone, so a
restarted run writes the same bytes as an uninterrupted one and only the missing shards.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.core import errors, sharding
from cortex_jax.io import shards
from cortex_jax.io.images import save_grid
from cortex_jax.method.selection import nearest_rows
from cortex_jax.models.vqgm import ClassConditional, PromptConditional


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
    returned dataset holds the shards finished so far (the others' may still be running), and a
    SIGTERM to any process stops them all with `errors.Interrupted` before one shard index
    (`sharding.preemption_agreed`): the one past the furthest any process had reached, so each
    finishes the shard in hand (one behind the others first catches up)."""
    if len(labels_all) == 0:  # refuse before writing: a stub meta.json would block the folder
        raise ValueError("no images to generate (an empty class selection)")
    shards.write_meta(out, {**meta, "seed": seed, "shard_size": shard_size, "source": "generated"})
    base = jax.random.PRNGKey(seed)
    for s, start in enumerate(range(0, len(labels_all), shard_size)):
        labels = labels_all[start : start + shard_size]
        if sharding.preemption_agreed():
            raise errors.Interrupted(
                f"stopped by SIGTERM before shard {s}; the finished shards are kept, rerun the "
                "same command to resume"
            )
        mine = s % jax.process_count() == jax.process_index()  # each process its own shards
        if mine and not shards.shard_done(out, s):
            tokens = np.asarray(sample(labels, jax.random.fold_in(base, s)))
            shards.write_shard(out, s, tokens, labels)
        progress(start + len(labels))
    return shards.TokenDataset.open(out)


def _sampling(sample_config: Any, dtype: str) -> dict[str, Any]:
    """meta.json's "sampling": the family's settings dataclass (refused in one line when it is
    none), and the compute dtype unless float32 (older datasets have no key: float32)."""
    if sample_config is None or not dataclasses.is_dataclass(sample_config):
        raise ValueError(f"sample_config={sample_config!r}; expected the family's SampleConfig")
    sampling = dataclasses.asdict(sample_config)  # type: ignore[arg-type]
    return sampling if dtype == "float32" else {**sampling, "dtype": dtype}


def generate_dataset(
    vqgm: ClassConditional,
    class_ids: Sequence[int],
    per_class: int,
    out: str | os.PathLike,
    seed: int = 0,
    sample_config: Any = None,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
    dtype: Literal["float32", "bfloat16"] = "float32",
    model: dict[str, Any] | None = None,
) -> shards.TokenDataset:
    """Samples `per_class` token grids for each class id into `out`; returns the dataset.
    `sample_config`: the family's own settings dataclass (required: the registry's
    `Family.settings` gives it); `dtype`: the transformer's compute type ("float32" or
    "bfloat16"), recorded in meta.json; `model`: what identifies the weights (e.g. checkpoint
    hashes, `recipe.vqgm_identity`), recorded in meta.json as "model", so a rerun into the same
    folder with other weights is refused naming it instead of adding shards of another model.

    `progress(n)` is called with the number of images finished (skipped shards included).
    """
    if per_class <= 0:
        raise ValueError(f"per_class={per_class}; expected a positive number of images per class")
    labels_all = np.repeat(np.asarray(class_ids, np.int32), per_class)
    meta: dict[str, Any] = {
        "class_names": list(vqgm.class_names),
        "vqgm": vqgm.name,
        "grid_size": vqgm.grid_size,
        "codebook_size": vqgm.vqgan.config.n_embed,
        "per_class": per_class,
        "classes": [int(c) for c in class_ids],
        "sampling": _sampling(sample_config, dtype),
    }
    if model is not None:
        meta["model"] = model
    compute = jnp.dtype(dtype)

    def sample(labels: np.ndarray, rng: jax.Array) -> np.ndarray:
        return np.asarray(vqgm.sample_tokens(labels, rng, sample_config, compute))

    return write_sampled(sample, labels_all, out, meta, seed, shard_size, progress)


def write_prompt_dataset(
    sample: Callable[[str, int, int], np.ndarray],
    prompts: Sequence[str],
    per_prompt: int,
    out: str | os.PathLike,
    seed: int = 0,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
    decode: Callable[[np.ndarray], Any] | None = None,
    png_per_prompt: int = 8,
    meta: dict[str, Any] | None = None,
) -> shards.TokenDataset:
    """Token dataset of `per_prompt` images per prompt (label = prompt index), in the IEM format,
    from a `prompt_sampler`; resumable by shard like every generator here. With `decode` (token
    grids → pixels in [-1, 1]) also OUT/samples.png: the first `png_per_prompt` images a prompt.
    `meta`: more keys for meta.json (the model, its sampling), over the defaults."""

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

    info = {"class_names": list(prompts), "vqgm": "dallebart", "per_class": per_prompt}
    info.update(meta or {})
    ds = write_sampled(by_labels, labels_all, out, info, seed, shard_size, progress)
    if decode is not None:
        k = min(png_per_prompt, per_prompt)
        names = [p[:14] for p in prompts]
        save_samples(ds, decode, Path(out) / "samples.png", range(len(prompts)), names, k)
    return ds


def generate_prompt_dataset(
    model: PromptConditional,
    prompts: Sequence[str],
    per_prompt: int,
    out: str | os.PathLike,
    seed: int = 0,
    sample_config: Any = None,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
    dtype: Literal["float32", "bfloat16"] = "float32",
) -> shards.TokenDataset:
    """`per_prompt` token grids of each prompt of a prompt-conditioned VQGM into `out`, drawn
    as `write_prompt_dataset` draws them, with the family's settings `sample_config` (required)
    and the transformer's compute type `dtype`. meta.json names the prompts (`prompts`, and as
    `class_names`), the model, its grid, codebook size and sampling."""
    if per_prompt <= 0:
        raise ValueError(f"per_prompt={per_prompt}; expected a positive number of images a prompt")
    meta = {
        "vqgm": model.name,
        "prompts": list(prompts),
        "grid_size": model.grid_size,
        "codebook_size": model.vqgan.config.n_embed,
        "sampling": _sampling(sample_config, dtype),
    }
    compute = jnp.dtype(dtype)

    def sample(prompt: str, n: int, seed: int) -> np.ndarray:
        return np.asarray(model.sample_prompt(prompt, n, seed, sample_config, compute))

    return write_prompt_dataset(
        sample, prompts, per_prompt, out, seed, shard_size, progress, meta=meta
    )


def save_samples(
    dataset: shards.TokenDataset,
    decode: Callable[[np.ndarray], Any],
    path: str | os.PathLike,
    class_ids: Sequence[int],
    row_names: Sequence[str],
    per_class: int = 8,
    scale: int | None = None,
) -> Path:
    """PATH: the first `per_class` images of each class of a token dataset, decoded (pixels
    clipped to [-1, 1]), one labelled row a class; `scale` defaults to about 128 px a side."""
    tokens, labels, _ = dataset.arrays()
    first = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in class_ids])
    px = np.clip(np.asarray(decode(tokens[first].astype(np.int32))), -1, 1)
    scale = scale or max(1, 128 // px.shape[1])
    return save_grid(Path(path), px, per_class, list(row_names), scale=scale)


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
) -> shards.TokenDataset:
    """Converts the authors' layout (a CSV of `filename,label[,indices]` + one float32 .npy E
    (d, m, m) per image) into a token dataset.

    Token ids come from the `indices` column when the CSV has one; otherwise each .npy (in
    `npy_folder`, default: next to the CSV) is snapped to its nearest `codebook` row, which is
    exact since E is made of codebook rows.
    """
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
    cb = None if codebook is None else jnp.asarray(codebook, jnp.float32)
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
            assert cb is not None  # checked above: no indices column needs the codebook
            ids = np.asarray(nearest_rows(jnp.asarray(e.reshape(e.shape[0], -1).T), cb))
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
    meta = {
        "class_names": list(class_names),
        "vqgm": vqgm,
        "grid_size": int(tok.shape[1]),
        "codebook_size": None if cb is None else int(cb.shape[0]),
        "source": "reference",
        "imported_from": str(csv_path),
    }
    shards.write_meta(out, meta)
    for s, start in enumerate(range(0, len(tok), shard_size)):
        shards.write_shard(out, s, tok[start : start + shard_size], lab[start : start + shard_size])
    return shards.TokenDataset.open(out)
