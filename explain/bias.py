"""Bias audit: `python -m explain.bias --neutral circle` (toy world by default).

On DALL·E-mini: `python -m explain.bias --dalle dalle-mini/dalle-mini --tokenizer DIR --vqgan
dalle-mini/vqgan_imagenet_f16_16384 --pair "a white doctor in the hospital|a black doctor in the
hospital" --neutral "a doctor in the hospital"` (prompts separated by |). The model comes from
the registry's `dallebart` family (`cortex_jax.experiments.families`, the prompt-conditioned
kind): --dalle is its checkpoint, --tokenizer its BART files, --vqgan its VQGAN and
--condition-scale its sampler's super-conditioning (top-k 50, as dalle-mini samples).

Compares two concepts (`--pair red-circle,blue-circle`, by default the pair the toy world names
for `--neutral`) inside images of a neutral class: generate → binary IEM → TIS → T_concept for
each n → per-image counts on the neutral images and on held-out images of each concept. The
verdict is the share of A-like neutral images with its 95 % interval (linear unmixing of the
counts against the held-out images; cortex_jax/method/audit.py says why and what it assumes);
the paper's Cliff's δ on the raw counts, with a paired interval and p-value, is reported beside
it. `--mix 0.5` audits an exact 50/50 mixture of A and B images instead of the neutral class:
a control of known composition. On the toy world the pixel judge also measures the share of A
the generator really produced. Writes OUT/report.json (`per_n`: verdict, paper, leak, checks
per n), OUT/report.md, OUT/counts_n{N}.png (histograms of per-image counts) and
OUT/neutral_tokens.png (neutral images with the over-represented concept's tokens boxed); the
experiment is `cortex_jax.experiments.bias.audit`.

The binary IEM is trained on the generated images unless an IEM is named, with the model flags
the other explain commands take: `--iem ce|re|te` (a shipped toy IEM), `--iem-checkpoint DIR`
(one the user trained, e.g. with train.iem on the toy world), and `--vqgan toy` (the default
without --dalle). The named IEM's logits of A and B are the audit's binary IEM; one without a
class named A or B is refused in one line before anything is generated.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from absl import app, flags, logging
from tqdm import tqdm

from cortex_jax import toy
from cortex_jax.core import errors
from cortex_jax.experiments import bias, bundle, families
from cortex_jax.io import folders
from cortex_jax.toy import world

_NEUTRAL = flags.DEFINE_string("neutral", "circle", "Neutral class (toy: circle, star, square).")
_PAIR = flags.DEFINE_string("pair", None, "A,B: the two concepts (default: the toy world's pair).")
_PER_CONCEPT = flags.DEFINE_integer("per-concept", 1000, "Generated images of each concept.")
_NEUTRAL_IMAGES = flags.DEFINE_integer("neutral-images", 1000, "Generated neutral images.")
_N_SAMPLES = flags.DEFINE_integer("n-samples", 20, "SmoothGrad noise samples N.")
_EPOCHS = flags.DEFINE_integer("epochs", 8, "Binary IEM epochs.")
_MIX = flags.DEFINE_float(
    "mix",
    None,
    "Instead of the neutral class, an exact mixture of generated A and B images with "
    "this share of A (0.5: an even control by construction, which tests the statistic alone).",
)
_DALLE = flags.DEFINE_string(
    "dalle", None, "DalleBart folder or repo id: the registry's dallebart family (default: toy)."
)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "Folder with the BART tokenizer files.")
_VQGAN = flags.DEFINE_string(
    "vqgan",
    None,
    "VQGAN source: toy (the toy world's), or for --dalle (default imagenet_f16_16384).",
)
_IEM = flags.DEFINE_enum(
    "iem",
    None,
    ["ce", "re", "te"],
    "Audit with the shipped toy IEM of this arch instead of training a binary one; with "
    "--iem-checkpoint, its expected arch.",
)
_IEM_CKPT = flags.DEFINE_string(
    "iem-checkpoint",
    None,
    "Audit with this IEM (train.iem folder or the authors' .pth) restricted to the pair's two "
    "classes, instead of training a binary one.",
)
_SCALE = flags.DEFINE_float("condition-scale", 10.0, "Super-conditioning scale for --dalle.")
_OUT = flags.DEFINE_string("out", "runs/explain_bias", "Output folder.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
COMMAND = "explain.bias"


def _two(text: str, sep: str) -> tuple[str, str]:
    parts = [x.strip() for x in text.split(sep)]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair {text!r}; expected two names separated by {sep!r}: A{sep}B")
    return parts[0], parts[1]


def _toy():
    """(bundle, A, B, neutral, true share of A) on the toy world."""
    models = toy.models(_IEM.value, iem_checkpoint=_IEM_CKPT.value)
    neutral = _NEUTRAL.value
    if _PAIR.value:
        a, b = _two(_PAIR.value, ",")
    else:
        pairs = {n: (x, y) for x, y, n in world.CONTRAST_PAIRS}
        if neutral not in pairs:
            raise ValueError(
                f"no contrast pair is defined for {neutral!r}; pass --pair A,B or one "
                f"of --neutral {', '.join(pairs)}"
            )
        a, b = pairs[neutral]
    for name in (a, b, neutral):
        models.class_id(name)  # unknown names fail here with close matches
    share = world.true_share(neutral, a) if neutral in world.CLASS_NAMES else None
    return models, a, b, neutral, share


def _dallebart():
    """The same on DalleBart prompts: the registry's `dallebart` family loads and bundles it."""
    if not _PAIR.value or "|" not in _PAIR.value:
        raise ValueError('--dalle needs --pair "prompt A|prompt B" and --neutral "prompt"')
    a, b = _two(_PAIR.value, "|")
    family = families.get("dallebart", "prompt", "explain.bias --dalle")
    sampling = family.settings({"condition_scale": _SCALE.value})
    vqgan = _VQGAN.value or "imagenet_f16_16384"
    args = families.LoadArgs(_DALLE.value, vqgan, tokenizer=_TOKENIZER.value)
    models = family.bundle(family.load(args), sampling)
    if _IEM_CKPT.value:
        predict, meta = bundle.load_predict(_IEM_CKPT.value, _IEM.value)
        bundle.check_iem_reads(
            predict,
            models,
            f"--iem-checkpoint {_IEM_CKPT.value} cannot read E",
            f" of --vqgan {vqgan}, whose tokens DalleBart makes; expected an IEM trained on them",
        )
        models = dataclasses.replace(
            models,
            predict=predict,
            predict_name=_IEM_CKPT.value,
            class_names=tuple(meta["class_names"]),
        )
    return models, a, b, _NEUTRAL.value, None


def run(out: Path) -> dict:
    for flag, value in (
        ("--per-concept", _PER_CONCEPT.value),
        ("--neutral-images", _NEUTRAL_IMAGES.value),
        ("--n-samples", _N_SAMPLES.value),
        ("--epochs", _EPOCHS.value),
    ):
        if value < (10 if flag == "--per-concept" else 2 if flag == "--neutral-images" else 1):
            raise ValueError(f"{flag} {value} is too small")
    if _MIX.value is not None and not 0 <= _MIX.value <= 1:
        raise ValueError(f"--mix {_MIX.value}; expected a share of A between 0 and 1")
    if _DALLE.value and not _TOKENIZER.value:
        raise ValueError("--dalle needs --tokenizer DIR with the BART tokenizer files")
    if _TOKENIZER.value and not Path(_TOKENIZER.value).is_dir():
        raise FileNotFoundError(f"--tokenizer folder not found: {_TOKENIZER.value}")
    if _DALLE.value and _VQGAN.value == "toy":
        raise ValueError("--vqgan toy with --dalle; DalleBart's tokens are an ImageNet VQGAN's")
    if not _DALLE.value and _VQGAN.value not in (None, "toy"):
        raise ValueError(
            f"--vqgan {_VQGAN.value} without --dalle; the toy world generates with its own "
            "VQGAN (--vqgan toy), another VQGAN needs the --dalle that makes its tokens"
        )
    if _DALLE.value and _IEM.value and not _IEM_CKPT.value:
        raise ValueError(
            f"--iem {_IEM.value} names a shipped toy IEM; with --dalle pass --iem-checkpoint"
        )
    if _IEM_CKPT.value and not Path(_IEM_CKPT.value).exists():
        raise FileNotFoundError(f"--iem-checkpoint not found: {_IEM_CKPT.value}")
    folders.check_output(out, COMMAND)
    models, a, b, neutral, share = _dallebart() if _DALLE.value else _toy()
    use_iem = bool(_IEM.value or _IEM_CKPT.value)
    if use_iem:  # an IEM that cannot tell A from B is refused before anything is generated
        bias.two_class_iem(models.predict, models.class_names, a, b)
    cfg = bias.AuditConfig(
        per_concept=_PER_CONCEPT.value,
        neutral=_NEUTRAL_IMAGES.value,
        n_samples=_N_SAMPLES.value,
        epochs=_EPOCHS.value,
        seed=_SEED.value,
    )
    with tqdm(total=4, desc="audit") as bar:

        def progress(stage):
            bar.set_description(stage)
            bar.update(1)

        folders.claim_output(out, COMMAND)
        report = bias.audit(
            models, a, b, neutral, cfg, out, _MIX.value, share, progress, use_iem=use_iem
        )
    folders.finish_output(out, COMMAND)
    return report


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        run(Path(_OUT.value))
    print((Path(_OUT.value) / "report.md").read_text())


if __name__ == "__main__":
    app.run(main)
