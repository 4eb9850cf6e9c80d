"""Counterfactual evaluation of token explanations, and ground-truth scores on the toy world.

Masking as the paper and the authors' code: the pixel patch of every chosen token position is
blacked out in the decoded image, and a separate classifier's accuracy and probability for the
concept are compared before and after. Positions are chosen by position (image level: the top-n
TIS positions against n random ones) or by token id (concept level, the authors' choice: every
position whose id is in the token set, against the frequency baseline's set).

The classifier is any callable pixels (B, H, W, 3) in [-1, 1] → class probabilities (B, C): the
toy world's pixel judge, or for ImageNet a Flax/JAX model. A torchvision/timm model plugs in
through a small adapter the user writes, so torch never becomes a dependency of cortex-jax:

    def classifier(pixels):                      # pixels: jax/numpy (B, 256, 256, 3) in [-1, 1]
        x = torch.from_numpy(np.asarray((pixels + 1) / 2)).permute(0, 3, 1, 2)
        x = F.interpolate(x, 224, mode="bilinear")               # the authors resize to 224
        x = (x - mean[:, None, None]) / std[:, None, None]       # ImageNet normalisation
        with torch.no_grad():
            return model(x).softmax(-1).numpy()

Ground truth (toy world only): the precision of T_image (share of its positions on the object
mask) and of T_concept (share of its tokens' occurrences in test images that fall on the object).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import SupportsFloat

import numpy as np

Classifier = Callable[[np.ndarray], np.ndarray]


def positions_mask(positions: np.ndarray, grid_size: int) -> np.ndarray:
    """(B, n) flat positions (row·m + col) → (B, m, m) bool."""
    b = positions.shape[0]
    out = np.zeros((b, grid_size * grid_size), bool)
    np.put_along_axis(out, np.asarray(positions, np.int64), True, axis=1)
    return out.reshape(b, grid_size, grid_size)


def token_id_mask(indices: np.ndarray, token_set: np.ndarray) -> np.ndarray:
    """(B, m, m) bool: positions whose token id is in `token_set` ((k,) for all images, or
    (B, k) one set per image)."""
    indices = np.asarray(indices)
    token_set = np.asarray(token_set)
    if token_set.ndim == 1:
        return np.isin(indices, token_set)
    return np.stack([np.isin(i, s) for i, s in zip(indices, token_set, strict=True)])


def random_positions(
    batch: int, grid_size: int, n: int, seed: int = 42, image_ids: np.ndarray | None = None
) -> np.ndarray:
    """(B, n) distinct random positions per image (the authors' seed 42). Each image's draw is
    keyed by (seed, its id), ids 0..B−1 by default: pass global image ids so that splitting a
    test set into chunks neither repeats nor changes any image's draw."""
    ids = np.arange(batch) if image_ids is None else np.asarray(image_ids)
    if ids.shape != (batch,):
        raise ValueError(f"image_ids has shape {ids.shape}; expected ({batch},)")
    perm = lambda i: np.random.default_rng((seed, int(i))).permutation(grid_size * grid_size)
    return np.stack([perm(i)[:n] for i in ids]) if batch else np.zeros((0, n), np.int64)


def black_out(pixels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pixels (B, H, W, 3) in [-1, 1] with the patch of every True token position set to black."""
    pixels = np.asarray(pixels)
    b, h, w, _ = pixels.shape
    m = mask.shape[1]
    if h % m or w % m or mask.shape != (b, m, m):
        raise ValueError(f"mask {mask.shape} does not tile pixels {pixels.shape}")
    up = np.repeat(np.repeat(mask, h // m, axis=1), w // m, axis=2)
    return np.where(up[..., None], -1.0, pixels).astype(pixels.dtype)


def masking_effect(
    classifier: Classifier, pixels: np.ndarray, labels: np.ndarray, mask: np.ndarray
) -> dict[str, float]:
    """Accuracy and mean probability of the true class before/after masking, and tokens masked."""
    labels = np.asarray(labels)
    rows = np.arange(len(labels))
    before = np.asarray(classifier(pixels))
    after = np.asarray(classifier(black_out(pixels, mask)))
    return masking_summary(
        np.mean(before.argmax(-1) == labels),
        np.mean(after.argmax(-1) == labels),
        before[rows, labels].mean(),
        after[rows, labels].mean(),
        mask.reshape(len(labels), -1).sum(1).mean(),
    )


def masking_summary(
    acc_b: SupportsFloat,
    acc_a: SupportsFloat,
    p_b: SupportsFloat,
    p_a: SupportsFloat,
    tokens_masked: SupportsFloat,
) -> dict[str, float]:
    """`masking_effect`'s record from its five means (accuracy and true-class probability before
    and after masking, tokens masked an image), also when they were summed batch by batch."""
    acc_b, acc_a, p_b, p_a = float(acc_b), float(acc_a), float(p_b), float(p_a)
    return {
        "accuracy_before": acc_b,
        "accuracy_after": acc_a,
        "accuracy_change": acc_a - acc_b,
        "probability_before": p_b,
        "probability_after": p_a,
        "probability_change": p_a - p_b,
        "tokens_masked": float(tokens_masked),
    }


def image_level_curve(
    classifier: Classifier,
    pixels: np.ndarray,
    labels: np.ndarray,
    tis_positions: np.ndarray,
    grid_size: int,
    ns: list[int],
    seed: int = 42,
    image_ids: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Mean probability of the true class after masking the top-n TIS positions vs n random ones,
    with the standard error of each mean over images (`tis_se`, `random_se`).

    tis_positions: (B, ≥ max(ns)) flat positions in descending TIS order; image_ids: (B,) global
    ids keying the random positions (see `random_positions`).
    """
    rand = random_positions(len(labels), grid_size, max(ns), seed, image_ids)
    out: dict[str, list[float]] = {
        "n": list(ns),
        "tis": [],
        "random": [],
        "tis_se": [],
        "random_se": [],
    }
    rows = np.arange(len(labels))
    for n in ns:
        for name, pos in (("tis", tis_positions), ("random", rand)):
            mask = positions_mask(pos[:, :n], grid_size)
            p = np.asarray(classifier(black_out(pixels, mask)))[rows, labels]
            out[name].append(float(p.mean()))
            out[f"{name}_se"].append(float(p.std(ddof=1) / np.sqrt(len(p))) if len(p) > 1 else 0.0)
    return out


def position_precision(positions: np.ndarray, truth: np.ndarray) -> float:
    """Share of chosen positions (B, n) that lie on the ground-truth mask (B, m, m)."""
    b = truth.shape[0]
    return float(np.take_along_axis(truth.reshape(b, -1), np.asarray(positions), 1).mean())


def occurrence_precision(indices: np.ndarray, truth: np.ndarray, token_set: np.ndarray) -> float:
    """Share of the occurrences of `token_set` ids in `indices` (B, m, m) that fall on `truth`;
    NaN when the ids never occur."""
    hit = token_id_mask(indices, token_set)
    n = hit.sum()
    return float((hit & truth).sum() / n) if n else float("nan")
