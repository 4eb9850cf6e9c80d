"""Codebook-level explanation: `python -m explain.codebook --concept blue-star`.

Searches the codebook for the tokens that make the IEM see `--concept` inside a region of an
image (`--from-concept NAME`: generated images of another concept; `--from-image PNG`;
`--from-index I` of `--dataset DIR`; none: the full grid from random logits, a pure codebook-level
explanation). Defaults to the toy world and its shipped IEM; `--vqgan` + `--iem-checkpoint`
select real ones (an ImageNet IEM resolves `goldfinch`, `11` or `n01531178`).

Writes OUT/tokens.json (T_codebook per image, final and best step), OUT/progression.png and
OUT/progression.gif (the decoded edit, the paper's Figure 5) and OUT/table.md (f_orig/f_target
before and after). `--table5` instead runs the toy world's Table 5 design for `--pairs` and writes
runs/table5 (explain.atlas's default --table5) unless --out says otherwise. `--edit-model FAMILY`
(with `--edit-checkpoint`, `--edit-vq-checkpoint`) adds that family's own re-sampling of the
region as a row (`--maskgit DIR` = `--edit-model maskgit --edit-checkpoint DIR`).

`--config configs/imagenet.py` runs the ImageNet recipe's Table 5 step: the authors' pairs (labels
10–20 except 15 → 30 − label) on generated test images, scored by the IEM and ResNet18; it writes
WORKDIR/table5/table5.json.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from cortex_jax import toy
from cortex_jax.core import errors, paths, sharding
from cortex_jax.experiments import codebook_level, recipe

_LR_DEFAULT = codebook_level.Request().learning_rate
_PAIRS_DEFAULT = "red-circle:blue-circle,red-square:green-square,red-star:yellow-star,blue-triangle:yellow-triangle"  # noqa: E501
# fmt: off
_CONFIG = config_flags.DEFINE_config_file("config", None, "A recipe config (configs/imagenet.py[:runlocal]): run its Table 5 step.")  # noqa: E501
_CONCEPT = flags.DEFINE_string("concept", None, "Target concept (name, or ImageNet index/synset).")
_FROM_IMAGE = flags.DEFINE_string("from-image", None, "Start from this image (PNG/JPEG).")
_FROM_CONCEPT = flags.DEFINE_string("from-concept", None, "Start from generated images of it.")
_FROM_INDEX = flags.DEFINE_integer("from-index", None, "Start from token grid I of --dataset.")
_DATASET = flags.DEFINE_string("dataset", None, "Token dataset for --from-index.")
_REGION = flags.DEFINE_string("region", None, "'r0:r1,c0:c1', 'center' or 'full'.")
_STEPS = flags.DEFINE_integer("steps", 500, "Optimisation steps.")
_LOG_EVERY = flags.DEFINE_integer("log-every", 50, "Steps between recorded points.")
_LR = flags.DEFINE_float("lr", _LR_DEFAULT, "Adam learning rate (the authors': 0.01).")
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Shipped toy IEM; with --iem-checkpoint, its expected arch.")  # noqa: E501
_N_IMAGES = flags.DEFINE_integer("n-images", 4, "Images to edit with --from-concept.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "VQGAN source (see load_vqgan).")
_IEM_CKPT = flags.DEFINE_string("iem-checkpoint", None, "IEM folder written by train.iem, or the authors' net1/3/4 .pth.")  # noqa: E501
_TABLE5 = flags.DEFINE_bool("table5", False, "Run the Table 5 pair study (toy world, or --dataset with real models).")  # noqa: E501
_PAIRS = flags.DEFINE_string("pairs", _PAIRS_DEFAULT, "Concept pairs for --table5.")
_EDIT_MODEL = flags.DEFINE_string("edit-model", None, "--table5: also this family's own re-sampling of the region (families: maskgit, llamagen, …).")  # noqa: E501
_EDIT_CKPT = flags.DEFINE_string("edit-checkpoint", None, "--edit-model's main file or folder (as train.generate's --checkpoint).")  # noqa: E501
_EDIT_VQ = flags.DEFINE_string("edit-vq-checkpoint", None, "--edit-model's separate tokenizer file (llamagen: vq_ds16_c2i.pt).")  # noqa: E501
_MASKGIT = flags.DEFINE_string("maskgit", None, "--table5: also MaskGIT's own editing, from this folder of its checkpoints.")  # noqa: E501
_MASKGIT_ITER = flags.DEFINE_integer("maskgit-iter", 12, "MaskGIT editing: decoding steps.")
_CLASSIFIER = flags.DEFINE_string("classifier", None, "--table5 with real models: the pixel classifier (see load_classifier).")  # noqa: E501
_CLASSIFIER_SIZE = flags.DEFINE_integer("classifier-size", 224, "Its input size.")
_OUT = flags.DEFINE_string("out", None, "Output folder (runs/explain_codebook; with --table5, runs/table5: what explain.atlas reads by default).")  # noqa: E501
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
# fmt: on
COMMAND = "explain.codebook"


def _request() -> codebook_level.Request:
    """The flags as one request; `--maskgit DIR` is `--edit-model maskgit --edit-checkpoint DIR`."""
    edit_flags = ("edit-model", "edit-checkpoint", "edit-vq-checkpoint", "maskgit", "maskgit-iter")
    family, args, settings = codebook_level.editing_model(
        _TABLE5.value, _EDIT_MODEL.value, _EDIT_CKPT.value, _EDIT_VQ.value, _MASKGIT.value,
        _MASKGIT_ITER.value, [f"--{n}" for n in edit_flags if flags.FLAGS[n].present],
    )  # fmt: skip
    return codebook_level.Request(
        _CONCEPT.value, _FROM_IMAGE.value, _FROM_CONCEPT.value, _FROM_INDEX.value, _DATASET.value,
        _REGION.value, _STEPS.value, _LOG_EVERY.value, _LR.value, _N_IMAGES.value, _SEED.value,
        _TABLE5.value, _PAIRS.value, _VQGAN.value != "toy", _IEM_CKPT.value, _CLASSIFIER.value,
        _CLASSIFIER_SIZE.value, family, args, settings,
    )  # fmt: skip


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    out = Path(_OUT.value or ("runs/table5" if _TABLE5.value else "runs/explain_codebook"))
    with errors.one_line_errors():
        if _CONFIG.value is not None:
            sharding.maybe_initialize_distributed()
            result = recipe.codebook_level_step(_CONFIG.value)
            for row, v in (result or {"table": {}})["table"].items():
                print(
                    f"{row}: ΔP_orig {v['delta_judge_orig']:+.3f}, ΔP_target "
                    f"{v['delta_judge_target']:+.3f}"
                )
            out = paths.of(_CONFIG.value.workdir) / "table5"
        else:
            req = _request()
            codebook_level.check_request(req, out, COMMAND)
            arch = _IEM.value if flags.FLAGS["iem"].present else None
            classifier = _CLASSIFIER.value if req.table5 else None
            models = toy.models_or_files(
                _VQGAN.value, arch, _IEM_CKPT.value, classifier, _CLASSIFIER_SIZE.value
            )
            result = codebook_level.run_request(models, req, out, COMMAND)
            if req.table5:
                print((out / "table5.md").read_text(), end="")
            else:
                im = result["images"][0]
                print(
                    f"{result['target']}: f_target {im['f_target']['before']:.3f} → "
                    f"{im['f_target']['final']:.3f} (best {im['f_target']['best']:.3f})"
                )
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
