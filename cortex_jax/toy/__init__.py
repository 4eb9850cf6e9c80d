"""The toy world: a built-in, trained VQGM with ground truth, the default of every command.

`models(iem)` is the toy world's bundle for every experiment (`experiments.bundle.Models`): the
shipped VQGAN and class-conditional prior, a shipped IEM and the independent pixel judge.
`load_toy_vqgm()`, `load_toy_iem()` and `load_toy_judge()` give the pieces;
`ground_truth(...)` and `write_encoded_dataset` the procedural images through the VQGAN encoder
with their ground-truth token masks. `world` defines the concepts; `train` how the models are
trained (`python -m train.toy` rebuilds them).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import jax
import numpy as np

from cortex_jax.core import imagenet
from cortex_jax.experiments import families
from cortex_jax.experiments.bundle import Models, as_grids, check_iem_reads, from_files
from cortex_jax.io import folders, shards, sources
from cortex_jax.models import iem
from cortex_jax.models.cin import SampleConfig
from cortex_jax.models.vqgan import VQTokenizer
from cortex_jax.models.vqgm import ClassConditionalVQGM
from cortex_jax.toy import world
from cortex_jax.toy.judge import JudgeConfig, PixelJudge

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Sampling settings the shipped prior was evaluated with (configs/toy.py `sample`).
TOY_SAMPLING = SampleConfig(temperature=0.8, top_k=20, top_p=1.0)


def load_toy_vqgm(weights: str | os.PathLike = WEIGHTS_DIR) -> ClassConditionalVQGM:
    """The toy VQGAN + prior from `weights` (the shipped copy by default)."""
    weights = Path(weights)
    vq = folders.read_vqgan_folder(weights / "vqgan")
    gcfg, gparams = folders.read_gpt_folder(weights / "prior")
    return ClassConditionalVQGM("toy", vq, gcfg, gparams, world.CLASS_NAMES)


def load_toy_judge(weights: str | os.PathLike = WEIGHTS_DIR) -> Callable[[Any], jax.Array]:
    """pixels (B, 32, 32, 3) in [-1, 1] → concept probabilities (B, 14), jitted."""
    raw, params = folders.read_model_folder(Path(weights) / "judge", "pixel judge")
    model = PixelJudge(JudgeConfig.from_dict(raw))
    fn = jax.jit(lambda x: jax.nn.softmax(cast(jax.Array, model.apply({"params": params}, x)), -1))
    return lambda x: fn(np.asarray(x, np.float32))


def load_toy_iem(
    arch: Literal["ce", "re", "te"] = "ce", weights: str | os.PathLike = WEIGHTS_DIR
) -> tuple[iem.IEMConfig, dict, Callable[[jax.Array], jax.Array]]:
    """The shipped toy IEM: (config, variables {'params', 'batch_stats'}, predict E → logits)."""
    if arch not in iem.ARCHITECTURES:
        raise ValueError(f"unknown IEM {arch!r}; expected one of {', '.join(iem.ARCHITECTURES)}")
    config, variables, _ = folders.read_iem_folder(Path(weights) / f"iem_{arch}")
    predict = iem.predictor(config, variables)
    return config, variables, predict


def encode_procedural(
    encode: Callable[[np.ndarray], np.ndarray], class_names: Sequence[str], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one image per name and encodes it (`encode`: pixels → grids (n, m, m), e.g. a
    bundle's): (tokens (n, m, m), labels, masks (n, m, m))."""
    batch = world.render(class_names, seed)
    return np.asarray(encode(batch.pixels)), batch.labels, world.token_mask(batch.coverage)


def write_encoded_dataset(
    vqgan: VQTokenizer,
    class_ids: Sequence[int],
    per_class: int,
    out: str | os.PathLike,
    seed: int = 0,
    shard_size: int = 256,
    progress: Callable[[int], None] = lambda n: None,
) -> shards.TokenDataset:
    """Procedural images of each class through the VQGAN encoder, with ground-truth masks.

    Labels are the class asked for; for neutral classes the concept actually drawn is not
    stored (the audit must not see it). Masks are `world.token_mask` of the object coverage.
    """
    if per_class <= 0:
        raise ValueError(f"per_class={per_class}; expected a positive number of images per class")
    encode = lambda px: as_grids(vqgan.encode(px))
    names = [world.CLASS_NAMES[c] for c in class_ids]
    order = np.repeat(np.arange(len(names)), per_class)
    shards.write_meta(
        out,
        {
            "class_names": list(world.CLASS_NAMES),
            "vqgm": "toy",
            "grid_size": vqgan.grid_size,
            "codebook_size": vqgan.config.n_embed,
            "source": "encoded",
            "seed": seed,
            "per_class": per_class,
            "classes": [int(c) for c in class_ids],
            "shard_size": shard_size,
        },
    )
    for s, start in enumerate(range(0, len(order), shard_size)):
        chunk = [names[i] for i in order[start : start + shard_size]]
        if not shards.shard_done(out, s):
            grids = encode_procedural(encode, chunk, seed * 1_000_003 + s)
            shards.write_shard(out, s, *grids)
        progress(start + len(chunk))
    return shards.TokenDataset.open(out)


CONCEPT_NAMES = tuple(c.name for c in world.CONCEPTS)  # the IEMs' and the judge's classes


def resolve(name: str, vqgm: ClassConditionalVQGM | None = None) -> int:
    """A toy class name → its id (concepts 0..13, then the neutral classes); an ImageNet name
    gets a one-line hint to use real models, anything else the closest matches."""
    if name in CONCEPT_NAMES:
        return CONCEPT_NAMES.index(name)
    try:
        imagenet.resolve(name)
    except ValueError:
        return (vqgm or load_toy_vqgm()).class_id(name)  # raises with close matches
    raise ValueError(
        f"{name!r} is an ImageNet concept: it needs --vqgan imagenet_f16_16384 (or a VQGAN "
        f"folder/checkpoint) and --iem-checkpoint FOLDER of an IEM trained with "
        f"configs/iem_ce.py:variant=imagenet"
    )


def _user_iem(source: str | os.PathLike, arch: str | None, vq: VQTokenizer) -> Callable:
    """predict of an IEM the user trained on the toy world (a train.iem folder or a `.pth` of
    the authors' networks), checked to read this VQGAN's E and to have the 14 concepts."""
    config, variables, meta = sources.load_iem(source, cast(Any, arch))
    names = list(meta["class_names"])
    generic = names == [f"class{i}" for i in range(len(names))]
    if names != list(CONCEPT_NAMES) and not (generic and len(names) == len(CONCEPT_NAMES)):
        raise ValueError(
            f"IEM {str(source)!r} has classes {names[:3]}…({len(names)}); a toy-world IEM has "
            f"the {len(CONCEPT_NAMES)} concepts {list(CONCEPT_NAMES[:3])}…"
        )
    predict = iem.predictor(config, variables)
    check_iem_reads(
        predict,
        vq,
        f"IEM {str(source)!r} cannot read the toy VQGAN's E",
        "; expected an IEM trained on toy-world tokens (configs/iem_*.py:variant=toy)",
    )
    return predict


def models(
    iem_arch: Literal["ce", "re", "te"] | None = None,
    weights: str | os.PathLike = WEIGHTS_DIR,
    iem_checkpoint: str | os.PathLike | None = None,
) -> Models:
    """The toy world as an experiment's bundle: the prior samples (class ids, seed) with
    `TOY_SAMPLING`, the VQGAN decodes 128 grids at a time, `predict` is the shipped IEM
    `iem_arch` (ce | re | te; None → ce), or the user's `iem_checkpoint` (a train.iem folder of
    a toy IEM, or an authors'-format `.pth`; checked against `iem_arch` when that is given), and
    `classifier` the pixel judge."""
    vqgm = load_toy_vqgm(weights)
    vq = vqgm.vqgan
    if iem_checkpoint is None:
        _, _, predict = load_toy_iem(iem_arch or "ce", weights)
    else:
        predict = _user_iem(iem_checkpoint, iem_arch, vq)

    def sample(class_ids: np.ndarray, seed: int) -> np.ndarray:
        ids = np.asarray(class_ids)
        return np.asarray(vqgm.sample_tokens(ids, jax.random.PRNGKey(seed), TOY_SAMPLING))

    return Models(
        codebook=np.asarray(vq.codebook),
        decode=functools.partial(vq.decode_pixels, batch=128),
        class_names=CONCEPT_NAMES,
        grid_size=vq.grid_size,
        image_size=vq.config.resolution,
        predict=predict,
        predict_name=(iem_arch or "ce") if iem_checkpoint is None else str(iem_checkpoint),
        classifier=load_toy_judge(weights),
        classifier_name="pixel judge",
        sample=sample,
        encode=lambda px: as_grids(vq.encode(px)),
        resolve=functools.partial(resolve, vqgm=vqgm),
        name="toy",
        infill=vqgm.infill_tokens,
    )


def models_or_files(
    vqgan: str = "toy",
    iem_arch: Literal["ce", "re", "te"] | None = None,
    iem_checkpoint: str | os.PathLike | None = None,
    classifier: str | None = None,
    classifier_size: int = 224,
) -> Models:
    """A command's bundle: the toy world's (`models(iem_arch, iem_checkpoint=…)`) when `vqgan`
    is "toy", else `bundle.from_files` of the VQGAN source, the IEM `iem_checkpoint` (required)
    and the pixel `classifier`, whose resolver refuses a toy concept name in one line."""
    if vqgan == "toy":  # the shipped IEM, or one the user trained on the toy world
        return models(iem_arch, iem_checkpoint=iem_checkpoint)
    if iem_checkpoint is None:
        raise ValueError("a real model needs both --vqgan SOURCE and --iem-checkpoint FOLDER")
    real = from_files(
        vqgan,
        iem_checkpoint,
        classifier=classifier,
        classifier_size=classifier_size,
        iem_arch=iem_arch,
    )

    def resolve(name: str) -> int:
        if len(real.class_names) == 1000 and name in CONCEPT_NAMES:
            raise ValueError(f"{name!r} is a toy-world concept: drop --vqgan/--iem-checkpoint")
        return real.class_id(name)

    return dataclasses.replace(real, resolve=resolve)


def ground_truth(
    models: Models, concepts: Sequence[int], per_concept: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Procedural images of each concept through the bundle's encoder (the toy VQGAN's) with
    their object masks: (tokens (n, m, m), labels (n,), masks (n, m, m)), `per_concept` each."""
    (encode,) = models.require("encode", what="the ground-truth split")
    names = [CONCEPT_NAMES[c] for c in concepts for _ in range(per_concept)]
    return encode_procedural(encode, names, seed)


def _load_family(args: families.LoadArgs) -> ClassConditionalVQGM:
    return load_toy_vqgm(args.checkpoint or WEIGHTS_DIR)


def _toy_bundle(vqgm: Any, sampling: Any, predict: Any = None, classifier: Any = None) -> Models:
    """The registry's bundle of a toy-layout VQGM: the pixel judge unless a classifier is given."""
    judge = classifier if classifier is not None else load_toy_judge()
    return families.default_bundle(vqgm, sampling, predict, judge, decode_batch=128)


# The toy world as a registered family (--model toy, or a folder of the same layout).
FAMILY = families.register(
    families.Family(
        "toy",
        _load_family,
        TOY_SAMPLING,
        bundle=_toy_bundle,
        concepts=len(world.CONCEPTS),
        encoded=write_encoded_dataset,
        classifier=load_toy_judge,
    )
)
