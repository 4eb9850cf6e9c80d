"""Bias audits (paper Sec. 5.1): which concept's tokens a neutral prompt over-uses.

Given two contrasting concepts A and B and a neutral prompt N: generate images of each, train a
binary IEM (A vs B), take T_concept of A and of B from TIS on the training images (top-n
positions per image, top-k ids per concept), count per neutral image how many positions hold an
A token and how many a B token, and compare the two counts with Cliff's δ (positive: N leans to
A), its bootstrap confidence interval and a Mann–Whitney p-value.

Two versions of the comparison are reported:
- `raw`: the paper's statistic, on the counts as they are. It mixes how often a concept appears
  in N with how many positions its T_concept set matches in an image of that concept, which
  differs between concepts, so an unbiased N can still give δ ≠ 0.
- `calibrated` (the verdict): each set's counts in units of its own concept, c' = c / μ_own, where
  μ_own is the set's mean count on held-out images of its concept: 1 means "as many of A's tokens
  as a typical image of A shows". When N mixes A-like and B-like images with shares p_A and p_B,
  δ of c'_A against c'_B is ≈ p_A − p_B, so an even N gives ≈ 0. Its `share_a` is the linear
  unmixing estimate of p_A: (mean c − μ_other) / (μ_own − μ_other), averaged over both sets, with
  μ_other the set's mean count on held-out images of the other concept.

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


def mixture_sampler(sample: Sampler, name: str, a: str, b: str, share_a: float) -> Sampler:
    """A sampler that answers `name` with an exact mixture of A and B images (round(share_a·n)
    of A, in shuffled order) and passes every other name to `sample`: a neutral class whose
    composition is known by construction, so the audit statistic can be checked on its own."""
    if not 0 <= share_a <= 1:
        raise ValueError(f"mixture share {share_a} is outside [0, 1]")

    def mixed(n_name: str, n: int, seed: int) -> np.ndarray:
        if n_name != name:
            return sample(n_name, n, seed)
        k = int(round(share_a * n))
        parts = [sample(c, m, seed + off) for c, m, off in ((a, k, 1000), (b, n - k, 2000)) if m]
        out = np.concatenate(parts)
        return out[np.random.default_rng(seed).permutation(n)]

    return mixed


def calibrate(counts: np.ndarray, own: np.ndarray) -> np.ndarray | None:
    """Counts in units of the set's mean count on its own concept's images (None when that mean
    is 0: the set never occurs in its concept's held-out images)."""
    mu_own = float(np.mean(own))
    return None if mu_own <= 0 else np.asarray(counts, np.float64) / mu_own


def unmix_share(mean_neutral: float, mu_own: float, mu_other: float) -> float:
    """The share p of the concept in N from mean count = p·μ_own + (1 − p)·μ_other, in [0, 1]."""
    if mu_own <= mu_other:
        return float("nan")
    return float(np.clip((mean_neutral - mu_other) / (mu_own - mu_other), 0, 1))


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
        va_a, va_b = va_tok[va_lab == 0], va_tok[va_lab == 1]
        ref = {  # mean count of each set on held-out images of each concept
            "a_tokens_on_a": float(count_tokens(va_a, top[0]).mean()),
            "a_tokens_on_b": float(count_tokens(va_b, top[0]).mean()),
            "b_tokens_on_b": float(count_tokens(va_b, top[1]).mean()),
            "b_tokens_on_a": float(count_tokens(va_a, top[1]).mean()),
        }
        res = {"raw": compare(ca, cb_, cfg.n_boot, cfg.seed), "reference": ref}
        ka = calibrate(ca, count_tokens(va_a, top[0]))
        kb = calibrate(cb_, count_tokens(va_b, top[1]))
        if ka is None or kb is None:
            res["calibrated"] = None  # a set absent from its own concept's images: no unit
        else:
            cal = compare(ka, kb, cfg.n_boot, cfg.seed)
            share_from_a = unmix_share(float(ca.mean()), ref["a_tokens_on_a"], ref["a_tokens_on_b"])
            share_from_b = unmix_share(
                float(cb_.mean()), ref["b_tokens_on_b"], ref["b_tokens_on_a"]
            )
            cal["share_a"] = float(np.nanmean([share_from_a, 1 - share_from_b]))
            res["calibrated"] = cal
        res["verdict"] = "calibrated" if res["calibrated"] is not None else "raw"
        results[n] = res | {"tokens_a": top[0].tolist(), "tokens_b": top[1].tolist()}
    return {
        "concept_a": concept_a,
        "concept_b": concept_b,
        "neutral": neutral,
        "iem_validation": best,
        "config": dataclasses.asdict(cfg),
        "by_n": results,
        "arrays": {"neutral_tokens": neu, "sets": sets},
    }


def _row(n, r: dict, label: str) -> str:
    return (f"| {n} | {label} | {r['mean_a']:.2f} | {r['mean_b']:.2f} | {r['share_a']:.2f} | "
            f"{r['cliffs_delta']:+.3f} | [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
            f"{r['magnitude']} | {r['mann_whitney_p']:.2g} |")  # fmt: skip


def report_markdown(report: dict, n_neutral: int) -> str:
    """The paper's Table 4 shape: per n the raw counts (the paper's statistic) and the
    calibrated ones (the verdict; see cortex_jax.bias)."""
    a, b, neutral = report["concept_a"], report["concept_b"], report["neutral"]
    rows = [f"Neutral `{neutral}`: `{a}` vs `{b}`, {n_neutral} images; binary IEM validation "
            f"top-1 {report['iem_validation'].get('val_top1', float('nan')):.1%}", "",
            f"| n | counts | {a} | {b} | share {a} | Cliff's δ | 95 % CI | magnitude | p |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for n, r in report["by_n"].items():
        rows.append(_row(n, r["raw"], "raw (tokens/image)"))
        if r["calibrated"] is not None:
            rows.append(_row(n, r["calibrated"], "**calibrated**"))
        else:
            rows.append(f"| {n} | calibrated | — | — | — | — | — | a token set never occurs "
                        "in its own concept's held-out images | — |")  # fmt: skip
    rows += ["", "raw: T_concept tokens per neutral image, as the paper counts them. calibrated: "
             "the same counts in units of each set's mean count on its own concept's held-out "
             "images; its δ ≈ share A − share B, and its share is the unmixing estimate of the "
             "share of A."]  # fmt: skip
    if report.get("true_share_a") is not None:
        rows += ["", f"Designed share of `{a}` in `{neutral}`: {report['true_share_a']:.2f}"]
    if report.get("judge_share_a") is not None:
        j = report["judge_share_a"]
        rows += ["", f"Share of `{neutral}` images the pixel judge sees as `{a}` rather than `{b}` "
                 f"(what the generator produced): {j['share_a']:.3f} [{j['ci95'][0]:.3f}, "
                 f"{j['ci95'][1]:.3f}], so δ ≈ {2 * j['share_a'] - 1:+.3f} is the unbiased "
                 "answer."]  # fmt: skip
    return "\n".join(rows) + "\n"
