"""Bias audits (paper Sec. 5.1): which concept's tokens a neutral prompt over-uses, and what share
of its images lean to each concept.

Given two contrasting concepts A and B and a neutral prompt N: generate images of each, train a
binary IEM (A vs B), take T_concept of A and of B from TIS on the training images (top-n
positions per image, top-k ids per concept), and count per image how many positions hold an A
token (c_A) and how many a B token (c_B): on the neutral images and on held-out reference images
of A and of B (never used for training or for choosing the sets).

**The verdict** is an estimate of the share p of A-like images among the neutral ones, by linear
unmixing of the per-image score d = c_A − c_B (`stats.mixture_share`): if each neutral image is
distributed like a reference image of A with probability p and like one of B otherwise, then
mean d on N = p·mean d on A + (1 − p)·mean d on B, so p̂ = (d̄_N − d̄_B) / (d̄_A − d̄_B). This is
unbiased however much each set leaks into the other concept's images (same colour, background
or texture: the normal case on real models) and whatever the shapes of the count distributions:
leaks move both means and cancel in the ratio. Its interval is a bootstrap that resamples the
neutral images and both reference sets, so it carries the uncertainty of the reference images.
`lean` is A or B when the interval excludes ½, else none.

We chose this over classify-and-count with the IEM because it keeps the verdict about the
tokens the paper audits, needs no calibrated classifier, and its one assumption can be checked
on the data. The assumption (prior shift: neutral images are a mixture of the two concepts'
image kinds) is what `checks` reports on: A's set alone and B's set alone give two more
estimates of the same p, whose intervals should overlap; `leak` is each set's mean count on the
other concept's reference images relative to its own (a leak near 1 leaves little contrast and a
wide interval, but no bias); `contrast_z` is d̄_A − d̄_B over its standard error (below ~3 the
estimate is unstable). A neutral prompt whose images are neither A-like nor B-like (or both at
once) breaks the assumption: then p̂ is the position of N between the two references on the d
scale, not a share of images.

**The paper's statistic** (Table 4) is kept beside it, labelled as such: mean counts per neutral
image and the standard Cliff's δ of c_A against c_B (and the authors' halved δ), with a paired
bootstrap interval and a paired sign-flip permutation p-value (both counts come from the same
images). It mixes how often a concept appears in N with how many positions its set matches in an
image of that concept, so an even N can give δ ≠ 0; it is not the verdict.

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


def paper_statistic(counts_a: np.ndarray, counts_b: np.ndarray, n_boot: int, seed: int) -> dict:
    """The paper's Table 4 statistic on one neutral set: mean counts, Cliff's δ of c_A against
    c_B (standard and the authors' halved), its paired bootstrap CI and paired permutation p."""
    delta = stats.cliffs_delta(counts_a, counts_b)
    return {
        "mean_a": float(np.mean(counts_a)),
        "mean_b": float(np.mean(counts_b)),
        "cliffs_delta": delta,
        "cliffs_delta_halved": delta / 2,
        "ci": list(stats.paired_delta_ci(counts_a, counts_b, n_boot=n_boot, seed=seed)),
        "p": stats.paired_delta_test(counts_a, counts_b, n_resamples=n_boot, seed=seed),
        "magnitude": stats.magnitude(delta),
    }


def _counts(neutral, ref_a, ref_b) -> list[np.ndarray]:
    out = [np.asarray(x, np.float64) for x in (neutral, ref_a, ref_b)]
    for name, x in zip(("neutral", "ref_a", "ref_b"), out, strict=True):
        if x.ndim != 2 or x.shape[1] != 2 or len(x) < 2:
            raise ValueError(f"{name} counts have shape {x.shape}; expected (images ≥ 2, 2)")
    return out


def _share(neutral, ref_a, ref_b, n_boot: int, seed: int) -> dict:
    d = lambda x: x[:, 0] - x[:, 1]  # the per-image score: A tokens minus B tokens
    return stats.mixture_share(d(neutral), d(ref_a), d(ref_b), n_boot, seed=seed)


def _z(est: dict) -> float:
    se = est["contrast_se"]
    return float(est["contrast"] / se) if se > 0 else float("inf") * np.sign(est["contrast"])


def verdict(est: dict) -> dict:
    """{'share_a' (clipped to [0, 1]), 'share_a_unclipped', 'ci', 'lean'} from
    `stats.mixture_share`; lean is A or B when the interval excludes ½, none otherwise."""
    share, ci = est["share"], est["ci"]
    ok = bool(np.isfinite(share))
    return {
        "share_a": float(np.clip(share, 0, 1)) if ok else float("nan"),
        "share_a_unclipped": share,
        "ci": ci,
        "lean": ("A" if ci[0] > 0.5 else "B" if ci[1] < 0.5 else "none") if ok else "none",
    }


def audit_share(neutral, ref_a, ref_b, n_boot: int = 2000, seed: int = 0) -> dict:
    """The verdict alone (see `analyse` for the arguments)."""
    return verdict(_share(*_counts(neutral, ref_a, ref_b), n_boot, seed))


def analyse(
    neutral: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> dict:
    """Verdict, the paper's statistic, leaks and checks from per-image counts.

    Each argument is (images, 2): the counts (c_A, c_B) of A's and B's T_concept tokens per image,
    on the neutral images and on held-out reference images of A and of B.
    """
    neutral, ref_a, ref_b = _counts(neutral, ref_a, ref_b)
    est = _share(neutral, ref_a, ref_b, n_boot, seed)
    by_a = stats.mixture_share(neutral[:, 0], ref_a[:, 0], ref_b[:, 0], n_boot, seed=seed)
    by_b = stats.mixture_share(-neutral[:, 1], -ref_a[:, 1], -ref_b[:, 1], n_boot, seed=seed)
    own_a, own_b = ref_a[:, 0].mean(), ref_b[:, 1].mean()
    leak = {
        "a_tokens_on_b": float(ref_b[:, 0].mean() / own_a) if own_a else float("nan"),
        "b_tokens_on_a": float(ref_a[:, 1].mean() / own_b) if own_b else float("nan"),
    }
    ci_a, ci_b = by_a["ci"], by_b["ci"]
    z, z_a, z_b = (_z(e) for e in (est, by_a, by_b))
    # Each set alone estimates the same p if the mixture assumption holds; a set with too little
    # contrast of its own (z < 2) cannot take part in that check.
    testable = min(z_a, z_b) >= 2
    agree = bool(max(ci_a[0], ci_b[0]) <= min(ci_a[1], ci_b[1])) if testable else None
    return {
        "verdict": verdict(est),
        "paper": paper_statistic(neutral[:, 0], neutral[:, 1], n_boot, seed),
        "leak": leak,
        "checks": {
            "share_from_a_tokens": {"share_a": by_a["share"], "ci": ci_a, "contrast_z": z_a},
            "share_from_b_tokens": {"share_a": by_b["share"], "ci": ci_b, "contrast_z": z_b},
            "sets_agree": agree,
            "contrast_z": float(z),
        },
        "reference_means": {
            "a_tokens_on_a": float(own_a),
            "a_tokens_on_b": float(ref_b[:, 0].mean()),
            "b_tokens_on_b": float(own_b),
            "b_tokens_on_a": float(ref_a[:, 1].mean()),
        },
    }


def _write(folder: Path, tokens: np.ndarray, labels: np.ndarray, names: Sequence[str], k: int):
    meta = {
        "class_names": list(names),
        "vqgm": "audit",
        "grid_size": int(tokens.shape[1]),
        "codebook_size": k,
        "source": "generated",
    }
    data.write_meta(folder, meta)
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
    k = int(np.shape(codebook)[0])
    train_ds = _write(workdir / "train", tr_tok, tr_lab, names, k)
    val_ds = _write(workdir / "val", va_tok, va_lab, names, k)

    progress("train binary IEM")
    mcfg = iem_config or iem.IEMConfig("ce", 2, width=64, depth=2, hidden=256)
    tcfg = training.TrainConfig(
        batch_size=cfg.batch_size, epochs=cfg.epochs, decay_every=100, seed=cfg.seed
    )
    # fresh: the images were generated anew, so an earlier audit's IEM in workdir is not this one's
    _, best = training.train_and_evaluate(
        mcfg, tcfg, train_ds, val_ds, codebook, workdir / "iem", fresh=True
    )
    trainer = training.Trainer(mcfg, tcfg, codebook, tr_tok.shape[1], 1)
    state = training.restore_best(trainer, workdir / "iem")
    predict = functools.partial(iem.predict_fn(mcfg), state.params, state.batch_stats)

    progress("TIS and T_concept")
    cb = jnp.asarray(codebook)
    scores = []
    for i in range(0, len(tr_tok), 256):
        t = jnp.asarray(tr_tok[i : i + 256], jnp.int32)
        scores.append(
            np.asarray(
                tis.token_importance(
                    predict,
                    cb[t],
                    tr_lab[i : i + 256],
                    jax.random.PRNGKey(cfg.seed),
                    cfg.n_samples,
                    image_ids=jnp.arange(i, i + t.shape[0]),
                )
            )
        )
    scores = np.concatenate(scores)

    progress("count on neutral images")
    va_a, va_b = va_tok[va_lab == 0], va_tok[va_lab == 1]
    per_n, sets = [], {}
    for n in cfg.ns:
        if n > tr_tok.shape[1] * tr_tok.shape[2]:
            continue
        _, ids = tis.image_tokens(jnp.asarray(scores), jnp.asarray(tr_tok), n)
        top, _ = tis.concept_tokens(ids, tr_lab, 2, codebook.shape[0], cfg.k)
        sets[n] = top
        both = [
            np.stack([count_tokens(g, top[0]), count_tokens(g, top[1])], 1)
            for g in (neu, va_a, va_b)
        ]
        res = analyse(*both, cfg.n_boot, cfg.seed)
        per_n.append({"n": n, **res, "tokens_a": top[0].tolist(), "tokens_b": top[1].tolist()})
    return {
        "concept_a": concept_a,
        "concept_b": concept_b,
        "neutral": neutral,
        "iem_validation": best,
        "config": dataclasses.asdict(cfg),
        "per_n": per_n,
        "arrays": {"neutral_tokens": neu, "sets": sets},
    }


def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


_VERDICT_NOTE = (
    "Linear unmixing of c_A − c_B against held-out images of each concept; the interval "
    "resamples neutral and reference images. Assumes each neutral image looks like an A image "
    "or a B image (see the checks below)."
)
_PAPER_NOTE = (
    "The paper's raw counts mix how often a concept appears with how many positions its set "
    "matches per image, so an even neutral class can give δ ≠ 0."
)
_CHECKS_NOTE = (
    "A leak near 1 leaves little contrast (a wide interval) but no bias. If the two sets' "
    "estimates disagree, the neutral images are not a mixture of A-like and B-like images and "
    "the share is only N's position between the references; a set whose own contrast z is below "
    "2 cannot take part in that check (not testable)."
)


def report_markdown(report: dict, n_neutral: int) -> str:
    """The verdict per n first (share of A-like neutral images), then the paper's Table 4
    statistic, then the leaks and assumption checks (see cortex_jax.bias)."""
    a, b, neutral = report["concept_a"], report["concept_b"], report["neutral"]
    top1 = report["iem_validation"].get("val_top1", float("nan"))
    rows = [
        f"Neutral `{neutral}`: `{a}` (A) vs `{b}` (B), {n_neutral} images; binary IEM "
        f"validation top-1 {top1:.1%}",
        "",
        "## Verdict: share of neutral images that are A-like",
        "",
        f"| n | share `{a}` | 95 % CI | lean |",
        "|---|---|---|---|",
    ]
    for r in report["per_n"]:
        v = r["verdict"]
        rows.append(f"| {r['n']} | {v['share_a']:.3f} | {_ci(v['ci'])} | {v['lean']} |")
    rows += ["", _VERDICT_NOTE, "", "## The paper's statistic (Table 4; not the verdict)", ""]
    rows.append(
        f"| n | {a} tokens/image | {b} tokens/image | Cliff's δ | paired 95 % CI | magnitude "
        "| paired p |"
    )
    rows.append("|---|---|---|---|---|---|---|")
    for r in report["per_n"]:
        p = r["paper"]
        lo, hi = p["ci"]
        rows.append(
            f"| {r['n']} | {p['mean_a']:.2f} | {p['mean_b']:.2f} | {p['cliffs_delta']:+.3f} | "
            f"[{lo:+.3f}, {hi:+.3f}] | {p['magnitude']} | {p['p']:.2g} |"
        )
    rows += ["", _PAPER_NOTE, "", "## Leaks and assumption checks", ""]
    rows.append(
        "| n | A's set on B images / on A | B's set on A / on B | share from A's set | "
        "share from B's set | sets agree | contrast z |"
    )
    rows.append("|---|---|---|---|---|---|---|")
    for r in report["per_n"]:
        lk, ck = r["leak"], r["checks"]
        fa, fb = ck["share_from_a_tokens"], ck["share_from_b_tokens"]
        agree = {True: "yes", False: "**no**", None: "not testable"}[ck["sets_agree"]]
        rows.append(
            f"| {r['n']} | {lk['a_tokens_on_b']:.2f} | {lk['b_tokens_on_a']:.2f} | "
            f"{fa['share_a']:.3f} {_ci(fa['ci'])} | {fb['share_a']:.3f} {_ci(fb['ci'])} | "
            f"{agree} | {ck['contrast_z']:.1f} |"
        )
    rows += ["", _CHECKS_NOTE]
    if report.get("true_share_a") is not None:
        rows += ["", f"Designed share of `{a}` in `{neutral}`: {report['true_share_a']:.2f}"]
    if report.get("judge_share_a") is not None:
        j = report["judge_share_a"]
        lo, hi = j["ci95"]
        rows += [
            "",
            f"Share of `{neutral}` images the pixel judge sees as `{a}` rather than `{b}` (what "
            f"the generator produced): {j['share_a']:.3f} [{lo:.3f}, {hi:.3f}].",
        ]
    return "\n".join(rows) + "\n"
