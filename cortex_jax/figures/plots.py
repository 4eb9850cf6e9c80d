"""Figures with matplotlib: every curve and histogram as PNG and SVG, with axis labels, units,
bands where there is sampling uncertainty, and the figure's data beside it as CSV.

Each curve or histogram function writes PATH.png, PATH.svg and PATH.csv for a PATH without suffix
and returns the PNG's path; the SVG carries no date and fixed ids, so the same figure gives the
same bytes. Figures of images (`frames_figure`, `image_grid_figure`, `colour_scale_figure`) are
built as matplotlib Figures, so their titles, labels and outlines can be read back, and written
as one PNG by `save_png` (their data are the images and the run's JSON). The image grids
themselves are composed in `io.images` (PIL). A PATH may be a gs:// URL (`core.paths`): each file
is drawn into memory and written whole (`shards.atomic_write_bytes`), locally as on a bucket.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from etils import epath  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from cortex_jax.core import paths  # noqa: E402
from cortex_jax.io import shards  # noqa: E402
from cortex_jax.io.images import grid_image, to_uint8  # noqa: E402

Z95 = 1.959963984540054


def _write(path: epath.Path, payload: bytes) -> None:
    if not paths.is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    shards.atomic_write_bytes(path, payload)


def _figure_bytes(fig, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _save(
    fig, path: epath.Path, header: Sequence[str], rows: Sequence[Sequence[object]]
) -> epath.Path:
    fig.tight_layout()
    png = _figure_bytes(fig, "png", dpi=120)
    with plt.rc_context({"svg.hashsalt": "cortex-jax"}):  # the same figure, the same bytes
        svg = _figure_bytes(fig, "svg", metadata={"Date": None})
    plt.close(fig)
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(header)
    w.writerows(rows)
    _write(path.with_suffix(".png"), png)
    _write(path.with_suffix(".svg"), svg)
    _write(path.with_suffix(".csv"), text.getvalue().encode())
    return path.with_suffix(".png")


def masking_curve(
    path: str | os.PathLike,
    ns: Sequence[int],
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    ylabel: str = "probability of the concept (classifier)",
    xlabel: str = "token positions masked per image, n",
) -> epath.Path:
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
    return _save(fig, paths.of(path).with_suffix(""), header, list(zip(*cols, strict=True)))


def count_histograms(
    path: str | os.PathLike, samples: Mapping[str, np.ndarray], title: str, xlabel: str
) -> epath.Path:
    """Per-image integer counts of each sample as side-by-side bars (share of images), one bar per
    integer count, with each sample's mean ± the half-width of its 95 % interval (1.96 standard
    errors of the mean, SE = SD / √images) in the legend."""
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts are whole tokens
    ax.legend(title="mean ± 95 % CI (1.96 SE, not SD)", fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, paths.of(path).with_suffix(""), header, list(zip(*cols, strict=True)))


REGION_COLOUR = "#00e5ff"  # cyan: visible on the toy world's primaries and on ImageNet photos
BOX_COLOUR = "red"  # io.images.grid_image's token boxes


def save_png(fig: Figure, path: str | os.PathLike) -> epath.Path:
    """Writes a figure of images as one PNG at exactly the given path (matplotlib would add
    ".png" to a name without a suffix, a file the caller never checked) and closes it."""
    target = paths.of(path)
    payload = _figure_bytes(fig, "png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    _write(target, payload)
    return target


def _outline(ax, region: np.ndarray, patch: float) -> None:
    """The boundary of a bool (m, m) region of token positions, each `patch` pixels wide."""
    region = np.asarray(region, bool)
    m_rows, m_cols = region.shape
    inside = lambda r, c: 0 <= r < m_rows and 0 <= c < m_cols and region[r, c]
    segments = []
    for r, c in np.argwhere(region):
        x0, y0, x1, y1 = (
            c * patch - 0.5,
            r * patch - 0.5,
            (c + 1) * patch - 0.5,
            (r + 1) * patch - 0.5,
        )
        for (dr, dc), seg in (
            ((-1, 0), [(x0, y0), (x1, y0)]),
            ((1, 0), [(x0, y1), (x1, y1)]),
            ((0, -1), [(x0, y0), (x0, y1)]),
            ((0, 1), [(x1, y0), (x1, y1)]),
        ):
            if not inside(r + dr, c + dc):
                segments.append(seg)
    ax.add_collection(LineCollection(segments, colors=REGION_COLOUR, linewidths=1.2))


def frames_figure(
    frames: np.ndarray,
    labels: Sequence[str],
    title: str,
    region: np.ndarray | None = None,
    target_probs: Sequence[float] | np.ndarray | None = None,
    target: str | None = None,
) -> Figure:
    """Decoded frames side by side (an edit's progression, or original | edit): each frame's
    label above it (its step), the edited `region` ((m, m) bool token positions) outlined, and
    the IEM's probability of `target` under each frame when `target_probs` is given.

    Args:
      frames: (F, H, W, 3) pixels in [-1, 1].
      labels: F frame labels, e.g. "start", "step 50".
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames of shape {frames.shape}; expected (F, H, W, 3)")
    if len(labels) != len(frames):
        raise ValueError(f"{len(labels)} labels for {len(frames)} frames; expected one each")
    if target_probs is not None and len(target_probs) != len(frames):
        raise ValueError(f"{len(target_probs)} probabilities for {len(frames)} frames")
    n = len(frames)
    fig, axes = plt.subplots(1, n, figsize=(1.5 * n + 0.3, 2.4), squeeze=False)
    px = to_uint8(frames)
    for i, ax in enumerate(axes[0]):
        ax.imshow(px[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(labels[i], fontsize=8)
        if target_probs is not None:
            ax.set_xlabel(f"P({target}) = {float(target_probs[i]):.3f}", fontsize=7)
        if region is not None:
            _outline(ax, region, frames.shape[1] / np.asarray(region).shape[0])
    fig.suptitle(title, fontsize=9)
    if region is not None:
        handle = Line2D([], [], color=REGION_COLOUR, lw=1.5, label="edited region")
        fig.legend(handles=[handle], loc="lower right", fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def image_grid_figure(
    images: np.ndarray,
    per_row: int,
    row_labels: Sequence[str],
    title: str,
    boxes: np.ndarray | None = None,
    box_label: str | None = None,
    scale: int = 1,
) -> Figure:
    """A grid of images (`io.images.grid_image`, `per_row` a row) with a title, each row's label
    on the left, and a legend naming what the red boxes mark (`box_label`) when `boxes` is given.

    Args:
      images: (N, H, W, 3) pixels in [-1, 1].
      boxes: optional (N, m, m) bool token positions boxed in red.
    """
    images = np.asarray(images)
    rows = -(-len(images) // per_row)
    if len(row_labels) != rows:
        raise ValueError(f"{len(row_labels)} row labels for {rows} rows of {per_row} images")
    pad = 2
    canvas = np.asarray(grid_image(images, per_row, None, scale=scale, boxes=boxes, pad=pad))
    h_px, w_px = canvas.shape[:2]
    hs = images.shape[1] * scale
    fig, ax = plt.subplots(figsize=(w_px / 100 + 1.6, h_px / 100 + 0.9))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([pad + r * (hs + pad) + hs / 2 for r in range(rows)], list(row_labels))
    ax.tick_params(axis="y", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, fontsize=9)
    if boxes is not None:
        handle = Patch(facecolor="none", edgecolor=BOX_COLOUR, label=box_label or "boxed positions")
        ax.legend(
            handles=[handle],
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            fontsize=8,
            frameon=False,
        )
    fig.tight_layout()
    return fig


def colour_scale_figure(cmap: str, low: str, high: str, title: str) -> Figure:
    """A horizontal colour bar for a heat map: `cmap` from `low` (its left end) to `high`."""
    fig, ax = plt.subplots(figsize=(3.2, 0.75))
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap, extent=(0, 1, 0, 1))
    ax.set_yticks([])
    ax.set_xticks([0, 1], [low, high], fontsize=7)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig
