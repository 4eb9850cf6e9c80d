"""Bias audits (paper Sec. 5.1): which concept's tokens a neutral prompt over-uses.

Given two contrasting concepts A and B and a neutral prompt N: generate images of each, train a
binary IEM (A vs B), take T_concept of A and of B from TIS on the training images (top-n
positions per image, top-k ids per concept), count per neutral image how many positions hold an
A token and how many a B token, and compare the two counts with Cliff's δ (positive: N leans to
A), its bootstrap confidence interval and a Mann–Whitney p-value.

The generator is a callable `sample(name, n, seed) -> token grids (n, m, m)`, so the same audit
runs on the toy world's class-conditional model or on a text-to-image model (DalleBart).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax import data, iem, stats, tis, training

Sampler = Callable[[str, int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Attributes: per_concept (generated images of A and of B, split train/val by val_share),
    neutral (images of N), ns (T_image sizes), k (T_concept size), n_samples (SmoothGrad N),
    n_boot (bootstrap resamples), epochs / batch_size of the binary IEM, seed."""

    per_concept: int = 1000
    val_share: float = 0.2
    neutral: int = 1000
    ns: tuple[int, ...] = (5, 10, 20)
    k: int = 10
    n_samples: int = 20
    n_boot: int = 2000
    epochs: int = 8
    batch_size: int = 64
    seed: int = 0


def count_tokens(indices: np.ndarray, token_set: np.ndarray) -> np.ndarray:
    """Per image, the number of positions whose id is in `token_set`: (N, m, m) → (N,)."""
    return np.isin(np.asarray(indices), np.asarray(token_set)).reshape(len(indices), -1).sum(1)


def compare(counts_a: np.ndarray, counts_b: np.ndarray, n_boot: int, seed: int) -> dict:
    """Mean counts, Cliff's δ (standard and the authors' halved), bootstrap CI, Mann–Whitney."""
    delta = stats.cliffs_delta(counts_a, counts_b)
    lo, hi = stats.bootstrap_ci(counts_a, counts_b, n_boot=n_boot, seed=seed)
    _, p = stats.mann_whitney_u(counts_a, counts_b)
    mean_a, mean_b = float(np.mean(counts_a)), float(np.mean(counts_b))
    return {
        "mean_a": mean_a,
        "mean_b": mean_b,
        "share_a": mean_a / (mean_a + mean_b) if mean_a + mean_b else float("nan"),
        "cliffs_delta": delta,
        "cliffs_delta_halved": stats.cliffs_delta_halved(counts_a, counts_b),
        "ci95": [lo, hi],
        "mann_whitney_p": p,
        "magnitude": stats.magnitude(delta),
    }


def _write(folder: Path, tokens: np.ndarray, labels: np.ndarray, names: Sequence[str]):
    data.write_meta(folder, {"class_names": list(names), "vqgm": "audit", "grid_size":
                             int(tokens.shape[1]), "source": "generated"})  # fmt: skip
    data.write_shard(folder, 0, tokens, labels)
    return data.TokenDataset.open(folder)


def run_audit(
    sample: Sampler,
    codebook: np.ndarray,
    concept_a: str,
    concept_b: str,
    neutral: str,
    workdir: str | Path,
    cfg: AuditConfig = AuditConfig(),
    iem_config: iem.IEMConfig | None = None,
    progress: Callable[[str], None] = lambda stage: None,
) -> dict:
    """The whole audit; returns the report dict (plus arrays under 'arrays' for figures)."""
    workdir = Path(workdir)
    progress("generate")
    a = sample(concept_a, cfg.per_concept, cfg.seed)
    b = sample(concept_b, cfg.per_concept, cfg.seed + 1)
    neu = sample(neutral, cfg.neutral, cfg.seed + 2)
    n_val = int(round(cfg.val_share * cfg.per_concept))
    tr_tok = np.concatenate([a[n_val:], b[n_val:]])
    tr_lab = np.repeat(np.array([0, 1], np.int32), cfg.per_concept - n_val)
    va_tok = np.concatenate([a[:n_val], b[:n_val]])
    va_lab = np.repeat(np.array([0, 1], np.int32), n_val)
    names = [concept_a, concept_b]
    train_ds = _write(workdir / "train", tr_tok, tr_lab, names)
    val_ds = _write(workdir / "val", va_tok, va_lab, names)

    progress("train binary IEM")
    mcfg = iem_config or iem.IEMConfig("ce", 2, width=64, depth=2, hidden=256)
    tcfg = training.TrainConfig(batch_size=cfg.batch_size, epochs=cfg.epochs, decay_every=100,
                                seed=cfg.seed)  # fmt: skip
    _, best = training.train_and_evaluate(mcfg, tcfg, train_ds, val_ds, codebook, workdir / "iem")
    trainer = training.Trainer(mcfg, tcfg, codebook, tr_tok.shape[1], 1)
    state = training.restore_best(trainer, workdir / "iem")
    predict = functools.partial(iem.predict_fn(mcfg), state.params, state.batch_stats)

    progress("TIS and T_concept")
    cb = jnp.asarray(codebook)
    scores = []
    for i in range(0, len(tr_tok), 256):
        t = jnp.asarray(tr_tok[i : i + 256], jnp.int32)
        scores.append(np.asarray(tis.token_importance(
            predict, cb[t], tr_lab[i : i + 256], jax.random.PRNGKey(cfg.seed), cfg.n_samples,
            image_ids=jnp.arange(i, i + t.shape[0]),
        )))  # fmt: skip
    scores = np.concatenate(scores)

    progress("count on neutral images")
    results = {}
    sets = {}
    for n in cfg.ns:
        if n > tr_tok.shape[1] * tr_tok.shape[2]:
            continue
        _, ids = tis.image_tokens(jnp.asarray(scores), jnp.asarray(tr_tok), n)
        top, _ = tis.concept_tokens(ids, tr_lab, 2, codebook.shape[0], cfg.k)
        top = np.asarray(top)
        sets[n] = top
        ca, cb_ = count_tokens(neu, top[0]), count_tokens(neu, top[1])
        results[n] = compare(ca, cb_, cfg.n_boot, cfg.seed)
        results[n].update(tokens_a=top[0].tolist(), tokens_b=top[1].tolist())
    return {
        "concept_a": concept_a,
        "concept_b": concept_b,
        "neutral": neutral,
        "iem_validation": best,
        "config": dataclasses.asdict(cfg),
        "by_n": results,
        "arrays": {"neutral_tokens": neu, "sets": sets},
    }
