"""Codebook-level explanation: `python -m explain.codebook --concept blue-star`.

Searches the codebook for the tokens that make the IEM see `--concept` inside a region of an
image (`--from-concept NAME`: generated images of another concept; `--from-image PNG`;
`--from-index I` of `--dataset DIR`; none: the full grid from random logits, a pure codebook-level
explanation). Defaults to the toy world and its shipped IEM; `--vqgan` + `--iem-checkpoint`
select real ones (an ImageNet IEM resolves `goldfinch`, `11` or `n01531178`).

Writes OUT/tokens.json (T_codebook per image, final and best step), OUT/progression.png and
OUT/progression.gif (the decoded edit, the paper's Figure 5) and OUT/table.md (f_orig/f_target
before and after). `--table5` instead runs the toy world's Table 5 design for `--pairs` and writes
runs/table5 (explain.atlas's default --table5) unless --out says otherwise.

`--config configs/imagenet.py` runs the ImageNet recipe's Table 5 step: the authors' pairs (labels
10–20 except 15 → 30 − label) on generated test images, scored by the IEM and ResNet18; it writes
WORKDIR/table5/table5.json.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from cortex_jax import toy
from cortex_jax.core import errors, sharding
from cortex_jax.experiments import bundle, codebook_level, recipe
from cortex_jax.io import folders, shards, sources
from cortex_jax.io.images import read_image
from cortex_jax.method import selection
from cortex_jax.models import maskgit

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal]): run its Table 5 step."
)
_CONCEPT = flags.DEFINE_string("concept", None, "Target concept (name, or ImageNet index/synset).")
_FROM_IMAGE = flags.DEFINE_string("from-image", None, "Start from this image (PNG/JPEG).")
_FROM_CONCEPT = flags.DEFINE_string("from-concept", None, "Start from generated images of it.")
_FROM_INDEX = flags.DEFINE_integer("from-index", None, "Start from token grid I of --dataset.")
_DATASET = flags.DEFINE_string("dataset", None, "Token dataset for --from-index.")
_REGION = flags.DEFINE_string("region", None, "'r0:r1,c0:c1', 'center' or 'full'.")
_STEPS = flags.DEFINE_integer("steps", 500, "Optimisation steps.")
_LOG_EVERY = flags.DEFINE_integer("log-every", 50, "Steps between recorded points.")
_LR = flags.DEFINE_float(
    "lr", selection.SelectionConfig().learning_rate, "Adam learning rate (the authors': 0.01)."
)
_IEM = flags.DEFINE_enum(
    "iem", "ce", ["ce", "re", "te"], "Shipped toy IEM; with --iem-checkpoint, its expected arch."
)
_N_IMAGES = flags.DEFINE_integer("n-images", 4, "Images to edit with --from-concept.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "VQGAN source (see load_vqgan).")
_IEM_CKPT = flags.DEFINE_string(
    "iem-checkpoint", None, "IEM folder written by train.iem, or the authors' net1/3/4 .pth."
)
_TABLE5 = flags.DEFINE_bool(
    "table5", False, "Run the Table 5 pair study (toy world, or --dataset with real models)."
)
_PAIRS = flags.DEFINE_string(
    "pairs",
    "red-circle:blue-circle,red-square:green-square,"
    "red-star:yellow-star,blue-triangle:yellow-triangle",
    "Concept pairs for --table5.",
)
_MASKGIT = flags.DEFINE_string(
    "maskgit", None, "--table5: also MaskGIT's own editing, from this folder of its checkpoints."
)
_MASKGIT_ITER = flags.DEFINE_integer("maskgit-iter", 12, "MaskGIT editing: decoding steps.")
_CLASSIFIER = flags.DEFINE_string(
    "classifier", None, "--table5 with real models: the pixel classifier (see load_classifier)."
)
_CLASSIFIER_SIZE = flags.DEFINE_integer("classifier-size", 224, "Its input size.")
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Output folder (runs/explain_codebook; with --table5, runs/table5: what "
    "explain.atlas reads by default).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
COMMAND = "explain.codebook"


def _models(table5: bool = False):
    """The toy world's bundle, or one from --vqgan + --iem-checkpoint (and --classifier)."""
    arch = _IEM.value if flags.FLAGS["iem"].present else None
    if _VQGAN.value == "toy":  # the shipped IEM, or one the user trained on the toy world
        return toy.models(
            _IEM.value if _IEM_CKPT.value is None else arch, iem_checkpoint=_IEM_CKPT.value
        )
    if _IEM_CKPT.value is None:
        raise ValueError("a real model needs both --vqgan SOURCE and --iem-checkpoint FOLDER")
    if table5 and (not _DATASET.value or not _CLASSIFIER.value):
        raise ValueError(
            "--table5 with real models needs --dataset DIR (test token grids) and --classifier "
            "(a torchvision .pth, a classifier folder or random:ARCH)"
        )
    models = bundle.from_files(
        _VQGAN.value,
        _IEM_CKPT.value,
        classifier=_CLASSIFIER.value if table5 else None,
        classifier_size=_CLASSIFIER_SIZE.value,
        iem_arch=arch,
    )
    real_resolve = models.class_id

    def resolve(name: str) -> int:
        if len(models.class_names) == 1000 and name in toy.CONCEPT_NAMES:
            raise ValueError(f"{name!r} is a toy-world concept: drop --vqgan/--iem-checkpoint")
        return real_resolve(name)

    return dataclasses.replace(models, resolve=resolve)


def _start(models):
    """The start grids, their source concepts and the default region, from the flags."""
    if _FROM_IMAGE.value:
        size = models.image_size or 256
        return codebook_level.start_from_image(models, read_image(_FROM_IMAGE.value, size))
    if _FROM_INDEX.value is not None:
        if not _DATASET.value:
            raise ValueError("--from-index needs --dataset DIR (a token dataset)")
        tokens, labels, _ = shards.TokenDataset.open(_DATASET.value).arrays()
        return codebook_level.start_from_dataset(models, tokens, labels, _FROM_INDEX.value)
    if _FROM_CONCEPT.value:
        if models.sample is None:
            raise ValueError(
                "--from-concept generates images and needs the toy world; use "
                "--from-image or --from-index with real models"
            )
        src = models.class_id(_FROM_CONCEPT.value)
        return codebook_level.start_from_concept(models, src, _N_IMAGES.value, _SEED.value)
    return codebook_level.start_from_codebook(models)


def _selection() -> selection.SelectionConfig:
    return selection.SelectionConfig(
        steps=_STEPS.value, learning_rate=_LR.value, log_every=_LOG_EVERY.value
    )


def _check_flags(out: Path) -> None:
    """Every flag and input file, and the output folder, before a model is loaded or fetched."""
    for flag, value in (
        ("--steps", _STEPS.value),
        ("--log-every", _LOG_EVERY.value),
        ("--n-images", _N_IMAGES.value),
        ("--maskgit-iter", _MASKGIT_ITER.value),
        ("--classifier-size", _CLASSIFIER_SIZE.value),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value}; expected at least 1")
    if not _LR.value > 0:
        raise ValueError(f"--lr {_LR.value}; expected a positive learning rate")
    _selection()  # --steps must be a multiple of --log-every
    if not _TABLE5.value and not _CONCEPT.value:
        raise ValueError("name the target concept with --concept NAME")
    starts = [
        f
        for f, v in (
            ("--from-image", _FROM_IMAGE.value),
            ("--from-concept", _FROM_CONCEPT.value),
            ("--from-index", _FROM_INDEX.value),
        )
        if v is not None
    ]
    if len(starts) > 1:
        raise ValueError(f"{' and '.join(starts)} both name a start; pass one of them")
    for flag, path, is_file in (
        ("--from-image", _FROM_IMAGE.value, True),
        ("--dataset", _DATASET.value, False),
        ("--iem-checkpoint", _IEM_CKPT.value, False),
        ("--maskgit", _MASKGIT.value, False),
    ):
        if path and not (Path(path).is_file() if is_file else Path(path).exists()):
            raise FileNotFoundError(f"{flag} not found: {path}")
    if _FROM_INDEX.value is not None and not _DATASET.value:
        raise ValueError("--from-index needs --dataset DIR (a token dataset)")
    folders.check_output(out, COMMAND)


def explain(out: Path) -> dict:
    models = _models()
    target = models.class_id(_CONCEPT.value)
    start = _start(models)
    selection.region_mask(start[0].shape[1], _REGION.value or start[2])  # before any folder
    cfg = codebook_level.EditConfig(_selection(), _REGION.value, _SEED.value)
    folders.claim_output(out, COMMAND)
    info = codebook_level.edit(models, target, start, cfg, out)
    folders.finish_output(out, COMMAND)
    return info


def _maskgit_editor(models):
    mg = sources.load_maskgit(_MASKGIT.value)
    if not np.array_equal(mg.vqgan.codebook, models.codebook):
        raise ValueError(
            f"--maskgit's tokenizer is not the --vqgan the IEM reads; pass --vqgan {_MASKGIT.value}"
        )
    key = jax.random.PRNGKey(_SEED.value + 1)
    sc = maskgit.SampleConfig(_MASKGIT_ITER.value, 4.5)
    return lambda b, s, t, m: mg.edit_tokens(b, m, t, key, sc)


def table5(out: Path) -> dict:
    models = _models(table5=True)
    pairs = []
    for p in _PAIRS.value.split(","):
        parts = [x.strip() for x in p.split(":")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pairs entry {p!r}; expected A:B")
        pairs.append(tuple(parts))
    ids = [(models.class_id(a), models.class_id(b)) for a, b in pairs]
    directed = [x for a, b in ids for x in ((a, b), (b, a))]  # each concept toward its partner
    dataset = None
    if models.name != "toy":
        tokens, labels, _ = shards.TokenDataset.open(_DATASET.value).arrays()
        dataset = (tokens, labels)
    editors, notes = {}, []
    if _MASKGIT.value:
        editors["maskgit_edit"] = _maskgit_editor(models)
        notes.append(
            "maskgit_edit: MaskGIT's own editing, the region re-masked and re-decoded for the "
            f"target class ({_MASKGIT_ITER.value} iterations from the 3rd)."
        )
    cfg = codebook_level.Table5Config(
        _selection(), _N_IMAGES.value, _REGION.value or "center", _SEED.value
    )
    if models.grid_size:  # a bad --region before any folder is made
        selection.region_mask(models.grid_size, cfg.region)
    folders.claim_output(out, COMMAND)
    extra = {
        "pairs": [f"{a}<->{b}" for a, b in pairs],
        "classifier": "toy pixel judge" if models.name == "toy" else _CLASSIFIER.value,
    }
    result = codebook_level.table5(models, directed, cfg, out, dataset, editors, notes, extra)
    folders.finish_output(out, COMMAND)
    print(codebook_level.table5_markdown(result, notes), end="")
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    out = Path(_OUT.value or ("runs/table5" if _TABLE5.value else "runs/explain_codebook"))
    with errors.one_line_errors():
        if _CONFIG.value is not None:
            sharding.maybe_initialize_distributed()
            result = recipe.codebook_level_step(_CONFIG.value)
            if result is not None:
                for row, v in result["table"].items():
                    print(
                        f"{row}: ΔP_orig {v['delta_judge_orig']:+.3f}, ΔP_target "
                        f"{v['delta_judge_target']:+.3f}"
                    )
            out = Path(_CONFIG.value.workdir) / "table5"
        elif _TABLE5.value:
            _check_flags(out)
            table5(out)
        else:
            _check_flags(out)
            info = explain(out)
            im = info["images"][0]
            print(
                f"{info['target']}: f_target {im['f_target']['before']:.3f} → "
                f"{im['f_target']['final']:.3f} (best {im['f_target']['best']:.3f})"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
