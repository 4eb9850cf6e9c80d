"""Statistics for bias audits: Cliff's δ on paired counts, and the share of a concept in a
mixture.

`cliffs_delta` is the standard δ = (#[x > y] − #[x < y]) / (n_x·n_y) in [−1, 1], computed from
ranks (O(N log N), vectorised over leading axes) rather than the N² double loop.
`cliffs_delta_halved` is the authors' variant, (#[x > y] + ½#[x = y] − n_x·n_y/2) / (n_x·n_y)
= δ/2, in [−0.5, 0.5]; it is named apart so that numbers from the paper are not compared with the
standard δ by mistake.

In an audit both count vectors come from the *same* images, so they are paired (and usually
negatively correlated: a position holding an A token holds no B token). `paired_delta_ci`
resamples images, both counts together (`scipy.stats.bootstrap(paired=True)`), and
`paired_delta_test` is the sign-flip permutation test of within-image exchangeability
(`scipy.stats.permutation_test(permutation_type="samples")`) with δ as its statistic; an
interval or test that treats the two vectors as independent samples is too narrow for such data.

`mixture_share` estimates the share p of A-like images in a mixture of A-like and B-like images
from one score per image and reference images of each concept (see its docstring for the
assumptions), with a bootstrap interval that resamples the reference images too.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

# Romano et al. (2006) thresholds on |δ|.
ROMANO = ((0.147, "negligible"), (0.33, "small"), (0.474, "medium"), (math.inf, "large"))


def _delta(x, y, axis: int = -1) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    y = np.moveaxis(np.asarray(y, np.float64), axis, -1)
    nx, ny = x.shape[-1], y.shape[-1]
    if nx == 0 or ny == 0:
        raise ValueError(f"Cliff's delta needs two non-empty samples (got {nx} and {ny})")
    batch = np.broadcast_shapes(x.shape[:-1], y.shape[:-1])
    pooled = np.concatenate(
        [np.broadcast_to(x, (*batch, nx)), np.broadcast_to(y, (*batch, ny))], axis=-1
    )
    u = scipy.stats.rankdata(pooled, axis=-1)[..., :nx].sum(-1) - nx * (nx + 1) / 2
    return 2 * u / (nx * ny) - 1


def cliffs_delta(x: ArrayLike, y: ArrayLike, axis: int = -1) -> Any:
    """Standard Cliff's δ in [−1, 1] along `axis`: positive when x tends to exceed y.

    From the Mann–Whitney U of x (mid-ranks over the pooled sample: U = #[x > y] + ½#[x = y]),
    δ = 2U/(n_x n_y) − 1. A float for 1-D input, an array over the other axes otherwise.
    """
    delta = _delta(x, y, axis)
    return float(delta) if np.ndim(delta) == 0 else delta


def cliffs_delta_halved(x: ArrayLike, y: ArrayLike) -> float:
    """The authors' variant: (#[x>y] + ½#[x=y] − n_x n_y / 2)/(n_x n_y) = δ/2, in [−0.5, 0.5]."""
    return cliffs_delta(x, y) / 2


def magnitude(delta: float) -> str:
    """Romano's label for |δ|: negligible < 0.147 ≤ small < 0.33 ≤ medium < 0.474 ≤ large."""
    return next(label for bound, label in ROMANO if abs(delta) < bound)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            f"paired samples need two 1-D arrays of one length ≥ 2 (got {x.shape} and {y.shape})"
        )
    return x, y


def _interval(res) -> tuple[float, float]:
    lo, hi = res.confidence_interval
    return float(lo), float(hi)


def paired_delta_ci(
    x: ArrayLike, y: ArrayLike, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of Cliff's δ(x, y) for paired samples: x[i] and y[i] come
    from the same unit (image) and are resampled together."""
    x, y = _paired(x, y)
    res = scipy.stats.bootstrap(
        (x, y),
        _delta,
        paired=True,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return _interval(res)


def paired_delta_test(x: ArrayLike, y: ArrayLike, n_resamples: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value of the sign-flip permutation test for paired samples: under the null,
    x[i] and y[i] are exchangeable within each unit (so the two marginals are equal); the
    statistic is Cliff's δ."""
    x, y = _paired(x, y)
    if np.array_equal(x, y):
        return 1.0
    res = scipy.stats.permutation_test(
        (x, y),
        _delta,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)


def mixture_share(
    neutral: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The share p of A-like units in a mixture, from one score per unit.

    If every neutral unit is drawn from A's score distribution with probability p and from B's
    otherwise (the reference units of each concept show those distributions), the neutral mean is
    μ_N = p·μ_A + (1 − p)·μ_B, so p̂ = (μ̂_N − μ̂_B) / (μ̂_A − μ̂_B). This needs only that the means
    differ (μ_A ≠ μ_B): it stays unbiased however much the score of one concept overlaps the
    other's and whatever the shapes of the two distributions. Its interval is the bias-corrected
    and accelerated bootstrap that resamples the neutral units and both reference sets, each on
    its own, so the uncertainty of the references is part of it.

    Args:
      neutral, ref_a, ref_b: 1-D scores of the neutral units and of reference units of A and B.
    Returns: {'share': p̂ (unclipped, may leave [0, 1] by chance), 'ci': [lo, hi] clipped to
      [0, 1], 'contrast': μ̂_A − μ̂_B, 'contrast_se': its standard error}; share and ci are NaN
      when the references show no contrast (μ̂_A ≤ μ̂_B).
    """
    samples = [np.asarray(s, np.float64) for s in (neutral, ref_a, ref_b)]
    for name, s in zip(("neutral", "ref_a", "ref_b"), samples, strict=True):
        if s.ndim != 1 or len(s) < 2:
            raise ValueError(f"mixture_share: {name} has shape {s.shape}; expected (n ≥ 2,)")
    n, a, b = samples
    contrast = a.mean() - b.mean()
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    out: dict[str, Any] = {"contrast": float(contrast), "contrast_se": se}
    if contrast <= 0:
        return out | {"share": float("nan"), "ci": [float("nan"), float("nan")]}

    def share(n_, a_, b_, axis=-1):
        num, den = n_.mean(axis) - b_.mean(axis), a_.mean(axis) - b_.mean(axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            # A resample without contrast says nothing about p: send it to the far tail it
            # leans to (finite, so percentiles stay defined; the interval is clipped anyway).
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.copysign(1e6, num))

    res = None
    for method in ("BCa", "percentile"):  # BCa fails on degenerate jackknives: fall back
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
            res = scipy.stats.bootstrap(
                samples,
                share,
                vectorized=True,
                n_resamples=n_boot,
                confidence_level=level,
                method=method,
                rng=np.random.default_rng(seed),
            )
        if np.isfinite(_interval(res)).all():
            break
    lo, hi = (float(np.clip(v, 0, 1)) for v in _interval(res))
    return out | {"share": float(share(n, a, b)), "ci": [lo, hi], "method": method}


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95 % by default)."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 trials, got {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def mean_ci(
    values: ArrayLike, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """{'value': mean, 'ci': [lo, hi]}: the mean of per-unit (per-image) values with its
    percentile bootstrap interval over units; NaN values are dropped first. With fewer than two
    units (or no spread) the interval is the mean itself; with none, everything is NaN."""
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if not len(v):
        return {"value": float("nan"), "ci": [float("nan"), float("nan")]}
    mean = float(v.mean())
    if len(v) < 2 or np.ptp(v) == 0:
        return {"value": mean, "ci": [mean, mean]}
    res = scipy.stats.bootstrap(
        (v,),
        np.mean,
        vectorized=True,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    lo, hi = _interval(res)
    return {"value": mean, "ci": [lo, hi]}
