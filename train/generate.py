"""Sample a token dataset: `python -m train.generate --classes concepts --per-class N --out DIR`.

`--config configs/imagenet.py` instead runs the ImageNet recipe's first step: the train / val /
test splits (1000 / 300 / 50 per class) from taming's cin transformer, the test split's PNGs, and
the VQGAN saved for the later steps (`:runlocal`: small random models, a CPU dry run).

`--source encoded` writes procedural images through the VQGAN encoder instead, with ground-truth
object masks (toy world only). Shards are written atomically; rerunning the same command resumes.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

from cortex_jax import toy
from cortex_jax.core import errors, imagenet, sharding
from cortex_jax.experiments import recipe
from cortex_jax.experiments.generate import generate_dataset, save_samples
from cortex_jax.io import sources
from cortex_jax.models import llamagen, maskgit
from cortex_jax.models.cin import SampleConfig

# The authors' ImageNet sampling (taming's sample_fast.py defaults).
IMAGENET_SAMPLING = SampleConfig(temperature=1.0, top_k=250, top_p=1.0)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A recipe config (configs/imagenet.py[:runlocal]); the other flags are unused."
)
_MODEL = flags.DEFINE_string(
    "model",
    "toy",
    "'toy', 'imagenet' (taming's cin transformer, with --checkpoint), 'maskgit' (with "
    "--checkpoint), 'llamagen' (with --checkpoint GPT.pt --vq-checkpoint VQ.pt) or a folder "
    "laid out like the toy weights.",
)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint",
    None,
    "For --model imagenet: taming's cin_transformer last.ckpt or run folder; for --model "
    "maskgit: the folder holding tokenizer_*checkpoint and maskgit_*checkpoint; for --model "
    "llamagen: the GPT file (c2i_L_256.pt, …).",
)
_VQ_CHECKPOINT = flags.DEFINE_string(
    "vq-checkpoint", None, "--model llamagen: the tokenizer file (vq_ds16_c2i.pt)."
)
_GPT_CONFIG = flags.DEFINE_string(
    "gpt-config",
    None,
    "--model llamagen: a preset (GPT-B … GPT-3B) or a JSON file of LlamaGen ModelArgs, when the "
    "GPT's width and depth match no preset.",
)
_CFG_SCALE = flags.DEFINE_float("cfg-scale", 4.0, "--model llamagen: guidance scale.")
_CFG_INTERVAL = flags.DEFINE_integer(
    "cfg-interval", -1, "--model llamagen: guidance off after this step (-1: always on)."
)
_PRECISION = flags.DEFINE_enum(
    "precision", "fp32", ["fp32", "bf16"], "--model llamagen: the GPT's compute dtype."
)
_NUM_ITER = flags.DEFINE_integer("num-iter", 12, "--model maskgit: parallel decoding steps.")
_CHOICE_T = flags.DEFINE_float(
    "choice-temperature", 4.5, "--model maskgit: confidence-masking temperature (released: 4.5)."
)
_N_HEAD = flags.DEFINE_integer(
    "n-head",
    None,
    "Attention heads of that checkpoint, if its configs/*-project.yaml is not beside checkpoints/.",
)
_CLASSES = flags.DEFINE_string(
    "classes",
    "all",
    "'all', 'concepts' (the toy world's 14 concepts, the classes its IEMs learn; elsewhere the "
    "same as all) or comma-separated class names.",
)
_PER_CLASS = flags.DEFINE_integer("per-class", 100, "Images per class.")
_OUT = flags.DEFINE_string("out", "runs/generated", "Dataset folder.")
_SOURCE = flags.DEFINE_enum(
    "source", "generated", ["generated", "encoded"], "Where tokens come from."
)
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_TOP_K = flags.DEFINE_integer("top-k", None, "Top-k sampling (model default if unset).")
_TEMPERATURE = flags.DEFINE_float(
    "temperature", None, "Sampling temperature (model default if unset)."
)
_TOP_P = flags.DEFINE_float("top-p", 1.0, "Nucleus sampling mass.")
_SHARD_SIZE = flags.DEFINE_integer("shard-size", 256, "Images per shard.")
_PNG = flags.DEFINE_bool(
    "png", False, "Also write OUT/samples.png: up to 8 decoded images a class."
)


def run_recipe(config) -> None:
    sharding.maybe_initialize_distributed()
    with recipe.StageBars("generate ") as progress:
        counts = recipe.generate(config, progress)
    print(f"wrote {counts} under {config.workdir}")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep orbax/XLA INFO lines off the terminal
    with errors.one_line_errors():
        if _CONFIG.value is not None:
            return run_recipe(_CONFIG.value)
        if _MODEL.value == "imagenet":
            if not _CHECKPOINT.value:
                raise ValueError(
                    "--model imagenet needs --checkpoint: taming-transformers' "
                    "2021-04-03T19-39-50_cin_transformer (checkpoints/last.ckpt with its configs/ "
                    "folder beside, from the taming-transformers README), e.g. --checkpoint "
                    "logs/2021-04-03T19-39-50_cin_transformer/checkpoints/last.ckpt"
                )
            names = [c.name for c in imagenet.classes()]
            vqgm = sources.load_cin_vqgm(_CHECKPOINT.value, names, _N_HEAD.value)
            default = IMAGENET_SAMPLING
        elif _MODEL.value == "maskgit":
            if not _CHECKPOINT.value:
                raise ValueError(
                    "--model maskgit needs --checkpoint DIR: the folder holding "
                    "MaskGIT's tokenizer_imagenet256_checkpoint and "
                    "maskgit_imagenet256_checkpoint (docs/maskgit.md)"
                )
            vqgm, default = sources.load_maskgit(_CHECKPOINT.value), None
        elif _MODEL.value == "llamagen":
            if not _CHECKPOINT.value or not _VQ_CHECKPOINT.value:
                raise ValueError(
                    "--model llamagen needs --checkpoint GPT.pt and --vq-checkpoint VQ.pt: "
                    "LlamaGen's c2i_*.pt and vq_ds16_c2i.pt (docs/llamagen.md)"
                )
            vqgm = sources.load_llamagen(
                _CHECKPOINT.value, _VQ_CHECKPOINT.value, config=_GPT_CONFIG.value
            )
            default = None
        elif _MODEL.value == "toy":
            vqgm, default = toy.load_toy_vqgm(), toy.TOY_SAMPLING
        else:
            vqgm, default = toy.load_toy_vqgm(_MODEL.value), toy.TOY_SAMPLING
        if _CLASSES.value == "all":
            class_ids = list(range(len(vqgm.class_names)))
        elif _CLASSES.value == "concepts":
            toyish = _MODEL.value not in ("imagenet", "maskgit", "llamagen")
            n = len(toy.world.CONCEPTS) if toyish else len(vqgm.class_names)
            class_ids = list(range(n))
        else:
            class_ids = [vqgm.class_id(c.strip()) for c in _CLASSES.value.split(",") if c.strip()]
        if not class_ids:  # before anything is written: an empty dataset would block the folder
            raise ValueError(
                f"--classes {_CLASSES.value!r} names no class; expected 'all', "
                "'concepts' or comma-separated class names"
            )
        if _PER_CLASS.value <= 0:
            raise ValueError(f"--per-class {_PER_CLASS.value}; expected a positive number")
        errors.writable_folder(_OUT.value)
        total = len(class_ids) * _PER_CLASS.value
        with tqdm(total=total, desc=f"{_SOURCE.value} tokens", unit="img") as bar:
            progress = lambda n: bar.update(n - bar.n)
            if _SOURCE.value == "encoded":
                if _MODEL.value in ("imagenet", "maskgit", "llamagen"):
                    raise ValueError("--source encoded needs the toy world's procedural images")
                ds = toy.write_encoded_dataset(
                    vqgm.vqgan,
                    class_ids,
                    _PER_CLASS.value,
                    _OUT.value,
                    _SEED.value,
                    _SHARD_SIZE.value,
                    progress,
                )
            else:
                sc: SampleConfig | maskgit.SampleConfig | llamagen.SampleConfig
                if _MODEL.value == "maskgit":
                    sc = maskgit.SampleConfig(_NUM_ITER.value, _CHOICE_T.value)
                elif _MODEL.value == "llamagen":  # LlamaGen's sample_c2i.py defaults
                    t, k = _TEMPERATURE.value, _TOP_K.value
                    sc = llamagen.SampleConfig(
                        _CFG_SCALE.value,
                        _CFG_INTERVAL.value,
                        1.0 if t is None else t,
                        2000 if k is None else k,
                        _TOP_P.value,
                    )
                else:
                    d = default
                    sc = SampleConfig(
                        d.temperature if _TEMPERATURE.value is None else _TEMPERATURE.value,
                        d.top_k if _TOP_K.value is None else _TOP_K.value,
                        _TOP_P.value,
                    )
                ds = generate_dataset(
                    vqgm,
                    class_ids,
                    _PER_CLASS.value,
                    _OUT.value,
                    _SEED.value,
                    sc,
                    _SHARD_SIZE.value,
                    progress,
                    "bfloat16" if _PRECISION.value == "bf16" else "float32",
                )
        if _PNG.value:
            names = [vqgm.class_names[c] for c in class_ids]
            per = min(8, _PER_CLASS.value)
            path = Path(_OUT.value) / "samples.png"
            png = save_samples(ds, vqgm.decode, path, class_ids, names, per, scale=3)
            print(f"wrote {png}")
    print(f"wrote {len(ds)} token grids to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
