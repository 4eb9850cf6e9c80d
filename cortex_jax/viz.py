"""PNG figures: image grids with row labels, optionally with token positions boxed in red.

Pixels come in [-1, 1] (the VQGAN's range), NHWC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 96


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[-1, 1] floats → uint8."""
    return (np.clip((np.asarray(pixels, np.float32) + 1) / 2, 0, 1) * 255 + 0.5).astype(np.uint8)


def grid_image(
    images: np.ndarray,
    per_row: int,
    row_labels: Sequence[str] | None = None,
    scale: int = 1,
    boxes: np.ndarray | None = None,
    patch: int | None = None,
    pad: int = 2,
) -> Image.Image:
    """A grid of images, `per_row` a row, with an optional label column.

    Args:
      images: (N, H, W, 3) in [-1, 1].
      boxes: optional (N, m, m) bool; True positions get a red box of `patch` pixels (before
        scaling), as the paper's Figure 3 marks the top tokens.
    """
    images = to_uint8(images)
    n, h, w, _ = images.shape
    rows = -(-n // per_row)
    hs, ws = h * scale, w * scale
    left = LABEL_WIDTH if row_labels else 0
    canvas = Image.new("RGB", (left + per_row * (ws + pad) + pad, rows * (hs + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, per_row)
        x0, y0 = left + pad + c * (ws + pad), pad + r * (hs + pad)
        canvas.paste(Image.fromarray(images[i]).resize((ws, hs), Image.NEAREST), (x0, y0))
        if boxes is not None:
            p = (patch or h // boxes.shape[1]) * scale
            for by, bx in np.argwhere(boxes[i]):
                draw.rectangle(
                    [x0 + bx * p, y0 + by * p, x0 + (bx + 1) * p - 1, y0 + (by + 1) * p - 1],
                    outline=(255, 0, 0),
                )
    if row_labels:
        for r, label in enumerate(row_labels[:rows]):
            draw.text((4, pad + r * (hs + pad) + hs // 2 - 5), label, fill=(0, 0, 0))
    return canvas


def save_grid(path: str | os.PathLike, images: np.ndarray, per_row: int, row_labels=None, **kw):
    """Writes `grid_image(...)` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, per_row, row_labels, **kw).save(path)
    return path
