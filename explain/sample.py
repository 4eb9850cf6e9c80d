"""Sample-level explanation: `python -m explain.sample --concept red-circle` (or `--all`).

Defaults to the toy world with its shipped IEM and pixel judge. Writes OUT/report.json (token
sets, masking effects, image-level curve, ground-truth precision), OUT/token_sets.csv,
OUT/top_tokens.png (test images with their top-n TIS tokens boxed in red, as the paper's
Figure 3), OUT/image_level_curve.png (the paper's Figure 4) and OUT/arrays.npz (the test split's
tokens and TIS, what explain.atlas draws): `cortex_jax.io.reports.SampleLevelReport` reads them.

`--config configs/imagenet.py:iem=ce` runs the ImageNet recipe's step instead: TIS over the
generated training split (resumable, sharded over devices and processes), T_concept, and masking
of the test split scored by the ResNet (Table 2); it writes the same files to WORKDIR/sample_ce
(top_tokens.png shows config.sample.shown_concepts classes).
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax import toy
from cortex_jax.core import errors, sharding
from cortex_jax.experiments import recipe, sample_level
from cortex_jax.io import folders
from cortex_jax.io.reports import SampleLevelReport
from cortex_jax.method import attribution

COMMAND = "explain.sample"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal,iem=…]), not the toy world."
)
_CONCEPT = flags.DEFINE_string("concept", None, "Concept name(s), comma-separated.")
_ALL = flags.DEFINE_bool("all", False, "Explain every concept.")
_N = flags.DEFINE_integer("n", 5, "T_image size: top-n positions per image.")
_K = flags.DEFINE_integer("k", 10, "T_concept size: top-k token ids per concept.")
_IEM = flags.DEFINE_enum("iem", "ce", ["ce", "re", "te"], "Information extractor.")
_IEM_CKPT = flags.DEFINE_string(
    "iem-checkpoint",
    None,
    "An IEM trained on the toy world (a train.iem folder, or the authors' net1/3/4 .pth) instead "
    "of the shipped one; --iem, when given, checks its architecture.",
)
_OUT = flags.DEFINE_string("out", "runs/explain_sample", "Output folder.")
_PER_CONCEPT = flags.DEFINE_integer(
    "per-concept", 100, "Generated images per concept for T_concept."
)
_TEST = flags.DEFINE_integer("test-per-concept", 40, "Held-out generated images per concept.")
_TRUTH = flags.DEFINE_integer("truth-per-concept", 40, "Encoded images per concept (with masks).")
_N_SAMPLES = flags.DEFINE_integer("n-samples", 20, "SmoothGrad noise samples N.")
_METHOD = flags.DEFINE_enum(
    "method",
    "smoothgrad",
    list(attribution.method_names()),
    "Attribution behind TIS: smoothgrad (the paper's), or another method with its defaults "
    "(explain.compare measures them side by side).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")


def _asked() -> list[str] | None:
    """The --concept names (None for --all), checked before any model is loaded."""
    if _ALL.value:
        return None
    if not _CONCEPT.value:
        raise ValueError("name a concept with --concept NAME, or pass --all")
    asked = [c.strip() for c in _CONCEPT.value.split(",") if c.strip()]
    if not asked:
        raise ValueError(f"--concept {_CONCEPT.value!r} names no concept; expected NAME[,NAME…]")
    return asked


def _concepts(models, asked: list[str] | None) -> list[int]:
    names = models.class_names
    if asked is None:
        return list(range(len(names)))
    concepts = [models.class_id(c) for c in asked]
    for name, c in zip(asked, concepts, strict=True):
        if c >= len(names):
            raise ValueError(f"{name!r} is a neutral class, not a concept; expected one of {names}")
    return concepts


def _flag_configs() -> sample_level.StudyConfig:
    """The study's settings from the flags; a bad flag is one line naming it, before any work."""
    for flag, value in (
        ("--n", _N.value),
        ("--k", _K.value),
        ("--n-samples", _N_SAMPLES.value),
        ("--per-concept", _PER_CONCEPT.value),
        ("--test-per-concept", _TEST.value),
        ("--truth-per-concept", _TRUTH.value),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value}; expected at least 1")
    if _METHOD.value != "smoothgrad" and flags.FLAGS["n-samples"].present:
        raise ValueError(f"--n-samples is SmoothGrad's; --method is {_METHOD.value}")
    other = None if _METHOD.value == "smoothgrad" else {"method": _METHOD.value}
    method = sample_level.SampleLevelConfig(
        n=_N.value, k=_K.value, n_samples=_N_SAMPLES.value, seed=_SEED.value, attribution=other
    )
    return sample_level.StudyConfig(method, _PER_CONCEPT.value, _TEST.value)


def run(out: Path) -> SampleLevelReport:
    asked = _asked()
    cfg = _flag_configs()
    folders.check_output(out, COMMAND)
    ckpt = _IEM_CKPT.value
    if ckpt is not None and not Path(ckpt).exists():
        raise FileNotFoundError(f"--iem-checkpoint {ckpt!r} does not exist")
    arch = _IEM.value if ckpt is None or flags.FLAGS["iem"].present else None
    models = toy.models(arch, iem_checkpoint=ckpt)
    concepts = _concepts(models, asked)
    m = models.grid_size or 0
    if _N.value > m * m:
        raise ValueError(f"--n {_N.value}; expected 1..{m * m} (the {m}x{m} token grid)")
    if _K.value > len(models.codebook):
        raise ValueError(f"--k {_K.value}; expected 1..{len(models.codebook)} (the codebook size)")
    iem_source = Path(ckpt) if ckpt is not None else toy.WEIGHTS_DIR / f"iem_{arch or 'ce'}"
    identity = {"iem": models.predict_name, "sha256": folders.sha256_of(iem_source)}
    folders.claim_output(out, COMMAND)
    truth = toy.ground_truth(models, concepts, _TRUTH.value, _SEED.value + 2)
    with tqdm(total=3, desc="explain.sample") as bar:

        def progress(stage):
            bar.set_description(stage)
            bar.update(1)

        report = sample_level.study(models, concepts, cfg, out, truth, progress, identity)
    folders.finish_output(out, COMMAND)
    return report


def run_recipe(config) -> None:
    sharding.maybe_initialize_distributed()
    with recipe.StageBars(unit="img") as progress:
        report = recipe.sample_level_step(config, progress)
    if report is not None:
        s = report.summary
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
            if flags.FLAGS["method"].present:
                raise ValueError("--method with --config; the recipe's method is config.sample")
            return run_recipe(_CONFIG.value)
        report = run(Path(_OUT.value))
    s = report.summary
    print(
        "concept-level masking, judge accuracy change: "
        f"CORTEX {s['cortex_accuracy_change']:+.1%} ({s['cortex_tokens_masked']:.1f} tokens), "
        f"frequency {s['frequency_accuracy_change']:+.1%} ({s['frequency_tokens_masked']:.1f} "
        "tokens)"
    )
    if report.ground_truth_precision is not None:
        g = report.ground_truth_precision
        print(
            f"ground-truth precision of T_concept: CORTEX {g['concept_cortex']:.1%}, frequency "
            f"{g['concept_frequency']:.1%}, random {g['concept_random']:.1%}"
        )
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
