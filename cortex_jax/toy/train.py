"""How the toy world's models are trained: VQGAN, class-conditional prior, pixel judge.

Each `train_*` function is a plain loop over jitted pure steps that returns the trained model and
a small dict of measurements; `train/toy.py` wires them to a config, progress bars and files.

VQGAN recipe (what the feasibility run showed works on 2 CPU cores): reconstruction MSE weighted
×5 on the dilated object mask (plain MSE loses stars and crosses), commitment β = 0.25, an EMA
codebook (decay 0.99) initialised by k-means on encoder outputs, dead codes restarted from
encoder outputs every 100 steps, Adam, fresh procedural images every step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cortex_jax.models.cin import GPT, GPTConfig, SampleConfig, training_sequence
from cortex_jax.models.cin import init_params as gpt_init_params
from cortex_jax.models.vqgan import VQGAN, VQGANConfig, VQModule, init_params, nearest_codes
from cortex_jax.models.vqgm import ClassConditionalVQGM
from cortex_jax.toy import world
from cortex_jax.toy.judge import JudgeConfig, PixelJudge, blur

Array = jax.Array
Progress = Callable[[int, dict[str, float]], None]

TOY_VQGAN_CONFIG = VQGANConfig(
    ch=32,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(),
    z_channels=64,
    embed_dim=32,
    n_embed=512,
    resolution=world.IMAGE_SIZE,
)


def _no_progress(step: int, metrics: dict[str, float]) -> None:
    del step, metrics


def image_stream(batch_size: int, seed: int) -> Iterator[world.Batch]:
    """Endless fresh procedural batches over all classes, deterministic for `seed`."""
    step = 0
    while True:
        yield world.render_balanced(batch_size, seed * 1_000_003 + step)
        step += 1


# ---------------------------------------------------------------------------------------------
# VQGAN
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VQTrainConfig:
    """Attributes: steps, batch_size, learning_rate, beta (commitment), ema_decay, mask_weight
    (extra weight on the dilated object), restart_every (dead-code restarts), kmeans_vectors."""

    steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 1e-3
    beta: float = 0.25
    ema_decay: float = 0.99
    mask_weight: float = 4.0
    restart_every: int = 100
    kmeans_vectors: int = 8192
    seed: int = 0


def _codebook(params) -> Array:
    return params["quantize"]["embedding"]["embedding"]


def _with_codebook(params, codebook: Array):
    params = jax.tree_util.tree_map(lambda x: x, params)  # shallow copy of the nested dicts
    params["quantize"]["embedding"]["embedding"] = codebook
    return params


def _pixel_weights(coverage: Array, mask_weight: float) -> Array:
    dilated = nn.max_pool(coverage[..., None], (3, 3), strides=(1, 1), padding="SAME")
    return 1.0 + mask_weight * dilated


def kmeans(x: Array, k: int, rng: Array, iters: int = 10) -> Array:
    """Plain Lloyd k-means, (n, d) → (k, d) centres; empty clusters keep their previous centre."""
    centres = x[jax.random.choice(rng, x.shape[0], (k,), replace=False)]

    def body(_, c):
        idx = nearest_codes(x, c)
        onehot = jax.nn.one_hot(idx, k, dtype=x.dtype)
        counts = onehot.sum(0)
        sums = onehot.T @ x
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], c)

    return jax.lax.fori_loop(0, iters, body, centres)


def train_vqgan(
    cfg: VQTrainConfig,
    model_config: VQGANConfig = TOY_VQGAN_CONFIG,
    progress: Progress = _no_progress,
) -> tuple[VQGAN, dict[str, float]]:
    """Trains the toy VQGAN on fresh procedural images; returns it with codebook usage and MSE."""
    module = VQModule(model_config)
    rng = jax.random.PRNGKey(cfg.seed)
    params = init_params(model_config, rng)
    stream = image_stream(cfg.batch_size, cfg.seed)
    k = model_config.n_embed

    encode = jax.jit(lambda p, x: module.apply({"params": p}, x, method=VQModule.encode_latents))
    init_batches = [
        next(stream) for _ in range(max(1, cfg.kmeans_vectors // (cfg.batch_size * 64)))
    ]
    z0 = jnp.concatenate(
        [encode(params, b.pixels).reshape(-1, model_config.embed_dim) for b in init_batches]
    )
    codebook = kmeans(z0, k, jax.random.fold_in(rng, 1))
    params = _with_codebook(params, codebook)
    ema_count = jnp.ones((k,), jnp.float32)
    ema_sum = codebook

    opt = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps, alpha=0.1))
    opt_state = opt.init(params)

    def loss_fn(p, pixels, coverage):
        z = module.apply({"params": p}, pixels, method=VQModule.encode_latents)
        cb = jax.lax.stop_gradient(_codebook(p))
        idx = nearest_codes(z, cb)
        e = cb[idx]
        zq = z + jax.lax.stop_gradient(e - z)
        rec = module.apply({"params": p}, zq, method=VQModule.decode)
        w = _pixel_weights(coverage, cfg.mask_weight)
        rec_loss = jnp.mean(w * (rec - pixels) ** 2) / jnp.mean(w)
        commit = jnp.mean((z - e) ** 2)
        mse01 = jnp.mean(((rec - pixels) / 2) ** 2)
        return rec_loss + cfg.beta * commit, (z, idx, mse01)

    @jax.jit
    def step(p, o, cnt, sm, pixels, coverage):
        (loss, (z, idx, mse01)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, pixels, coverage)
        updates, o = opt.update(g, o, p)
        p = optax.apply_updates(p, updates)
        flat_z = z.reshape(-1, z.shape[-1])
        onehot = jax.nn.one_hot(idx.reshape(-1), k, dtype=jnp.float32)
        cnt = cfg.ema_decay * cnt + (1 - cfg.ema_decay) * onehot.sum(0)
        sm = cfg.ema_decay * sm + (1 - cfg.ema_decay) * (onehot.T @ flat_z)
        n = cnt.sum()
        smoothed = (cnt + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing as in VQ-VAE-2
        p = _with_codebook(p, sm / smoothed[:, None])
        used = jnp.sum(onehot.sum(0) > 0)
        return p, o, cnt, sm, {"loss": loss, "mse": mse01, "codes_in_batch": used}, flat_z

    @jax.jit
    def restart(p, cnt, sm, flat_z, key):
        dead = cnt < 1e-3 * cnt.sum() / k
        pick = flat_z[jax.random.randint(key, (k,), 0, flat_z.shape[0])]
        new_cb = jnp.where(dead[:, None], pick, _codebook(p))
        cnt = jnp.where(dead, 1.0, cnt)
        sm = jnp.where(dead[:, None], pick, sm)
        return _with_codebook(p, new_cb), cnt, sm, dead.sum()

    restarted = 0
    for i in range(cfg.steps):
        b = next(stream)
        params, opt_state, ema_count, ema_sum, metrics, flat_z = step(
            params, opt_state, ema_count, ema_sum, b.pixels, b.coverage
        )
        if cfg.restart_every and (i + 1) % cfg.restart_every == 0 and i + 1 < cfg.steps:
            params, ema_count, ema_sum, n_dead = restart(
                params, ema_count, ema_sum, flat_z, jax.random.fold_in(rng, 10 + i)
            )
            restarted += int(n_dead)
        progress(i + 1, {k_: float(v) for k_, v in metrics.items()})

    vq = VQGAN(model_config, params)
    stats = evaluate_vqgan(vq, seed=cfg.seed + 99)
    stats["dead_code_restarts"] = restarted
    return vq, stats


def evaluate_vqgan(vq: VQGAN, seed: int, n: int = 1024) -> dict[str, float]:
    """Reconstruction MSE ([0, 1] scale), codebook usage and perplexity on fresh images."""
    b = world.render_balanced(n, seed)
    ids, recs = [], []
    for i in range(0, n, 256):
        rec, idx = vq.reconstruct(b.pixels[i : i + 256])
        ids.append(np.asarray(idx))
        recs.append(np.asarray(rec))
    ids_all, rec_all = np.concatenate(ids), np.concatenate(recs)
    counts = np.bincount(ids_all.ravel(), minlength=vq.config.n_embed)
    p = counts / counts.sum()
    nz = p[p > 0]
    return {
        "reconstruction_mse": float(np.mean(((rec_all - b.pixels) / 2) ** 2)),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": vq.config.n_embed,
        "perplexity": float(math.exp(-(nz * np.log(nz)).sum())),
    }


# ---------------------------------------------------------------------------------------------
# Pixel judge
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JudgeTrainConfig:
    """Attributes: steps, batch_size, learning_rate, blur_share (share of blurred images)."""

    steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 2e-3
    blur_share: float = 0.5
    seed: int = 1


def train_judge(
    cfg: JudgeTrainConfig,
    judge_config: JudgeConfig = JudgeConfig(),
    progress: Progress = _no_progress,
) -> tuple[dict, dict[str, float]]:
    """Trains the pixel judge on procedural concept images (not on neutral classes)."""
    model = PixelJudge(judge_config)
    rng = jax.random.PRNGKey(cfg.seed)
    params = model.init(rng, jnp.zeros((1, world.IMAGE_SIZE, world.IMAGE_SIZE, 3)))["params"]
    opt = optax.adam(optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps, alpha=0.05))
    opt_state = opt.init(params)
    names = [c.name for c in world.CONCEPTS]

    @jax.jit
    def step(p, o, pixels, labels, key):
        pick = jax.random.uniform(key, (pixels.shape[0], 1, 1, 1)) < cfg.blur_share
        pixels = jnp.where(pick, blur(pixels), pixels)

        def loss_fn(p):
            lg = model.apply({"params": p}, pixels)
            return optax.softmax_cross_entropy_with_integer_labels(lg, labels).mean(), lg

        (loss, lg), g = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, o = opt.update(g, o, p)
        acc = jnp.mean(jnp.argmax(lg, -1) == labels)
        return optax.apply_updates(p, updates), o, {"loss": loss, "acc": acc}

    for i in range(cfg.steps):
        b = world.render_balanced(cfg.batch_size, cfg.seed * 7_000_003 + i, names)
        params, opt_state, metrics = step(
            params, opt_state, b.pixels, b.labels, jax.random.fold_in(rng, i)
        )
        progress(i + 1, {k: float(v) for k, v in metrics.items()})
    test = world.render_balanced(1400, cfg.seed + 12345, names)
    pred = np.argmax(np.asarray(model.apply({"params": params}, test.pixels)), -1)
    return params, {"procedural_test_accuracy": float(np.mean(pred == test.labels))}


# ---------------------------------------------------------------------------------------------
# Class-conditional prior
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PriorTrainConfig:
    """minGPT size and AdamW schedule (b2 0.98, wd 0.01, clip 1, warm-up then cosine)."""

    steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 8e-4
    final_learning_rate: float = 8e-5
    warmup: int = 100
    weight_decay: float = 0.01
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    seed: int = 2


def toy_gpt_config(cfg: PriorTrainConfig, n_embed: int, grid_size: int) -> GPTConfig:
    n_classes = len(world.CLASS_NAMES)
    return GPTConfig(
        vocab_size=n_embed + n_classes,
        block_size=grid_size * grid_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        image_vocab_size=n_embed,
        class_offset=n_embed,
        n_classes=n_classes,
    )


def train_prior(
    cfg: PriorTrainConfig,
    tokens: np.ndarray,
    labels: np.ndarray,
    n_embed: int,
    progress: Progress = _no_progress,
) -> tuple[GPTConfig, dict, dict[str, float]]:
    """Trains the class-conditional GPT on token grids (n, m, m) with class labels (n,)."""
    if not 0 <= cfg.warmup < cfg.steps:
        raise ValueError(f"prior warmup={cfg.warmup}; expected 0 <= warmup < steps={cfg.steps}")
    n, m, _ = tokens.shape
    gcfg = toy_gpt_config(cfg, n_embed, m)
    model = GPT(gcfg)
    rng = jax.random.PRNGKey(cfg.seed)
    params = gpt_init_params(gcfg, rng)
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.warmup, cfg.steps, cfg.final_learning_rate
    )
    opt = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(sched, b1=0.9, b2=0.98, weight_decay=cfg.weight_decay),
    )
    opt_state = opt.init(params)
    flat = jnp.asarray(tokens.reshape(n, m * m).astype(np.int32))
    labels_j = jnp.asarray(labels, jnp.int32)

    def loss_fn(p, z, c):
        lg = model.apply({"params": p}, training_sequence(gcfg, c, z))
        return optax.softmax_cross_entropy_with_integer_labels(lg, z).mean()

    @jax.jit
    def step(p, o, key):
        idx = jax.random.randint(key, (cfg.batch_size,), 0, n)
        loss, g = jax.value_and_grad(loss_fn)(p, flat[idx], labels_j[idx])
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), o, loss

    for i in range(cfg.steps):
        params, opt_state, loss = step(params, opt_state, jax.random.fold_in(rng, i))
        progress(i + 1, {"loss": float(loss)})
    return gcfg, params, {"final_train_loss": float(loss)}


def recognition(
    vqgm: ClassConditionalVQGM,
    judge: Callable[[Array], Array],
    per_class: int,
    seed: int,
    sample_config: SampleConfig,
) -> dict[str, Any]:
    """Share of generated images of each concept that the pixel judge recognises."""
    per_concept: dict[str, float] = {}
    for cid, c in enumerate(world.CONCEPTS):
        toks = vqgm.sample_tokens(
            np.full(per_class, cid), jax.random.PRNGKey(seed + cid), sample_config
        )
        pred = np.argmax(np.asarray(judge(vqgm.decode(toks))), -1)
        per_concept[c.name] = float(np.mean(pred == cid))
    return {"mean": float(np.mean(list(per_concept.values()))), "per_concept": per_concept}


def reconstruction_recognition(
    vq: VQGAN, judge: Callable[[Array], Array], per_concept: int, seed: int
) -> float:
    """Share of VQGAN reconstructions of procedural concept images the judge recognises."""
    b = world.render_balanced(
        per_concept * len(world.CONCEPTS), seed, [c.name for c in world.CONCEPTS]
    )
    rec, _ = vq.reconstruct(b.pixels)
    pred = np.argmax(np.asarray(judge(np.clip(np.asarray(rec), -1, 1))), -1)
    return float(np.mean(pred == b.labels))
