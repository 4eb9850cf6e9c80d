"""The bias audit (paper Sec. 5.1) as an experiment: generate, train, score, count, report.

Given two contrasting concepts A and B and a neutral prompt N, `run_audit` generates images of
each with `sample(name, n, seed) -> token grids (n, m, m)` (the toy world's class-conditional
model or a text-to-image model such as DalleBart), trains a binary IEM (A vs B), takes T_concept
of A and of B from TIS on the training images, counts per image how many positions hold an A
token and a B token on the neutral images and on held-out reference images of A and of B, and
writes the report. The statistics, their assumptions and why the verdict is the mixture share
are in `cortex_jax.method.audit`; `report_markdown` renders the report with the verdict first.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from cortex_jax.experiments import training
from cortex_jax.experiments.bundle import Models
from cortex_jax.figures import plots
from cortex_jax.io import shards
from cortex_jax.method import attribution, evaluate, stats, tis
from cortex_jax.method.audit import analyse, count_tokens
from cortex_jax.models import iem

Sampler = Callable[[str, int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Attributes: per_concept (generated images of A and of B, split train/val by val_share),
    neutral (images of N), ns (T_image sizes), k (T_concept size), n_samples (SmoothGrad N),
    n_boot (bootstrap resamples), epochs / batch_size of the binary IEM, seed. `attribution`:
    None (default) for SmoothGrad TIS with n_samples, or {"method": name, **options} of
    `method.attribution` in its place (n_samples then stays at its default)."""

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
    attribution: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self):
        if self.attribution is None:
            return
        spec = attribution.config_spec(self.attribution)
        object.__setattr__(self, "attribution", spec)
        if self.n_samples != AuditConfig.__dataclass_fields__["n_samples"].default:
            raise ValueError(
                f"n_samples={self.n_samples} next to attribution={spec['method']!r}; give the "
                "method's options inside attribution"
            )


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


def two_class_iem(
    predict: Callable[[Array], Array], class_names: Sequence[str], concept_a: str, concept_b: str
) -> Callable[[Array], Array]:
    """A many-class IEM as the audit's binary one: its logits of A and B only, E → (batch, 2).
    The audit's attribution objective (the probability, by default) is then P(A | A or B), the
    quantity a binary IEM trained on A and B gives, not the IEM's probability over all its
    classes. Raises one line when the IEM has no class named A or B."""
    names = list(class_names)
    missing = [c for c in (concept_a, concept_b) if c not in names]
    if missing:
        shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
        raise ValueError(
            f"the IEM has no class {' or '.join(map(repr, missing))} (its classes: {shown}); "
            "expected an IEM of both concepts, or none to train a binary one"
        )
    ids = jnp.asarray([names.index(concept_a), names.index(concept_b)])
    return lambda e: predict(e)[:, ids]


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
    predict: Callable[[Array], Array] | None = None,
) -> dict:
    """The whole audit; returns the report dict (plus arrays under 'arrays' for figures).

    `predict` (E → (batch, 2) logits of A and B, e.g. `two_class_iem` of the user's IEM) is used
    as it is; None trains the binary IEM (`iem_config`, `cfg.epochs`) on the generated images.
    Either way its top-1 on the held-out images is `iem_validation`."""
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
    if predict is None:
        train_ds = shards.write_arrays(
            workdir / "train", tr_tok, tr_lab, names, k, "audit", "generated"
        )
        val_ds = shards.write_arrays(
            workdir / "val", va_tok, va_lab, names, k, "audit", "generated"
        )
        progress("train binary IEM")
        mcfg = iem_config or iem.IEMConfig("ce", 2, width=64, depth=2, hidden=256)
        tcfg = training.TrainConfig(
            batch_size=cfg.batch_size, epochs=cfg.epochs, decay_every=100, seed=cfg.seed
        )
        # fresh: the images were generated anew, so an earlier audit's IEM in workdir is not
        # this one's
        predict, best = training.fit_iem(
            mcfg, tcfg, train_ds, val_ds, codebook, workdir / "iem", fresh=True
        )
        best = {**best, "trained": True}
    else:
        progress("validate the given IEM")
        logits = jax.jit(predict)
        e = np.asarray(codebook)[va_tok]
        pred = np.concatenate(
            [np.asarray(logits(e[i : i + 64])).argmax(-1) for i in range(0, len(e), 64)]
        )
        best = {"val_top1": float(np.mean(pred == va_lab)), "trained": False}

    progress("TIS and T_concept")
    if cfg.attribution is None:
        scores = tis.token_importance_batched(
            predict,
            codebook,
            tr_tok,
            tr_lab,
            jax.random.PRNGKey(cfg.seed),
            cfg.n_samples,
            batch=256,
        )
    else:
        options = {k: v for k, v in cfg.attribution.items() if k != "method"}
        scores = attribution.attribution_batched(
            predict,
            codebook,
            tr_tok,
            tr_lab,
            jax.random.PRNGKey(cfg.seed),
            cfg.attribution["method"],
            batch=256,
            **options,
        )

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
        res = analyse(both[0], both[1], both[2], cfg.n_boot, cfg.seed)
        per_n.append({"n": n, **res, "tokens_a": top[0].tolist(), "tokens_b": top[1].tolist()})
    return {
        "concept_a": concept_a,
        "concept_b": concept_b,
        "neutral": neutral,
        "iem_validation": best,
        "config": {  # no attribution key when it is None: the default report is unchanged
            k: v for k, v in dataclasses.asdict(cfg).items() if k != "attribution" or v is not None
        },
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
    statistic, then the leaks and assumption checks (see cortex_jax.method.audit)."""
    a, b, neutral = report["concept_a"], report["concept_b"], report["neutral"]
    val = report["iem_validation"]
    top1 = val.get("val_top1", float("nan"))
    iem_is = "binary IEM" if val.get("trained", True) else f"IEM {report.get('iem')} on A vs B"
    rows = [
        f"Neutral `{neutral}`: `{a}` (A) vs `{b}` (B), {n_neutral} images; {iem_is} "
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


def judge_share(models: Models, neutral_tokens: np.ndarray, a: str, b: str) -> dict:
    """The share of neutral images the bundle's pixel classifier sees as A rather than B (what
    the generator actually produced), with a 95 % Wilson interval."""
    names = list(models.class_names)
    (classifier,) = models.require("classifier", what="the judged share")
    p = np.asarray(classifier(np.asarray(models.decode(neutral_tokens))))
    k, n = int((p[:, names.index(a)] > p[:, names.index(b)]).sum()), len(p)
    lo, hi = stats.wilson_interval(k, n)
    return {"share_a": k / n, "ci95": [lo, hi], "images": n}


def audit(
    models: Models,
    concept_a: str,
    concept_b: str,
    neutral: str,
    cfg: AuditConfig,
    out: str | os.PathLike,
    mix: float | None = None,
    true_share: float | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    use_iem: bool = False,
) -> dict:
    """The bias audit of `neutral` between two concepts on the bundle's generator
    (`sample_named`), and its files: OUT/report.json (`per_n`: verdict, paper, leak, checks per
    n), OUT/report.md, OUT/counts_n{N}.* (histograms of per-image counts), OUT/arrays.npz and
    OUT/neutral_tokens.png (neutral images with the over-represented concept's tokens boxed).

    `mix` audits an exact mixture of generated A and B images with that share of A instead of
    the neutral class (a control of known composition; `true_share` is then `mix`). When the
    bundle has a pixel classifier whose classes include A and B, the report adds the share of
    neutral images it sees as A (`judge_share_a`). `use_iem` audits with the bundle's IEM
    (`models.predict`, restricted to A and B by `two_class_iem`) instead of training a binary
    one; the report names it under `iem`."""
    out = Path(out)
    sample: Sampler = models.sample_named
    predict = None
    if use_iem:
        (full,) = models.require("predict", what="an audit with the bundle's IEM")
        predict = two_class_iem(full, models.class_names, concept_a, concept_b)
    if mix is not None:
        neutral, true_share = f"mix:{mix:g}", mix
        sample = mixture_sampler(sample, neutral, concept_a, concept_b, mix)
    report = run_audit(
        sample,
        models.codebook,
        concept_a,
        concept_b,
        neutral,
        out / "work",
        cfg,
        progress=progress,
        predict=predict,
    )
    report["iem"] = models.predict_name if use_iem else "binary IEM trained on A and B"
    arrays = report.pop("arrays")
    report["true_share_a"] = true_share
    neu, sets = arrays["neutral_tokens"], arrays["sets"]
    judged = models.classifier is not None and {concept_a, concept_b} <= set(models.class_names)
    if judged:
        report["judge_share_a"] = judge_share(models, neu, concept_a, concept_b)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(report_markdown(report, cfg.neutral))
    for n, top in sets.items():
        plots.count_histograms(
            out / f"counts_n{n}",
            {concept_a: count_tokens(neu, top[0]), concept_b: count_tokens(neu, top[1])},
            f"{neutral}: T_concept tokens per image (n={n}, k={cfg.k})",
            "T_concept tokens per neutral image",
        )
    np.savez_compressed(
        out / "arrays.npz",
        neutral_tokens=neu,
        **{f"set_a_n{n}": t[0] for n, t in sets.items()},
        **{f"set_b_n{n}": t[1] for n, t in sets.items()},
    )
    n0 = min(sets)
    r0 = next(r for r in report["per_n"] if r["n"] == n0)
    over = 0 if not r0["verdict"]["share_a"] < 0.5 else 1  # NaN (no contrast): A's tokens
    shown = neu[:16]
    boxes = evaluate.token_id_mask(shown, sets[n0][over])
    px = np.asarray(models.decode(shown))
    over_name = (concept_a, concept_b)[over]
    grid = plots.image_grid_figure(
        px,
        8,
        [f"{neutral} {r + 1}" for r in range(-(-len(px) // 8))],
        f"{neutral}: generated images, {over_name}'s T_concept tokens (n={n0}, k={cfg.k}) boxed",
        boxes=boxes,
        box_label=f"a token of {over_name}'s T_concept",
        scale=max(1, 128 // px.shape[1]),
    )
    plots.save_png(grid, out / "neutral_tokens.png")
    return report
