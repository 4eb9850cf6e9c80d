"""Apply a found token set to an image: `python -m explain.edit --image in.png --tokens
runs/explain_codebook/tokens.json --out edited.png`.

Encodes the image with the VQGAN (toy by default), replaces the tokens at the positions that
explain.codebook optimised with T_codebook (final step, or `--best`), decodes, and writes the
original and the edit side by side, the edited region outlined and, under each, the IEM's
probability of tokens.json's target (the toy world's shipped CE IEM, or `--iem-checkpoint`; with a
real `--vqgan` and no IEM the figure has no probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from cortex_jax import toy
from cortex_jax.core import errors
from cortex_jax.experiments import bundle, codebook_level
from cortex_jax.figures import plots
from cortex_jax.io import folders
from cortex_jax.io.images import read_image

COMMAND = "explain.edit"

_IMAGE = flags.DEFINE_string("image", None, "Image to edit (PNG/JPEG).")
_TOKENS = flags.DEFINE_string("tokens", None, "tokens.json written by explain.codebook.")
_INDEX = flags.DEFINE_integer("index", 0, "Which image's token set in tokens.json.")
_BEST = flags.DEFINE_bool("best", False, "Use the best logged step instead of the final one.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "VQGAN source (see load_vqgan).")
_IEM_CKPT = flags.DEFINE_string(
    "iem-checkpoint", None, "IEM for P(target) (train.iem folder or the authors' .pth)."
)
_OUT = flags.DEFINE_string("out", "runs/edited.png", "Output PNG (original | edit).")


def _token_set(path: Path, index: int, best: bool) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(positions, tokens, target name or None) of image `index` in a tokens.json, or a one-line
    error saying what is wrong with the file."""
    try:
        info = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"--tokens {path} is not JSON ({e}); expected explain.codebook's tokens.json"
        ) from None
    key = "tokens_best" if best else "tokens_final"
    try:
        images, positions = info["images"], np.asarray(info["region_positions"])
        if not 0 <= index < len(images):
            raise ValueError(f"--index {index} is outside 0..{len(images) - 1}")
        toks = np.asarray(images[index][key])
    except (KeyError, TypeError) as e:
        raise ValueError(
            f"--tokens {path} lacks {e} (expected explain.codebook's tokens.json "
            f"with region_positions and images[].{key})"
        ) from None
    for name, a in (("region_positions", positions), (key, toks)):
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise ValueError(f"--tokens {path}: {name} must be a list of non-negative integers")
    if len(toks) != len(positions):
        raise ValueError(f"--tokens {path}: {len(toks)} tokens for {len(positions)} positions")
    target = info.get("target")
    return positions, toks, target if isinstance(target, str) else None


def _models():
    """The VQGAN's bundle: the toy world (its shipped CE IEM unless --iem-checkpoint), or
    --vqgan with --iem-checkpoint when given."""
    if _VQGAN.value == "toy":
        return toy.models(iem_checkpoint=_IEM_CKPT.value)
    return bundle.from_files(_VQGAN.value, _IEM_CKPT.value)


def edit() -> Path:
    for flag, value in (("--image", _IMAGE.value), ("--tokens", _TOKENS.value)):
        if not value:
            raise ValueError(f"{flag} is required")
        if not Path(value).is_file():
            raise FileNotFoundError(f"{flag} file not found: {value}")
    if _IEM_CKPT.value and not Path(_IEM_CKPT.value).exists():
        raise FileNotFoundError(f"--iem-checkpoint not found: {_IEM_CKPT.value}")
    out = folders.check_output_file(_OUT.value, COMMAND)
    positions, toks, target = _token_set(Path(_TOKENS.value), _INDEX.value, _BEST.value)
    errors.writable_folder(out.parent)
    models = _models()
    px = read_image(_IMAGE.value, models.image_size)
    grids = codebook_level.edited_grids(models, px, positions, toks)
    m = grids.shape[-1]
    region = np.zeros(m * m, bool)
    region[positions] = True
    probs = None
    if models.predict is not None and target in models.class_names:
        probs = codebook_level.target_probability(models, grids, models.class_names.index(target))
    step = "best" if _BEST.value else "final"
    fig = plots.frames_figure(
        np.asarray(models.decode(grids)),
        ["original", f"edited ({step} step)"],
        f"{Path(_IMAGE.value).name} with T_codebook of image {_INDEX.value}"
        + (f" (toward {target})" if target else "")
        + (f"; P by the {models.predict_name} IEM" if probs is not None else ""),
        region=region.reshape(m, m),
        target_probs=probs,
        target=target,
    )
    path = plots.save_png(fig, out)
    folders.finish_output_file(path, COMMAND)
    return path


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        out = edit()
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
