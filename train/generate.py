"""Sample a token dataset: `python -m train.generate --classes concepts --per-class N --out DIR`.

`--config configs/imagenet.py` (or llamagen.py) runs a recipe's first step instead: the train /
val / test splits, the test PNGs and the tokenizer (`:runlocal`: random models, a CPU dry run).

`--model` names a family of `cortex_jax.experiments.families` (no per-family code here): class
ones sample `--classes`, the prompt-conditioned `dallebart` `--prompts "a|b|c"` (`--tokenizer
DIR`: its BART files). `--source encoded`: the toy world's procedural images encoded, with masks.
OUT may hold only what train.generate wrote there (its manifest, `io.folders`): a rerun resumes
or refuses stale settings, a folder holding anything else is refused in one line.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax import toy  # noqa: F401  (registers the toy family)
from cortex_jax.core import errors, sharding
from cortex_jax.experiments import families, recipe
from cortex_jax.experiments.generate import generate_dataset, generate_prompt_dataset, save_samples
from cortex_jax.io import folders

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal]); the other flags are unused."
)
_MODEL = flags.DEFINE_string(
    "model",
    "toy",
    "A registered family (cortex_jax.experiments.families: toy, imagenet = taming's cin "
    "transformer, maskgit, llamagen, dallebart (prompts), …) or a folder like the toy weights.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "The family's main file: imagenet: taming's cin_transformer last.ckpt or run folder; "
    "maskgit: the folder of tokenizer_*checkpoint and maskgit_*checkpoint; llamagen: c2i_*.pt; "
    "dallebart: a DalleBart folder or repo id (dalle-mini/dalle-mini).",
)
_VQ_CHECKPOINT = flags.DEFINE_string(
    "vq-checkpoint", None, "Separate tokenizer (llamagen: vq_ds16_c2i.pt; dallebart: its VQGAN)."
)
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "dallebart: the BART tokenizer files' folder.")
_GPT_CONFIG = flags.DEFINE_string(
    "gpt-config", None, "llamagen: a preset (GPT-B … GPT-3B) or a JSON of LlamaGen ModelArgs."
)
_N_HEAD = flags.DEFINE_integer(
    "n-head", None, "imagenet: attention heads, without configs/*-project.yaml beside checkpoints/."
)
_SAMPLER = {  # fields of the family's SampleConfig (unset: its default; one it lacks: refused)
    "top_k": flags.DEFINE_integer("top-k", None, "Top-k sampling."),
    "temperature": flags.DEFINE_float("temperature", None, "Sampling temperature."),
    "top_p": flags.DEFINE_float("top-p", None, "Nucleus sampling mass."),
    "cfg_scale": flags.DEFINE_float("cfg-scale", None, "Guidance scale (llamagen: 4.0)."),
    "condition_scale": flags.DEFINE_float("condition-scale", None, "dallebart: guidance (10)."),
    "cfg_interval": flags.DEFINE_integer("cfg-interval", None, "Guidance off after this step."),
    "num_iter": flags.DEFINE_integer("num-iter", None, "maskgit: parallel decoding steps (12)."),
    "choice_temperature": flags.DEFINE_float(
        "choice-temperature", None, "maskgit: confidence-masking temperature (4.5)."
    ),
}
_PRECISION = flags.DEFINE_enum("precision", "fp32", ["fp32", "bf16"], "Transformer compute dtype.")
_CLASSES = flags.DEFINE_string(
    "classes", "all", "'all', 'concepts' (the toy world's 14) or comma-separated class names."
)
_PROMPTS = flags.DEFINE_string("prompts", None, 'dallebart: "a|b|c", the prompts to sample.')
_PER_CLASS = flags.DEFINE_integer("per-class", 100, "Images per class (or prompt).")
_OUT = flags.DEFINE_string("out", "runs/generated", "Dataset folder.")
_SOURCE = flags.DEFINE_enum("source", "generated", ["generated", "encoded"], "Token source.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_SHARD_SIZE = flags.DEFINE_integer("shard-size", 256, "Images per shard.")
COMMAND = "train.generate"
_PNG = flags.DEFINE_bool("png", False, "Also write OUT/samples.png: up to 8 images a class.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        if _CONFIG.value is not None:
            sharding.maybe_initialize_distributed()
            with recipe.StageBars("generate ") as progress:
                counts = recipe.generate(_CONFIG.value, progress)
            return print(f"wrote {counts} under {_CONFIG.value.workdir}")
        folders.check_output(_OUT.value, COMMAND)  # before a model loads: nothing of the user's
        family = families.get(_MODEL.value)
        prompts = families.prompts(family, _PROMPTS.value, flags.FLAGS["classes"].present)
        sampling = family.settings({k: f.value for k, f in _SAMPLER.items()})
        if _SOURCE.value == "encoded" and family.encoded is None:
            raise ValueError("--source encoded needs the toy world's procedural images")
        if _PER_CLASS.value <= 0:
            raise ValueError(f"--per-class {_PER_CLASS.value}; expected a positive number")
        args = (_CHECKPOINT.value, _VQ_CHECKPOINT.value, _GPT_CONFIG.value, _N_HEAD.value)
        vqgm = family.load(families.LoadArgs(*args, tokenizer=_TOKENIZER.value))
        ids = list(range(len(prompts))) if prompts else None
        ids = ids or families.class_ids(family, vqgm, _CLASSES.value)
        folders.claim_output(_OUT.value, COMMAND)
        with tqdm(total=len(ids) * _PER_CLASS.value, desc="tokens", unit="img") as bar:
            progress = lambda n: bar.update(n - bar.n)  # noqa: E731
            common = (prompts or ids, _PER_CLASS.value, _OUT.value, _SEED.value)
            if _SOURCE.value == "encoded":
                assert family.encoded is not None  # checked above
                ds = family.encoded(vqgm.vqgan, *common, _SHARD_SIZE.value, progress)
            else:  # the two kinds' writers take the same arguments
                dtype = "bfloat16" if _PRECISION.value == "bf16" else "float32"
                write = generate_prompt_dataset if prompts else generate_dataset
                ds = write(vqgm, *common, sampling, _SHARD_SIZE.value, progress, dtype)
        if _PNG.value:
            names = [p[:14] for p in prompts] if prompts else [vqgm.class_names[c] for c in ids]
            path, per, scale = Path(_OUT.value) / "samples.png", min(8, _PER_CLASS.value), 3
            print(f"wrote {save_samples(ds, vqgm.decode, path, ids, names, per, scale=scale)}")
        folders.finish_output(_OUT.value, COMMAND)
    print(f"wrote {len(ds)} token grids to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
