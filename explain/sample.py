"""Sample-level explanation: `python -m explain.sample --concept red-circle` (or `--all`).

Defaults to the toy world with its shipped IEM and pixel judge. Writes OUT/report.json (token
sets, masking effects, image-level curve, ground-truth precision), OUT/token_sets.csv,
OUT/top_tokens.png (test images with their top-n TIS tokens boxed in red, as the paper's
Figure 3) and OUT/image_level_curve.png (the paper's Figure 4).

`--config configs/imagenet.py:iem=ce` runs the ImageNet recipe's step instead: TIS over the
generated training split (resumable, sharded over devices and processes), T_concept, and masking
of the test split scored by the ResNet (Table 2); it writes WORKDIR/sample_ce/report.json.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax import toy
from cortex_jax.core import errors, sharding
from cortex_jax.experiments import recipe, sample_level
from cortex_jax.figures import plots
from cortex_jax.io.images import save_grid
from cortex_jax.method import evaluate
from cortex_jax.toy import world

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal,iem=…]), not the toy world."
)
_CONCEPT = flags.DEFINE_string("concept", None, "Concept name(s), comma-separated.")
_ALL = flags.DEFINE_bool("all", False, "Explain every concept.")
_N = flags.DEFINE_integer("n", 5, "T_image size: top-n positions per image.")
_K = flags.DEFINE_integer("k", 10, "T_concept size: top-k token ids per concept.")
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Information extractor.")
_OUT = flags.DEFINE_string("out", "runs/explain_sample", "Output folder.")
_PER_CONCEPT = flags.DEFINE_integer(
    "per-concept", 100, "Generated images per concept for T_concept."
)
_TEST = flags.DEFINE_integer("test-per-concept", 40, "Held-out generated images per concept.")
_TRUTH = flags.DEFINE_integer("truth-per-concept", 40, "Encoded images per concept (with masks).")
_N_SAMPLES = flags.DEFINE_integer("n-samples", 20, "SmoothGrad noise samples N.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def _sample(vqgm, concepts, per, seed):
    ids = np.repeat(np.asarray(concepts), per)
    toks = np.asarray(vqgm.sample_tokens(ids, jax.random.PRNGKey(seed), toy.TOY_SAMPLING))
    return toks, ids.astype(np.int32)


def run(out: Path) -> dict:
    vqgm = toy.load_toy_vqgm()
    names = [c.name for c in world.CONCEPTS]
    if _ALL.value:
        concepts = list(range(len(names)))
    elif _CONCEPT.value:
        concepts = [vqgm.class_id(c.strip()) for c in _CONCEPT.value.split(",") if c.strip()]
        for c in concepts:
            if c >= len(names):
                raise ValueError(
                    f"{vqgm.class_names[c]!r} is a neutral class, not a concept; "
                    f"expected one of {names}"
                )
    else:
        raise ValueError("name a concept with --concept NAME, or pass --all")
    if not concepts:
        raise ValueError(f"--concept {_CONCEPT.value!r} names no concept; expected one of {names}")
    for flag, value in (
        ("--per-concept", _PER_CONCEPT.value),
        ("--test-per-concept", _TEST.value),
        ("--truth-per-concept", _TRUTH.value),
        ("--n-samples", _N_SAMPLES.value),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value}; expected at least 1")
    errors.writable_folder(out)
    _, variables, predict = toy.load_toy_iem(_IEM.value)
    judge = toy.load_toy_judge()
    cfg = sample_level.SampleLevelConfig(
        n=_N.value, k=_K.value, n_samples=_N_SAMPLES.value, seed=_SEED.value
    )
    explain_set = _sample(vqgm, concepts, _PER_CONCEPT.value, _SEED.value)
    test_set = _sample(vqgm, concepts, _TEST.value, _SEED.value + 1)
    truth_names = [names[c] for c in concepts for _ in range(_TRUTH.value)]
    truth = toy.encode_procedural(vqgm.vqgan, truth_names, _SEED.value + 2)
    with tqdm(total=3, desc="explain.sample") as bar:

        def progress(stage):
            bar.set_description(stage)
            bar.update(1)

        codebook = np.asarray(vqgm.vqgan.codebook)
        report = sample_level.run(
            vqgm.decode,
            predict,
            judge,
            codebook,
            concepts,
            explain_set,
            test_set,
            cfg,
            truth,
            progress,
        )
    arrays = report.pop("arrays")
    report["iem"], report["concept_names"] = _IEM.value, {c: names[c] for c in concepts}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    with (out / "token_sets.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["concept", "method", "rank", "token_id", "count"])
        for c, row in report["concepts"].items():
            for method in ("cortex", "frequency"):
                for r, (t, n) in enumerate(zip(row[method], row[f"{method}_counts"], strict=True)):
                    w.writerow([names[int(c)], method, r + 1, t, n])
    labels, px, scores = arrays["test_labels"], arrays["test_pixels"], arrays["test_tis"]
    shown = np.concatenate([np.flatnonzero(labels == c)[:8] for c in concepts])
    top = np.argsort(-scores[shown].reshape(len(shown), -1), axis=1)[:, : _N.value]
    boxes = evaluate.positions_mask(top, scores.shape[1])
    save_grid(
        out / "top_tokens.png", px[shown], 8, [names[c] for c in concepts], scale=4, boxes=boxes
    )
    curve = report["image_level_curve"]
    plots.masking_curve(
        out / "image_level_curve",
        curve["n"],
        {
            "top-n TIS positions": (curve["tis"], curve["tis_se"]),
            "n random positions": (curve["random"], curve["random_se"]),
        },
        f"Image level: {_IEM.value.upper()} IEM, pixel judge",
        ylabel="judge probability of the concept",
    )
    sample_level.save_test_arrays(out, arrays)  # what explain.atlas draws its pages from
    return report


def run_recipe(config) -> None:
    sharding.maybe_initialize_distributed()
    with recipe.StageBars(unit="it") as progress:
        report = recipe.sample_level_step(config, progress)
    if report is not None:
        s = report["summary"]
        print(
            f"{config.arch.upper()}: masking T_concept changes classifier accuracy by "
            f"{s['cortex_accuracy_change']:+.1%} ({s['cortex_tokens_masked']:.1f} tokens), the "
            f"frequency baseline by {s['frequency_accuracy_change']:+.1%} "
            f"({s['frequency_tokens_masked']:.1f} tokens)"
        )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        if _CONFIG.value is not None:
            return run_recipe(_CONFIG.value)
        report = run(Path(_OUT.value))
    s = report["summary"]
    print(
        "concept-level masking, judge accuracy change: "
        f"CORTEX {s['cortex_accuracy_change']:+.1%} ({s['cortex_tokens_masked']:.1f} tokens), "
        f"frequency {s['frequency_accuracy_change']:+.1%} ({s['frequency_tokens_masked']:.1f} "
        "tokens)"
    )
    if "ground_truth_precision" in report:
        g = report["ground_truth_precision"]
        print(
            f"ground-truth precision of T_concept: CORTEX {g['concept_cortex']:.1%}, frequency "
            f"{g['concept_frequency']:.1%}, random {g['concept_random']:.1%}"
        )
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
