"""Sample-level explanation: token importance scores (TIS) and concept token sets.

TIS (paper eq. 3–4): S = mean over N noisy copies of ∇_E f_y(E + ε), ε ~ N(0, σ²),
σ = α·(max E − min E) computed **per image** (the authors' code takes it over the batch, which
makes an image's score depend on its neighbours); TIS(position) = max over channels of |S|
(`signed=True` gives the authors' signed max). f_y is the concept's probability (paper) or its
logit (`objective="logit"`, the authors' code).

The N noisy copies of every image in a batch run as one batched forward/backward pass (the
gradient of Σ_i f_{y_i}(x_i) is every copy's own gradient: the IEM runs in eval mode, so
examples do not interact), in chunks of `samples_per_chunk` copies per image so memory stays
bounded for any N. Noise for image i, copy s comes from fold_in(fold_in(rng, image_id_i), s):
with global image ids a sharded run gives the same scores whatever the batching.

T_image = the top-n positions of an image by TIS and their token ids; T_concept = the top-k
ids by the number of the concept's images whose T_image contains them (eq. 5, the union of the
per-image sets; `counting="authors"` counts positions, as the authors' code), counted by one
scatter-add into a (concepts, K) array; the frequency baseline counts all of a concept's token
occurrences instead. Fewer than k ids are returned where fewer distinct ids occur.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cortex_jax.core.sharding import split_over_local_devices

Objective = Literal["probability", "logit"]  # f_y: the concept's probability, or its logit

Array = jax.Array
Predict = Callable[[Array], Array]  # E (B, m, m, d) → logits (B, classes)


@functools.partial(jax.jit, static_argnames=("predict", "chunk", "objective"))
def _tis_chunk(predict, x0, concepts, keys, sigma, start, chunk, n_samples, objective):
    """Σ over noisy copies start … start+chunk−1 (< n_samples) of ∇ f_y, per image (B, m, m, d)."""
    b = x0.shape[0]
    s_idx = start + jnp.arange(chunk)

    def total(x, y):
        logits = predict(x)
        if objective == "probability":
            logits = jax.nn.softmax(logits, axis=-1)
        return jnp.take_along_axis(logits, y[:, None], axis=-1).sum()

    draw = lambda k: jax.vmap(lambda s: jax.random.normal(jax.random.fold_in(k, s), x0.shape[1:]))
    noise = jax.vmap(lambda k: draw(k)(s_idx))(keys)  # (B, chunk, m, m, d)
    x = x0[:, None] + noise * sigma[:, None, None, None, None]
    g = jax.grad(total)(x.reshape(b * chunk, *x0.shape[1:]), jnp.repeat(concepts, chunk))
    valid = (s_idx < n_samples)[None, :, None, None, None]
    return jnp.where(valid, g.reshape(b, chunk, *x0.shape[1:]), 0.0).sum(axis=1)


def _tis(
    predict,
    embeddings,
    concepts,
    rng,
    image_ids,
    n_samples,
    alpha,
    objective,
    signed,
    samples_per_chunk,
):
    # The chunk loop runs from Python: inside an XLA:CPU while loop (lax.scan) the convolution
    # gradients ran 4.3x slower on the 2-core CPU (bench/RESULTS.md). The sum stays on device.
    x0 = jnp.asarray(embeddings, jnp.float32)
    sigma = alpha * (x0.max(axis=(1, 2, 3)) - x0.min(axis=(1, 2, 3)))  # (B,): per image
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(image_ids)
    s = jnp.zeros_like(x0)
    for start in range(0, n_samples, samples_per_chunk):
        s = s + _tis_chunk(
            predict, x0, concepts, keys, sigma, start, samples_per_chunk, n_samples, objective
        )
    s = s / n_samples
    return (s if signed else jnp.abs(s)).max(axis=-1)


def token_importance(
    predict: Predict,
    embeddings: Array,
    concepts: Array,
    rng: Array,
    n_samples: int = 20,
    alpha: float = 0.2,
    *,
    objective: Objective = "probability",
    signed: bool = False,
    image_ids: Array | None = None,
    samples_per_chunk: int | None = None,
) -> Array:
    """TIS (B, m, m) of each image's token positions for its concept.

    Args:
      predict: E (n, m, m, d) → logits; pure and differentiable (e.g. `iem.predict_fn` closed
        over its variables). Must be hashable (a function, or functools.partial of one).
      embeddings: E (B, m, m, d).
      concepts: the concept index per image (B,) or one for all.
      rng: base PRNG key.
      image_ids: (B,) ids that seed each image's noise (default 0..B-1); pass global dataset
        indices to make scores independent of batching.
      samples_per_chunk: noisy copies per image per pass (default all N); lower it to bound
        memory (peak ≈ B·chunk inputs and activations).
    """
    if objective not in ("probability", "logit"):
        raise ValueError(f"objective={objective!r}; expected 'probability' or 'logit'")
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples}; expected at least 1")
    e = jnp.asarray(embeddings)
    if e.ndim != 4:
        raise ValueError(f"E has shape {e.shape}; expected (batch, m, m, d)")
    b = e.shape[0]
    concepts = jnp.broadcast_to(jnp.asarray(concepts, jnp.int32), (b,))
    ids = jnp.arange(b) if image_ids is None else jnp.asarray(image_ids, jnp.int32)
    chunk = min(samples_per_chunk or n_samples, n_samples)
    return _tis(predict, e, concepts, rng, ids, n_samples, float(alpha), objective, signed, chunk)


def token_importance_batched(
    predict: Predict,
    codebook: ArrayLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    rng: Array,
    n_samples: int = 20,
    alpha: float = 0.2,
    *,
    objective: Literal["probability", "logit"] = "probability",
    batch: int = 128,
    image_ids: np.ndarray | None = None,
) -> np.ndarray:
    """TIS (N, m, m) float32 of token grids (N, m, m) with labels (N,), `batch` grids at a time,
    each batch split over this host's devices (padded by repeating its last row, which is then
    dropped). Noise is keyed by `image_ids` (N,) (default 0..N−1), so the scores do not depend
    on the batch size or the number of devices. The one batched TIS loop every experiment uses."""
    tokens = np.asarray(tokens, np.int32)
    labels = np.asarray(labels, np.int32)
    ids = np.arange(len(tokens)) if image_ids is None else np.asarray(image_ids)
    if not len(tokens) == len(labels) == len(ids):
        raise ValueError(
            f"{len(tokens)} token grids, {len(labels)} labels and {len(ids)} image ids; "
            "expected one of each per image"
        )
    cb = jnp.asarray(codebook)
    out = []
    for i in range(0, len(tokens), batch):
        b, (t, y, g) = split_over_local_devices(
            tokens[i : i + batch], labels[i : i + batch], ids[i : i + batch].astype(np.int32)
        )
        scores = token_importance(
            predict, cb[t], y, rng, n_samples, alpha, objective=objective, image_ids=g
        )
        out.append(np.asarray(scores, np.float32)[:b])
    m = tokens.shape[1:] if tokens.ndim == 3 else (0, 0)
    return np.concatenate(out) if out else np.zeros((0, *m), np.float32)


def image_tokens(tis: Array, indices: Array, n: int) -> tuple[Array, Array]:
    """T_image: the n highest-TIS positions per image, (B, n) flat positions (row·m + col) in
    descending order, and the token ids there (B, n)."""
    b = tis.shape[0]
    flat = tis.reshape(b, -1)
    if not 1 <= n <= flat.shape[1]:
        raise ValueError(f"n={n}; expected 1..{flat.shape[1]} token positions")
    _, pos = jax.lax.top_k(flat, n)
    ids = jnp.take_along_axis(jnp.asarray(indices).reshape(b, -1), pos, axis=1)
    return pos, ids


Counting = Literal["paper", "authors"]


def first_occurrences(token_ids: Array) -> Array:
    """(B, L) bool: True at the first position of each distinct id in its row."""
    ids = jnp.asarray(token_ids)
    order = jnp.argsort(ids, axis=1, stable=True)
    srt = jnp.take_along_axis(ids, order, axis=1)
    first = jnp.concatenate([jnp.ones_like(srt[:, :1], bool), srt[:, 1:] != srt[:, :-1]], axis=1)
    out = jnp.zeros_like(first)
    return out.at[jnp.arange(ids.shape[0])[:, None], order].set(first)


def token_counts(
    token_ids: ArrayLike,
    labels: ArrayLike,
    n_concepts: int,
    codebook_size: int,
    counting: Counting = "authors",
) -> Array:
    """(n_concepts, K) counts of each token id among each concept's rows, one scatter-add.

    token_ids: (B, L) ids (T_image tokens, or all tokens for the frequency baseline).
    counting: "paper" counts an id once per row in which it occurs (eq. 5: the union of the
      per-image sets, so the count is a number of images); "authors" counts every position, as
      the authors' code does (an id repeated inside one row counts several times).
    """
    if counting not in ("paper", "authors"):
        raise ValueError(f"counting={counting!r}; expected 'paper' or 'authors'")
    ids = jnp.asarray(token_ids, jnp.int32)
    lab = jnp.broadcast_to(jnp.asarray(labels, jnp.int32)[:, None], ids.shape)
    weight = first_occurrences(ids) if counting == "paper" else jnp.ones(ids.shape, bool)
    counts = jnp.zeros((n_concepts, codebook_size), jnp.int32)
    return counts.at[lab.ravel(), ids.ravel()].add(weight.ravel().astype(jnp.int32))


def top_tokens(counts: Array, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Top-k token ids per concept from `token_counts` (ties broken by lower id), with counts.

    Returns two lists with one array per concept: its ids in descending count, and their counts.
    Ids that never occur are left out, so a concept with fewer than k distinct ids gets fewer
    (and a concept with no images an empty set).
    """
    if k < 1:
        raise ValueError(f"k={k}; expected at least 1 token per concept")
    table = np.asarray(counts)
    order = np.lexsort((np.broadcast_to(np.arange(table.shape[1]), table.shape), -table))
    ids_out, counts_out = [], []
    for c in range(table.shape[0]):
        top = order[c, :k]
        top = top[table[c, top] > 0]
        ids_out.append(top.astype(np.int64))
        counts_out.append(table[c, top])
    return ids_out, counts_out


def concept_tokens(
    image_token_ids: ArrayLike,
    labels: ArrayLike,
    n_concepts: int,
    codebook_size: int,
    k: int,
    counting: Counting = "paper",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """T_concept (eq. 5): the k ids that occur in the most T_image sets of each concept (by
    default; `counting="authors"` counts positions instead). Lists of (≤ k,) ids and counts."""
    return top_tokens(token_counts(image_token_ids, labels, n_concepts, codebook_size, counting), k)


def frequency_baseline(
    indices: ArrayLike, labels: ArrayLike, n_concepts: int, codebook_size: int, k: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The k most frequent token ids per concept over all positions (occurrences), without the
    IEM. Lists of (≤ k,) ids and counts, as `concept_tokens`."""
    b = np.shape(indices)[0]
    return top_tokens(
        token_counts(jnp.asarray(indices).reshape(b, -1), labels, n_concepts, codebook_size), k
    )
