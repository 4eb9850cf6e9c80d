"""Shared IEM training settings for configs/iem_{ce,re,te}.py (not a config on its own).

Options (`:variant=imagenet,settings=authors`):
- `variant=imagenet`: 1000 classes, E 16×16×256, the paper-size architectures;
  `variant=toy` (the default): a small IEM on generated toy-world images, minutes on a CPU.
- `settings` names where the training hyper-parameters come from:
  - `paper` (the default for imagenet): the paper's appendix A.3.4. CE/RE: Adam lr 1e-3, weight
    decay 1e-4, ×0.1 every 20 epochs; TE: AdamW lr 1e-3, weight decay 1e-4, 10 % linear warm-up
    then cosine, mixed precision (bfloat16 compute), attention dropout 0.2; 80 epochs, batch 256.
  - `authors`: the authors' VQGAN_explanation/train.py, which trains all three networks alike:
    Adam lr 1e-3 with L2 weight decay 1e-4, ×0.1 every 20 epochs, 80 epochs, batch 512, float32
    (TE too: no AdamW, warm-up, cosine or mixed precision there; Net4's dropout, attention
    weights included, is 0.2 as in the paper). Corrected on 2026-12-01: TE's `authors` settings
    were the paper's AdamW/cosine/bf16 without attention dropout.
  - `toy` (the default for toy, and only for it): our own short CPU schedule, batch 128, 12
    epochs, ×0.1 every 8 epochs; the TE with AdamW lr 5e-4, weight decay 0.05. These are the
    settings the shipped toy IEMs were trained with (cortex_jax/toy/weights), kept so that
    `train.iem` rebuilds them; they are not the paper's.
"""

import ml_collections

# Paper architecture hyper-parameters per IEM and their small toy-world variants.
_TOY_MODEL = {
    "ce": dict(width=64, depth=2, hidden=256),
    "re": dict(width=64, depth=2, hidden=256, se_hidden=8),
    "te": dict(width=64, depth=2, hidden=128, heads=4, mlp=128),
}
_STEP = dict(optimizer="adam_step", learning_rate=1e-3, weight_decay=1e-4, decay_every=20)
_COSINE = dict(
    optimizer="adamw_cosine", learning_rate=1e-3, weight_decay=1e-4, warmup=0.1, decay_every=20
)  # decay_every unused by the cosine schedule
SETTINGS = {  # settings → arch → (train fields, model fields)
    "paper": {
        "ce": (dict(_STEP, batch_size=256, epochs=80, dtype="float32"), {}),
        "re": (dict(_STEP, batch_size=256, epochs=80, dtype="float32"), {}),
        "te": (
            dict(_COSINE, batch_size=256, epochs=80, dtype="bfloat16"),
            dict(attention_dropout=0.2),
        ),
    },
    "authors": {
        "ce": (dict(_STEP, batch_size=512, epochs=80, dtype="float32"), {}),
        "re": (dict(_STEP, batch_size=512, epochs=80, dtype="float32"), {}),
        "te": (dict(_STEP, batch_size=512, epochs=80, dtype="float32"), {}),
    },
    "toy": {
        "ce": (dict(_STEP, batch_size=128, epochs=12, decay_every=8, dtype="float32"), {}),
        "re": (dict(_STEP, batch_size=128, epochs=12, decay_every=8, dtype="float32"), {}),
        "te": (
            dict(
                _COSINE,
                batch_size=128,
                epochs=12,
                learning_rate=5e-4,
                weight_decay=0.05,
                dtype="float32",
            ),
            {},
        ),
    },
}


def parse_arg(arg: str | None) -> dict[str, str]:
    """'variant=toy,runlocal=True' → {'variant': 'toy', 'runlocal': 'True'}."""
    out = {}
    for part in filter(None, (arg or "").split(",")):
        if "=" not in part:
            raise ValueError(f"config option {part!r} is not key=value")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def get_config(arch: str, arg: str | None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg)
    variant = opts.pop("variant", "toy")
    settings = opts.pop("settings", "toy" if variant == "toy" else "paper")
    if opts:
        raise ValueError(
            f"unknown config options {sorted(opts)}; expected variant=toy|imagenet "
            "and settings=paper|authors|toy"
        )
    if variant not in ("toy", "imagenet"):
        raise ValueError(f"unknown variant {variant!r}; expected toy or imagenet")
    if settings not in SETTINGS or (settings == "toy" and variant != "toy"):
        raise ValueError(
            f"unknown settings {settings!r} for variant={variant}; expected "
            f"{'paper, authors or toy' if variant == 'toy' else 'paper or authors'}"
        )
    train, model = SETTINGS[settings][arch]
    c = ml_collections.ConfigDict()
    c.arch = arch
    c.variant = variant
    c.settings = settings
    c.model = ml_collections.ConfigDict(model)
    c.train = ml_collections.ConfigDict(dict(seed=0, eval_every=0, checkpoint_every=0, **train))
    c.data = ml_collections.ConfigDict()
    if variant == "imagenet":
        c.vqgan = "imagenet_f16_16384"
        c.n_classes = 1000
        c.data.train = "runs/imagenet_tokens/train"
        c.data.val = "runs/imagenet_tokens/val"
        c.data.generate_if_missing = False
    else:
        c.vqgan = "toy"
        c.n_classes = 14  # the toy world's concepts (class ids 0..13)
        c.model.update(_TOY_MODEL[arch])
        c.data.train = "runs/toy_tokens/train"
        c.data.val = "runs/toy_tokens/val"
        c.data.generate_if_missing = True
        c.data.train_per_class = 600
        c.data.val_per_class = 150
    return c
