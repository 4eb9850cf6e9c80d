"""The bias audit's statistics (paper Sec. 5.1): which concept's tokens a neutral prompt
over-uses, and what share of its images lean to each concept.

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
on the shards. The assumption (prior shift: neutral images are a mixture of the two concepts'
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

Pure functions of count arrays; the pipeline that produces the counts is
`cortex_jax.experiments.bias`."""

from __future__ import annotations

import numpy as np

from cortex_jax.method import stats


def count_tokens(indices: np.ndarray, token_set: np.ndarray) -> np.ndarray:
    """Per image, the number of positions whose id is in `token_set`: (N, m, m) → (N,)."""
    return np.isin(np.asarray(indices), np.asarray(token_set)).reshape(len(indices), -1).sum(1)


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


def _counts(neutral, ref_a, ref_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = [np.asarray(x, np.float64) for x in (neutral, ref_a, ref_b)]
    for name, x in zip(("neutral", "ref_a", "ref_b"), out, strict=True):
        if x.ndim != 2 or x.shape[1] != 2 or len(x) < 2:
            raise ValueError(f"{name} counts have shape {x.shape}; expected (images ≥ 2, 2)")
    return out[0], out[1], out[2]


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


def audit_share(
    neutral: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> dict:
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
