"""Shared IEM training settings for configs/iem_{ce,re,te}.py (not a config on its own).

`variant=imagenet` is the paper's setup (1000 classes, E 16×16×256, batch 512, 80 epochs);
`variant=toy` trains a small IEM on generated toy-world images in minutes on a CPU.
"""

import ml_collections

# Paper architecture hyper-parameters per IEM and their small toy-world variants.
_TOY_MODEL = {
    "ce": dict(width=64, depth=2, hidden=256),
    "re": dict(width=64, depth=2, hidden=256, se_hidden=8),
    "te": dict(width=64, depth=2, hidden=128, heads=4, mlp=128),
}
_OPTIMIZER = {
    "ce": dict(optimizer="adam_step", learning_rate=1e-3, weight_decay=1e-4, decay_every=20),
    "re": dict(optimizer="adam_step", learning_rate=1e-3, weight_decay=1e-4, decay_every=20),
    "te": dict(optimizer="adamw_cosine", learning_rate=5e-4, weight_decay=0.05, warmup=0.1),
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
    if opts:
        raise ValueError(f"unknown config options {sorted(opts)}; expected variant=toy|imagenet")
    c = ml_collections.ConfigDict()
    c.arch = arch
    c.variant = variant
    c.model = ml_collections.ConfigDict()
    c.train = ml_collections.ConfigDict(dict(seed=0, dtype="float32", eval_every=0,
                                             checkpoint_every=0, **_OPTIMIZER[arch]))  # fmt: skip
    c.data = ml_collections.ConfigDict()
    if variant == "imagenet":
        c.vqgan = "imagenet_f16_16384"
        c.n_classes = 1000
        c.train.batch_size = 512
        c.train.epochs = 80
        c.train.dtype = "float32" if arch != "te" else "bfloat16"
        c.data.train = "runs/imagenet_tokens/train"
        c.data.val = "runs/imagenet_tokens/val"
        c.data.generate_if_missing = False
    elif variant == "toy":
        c.vqgan = "toy"
        c.n_classes = 14  # the toy world's concepts (class ids 0..13)
        c.model.update(_TOY_MODEL[arch])
        c.train.batch_size = 128
        c.train.epochs = 12
        c.train.decay_every = 8
        c.data.train = "runs/toy_tokens/train"
        c.data.val = "runs/toy_tokens/val"
        c.data.generate_if_missing = True
        c.data.train_per_class = 600
        c.data.val_per_class = 150
    else:
        raise ValueError(f"unknown variant {variant!r}; expected toy or imagenet")
    return c
