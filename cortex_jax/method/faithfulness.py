"""Faithfulness of token attributions: deletion and insertion curves over token positions,
sanity checks that can fail (model and data randomisation), and ground-truth scores.

Pure functions on arrays; the model is a callable. A *removal* is a boolean mask (B, m, m) of
removed positions handed to `score(mask) -> (B,)` (the concept's probability after removal),
so one curve function serves every kind of removal the caller composes:

- token replacement (`replace_tokens`): removed positions take a replacement grid's token: one
  baseline token everywhere, or the generator's own prediction there (in-distribution);
- the paper's black patch (pixel side only): the caller blacks out the decoded image's patches
  (`evaluate.black_out`).

Deletion removes positions most important first, starting from the intact input; insertion
starts from everything removed and restores positions most important first. Both are sampled
at `step_counts` (0 … m·m positions, both ends included). The area under a curve is the
trapezoid over the removed/restored *fraction* in [0, 1], one number per image, so a
bootstrap over images (`stats.mean_ci`) gives its interval. Lower deletion AUC and higher
insertion AUC are better.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import scipy.stats

from cortex_jax.method import stats

Score = Callable[[np.ndarray], np.ndarray]  # removed mask (B, m, m) bool → (B,) scores
KINDS = ("deletion", "insertion")


def order_positions(scores: np.ndarray) -> np.ndarray:
    """(B, m, m) per-position scores → (B, m·m) flat positions, most important first (ties
    in row-major order, so the result is deterministic)."""
    s = np.asarray(scores, np.float64)
    if s.ndim != 3:
        raise ValueError(f"scores have shape {s.shape}; expected (B, m, m)")
    return np.argsort(-s.reshape(len(s), -1), axis=1, kind="stable")


def step_counts(n_positions: int, steps: int) -> np.ndarray:
    """Distinct position counts 0 … n_positions at about `steps` even intervals (both ends)."""
    if steps < 1 or n_positions < 1:
        raise ValueError(f"steps={steps}, n_positions={n_positions}; expected both ≥ 1")
    return np.unique(np.round(np.linspace(0, n_positions, steps + 1)).astype(np.int64))


def removed_mask(order: np.ndarray, k: int, kind: str, grid_size: int) -> np.ndarray:
    """(B, m, m) bool: the positions removed at step k. Deletion: the first k of `order`;
    insertion: all but the first k."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {', '.join(KINDS)}")
    b, n = order.shape
    first = np.zeros((b, n), bool)
    np.put_along_axis(first, order[:, :k], True, axis=1)
    out = first if kind == "deletion" else ~first
    return out.reshape(b, grid_size, grid_size)


def curve(score: Score, order: np.ndarray, counts: np.ndarray, kind: str) -> np.ndarray:
    """(B, S) scores after removing (deletion) or restoring (insertion) counts[s] positions in
    `order` (B, m·m), most important first."""
    m = int(round(np.sqrt(order.shape[1])))
    if m * m != order.shape[1]:
        raise ValueError(f"{order.shape[1]} positions do not form a square grid")
    cols = [np.asarray(score(removed_mask(order, int(k), kind, m)), np.float64) for k in counts]
    return np.stack(cols, axis=1)


def auc(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-image area (B,) under curves (B, S) over the fraction counts / max(counts) ∈ [0, 1]
    (trapezoid rule)."""
    x = np.asarray(counts, np.float64) / float(np.max(counts))
    v = np.asarray(values, np.float64)
    return ((v[:, 1:] + v[:, :-1]) / 2 * np.diff(x)).sum(axis=1)


def replace_tokens(tokens: np.ndarray, replacement: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Token grids (B, m, m) with removed positions taken from `replacement` (B, m, m) or a
    single token id."""
    return np.where(removed, np.broadcast_to(replacement, np.shape(tokens)), tokens)


def frequency_scores(tokens: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The frequency reference as a per-position score (B, m, m): how often the position's token
    id occurs over all positions of all grids of the same label (the paper's frequency baseline
    ranks ids this way, without the model)."""
    t = np.asarray(tokens)
    y = np.asarray(labels)
    out = np.zeros(t.shape, np.float64)
    for c in np.unique(y):
        sel = y == c
        ids, counts = np.unique(t[sel], return_counts=True)
        out[sel] = counts[np.searchsorted(ids, t[sel])]
    return out


# ---- sanity checks ----------------------------------------------------------------------------


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation (B,) between two score maps of each image (B, m, m); NaN where
    either map is constant: there is no ranking, so agreement is undefined (and a randomisation
    check must not count it as a pass)."""
    x = np.asarray(a, np.float64).reshape(len(a), -1)
    y = np.asarray(b, np.float64).reshape(len(b), -1)
    rx = scipy.stats.rankdata(x, axis=1)
    ry = scipy.stats.rankdata(y, axis=1)
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    den = np.sqrt((rx**2).sum(1) * (ry**2).sum(1))
    num = (rx * ry).sum(1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def top_overlap(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Share (B,) of the top-n positions of map a that are among the top-n of map b."""
    oa, ob = order_positions(a)[:, :n], order_positions(b)[:, :n]
    return np.array([len(np.intersect1d(x, y)) / n for x, y in zip(oa, ob, strict=True)])


def _redraw(leaf: Any, rng: np.random.Generator) -> np.ndarray:
    a = np.asarray(leaf)
    sd = float(a.std()) if a.size > 1 else 0.0
    return (rng.normal(0.0, sd, a.shape).astype(a.dtype)) if sd > 0 else a


def _first_uses_mapped(
    jaxpr: Any, where: dict[int, int], seen: dict[int, int], counter: list[int]
) -> None:
    """Records in `seen`, for each input index that `where` maps a variable of `jaxpr` to, the
    global index of the first equation reading it, descending into nested jaxprs (jit,
    custom_jvp, …) in program order."""
    for eqn in jaxpr.eqns:
        counter[0] += 1
        read = [where.get(id(v)) for v in eqn.invars]
        inner = next(
            (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params), None
        )
        sub = getattr(inner, "jaxpr", inner)
        if sub is not None and len(sub.invars) == len(eqn.invars):
            mapped = {id(sv): i for sv, i in zip(sub.invars, read, strict=True) if i is not None}
            _first_uses_mapped(sub, mapped, seen, counter)
            continue
        for i in read:
            if i is not None and i not in seen:
                seen[i] = counter[0]


def forward_order(apply: Callable[[Any], Any], params: Mapping[str, Any]) -> list[str]:
    """The top-level keys of `params` in the order the forward pass `apply(params)` first reads
    them (traced with `jax.make_jaxpr`): input layer first, output layer last. Keys never read
    come last, in their given order."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    closed = jax.make_jaxpr(lambda *ls: apply(jax.tree_util.tree_unflatten(treedef, ls)))(
        *[leaf for _, leaf in leaves]
    )
    seen: dict[int, int] = {}
    mapped = {id(v): i for i, v in enumerate(closed.jaxpr.invars)}
    _first_uses_mapped(closed.jaxpr, mapped, seen, [0])
    first: dict[str, float] = {k: float("inf") for k in params}
    for i, (path, _) in enumerate(leaves):
        key = str(getattr(path[0], "key", path[0]))
        first[key] = min(first[key], seen.get(i, float("inf")))
    names = list(params)
    return sorted(names, key=lambda k: (first[k], names.index(k)))


def cascading_randomization(
    params: Mapping[str, Any], seed: int = 0, layers: Sequence[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Stages of cascading parameter randomisation (Adebayo et al. 2018): stage i re-draws the
    parameters of `layers[: i + 1]`, top layer first, down to all layers. `layers` are keys of
    `params` (default: its keys in reverse order; pass `reversed(forward_order(...))` for a
    tree whose keys are not in forward order, e.g. one restored sorted by name). A re-drawn
    leaf is N(0, s²) with s its own standard deviation (the scale of the trained weights); a
    leaf without spread (a LayerNorm scale of ones, a zero bias) is kept. Returns
    [(last layer re-drawn, params)]."""
    names = list(reversed(list(params))) if layers is None else list(layers)
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"layer {unknown[0]!r} is not in the parameters ({', '.join(params)})")
    rng = np.random.default_rng(seed)
    current = dict(params)
    out = []
    for name in names:
        current = dict(current)
        current[name] = jax.tree_util.tree_map(lambda x: _redraw(x, rng), params[name])
        out.append((name, current))
    return out


def agreement(original: np.ndarray, other: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per-image agreement (B,) of two score maps (B, m, m): `spearman` and `top_overlap` of the
    top-n positions. A randomisation check wants them low."""
    return {
        "spearman": spearman_per_image(original, other),
        "top_overlap": top_overlap(original, other, n),
    }


def check_passes(spearman: np.ndarray, max_agreement: float = 0.5, n_boot: int = 2000) -> bool:
    """A randomisation check passes when the upper end of the 95 % bootstrap interval of the
    mean per-image Spearman correlation is below `max_agreement` (a convention: a method whose
    scores barely change when the model is destroyed explains the input, not the model). An
    image whose scores are constant (NaN Spearman) fails it: no ranking shows no dependence."""
    if not np.isfinite(np.asarray(spearman, np.float64)).all():
        return False
    ci = stats.mean_ci(spearman, n_boot=n_boot)["ci"]
    return bool(ci[1] < max_agreement)


# ---- ground truth -----------------------------------------------------------------------------


def ground_truth_scores(scores: np.ndarray, truth: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per-image ground-truth scores (B,) of position scores (B, m, m) against object masks
    (B, m, m) bool: `precision` of the top-n positions on the object, `pointing` (1 when the
    top-1 position is on the object), `mass` the share of positive score on the object (NaN
    when an image has no positive score)."""
    s = np.asarray(scores, np.float64)
    t = np.asarray(truth, bool).reshape(len(s), -1)
    order = order_positions(s)
    hits = np.take_along_axis(t, order[:, :n], axis=1)
    pos = np.clip(s.reshape(len(s), -1), 0, None)
    total = pos.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass = np.where(total > 0, (pos * t).sum(1) / np.where(total > 0, total, 1), np.nan)
    return {"precision": hits.mean(1), "pointing": hits[:, 0].astype(np.float64), "mass": mass}
