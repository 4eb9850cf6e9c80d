"""Codebook-level explanation: `python -m explain.codebook --concept blue-star`.

Searches the codebook for the tokens that make the IEM see `--concept` inside a region of an
image (`--from-concept NAME`: generated images of another concept; `--from-image PNG`;
`--from-index I` of `--dataset DIR`; none: the full grid from random logits, a pure codebook-level
explanation). Defaults to the toy world and its shipped IEM; `--vqgan` + `--iem-checkpoint`
select real ones (an ImageNet IEM resolves `goldfinch`, `11` or `n01531178`).

Writes OUT/tokens.json (T_codebook per image, final and best step), OUT/progression.png and
OUT/progression.gif (the decoded edit, the paper's Figure 5) and OUT/table.md (f_orig/f_target
before and after). `--table5` instead runs the toy world's Table 5 design for `--pairs`.

`--config configs/imagenet.py` runs the ImageNet recipe's Table 5 step: the authors' pairs (labels
10–20 except 15 → 30 − label) on generated test images, scored by the IEM and ResNet18; it writes
WORKDIR/table5/table5.json.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from PIL import Image

from cortex_jax import toy
from cortex_jax.core import errors, imagenet, sharding
from cortex_jax.experiments import codebook_level, recipe
from cortex_jax.io import folders, shards, sources
from cortex_jax.io.images import grid_image, read_image, to_uint8
from cortex_jax.method import selection
from cortex_jax.models import iem, maskgit
from cortex_jax.toy import world

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
_LR = flags.DEFINE_float("lr", 0.05, "Adam learning rate.")
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Shipped toy IEM.")
_N_IMAGES = flags.DEFINE_integer("n-images", 4, "Images to edit with --from-concept.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "VQGAN source (see load_vqgan).")
_IEM_CKPT = flags.DEFINE_string("iem-checkpoint", None, "IEM folder written by train.iem.")
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
_OUT = flags.DEFINE_string("out", "runs/explain_codebook", "Output folder.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def _models():
    """(vqgan, predict, class names, is_toy)."""
    toy_world = _VQGAN.value == "toy" and _IEM_CKPT.value is None
    if toy_world:
        _, _, predict = toy.load_toy_iem(_IEM.value)
        return toy.load_toy_vqgm().vqgan, predict, [c.name for c in world.CONCEPTS], True
    if _IEM_CKPT.value is None or _VQGAN.value == "toy":
        raise ValueError("a real model needs both --vqgan SOURCE and --iem-checkpoint FOLDER")
    vq = sources.load_vqgan(_VQGAN.value)
    cfg, v, meta = folders.read_iem_folder(_IEM_CKPT.value)
    predict = functools.partial(iem.predict_fn(cfg), v["params"], v["batch_stats"])
    return vq, predict, list(meta["class_names"]), False


def _resolve(name: str, names: list[str], is_toy: bool) -> int:
    toy_names = [c.name for c in world.CONCEPTS]
    if is_toy:
        if name in toy_names:
            return toy_names.index(name)
        try:
            imagenet.resolve(name)
        except ValueError:
            return toy.load_toy_vqgm().class_id(name)  # raises with close matches
        raise ValueError(
            f"{name!r} is an ImageNet concept: it needs --vqgan imagenet_f16_16384 (or a VQGAN "
            f"folder/checkpoint) and --iem-checkpoint FOLDER of an IEM trained with "
            f"configs/iem_ce.py:variant=imagenet"
        )
    if len(names) == 1000:
        if name in toy_names:
            raise ValueError(f"{name!r} is a toy-world concept: drop --vqgan/--iem-checkpoint")
        return imagenet.resolve(name)
    from cortex_jax.models.vqgm import resolve_name

    return resolve_name(name, names, "IEM class")


def _start(vq, names, is_toy):
    """Base token grids (B, m, m), their source concepts (B,), and the default region."""
    m = vq.grid_size
    if _FROM_IMAGE.value:
        px = read_image(_FROM_IMAGE.value, vq.config.resolution)
        return np.asarray(vq.encode(px)).reshape(1, m, m), np.array([-1]), "center"
    if _FROM_INDEX.value is not None:
        if not _DATASET.value:
            raise ValueError("--from-index needs --dataset DIR (a token dataset)")
        tokens, labels, _ = shards.TokenDataset.open(_DATASET.value).arrays()
        i = _FROM_INDEX.value
        if not 0 <= i < len(tokens):
            raise ValueError(f"--from-index {i} is outside the dataset's 0..{len(tokens) - 1}")
        if labels[i] >= len(names):
            raise ValueError(
                f"--from-index {i} has label {labels[i]}, which the IEM's "
                f"{len(names)} classes do not include"
            )
        vq.check_indices(tokens[i : i + 1])
        return tokens[i : i + 1].astype(np.int32), labels[i : i + 1], "center"
    if _FROM_CONCEPT.value:
        if not is_toy:
            raise ValueError(
                "--from-concept generates images and needs the toy world; use "
                "--from-image or --from-index with real models"
            )
        src = _resolve(_FROM_CONCEPT.value, names, is_toy)
        vqgm = toy.load_toy_vqgm()
        ids = np.full(_N_IMAGES.value, src)
        toks = vqgm.sample_tokens(ids, jax.random.PRNGKey(_SEED.value), toy.TOY_SAMPLING)
        return np.asarray(toks), ids, "center"
    return np.zeros((1, m, m), np.int32), np.array([-1]), "full"


def _decode(vq):
    return lambda t: np.clip(np.asarray(vq.decode_code(np.asarray(t))), -1, 1)


def explain(out: Path) -> dict:
    if not _CONCEPT.value:
        raise ValueError("name the target concept with --concept NAME")
    vq, predict, names, is_toy = _models()
    target = _resolve(_CONCEPT.value, names, is_toy)
    base, sources, default_region = _start(vq, names, is_toy)
    mask = selection.region_mask(vq.grid_size, _REGION.value or default_region)
    cfg = selection.SelectionConfig(
        steps=_STEPS.value, learning_rate=_LR.value, log_every=_LOG_EVERY.value
    )
    src = np.where(sources < 0, target, sources)  # no source concept: track the target twice
    errors.writable_folder(out)  # before the optimisation, so a bad --out costs nothing
    res = selection.select_tokens(
        predict, vq.codebook, base, mask, target, src, jax.random.PRNGKey(_SEED.value), cfg
    )
    decode = _decode(vq)
    frames = codebook_level.progression(decode, base, res, 0)
    strip = grid_image(frames, len(frames), scale=max(1, 128 // frames.shape[1]))
    big = [Image.fromarray(f).resize((256, 256), Image.NEAREST) for f in to_uint8(frames)]
    strip.save(out / "progression.png")  # everything is computed: now the files
    big[0].save(out / "progression.gif", save_all=True, append_images=big[1:], duration=400, loop=0)
    info = {
        "target": names[target],
        "region_positions": res.positions.tolist(),
        "images": [
            {
                "source": names[s] if s >= 0 else None,
                "tokens_final": res.tokens[i].tolist(),
                "tokens_best": res.best_tokens[i].tolist(),
                "f_target": {
                    "before": float(res.start_f_target[i]),
                    "final": float(res.f_target[i, -1]),
                    "best": float(res.f_target[i].max()),
                },
                "f_original": {
                    "before": float(res.start_f_original[i]),
                    "final": float(res.f_original[i, -1]),
                },
            }
            for i, s in enumerate(sources)
        ],
        "config": {"steps": cfg.steps, "lr": cfg.learning_rate, "objective": cfg.objective},
    }
    (out / "tokens.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [
        "| image | f_orig before | f_orig after | f_target before | f_target after |",
        "|---|---|---|---|---|",
    ]
    for i, im in enumerate(info["images"]):
        fo, ft = im["f_original"], im["f_target"]
        lines.append(
            f"| {i} | {fo['before']:.3f} | {fo['final']:.3f} | {ft['before']:.3f} | "
            f"{ft['final']:.3f} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return info


def _table5_bases(vq, names, is_toy, idx):
    """(base grids, sources, targets, classifier) for the pairs: generated toy images and the
    pixel judge, or the first --n-images test images of each source class in --dataset and
    --classifier."""
    per = _N_IMAGES.value
    if is_toy:
        src = np.repeat([s for s, _ in idx], per)
        tgt = np.repeat([t for _, t in idx], per)
        vqgm = toy.load_toy_vqgm()
        base = vqgm.sample_tokens(src, jax.random.PRNGKey(_SEED.value), toy.TOY_SAMPLING)
        return np.asarray(base), src, tgt, toy.load_toy_judge()
    if not _DATASET.value or not _CLASSIFIER.value:
        raise ValueError(
            "--table5 with real models needs --dataset DIR (test token grids) and --classifier "
            "(a torchvision .pth, a classifier folder or random:ARCH)"
        )
    tokens, labels, _ = shards.TokenDataset.open(_DATASET.value).arrays()
    vq.check_indices(tokens)
    base, src, tgt = [], [], []
    for s_id, t_id in idx:
        rows = np.flatnonzero(labels == s_id)[:per]
        if not len(rows):
            raise ValueError(f"--dataset has no images of {names[s_id]!r} for the pair")
        base.append(tokens[rows].astype(np.int32))
        src += [s_id] * len(rows)
        tgt += [t_id] * len(rows)
    _, _, probs = sources.load_classifier(_CLASSIFIER.value, _CLASSIFIER_SIZE.value)
    return np.concatenate(base), np.asarray(src), np.asarray(tgt), probs


def table5(out: Path) -> dict:
    vq, predict, names, is_toy = _models()
    pairs = []
    for p in _PAIRS.value.split(","):
        parts = [x.strip() for x in p.split(":")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pairs entry {p!r}; expected A:B")
        pairs.append(tuple(parts))
    ids = [(_resolve(a, names, is_toy), _resolve(b, names, is_toy)) for a, b in pairs]
    idx = [x for a, b in ids for x in ((a, b), (b, a))]  # each concept toward its partner
    base, src, tgt, judge = _table5_bases(vq, names, is_toy, idx)
    cfg = selection.SelectionConfig(
        steps=_STEPS.value, learning_rate=_LR.value, log_every=_LOG_EVERY.value
    )
    mask = selection.region_mask(vq.grid_size, _REGION.value or "center")
    editors = {}
    if _MASKGIT.value:
        mg = sources.load_maskgit(_MASKGIT.value)
        if mg.vqgan.config != vq.config or not np.array_equal(mg.vqgan.codebook, vq.codebook):
            raise ValueError(
                "--maskgit's tokenizer is not the --vqgan the IEM reads; pass "
                f"--vqgan {_MASKGIT.value}"
            )
        key = jax.random.PRNGKey(_SEED.value + 1)
        sc = maskgit.SampleConfig(_MASKGIT_ITER.value, 4.5)
        editors["maskgit_edit"] = lambda b, s, t, m: mg.edit_tokens(b, m, t, key, sc)
    errors.writable_folder(out)
    result = codebook_level.pair_study(
        predict,
        _decode(vq),
        judge,
        vq.codebook,
        base,
        src,
        tgt,
        mask,
        cfg,
        _SEED.value,
        editors=editors,
    )
    result["pairs"] = [f"{a}<->{b}" for a, b in pairs]
    result["classifier"] = "toy pixel judge" if is_toy else _CLASSIFIER.value
    (out / "table5.json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [
        "| method | tokens changed | ΔP_orig (judge) | ΔP_target (judge) | ΔP_target per token "
        "| judge top-1 = target | ΔP_orig (IEM) | ΔP_target (IEM) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in result["table"].items():
        rows.append(
            f"| {k} | {v['tokens_changed']:.1f} | {v['delta_judge_orig']:+.3f} | "
            f"{v['delta_judge_target']:+.3f} | {v['delta_judge_target_per_token']:+.4f} | "
            f"{v['judge_target_top1']:.1%} | {v['delta_iem_orig']:+.3f} | "
            f"{v['delta_iem_target']:+.3f} |"
        )
    rows += [
        "",
        "Like for like: token_selection_from_image vs embedding_optimisation (both start "
        "from the image's own tokens). token_selection starts from random tokens, as the "
        "authors; random_tokens/start is that start without optimisation.",
    ]
    if editors:
        rows += [
            "",
            "maskgit_edit: MaskGIT's own editing, the region re-masked and re-decoded for the "
            f"target class ({_MASKGIT_ITER.value} iterations from the 3rd).",
        ]
    (out / "table5.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    out = Path(_OUT.value)
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
            table5(out)
        else:
            info = explain(out)
            im = info["images"][0]
            print(
                f"{info['target']}: f_target {im['f_target']['before']:.3f} → "
                f"{im['f_target']['final']:.3f} (best {im['f_target']['best']:.3f})"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
