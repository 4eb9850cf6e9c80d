"""Effect sizes for bias audits: Cliff's δ in O(N log N), its CI, Mann–Whitney U, thresholds.

`cliffs_delta` is the standard δ = (#[x > y] − #[x < y]) / (n_x·n_y) in [−1, 1], computed by
sorting rather than the N² double loop. `cliffs_delta_halved` is the authors' variant,
(#[x > y] + ½#[x = y] − n_x·n_y/2) / (n_x·n_y) = δ/2, in [−0.5, 0.5]; it is named apart so that
numbers from the paper are not compared with the standard δ by mistake.
"""

from __future__ import annotations

import math

import numpy as np

# Romano et al. (2006) thresholds on |δ|.
ROMANO = ((0.147, "negligible"), (0.33, "small"), (0.474, "medium"), (math.inf, "large"))


def _greater_less(x: np.ndarray, y: np.ndarray) -> tuple[int, int]:
    ys = np.sort(np.asarray(y, np.float64))
    x = np.asarray(x, np.float64)
    less_than_x = np.searchsorted(ys, x, side="left")  # #y < x for each x
    le_x = np.searchsorted(ys, x, side="right")  # #y ≤ x
    greater = int(less_than_x.sum())
    less = int((len(ys) - le_x).sum())
    return greater, less


def cliffs_delta(x, y) -> float:
    """Standard Cliff's δ in [−1, 1]: positive when x tends to exceed y."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) == 0 or len(y) == 0:
        raise ValueError(f"Cliff's delta needs two non-empty samples (got {len(x)} and {len(y)})")
    g, l_ = _greater_less(x, y)
    return (g - l_) / (len(x) * len(y))


def cliffs_delta_halved(x, y) -> float:
    """The authors' variant: (#[x>y] + ½#[x=y] − n_x n_y / 2)/(n_x n_y) = δ/2, in [−0.5, 0.5]."""
    return cliffs_delta(x, y) / 2


def magnitude(delta: float) -> str:
    """Romano's label for |δ|: negligible < 0.147 ≤ small < 0.33 ≤ medium < 0.474 ≤ large."""
    return next(label for bound, label in ROMANO if abs(delta) < bound)


def bootstrap_ci(
    x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of Cliff's δ (resampling each group)."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x), np.asarray(y)
    deltas = np.array([
        cliffs_delta(rng.choice(x, len(x)), rng.choice(y, len(y))) for _ in range(n_boot)
    ])  # fmt: skip
    a = (1 - level) / 2
    return float(np.quantile(deltas, a)), float(np.quantile(deltas, 1 - a))


def mann_whitney_u(x, y) -> tuple[float, float]:
    """(U of x, two-sided p) with the normal approximation, tie-corrected (no continuity
    correction); U = #[x > y] + ½#[x = y], so δ = 2U/(n_x n_y) − 1."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    nx, ny = len(x), len(y)
    g, l_ = _greater_less(x, y)
    u = g + 0.5 * (nx * ny - g - l_)
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    n = nx + ny
    tie = (counts**3 - counts).sum() / (n * (n - 1)) if n > 1 else 0.0
    var = nx * ny / 12 * ((n + 1) - tie)
    if var <= 0:
        return float(u), 1.0
    z = (u - nx * ny / 2) / math.sqrt(var)
    return float(u), float(math.erfc(abs(z) / math.sqrt(2)))


def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95 % by default)."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0 trials, got {n}")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)
