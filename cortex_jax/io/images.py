"""Images in and out: reading a user's image file into VQGAN pixels, and PNG figures (image grids
with row labels, optionally with token positions boxed in red).

Pixels are in [-1, 1] (the VQGAN's range), NHWC.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

LABEL_WIDTH = 96


BACKGROUND = (255, 255, 255)  # what transparent pixels are composited on when an image is read


def read_image(path: str | os.PathLike, size: int) -> np.ndarray:
    """An image file → pixels (1, size, size, 3) in [-1, 1], resized with bicubic filtering.

    16-bit grayscale is scaled from 0..65535 (not clipped at 255, which turns it white);
    transparency (RGBA, LA, palette with alpha) is composited on white, `BACKGROUND`; anything
    else PIL reads is converted to RGB. A file that is missing, not an image, truncated or a
    decompression bomb raises a one-line OSError / ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as img:
                img.load()
                rgb = _to_rgb8(img)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: refused as a possible decompression bomb ({e})") from None
        except (OSError, SyntaxError) as e:  # PIL raises SyntaxError for some broken headers
            raise ValueError(f"{path} is not a readable image ({e})") from None
    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(rgb, np.float32)[None] / 127.5 - 1


def _to_rgb8(img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img, np.float64)
        if a.min() < 0 or a.max() > 65535:
            raise ValueError(
                f"{img.mode} image values span {a.min():g}..{a.max():g}; expected 16-bit"
            )
        grey = Image.fromarray((a / 65535 * 255 + 0.5).astype(np.uint8))
        return grey.convert("RGB")
    if img.mode == "F":
        a = np.asarray(img, np.float64)
        if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
            raise ValueError("float image values must be finite and in [0, 1]")
        return Image.fromarray((a * 255 + 0.5).astype(np.uint8)).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


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
        canvas.paste(
            Image.fromarray(images[i]).resize((ws, hs), Image.Resampling.NEAREST), (x0, y0)
        )
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


def save_grid(
    path: str | os.PathLike,
    images: np.ndarray,
    per_row: int,
    row_labels: Sequence[str] | None = None,
    **kw: Any,
) -> Path:
    """Writes `grid_image(...)` as a PNG; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, per_row, row_labels, **kw).save(path)
    return path
