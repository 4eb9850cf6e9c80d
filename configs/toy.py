"""Rebuilds the toy world (VQGAN, pixel judge, class-conditional prior) from scratch.

    python -m train.toy --workdir runs/toy
    python -m train.toy --config configs/toy.py:runlocal --workdir /tmp/toy   # 2-minute smoke

The shipped weights (cortex_jax/toy/weights) are this config's output: copy workdir/{vqgan,prior,
judge} there to ship a new build.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.vqgan = ml_collections.ConfigDict(
        dict(
            steps=1800,
            batch_size=64,
            learning_rate=1e-3,
            beta=0.25,
            ema_decay=0.99,
            mask_weight=4.0,
            restart_every=100,
            kmeans_vectors=8192,
        )
    )
    config.judge = ml_collections.ConfigDict(
        dict(steps=2500, batch_size=64, learning_rate=2e-3, blur_share=0.5)
    )
    config.prior_data_per_class = 3000  # encoded procedural images per class for the prior
    config.prior = ml_collections.ConfigDict(
        dict(
            steps=5000,
            batch_size=64,
            learning_rate=8e-4,
            final_learning_rate=8e-5,
            warmup=100,
            weight_decay=0.01,
            n_layer=4,
            n_head=4,
            n_embd=128,
        )
    )
    config.sample = ml_collections.ConfigDict(dict(temperature=0.8, top_k=20, top_p=1.0))
    config.eval_per_class = 50

    if arg == "runlocal":  # every step of the build, at sizes that prove the plumbing only
        config.vqgan.steps = 8
        config.vqgan.batch_size = 8
        config.vqgan.kmeans_vectors = 1024
        config.judge.steps = 8
        config.judge.batch_size = 16
        config.prior_data_per_class = 16
        config.prior.steps = 20
        config.prior.warmup = 5
        config.prior.n_layer = 1
        config.prior.n_embd = 32
        config.prior.n_head = 2
        config.eval_per_class = 4
    elif arg:
        raise ValueError(f"unknown configs/toy.py option {arg!r}; expected 'runlocal' or nothing")
    return config
