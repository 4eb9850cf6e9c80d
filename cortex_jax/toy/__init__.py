"""The toy world: a built-in, trained VQGM with ground truth, the default of every command.

`load_toy_vqgm()` gives the shipped VQGAN + class-conditional prior, `load_toy_judge()` the
independent pixel classifier, `write_encoded_dataset` the procedural images through the VQGAN
encoder with their ground-truth token masks. `world` defines the concepts; `recipe` how the
models are trained (`python -m train.toy` rebuilds them).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import numpy as np

from cortex_jax.io import folders, shards
from cortex_jax.models import iem
from cortex_jax.models.cin import SampleConfig
from cortex_jax.models.vqgan import VQGAN
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


def load_toy_judge(weights: str | os.PathLike = WEIGHTS_DIR) -> Callable[[jax.Array], jax.Array]:
    """pixels (B, 32, 32, 3) in [-1, 1] → concept probabilities (B, 14), jitted."""
    raw, params = folders.read_model_folder(Path(weights) / "judge", "pixel judge")
    model = PixelJudge(JudgeConfig.from_dict(raw))
    fn = jax.jit(lambda x: jax.nn.softmax(model.apply({"params": params}, x), -1))
    return lambda x: fn(np.asarray(x, np.float32))


def load_toy_iem(arch: str = "ce", weights: str | os.PathLike = WEIGHTS_DIR):
    """The shipped toy IEM: (config, variables {'params', 'batch_stats'}, predict E → logits)."""
    if arch not in iem.ARCHITECTURES:
        raise ValueError(f"unknown IEM {arch!r}; expected one of {', '.join(iem.ARCHITECTURES)}")
    config, variables, _ = folders.read_iem_folder(Path(weights) / f"iem_{arch}")
    predict = functools.partial(
        iem.predict_fn(config), variables["params"], variables["batch_stats"]
    )
    return config, variables, predict


def encode_procedural(
    vqgan: VQGAN, class_names: Sequence[str], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders one image per name and encodes it: (tokens (n, m, m), labels, masks (n, m, m))."""
    batch = world.render(class_names, seed)
    m = vqgan.grid_size
    toks = np.asarray(vqgan.encode(batch.pixels)).reshape(-1, m, m)
    return toks, batch.labels, world.token_mask(batch.coverage)


def write_encoded_dataset(
    vqgan: VQGAN,
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
            shards.write_shard(out, s, *encode_procedural(vqgan, chunk, seed * 1_000_003 + s))
        progress(start + len(chunk))
    return shards.TokenDataset.open(out)
