"""Figures with matplotlib: every curve and histogram as PNG and SVG, with axis labels, units,
bands where there is sampling uncertainty, and the figure's data beside it as CSV.

Each function writes PATH.png, PATH.svg and PATH.csv for a PATH without suffix and returns the
PNG's path; the SVG carries no date and fixed ids, so the same figure gives the same bytes.
Image grids stay in `io.images` (PIL).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

Z95 = 1.959963984540054


def _save(fig, path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    with plt.rc_context({"svg.hashsalt": "cortex-jax"}):  # the same figure, the same bytes
        fig.savefig(path.with_suffix(".svg"), metadata={"Date": None})
    plt.close(fig)
    with path.with_suffix(".csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path.with_suffix(".png")


def masking_curve(
    path: str | os.PathLike,
    ns: Sequence[int],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    ylabel: str = "probability of the concept (classifier)",
    xlabel: str = "token positions masked per image, n",
) -> Path:
    """Mean ± 95 % band (1.96 standard errors over images) per series: {name: (means, ses)}."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    header, cols = ["n"], [list(ns)]
    for name, (means, ses) in series.items():
        mean, se = np.asarray(means, float), np.asarray(ses, float)
        ax.plot(ns, mean, marker="o", label=name)
        ax.fill_between(ns, mean - Z95 * se, mean + Z95 * se, alpha=0.2)
        header += [f"{name} mean", f"{name} se"]
        cols += [mean.tolist(), se.tolist()]
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel, ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(title="shaded: 95 % CI", fontsize=8, title_fontsize=8)
    return _save(fig, Path(path).with_suffix(""), header, list(zip(*cols, strict=True)))


def count_histograms(
    path: str | os.PathLike, samples: Mapping[str, np.ndarray], title: str, xlabel: str
) -> Path:
    """Per-image integer counts of each sample as side-by-side bars (share of images), with each
    sample's mean and its 95 % interval in the legend."""
    hi = int(max(int(np.max(v)) for v in samples.values())) + 1 if samples else 1
    xs = np.arange(hi)
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    width = 0.8 / max(len(samples), 1)
    header, cols = ["count"], [xs.tolist()]
    for j, (name, v) in enumerate(samples.items()):
        v = np.asarray(v, int)
        share = np.bincount(v, minlength=hi) / len(v)
        half = Z95 * v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else float("nan")
        label = f"{name}: mean {v.mean():.2f} ± {half:.2f}"
        ax.bar(xs + (j - (len(samples) - 1) / 2) * width, share, width, label=label)
        header.append(f"{name} share of images")
        cols.append(share.tolist())
    ax.set(title=title, xlabel=xlabel, ylabel="share of images")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, Path(path).with_suffix(""), header, list(zip(*cols, strict=True)))
