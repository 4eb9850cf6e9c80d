"""The token atlas: `python -m explain.atlas` (the toy world's default output folders).

Reads what the other commands wrote (explain.sample → --sample, explain.codebook → --edit,
explain.codebook --table5 → --table5, explain.bias → --bias, comma-separated, explain.compare →
--compare) and writes one static site, OUT/index.html, that opens from file:// with no server
and no network: concepts with search, a page per concept (TIS boxes and heatmaps, T_concept
token portraits), the masking curve and tables, the codebook-level edit and Table 5, the bias
audits, and a methods page (the attribution methods' table and curves).
`--vqgan` is the explained model's VQGAN (default: the toy world's), which decodes the test
images and each token alone; `--model NAME` instead takes it from a registered family
(`cortex_jax.experiments.families`: toy, imagenet, maskgit, llamagen, …) loaded from
`--checkpoint` / `--vq-checkpoint` / `--gpt-config` as train.generate loads it. On the ImageNet
recipe: `--config configs/imagenet.py:iem=ce` reads WORKDIR/sample_ce and WORKDIR/table5 (and
--compare only when given) and writes WORKDIR/atlas.
"""

from __future__ import annotations

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from cortex_jax import toy  # noqa: F401  (registers the toy family)
from cortex_jax.core import errors, paths
from cortex_jax.experiments import families, recipe
from cortex_jax.figures import atlas
from cortex_jax.io import folders
from cortex_jax.io.reports import SampleLevelReport
from cortex_jax.io.sources import load_vqgan

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal,iem=…]): its workdir's atlas."
)
_SAMPLE = flags.DEFINE_string("sample", "runs/explain_sample", "explain.sample's --out.")
_EDIT = flags.DEFINE_string("edit", "runs/explain_codebook", "explain.codebook's --out.")
_TABLE5 = flags.DEFINE_string("table5", "runs/table5", "explain.codebook --table5's --out.")
_BIAS = flags.DEFINE_string("bias", "runs/explain_bias", "explain.bias --out folders, a,b,…")
_COMPARE = flags.DEFINE_string("compare", "runs/compare", "explain.compare's --out.")
_VQGAN = flags.DEFINE_string("vqgan", "toy", "The explained model's VQGAN (decodes the tokens).")
_MODEL = flags.DEFINE_string("model", None, "A registered family; its tokenizer decodes.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "--model's main file (train.generate's).")
_VQ_CHECKPOINT = flags.DEFINE_string("vq-checkpoint", None, "--model's tokenizer file (llamagen).")
_GPT_CONFIG = flags.DEFINE_string("gpt-config", None, "llamagen: a preset or ModelArgs JSON.")
_OUT = flags.DEFINE_string(
    "out",
    "runs/atlas",
    "Output folder: an atlas built there before is replaced; any other content is refused.",
)


def _methods(compare: epath.Path | None) -> epath.Path | None:
    if compare and not (compare / "compare.json").is_file():
        print(f"note: --compare {compare} has no compare.json; the atlas has no methods page")
        return None
    return compare


def _toy(family, compare: epath.Path | None) -> dict:
    """The atlas of the folders the flags name (the toy world's commands' defaults)."""
    sample, out = paths.of(_SAMPLE.value, "--sample"), paths.of(_OUT.value, "--out")
    edit = paths.of(_EDIT.value, "--edit") if _EDIT.value else None
    table5 = paths.of(_TABLE5.value, "--table5") if _TABLE5.value else None
    bias = [paths.of(b, "--bias") for b in _BIAS.value.split(",") if b.strip()]
    if not SampleLevelReport.exists(sample):
        raise FileNotFoundError(
            f"no explain.sample report in {sample}; run `python -m explain.sample --all "
            f"--out {sample}` first (or pass --sample DIR)"
        )
    for flag, d in (("--edit", edit), ("--table5", table5), *(("--bias", b) for b in bias)):
        if d is not None and not d.is_dir():
            print(f"note: {flag} {d} not found; the atlas leaves that section out")
    compare = _methods(compare)
    folders.check_output(out, "explain.atlas", remote_ok=True)
    SampleLevelReport.read(sample)  # a report this version cannot read: one line, no work
    if family is not None:
        args = families.LoadArgs(_CHECKPOINT.value, _VQ_CHECKPOINT.value, _GPT_CONFIG.value)
        decode = family.load(args).vqgan.decode_pixels
    else:
        decode = load_vqgan(_VQGAN.value).decode_pixels
    return atlas.build_atlas(out, sample, decode, edit, table5, bias, compare)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    with errors.one_line_errors():
        use = "explain.atlas --model"
        family = families.get(_MODEL.value, "class", use) if _MODEL.value else None  # before work
        if family is not None and (flags.FLAGS["vqgan"].present or _CONFIG.value is not None):
            raise ValueError(f"--model {_MODEL.value} and --vqgan/--config both name the decoder")
        compare = paths.of(_COMPARE.value, "--compare") if _COMPARE.value else None
        if _CONFIG.value is not None:  # the ImageNet recipe's layout (experiments/recipe.py)
            compare = compare if _COMPARE.present else None  # not the toy world's default
            table5 = paths.of(_CONFIG.value.workdir) / "table5"
            if not table5.is_dir():
                print(f"note: --table5 {table5} not found; the atlas leaves that section out")
            info = recipe.atlas(_CONFIG.value, _methods(compare))
        else:
            info = _toy(family, compare)
    print(f"wrote {info['index']} ({info['concepts']} concepts, {info['bytes'] / 1e6:.1f} MB)")


if __name__ == "__main__":
    app.run(main)
