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


def smoothgrad_sum(
    predict: Predict,
    x0: Array,
    concepts: Array,
    keys: Array,
    n_samples: int,
    alpha: float,
    objective: Objective,
    samples_per_chunk: int,
) -> Array:
    """S (B, m, m, d): the mean over `n_samples` noisy copies of ∇_E f_y, with σ = α·(max − min)
    of each image and image i's noise drawn from keys[i] (one PRNG key per image)."""
    # The chunk loop runs from Python: inside an XLA:CPU while loop (lax.scan) the convolution
    # gradients ran 4.3x slower on the 2-core CPU (bench/RESULTS.md). The sum stays on device.
    sigma = alpha * (x0.max(axis=(1, 2, 3)) - x0.min(axis=(1, 2, 3)))  # (B,): per image
    s = jnp.zeros_like(x0)
    for start in range(0, n_samples, samples_per_chunk):
        s = s + _tis_chunk(
            predict, x0, concepts, keys, sigma, start, samples_per_chunk, n_samples, objective
        )
    return s / n_samples


def image_keys(rng: Array, image_ids: Array) -> Array:
    """One PRNG key per image: fold_in(rng, image_id), so draws do not depend on the batching."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(image_ids)


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
    x0 = jnp.asarray(embeddings, jnp.float32)
    keys = image_keys(rng, image_ids)
    s = smoothgrad_sum(predict, x0, concepts, keys, n_samples, alpha, objective, samples_per_chunk)
    return (s if signed else jnp.abs(s)).max(axis=-1)


def _is_traced(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def n_classes_of(predict: Predict, shape: tuple[int, ...]) -> int:
    """The number of classes `predict` scores, from one abstract evaluation on E of `shape`
    (jax.eval_shape: nothing runs; an empty batch is evaluated as one image). Raises a one-line
    ValueError unless it returns (B, classes)."""
    shape = (max(int(shape[0]), 1), *shape[1:])
    try:
        out = jax.eval_shape(predict, jax.ShapeDtypeStruct(tuple(shape), jnp.float32))
    except Exception as err:  # the user's callable: name what it was given, keep the cause
        raise ValueError(
            f"predict failed on E of shape {tuple(shape)}: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    oshape = getattr(out, "shape", None)
    if oshape is None or len(oshape) != 2 or oshape[0] != shape[0] or oshape[1] < 1:
        raise ValueError(
            f"predict returns {oshape if oshape is not None else type(out).__name__} on E of "
            f"shape {tuple(shape)}; expected logits ({shape[0]}, classes)"
        )
    return int(oshape[1])


def check_concepts(concepts: ArrayLike, b: int, n_classes: int) -> Array:
    """Concept ids as (b,) int32, checked: one per image (or one for all: a scalar or (1,)),
    integers, and 0 ≤ id < n_classes (a negative id would silently index from the end, one past
    it would give all-zero scores). One-line ValueError otherwise."""
    if _is_traced(concepts):
        return jnp.broadcast_to(jnp.asarray(concepts, jnp.int32), (b,))
    c = np.asarray(concepts)
    if c.ndim > 1 or (c.ndim == 1 and len(c) not in (1, b)):
        raise ValueError(
            f"concepts has shape {c.shape}; expected one class id per image ({b},) or one for all"
        )
    if c.size and not (np.issubdtype(c.dtype, np.integer) or np.all(np.mod(c, 1) == 0)):
        raise ValueError(f"concepts {c.ravel()[:5].tolist()}…; expected integer class ids")
    if c.size and (c.min() < 0 or c.max() >= n_classes):
        bad = c.ravel()[(c.ravel() < 0) | (c.ravel() >= n_classes)][0]
        raise ValueError(
            f"concept id {int(bad)}; expected 0 ≤ id < {n_classes} (predict's classes)"
        )
    return jnp.broadcast_to(jnp.asarray(c, jnp.int32), (b,))


def check_embeddings(embeddings: ArrayLike) -> Array:
    """E as float32 (B, m, m, d), checked: rank 4, non-empty positions and channels, finite."""
    e = jnp.asarray(embeddings)
    if e.ndim != 4 or 0 in e.shape[1:]:
        raise ValueError(f"E has shape {e.shape}; expected (batch, m, m, d)")
    if not jnp.issubdtype(e.dtype, jnp.floating):
        raise ValueError(f"E has dtype {e.dtype}; expected floating embeddings (codebook rows)")
    if not _is_traced(e) and not bool(jnp.isfinite(e).all()):
        bad = int((~jnp.isfinite(e)).sum())
        raise ValueError(f"E has {bad} non-finite values; expected finite embeddings")
    return e


def check_image_ids(image_ids: ArrayLike | None, b: int) -> Array:
    """(b,) int32 image ids (default 0..b−1), one per image."""
    if image_ids is None:
        return jnp.arange(b)
    ids = jnp.asarray(image_ids, jnp.int32)
    if ids.shape != (b,):
        raise ValueError(f"image_ids has shape {ids.shape}; expected one id per image ({b},)")
    return ids


def check_smoothgrad_options(
    n_samples: int, alpha: float, objective: str, signed: bool, samples_per_chunk: int | None
) -> None:
    """One-line ValueError for a SmoothGrad option outside its range."""
    check_objective(objective)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples={n_samples!r}; expected an integer ≥ 1")
    if not isinstance(alpha, (int, float, np.floating, np.integer)) or not (
        np.isfinite(alpha) and alpha >= 0
    ):
        raise ValueError(f"alpha={alpha!r}; expected a finite number ≥ 0 (σ = α·(max E − min E))")
    if not isinstance(signed, (bool, np.bool_)):
        raise ValueError(f"signed={signed!r}; expected True or False")
    if samples_per_chunk is not None and (
        not isinstance(samples_per_chunk, (int, np.integer)) or samples_per_chunk < 1
    ):
        raise ValueError(
            f"samples_per_chunk={samples_per_chunk!r}; expected an integer ≥ 1, or None for all"
        )


def check_objective(objective: str) -> None:
    if objective not in ("probability", "logit"):
        raise ValueError(f"objective={objective!r}; expected 'probability' or 'logit'")


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
      embeddings: E (B, m, m, d), finite.
      concepts: the concept index per image (B,) or one for all; 0 ≤ id < predict's classes.
      rng: base PRNG key.
      image_ids: (B,) ids that seed each image's noise (default 0..B-1); pass global dataset
        indices to make scores independent of batching.
      samples_per_chunk: noisy copies per image per pass (default all N); lower it to bound
        memory (peak ≈ B·chunk inputs and activations).

    Raises a one-line ValueError for a class id outside predict's classes, E not (B, m, m, d)
    or not finite, concepts or image_ids not one per image, and options out of range.
    """
    check_smoothgrad_options(n_samples, alpha, objective, signed, samples_per_chunk)
    e = check_embeddings(embeddings)
    b = e.shape[0]
    concepts = check_concepts(concepts, b, n_classes_of(predict, e.shape))
    ids = check_image_ids(image_ids, b)
    chunk = min(samples_per_chunk or n_samples, n_samples)
    return _tis(predict, e, concepts, rng, ids, n_samples, float(alpha), objective, signed, chunk)


def check_tokens(
    codebook: ArrayLike, tokens: ArrayLike, labels: ArrayLike, ids: ArrayLike
) -> tuple[Array, np.ndarray, np.ndarray, np.ndarray]:
    """Token grids (N, m, m) int32 with 0 ≤ id < K, labels (N,) int32, image ids (N,): checked
    (one-line ValueErrors); codebook as a (K, d) finite array."""
    cb = jnp.asarray(codebook)
    if cb.ndim != 2 or 0 in cb.shape:
        raise ValueError(f"codebook has shape {cb.shape}; expected (K, d)")
    tok = np.asarray(tokens)
    if tok.ndim != 3 or (len(tok) and 0 in tok.shape[1:]):
        raise ValueError(f"token grids have shape {tok.shape}; expected (N, m, m)")
    if tok.size and (tok.min() < 0 or tok.max() >= cb.shape[0]):
        raise ValueError(
            f"token id {int(tok.min() if tok.min() < 0 else tok.max())}; expected 0 ≤ id < "
            f"{cb.shape[0]} (the codebook's size)"
        )
    lab, img = np.asarray(labels), np.asarray(ids)
    if not len(tok) == len(lab) == len(img) or lab.ndim != 1:
        raise ValueError(
            f"{len(tok)} token grids, {len(lab)} labels and {len(img)} image ids; "
            "expected one of each per image"
        )
    return cb, tok.astype(np.int32), lab, img.astype(np.int32)


def over_images(
    score: Callable[[Array, Array, Array], tuple[Array, ...]],
    rows: np.ndarray,
    labels: np.ndarray,
    image_ids: np.ndarray,
    batch: int,
    embed: Callable[[Array], Array] | None = None,
) -> list[np.ndarray]:
    """The one batched, data-parallel driver: `score(E, labels, image_ids)` → arrays with a
    leading image axis, over `batch` rows at a time, each batch split over this host's devices
    (padded by repeating its last row, which is then dropped), concatenated on the host as
    float32. `rows` are E (N, m, m, d), or token grids with `embed` (grids → E). Methods key
    their draws by image id, so nothing depends on `batch` or the number of devices."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch={batch!r}; expected an integer ≥ 1")
    out: list[list[np.ndarray]] = []
    for i in range(0, len(rows), batch):
        b, (x, y, g) = split_over_local_devices(
            rows[i : i + batch], labels[i : i + batch], image_ids[i : i + batch]
        )
        res = score(embed(x) if embed is not None else x, y, g)
        out.append([np.asarray(r, np.float32)[:b] for r in res])
    return [np.concatenate(parts) for parts in zip(*out, strict=True)] if out else []


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
    on the batch size or the number of devices. Runs on `over_images`, the one batched driver
    every attribution method uses; inputs are checked as in `token_importance`, and token ids
    against the codebook."""
    ids = np.arange(len(tokens)) if image_ids is None else np.asarray(image_ids)
    cb, tokens, labels, ids = check_tokens(codebook, tokens, labels, ids)
    check_smoothgrad_options(n_samples, alpha, objective, False, None)
    m = tokens.shape[1:] if tokens.ndim == 3 else (0, 0)
    if not len(tokens):
        return np.zeros((0, *m), np.float32)
    n_classes = n_classes_of(predict, (min(batch, len(tokens)), *m, cb.shape[1]))
    labels = np.asarray(check_concepts(labels, len(tokens), n_classes))

    def score(e, y, g):
        return (_tis(predict, e, y, rng, g, n_samples, float(alpha), objective, False, n_samples),)

    return over_images(score, tokens, labels, ids, batch, embed=lambda t: cb[t])[0]


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


def top_tokens(counts: ArrayLike, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
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
