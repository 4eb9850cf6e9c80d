"""Attribution methods in one table: `python -m explain.compare` (toy world by default).

`--model` names a family of `cortex_jax.experiments.families` (toy, imagenet, maskgit, llamagen,
…; `--checkpoint`, `--vq-checkpoint`, `--gpt-config`, `--n-head` as for train.generate) with
`--iem-checkpoint` (an IEM trained on its tokens) and `--dataset` (a token dataset of its
generated images, train.generate's --out): the first `--per-concept` grids of each class are
compared, the next `--train-per-concept` train the permuted-label IEM. The toy world without
`--dataset` encodes its procedural images, whose object masks give the ground-truth metrics;
other grids have none (gt_* are NaN, and compare.md says why), and a family whose prior gives no
infill (MaskGIT, LlamaGen) runs without the generator removal (compare.md says so).

Writes OUT/compare.json ({"settings", "methods": {NAME: {METRIC: {"value", "ci"}}}}),
OUT/compare.md, OUT/cascade.json and OUT/curves/ (PNG, SVG, CSV); see
cortex_jax/experiments/compare.py for every metric. OUT/timings.json holds the wall seconds of
each stage (bench/compare.py prints them).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from absl import app, flags, logging

from cortex_jax import toy
from cortex_jax.core import errors
from cortex_jax.experiments import compare, families
from cortex_jax.experiments.bundle import Models, batched, check_iem_reads
from cortex_jax.io import shards, sources
from cortex_jax.models import iem

_D = compare.CompareConfig()
# fmt: off
_METHODS = flags.DEFINE_string("methods", ",".join(_D.methods), "Methods, comma-separated.")
_OUT = flags.DEFINE_string("out", "runs/compare", "Output folder.")
_MODEL = flags.DEFINE_string("model", "toy", "A registered family (toy, imagenet, maskgit, llamagen, …) or a folder laid out like the toy weights.")  # noqa: E501
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The family's main file or folder (as train.generate's --checkpoint).")  # noqa: E501
_VQ_CHECKPOINT = flags.DEFINE_string("vq-checkpoint", None, "A separate tokenizer file (llamagen: vq_ds16_c2i.pt).")  # noqa: E501
_GPT_CONFIG = flags.DEFINE_string("gpt-config", None, "llamagen: a preset (GPT-B … GPT-3B) or a JSON of LlamaGen ModelArgs.")  # noqa: E501
_N_HEAD = flags.DEFINE_integer("n-head", None, "imagenet: attention heads, without configs/*-project.yaml.")  # noqa: E501
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Shipped toy IEM; with --iem-checkpoint, its expected arch.")  # noqa: E501
_IEM_CKPT = flags.DEFINE_string("iem-checkpoint", None, "IEM folder written by train.iem (or the authors' .pth), trained on --model's tokens.")  # noqa: E501
_DATASET = flags.DEFINE_string("dataset", None, "Token dataset of --model's generated images (train.generate --out); masks used when it has them.")  # noqa: E501
_CLASSIFIER = flags.DEFINE_string("classifier", None, "Pixel classifier (see load_classifier); the toy world's default: its judge.")  # noqa: E501
_CLASSIFIER_SIZE = flags.DEFINE_integer("classifier-size", 224, "Its input size.")
_PER = flags.DEFINE_integer("per-concept", 4, "Images per concept: encoded with object masks (toy), or the first of --dataset.")  # noqa: E501
_TRAIN = flags.DEFINE_integer("train-per-concept", 16, "Images per concept, permuted-label IEM.")
_EPOCHS = flags.DEFINE_integer("permutation-epochs", _D.permutation_epochs, "0 skips the check.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Curve points.")
_N_SAMPLES = flags.DEFINE_integer("n-samples", _D.n_samples, "SmoothGrad noise samples.")
_IG = flags.DEFINE_integer("ig-steps", _D.ig_steps, "Integrated-gradients steps.")
_CASCADE = flags.DEFINE_bool("cascade", _D.cascade, "Every randomisation stage (else the last).")
_BOOT = flags.DEFINE_integer("n-boot", _D.n_boot, "Bootstrap resamples.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Random seed.")
# fmt: on


def _checked() -> tuple[compare.CompareConfig, families.Family, shards.TokenDataset | None]:
    """The flags checked before any model loads: the config, the family, the dataset."""
    methods = tuple(m.strip() for m in _METHODS.value.split(",") if m.strip())
    cfg = dataclasses.replace(
        _D, methods=methods, steps=_STEPS.value, n_samples=_N_SAMPLES.value,
        ig_steps=_IG.value, cascade=_CASCADE.value, permutation_epochs=_EPOCHS.value,
        n_boot=_BOOT.value, seed=_SEED.value,
    )  # fmt: skip
    compare.check_config(cfg)
    if _PER.value < 1 or _TRAIN.value < 0:
        raise ValueError(
            f"--per-concept {_PER.value} / --train-per-concept {_TRAIN.value}; expected ≥ 1 / ≥ 0"
        )
    family = families.get(_MODEL.value, "class", "explain.compare --model")
    if _DATASET.value is None and family.encoded is None:
        raise ValueError(
            f"--model {_MODEL.value} needs --dataset DIR: a token dataset of its generated "
            f"images (python -m train.generate --model {_MODEL.value} … --out DIR)"
        )
    if _IEM_CKPT.value is None and family.name != "toy":
        raise ValueError(
            f"--model {_MODEL.value} needs --iem-checkpoint FOLDER: an IEM trained on its "
            "tokens (python -m train.iem on a train.generate dataset)"
        )
    dataset = shards.TokenDataset.open(_DATASET.value) if _DATASET.value else None
    return cfg, family, dataset


def _bundle(family: families.Family) -> tuple[Models, tuple[iem.IEMConfig, dict[str, Any]]]:
    """The family's bundle with the IEM (the shipped toy one without --iem-checkpoint) and its
    classes, and the IEM's (config, variables) for the randomisation checks."""
    args = families.LoadArgs(_CHECKPOINT.value, _VQ_CHECKPOINT.value, _GPT_CONFIG.value)
    vqgm = family.load(dataclasses.replace(args, n_head=_N_HEAD.value))
    arch: Any = _IEM.value if flags.FLAGS["iem"].present or not _IEM_CKPT.value else None
    if _IEM_CKPT.value:
        icfg, variables, meta = sources.load_iem(_IEM_CKPT.value, arch)
        names, iem_name = tuple(meta["class_names"]), _IEM_CKPT.value
    else:  # the toy world's shipped IEM
        icfg, variables, _ = toy.load_toy_iem(arch)
        names, iem_name = toy.CONCEPT_NAMES, arch
    predict = iem.predictor(icfg, variables)
    source = _IEM_CKPT.value or f"toy {arch}"
    check_iem_reads(
        predict, vqgm.vqgan, f"IEM {source!r} cannot read the --model {_MODEL.value} E",
        "; expected an IEM trained on that model's tokens",
    )  # fmt: skip
    generic = names == tuple(f"class{i}" for i in range(len(names)))
    if not generic and names != tuple(vqgm.class_names[: len(names)]):
        raise ValueError(
            f"IEM {source!r} has classes {list(names[:3])}…; --model {_MODEL.value}'s are "
            f"{list(vqgm.class_names[:3])}…: expected an IEM trained on its class ids"
        )
    classifier = None
    if _CLASSIFIER.value:
        _, _, probs = sources.load_classifier(_CLASSIFIER.value, _CLASSIFIER_SIZE.value)
        classifier = batched(probs, 64)
    models = family.bundle(vqgm, family.sampling, predict, classifier)
    models = dataclasses.replace(models, class_names=names, predict_name=iem_name)
    if classifier is not None:
        models = dataclasses.replace(models, classifier_name=_CLASSIFIER.value)
    elif family.name == "toy":  # the toy bundle's own classifier: the pixel judge
        models = dataclasses.replace(models, classifier_name="pixel judge")
    return models, (icfg, variables)


def _grids(models: Models, dataset: shards.TokenDataset | None):
    """(compared data, permuted-label training data): --dataset's grids, or the toy world's
    encoded procedural images with their object masks."""
    if dataset is None:
        concepts = range(len(models.class_names))
        data = toy.ground_truth(models, concepts, _PER.value, _SEED.value)
        return data, toy.ground_truth(models, concepts, _TRAIN.value, _SEED.value + 1)
    tokens, labels, masks = dataset.arrays()
    m = models.grid_size
    if tokens.shape[1] != m or int(dataset.meta["codebook_size"]) != len(models.codebook):
        raise ValueError(
            f"--dataset {_DATASET.value} holds {tokens.shape[1]}×{tokens.shape[1]} grids of "
            f"{dataset.meta['codebook_size']} tokens; --model {_MODEL.value} makes {m}×{m} of "
            f"{len(models.codebook)}"
        )
    if labels.max() >= len(models.class_names):
        raise ValueError(
            f"--dataset {_DATASET.value} has class id {labels.max()}; the IEM has "
            f"{len(models.class_names)} classes"
        )
    return compare.split_by_class(tokens, labels, masks, _PER.value, _TRAIN.value)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    with errors.one_line_errors():
        cfg, family, dataset = _checked()
        out = errors.writable_folder(_OUT.value)
        clock = compare.StageClock()
        models, iem_model = _bundle(family)
        clock("loading the models")
        data, train = _grids(models, dataset)
        clock("sampling the images")
        result = compare.run(models, cfg, out, data, iem_model, train, clock)
        (out / "timings.json").write_text(json.dumps(clock.seconds, indent=1) + "\n")
        print(compare.markdown(result))
        print(f"wrote {out / 'compare.json'}, compare.md, cascade.json and curves/")


if __name__ == "__main__":
    app.run(main)
