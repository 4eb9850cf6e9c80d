"""Apply a found token set to an image: `python -m explain.edit --image in.png --tokens
runs/explain_codebook/tokens.json --out edited.png`.

Encodes the image with the VQGAN (toy by default), replaces the tokens at the positions that
explain.codebook optimised with T_codebook (final step, or `--best`), decodes, and writes the
original and the edit side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from absl import app, flags, logging
from PIL import Image

from cortex_jax import checkpoints
from cortex_jax.viz import save_grid

_IMAGE = flags.DEFINE_string("image", None, "Image to edit (PNG/JPEG).")
_TOKENS = flags.DEFINE_string("tokens", None, "tokens.json written by explain.codebook.")
_INDEX = flags.DEFINE_integer("index", 0, "Which image's token set in tokens.json.")
_BEST = flags.DEFINE_bool("best", False, "Use the best logged step instead of the final one.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "VQGAN source (see load_vqgan).")
_OUT = flags.DEFINE_string("out", "runs/edited.png", "Output PNG (original | edit).")


def edit() -> Path:
    for flag, value in (("--image", _IMAGE.value), ("--tokens", _TOKENS.value)):
        if not value:
            raise ValueError(f"{flag} is required")
        if not Path(value).is_file():
            raise FileNotFoundError(f"{flag} file not found: {value}")
    info = json.loads(Path(_TOKENS.value).read_text())
    if not 0 <= _INDEX.value < len(info["images"]):
        raise ValueError(f"--index {_INDEX.value} is outside 0..{len(info['images']) - 1}")
    toks = info["images"][_INDEX.value]["tokens_best" if _BEST.value else "tokens_final"]
    vq = checkpoints.load_vqgan(_VQGAN.value)
    size = vq.config.resolution
    img = Image.open(_IMAGE.value).convert("RGB").resize((size, size), Image.BICUBIC)
    px = np.asarray(img, np.float32)[None] / 127.5 - 1
    ids = np.array(vq.encode(px))
    positions = np.asarray(info["region_positions"])
    if positions.max() >= ids.shape[1]:
        raise ValueError(f"tokens.json positions reach {positions.max()}, beyond this VQGAN's grid")
    ids[0, positions] = toks
    pair = np.concatenate(
        [np.asarray(vq.decode_code(np.array(vq.encode(px)))), vq.decode_code(ids)]
    )
    return save_grid(_OUT.value, np.clip(pair, -1, 1), 2, scale=max(1, 256 // size))


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    try:
        out = edit()
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
