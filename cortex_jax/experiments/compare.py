"""Comparing attribution methods in one table: faithfulness, sanity checks and ground truth.

`run(models, config, out, data, iem_model, permuted_train)` scores every method in
`config.methods` on the token grids `data` (tokens, labels, object masks or None) and writes
OUT/compare.json = {"settings": {...}, "methods": {NAME: {METRIC: {"value", "ci"}}}}, OUT/compare.md
and the mean deletion/insertion curves (OUT/curves/*.png, .svg, .csv). Every interval is a 95 %
percentile bootstrap over images (`stats.mean_ci`).

Metrics (`method.faithfulness` says how each is computed):

- `deletion_auc_{iem,classifier}_{baseline,generator}`, `insertion_auc_…`: area under the
  curve of the concept's probability by the IEM (on E of the edited grid) and by the
  independent pixel classifier (on the decoded edited grid), removing positions most important
  first. Removal `baseline`: the token whose codebook row is nearest the mean row, everywhere;
  `generator`: the prior's most likely other token at that position given the intact prefix
  (`models.infill`, conditioned on another concept by default: `generator_condition`), so the
  edited grid stays near what the generator produces. `deletion_auc_classifier_patch`,
  `insertion_auc_classifier_patch`: the paper's black patches in the decoded image (pixel side
  only).
- `gt_precision` (top-n positions on the object mask), `pointing_game` (top-1 on the object),
  `gt_mass` (share of positive score on the object): only with masks. Without them (grids of a
  token dataset of generated images) each is NaN with NaN bounds, and settings.not_applicable
  and compare.md say why; so is the `generator` removal on a bundle without an infill (its
  curves are then left out).
- `randomization_spearman` / `randomization_top_overlap`: agreement of the scores with those of
  the IEM with every layer re-drawn (`faithfulness.cascading_randomization`; all stages in
  OUT/cascade.json); `label_permutation_spearman`: agreement with the scores of an IEM of the
  same architecture trained on permuted labels. Low is good; `random` is the reference row.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cortex_jax.experiments import training
from cortex_jax.experiments.bundle import Models
from cortex_jax.figures import plots
from cortex_jax.io import shards
from cortex_jax.method import attribution, evaluate, stats
from cortex_jax.method import faithfulness as fa
from cortex_jax.models import iem

MAX_AGREEMENT = 0.5  # the pass rule of `faithfulness.check_passes`


def _passes(summary: dict[str, Any]) -> bool:
    """`faithfulness.check_passes` on a stored summary: defined (every image ranked; NaN
    otherwise) and the upper bound below 0.5."""
    return bool(np.isfinite(summary["ci"][1]) and summary["ci"][1] < MAX_AGREEMENT)


Data = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # tokens (N, m, m), labels, masks
GT_METRICS = ("gt_precision", "pointing_game", "gt_mass")
NO_MASKS = "no object masks for these grids (only the toy world's encoded images have them)"


class StageClock:
    """Wall seconds per stage: `clock(name)` adds the time since the previous call (or since
    the clock was made) to `seconds[name]` (bench/compare.py prints them)."""

    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds = {} if seconds is None else seconds
        self._t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Attributes:
    methods: attribution methods to compare (`attribution.method_names()`), and the
      reference "frequency" (`faithfulness.frequency_scores`: no model).
    steps: curve points (0 … m·m positions removed, both ends).
    top_n: positions per image for `gt_precision` and `randomization_top_overlap`.
    n_samples: SmoothGrad noise samples; ig_steps: integrated-gradients steps.
    removals: token removals, a subset of ("baseline", "generator"); the patch is always run
      when there is a classifier.
    generator_condition: the class the generator's infill is conditioned on: "other" (a
      different concept, (label + n // 2) mod n of the n IEM classes; default) or "own" (the
      image's; the prior then puts the concept back, so the curve barely falls: measured
      0.92 vs 0.25 deletion AUC for the baseline token on the toy IEM with `gradient`).
    cascade: run every stage of cascading randomisation (else only the full one, the default:
      each stage's predictor is new jitted code for every method, 13 stages on the toy CE IEM,
      and the whole cascade took over 13 minutes on 2 shared cores).
    permutation_epochs: epochs of the permuted-label IEM (0 skips the check).
    n_boot: bootstrap resamples; seed: attribution keys, re-draws, permutation and training.
    """

    methods: tuple[str, ...] = (
        "smoothgrad",
        "gradient",
        "grad_x_input",
        "integrated_gradients",
        "occlusion",
        "random",
        "frequency",
    )
    steps: int = 16
    top_n: int = 8
    n_samples: int = 10
    ig_steps: int = 16
    removals: tuple[str, ...] = ("baseline", "generator")
    generator_condition: str = "other"
    cascade: bool = False
    permutation_epochs: int = 30
    n_boot: int = 1000
    seed: int = 0


def check_config(cfg: CompareConfig) -> None:
    """One-line ValueError for a config `run` cannot use (before any model is loaded)."""
    if not cfg.methods:
        raise ValueError("methods is empty; expected at least one attribution method")
    for m in cfg.methods:
        if m != "frequency":
            attribution.check_options(m, _options(m, cfg))
    bad = [r for r in cfg.removals if r not in ("baseline", "generator")]
    if bad:
        raise ValueError(f"removal {bad[0]!r}; expected baseline or generator")
    if cfg.generator_condition not in ("other", "own"):
        raise ValueError(f"generator_condition={cfg.generator_condition!r}; expected other|own")
    for name in ("steps", "top_n", "n_samples", "ig_steps", "n_boot"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)}; expected ≥ 1")
    if cfg.permutation_epochs < 0:
        raise ValueError(f"permutation_epochs={cfg.permutation_epochs}; expected ≥ 0")


def applicable(
    config: CompareConfig, models: Models, masks: bool
) -> tuple[CompareConfig, dict[str, str]]:
    """The config `run` runs on this bundle and data, and {metric or removal: why it is not
    applicable}: the `generator` removal is dropped when the bundle has no infill (its family's
    prior gives none), the ground-truth metrics are not applicable without `masks`."""
    why: dict[str, str] = {}
    if "generator" in config.removals and models.infill is None:
        why["generator removal"] = (
            f"the {models.name} bundle has no infill (its prior gives no most likely other "
            "token), so the generator removal is off"
        )
        config = dataclasses.replace(
            config, removals=tuple(r for r in config.removals if r != "generator")
        )
    if not masks:
        why |= {k: NO_MASKS for k in GT_METRICS}
    return config, why


def split_by_class(
    tokens: np.ndarray,
    labels: np.ndarray,
    masks: np.ndarray | None,
    per_class: int,
    train_per_class: int = 0,
) -> tuple[Data, Data | None]:
    """A token dataset's grids as (compared data, permuted-label training set): the first
    `per_class` grids of each class it holds, then the next `train_per_class` (None when 0 or
    none are left). Masks follow the grids (None for a dataset without them)."""
    if per_class < 1 or train_per_class < 0:
        raise ValueError(
            f"per_class={per_class}, train_per_class={train_per_class}; expected ≥ 1 and ≥ 0"
        )
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("the dataset holds no grids; expected at least one per class")
    rows = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    test = np.concatenate([r[:per_class] for r in rows])
    train = np.concatenate([r[per_class : per_class + train_per_class] for r in rows])
    pick = lambda i: (tokens[i], labels[i], None if masks is None else masks[i])
    return pick(test), (pick(train) if len(train) else None)


def _options(method: str, cfg: CompareConfig) -> dict[str, Any]:
    if method == "smoothgrad":
        return {"n_samples": cfg.n_samples}
    if method == "integrated_gradients":
        return {"steps": cfg.ig_steps}
    return {}


def scores_of(
    predict: Callable, codebook: np.ndarray, data: Data, method: str, cfg: CompareConfig
) -> np.ndarray:
    """Per-position scores (N, m, m) of `method` (or the frequency reference) for the grids'
    labels."""
    tokens, labels, _ = data
    if method == "frequency":
        return fa.frequency_scores(tokens, labels)
    rng = jax.random.PRNGKey(cfg.seed)
    return attribution.attribution_batched(
        predict, codebook, tokens, labels, rng, method, batch=64, **_options(method, cfg)
    )


def baseline_token(codebook: np.ndarray) -> int:
    """The token id whose codebook row is nearest the mean row: a real, decodable token."""
    cb = np.asarray(codebook, np.float64)
    return int(np.argmin(((cb - cb.mean(0)) ** 2).sum(1)))


def _prob(probs: Any, labels: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, np.float64)
    return p[np.arange(len(labels)), labels]


def _curves(models: Models, data: Data, order: np.ndarray, cfg: CompareConfig, repl: dict):
    """{(judge, removal, kind): (B, S) curve} for every removal and both directions."""
    tokens, labels, _ = data
    cb = np.asarray(models.codebook)
    counts = fa.step_counts(order.shape[1], cfg.steps)
    softmax = jax.nn.softmax
    assert models.predict is not None
    predict = models.predict

    def iem_score(r):
        return lambda rem: _prob(softmax(predict(cb[fa.replace_tokens(tokens, r, rem)])), labels)

    def cls_score(r):
        clf = models.classifier
        assert clf is not None
        return lambda rem: _prob(clf(models.decode(fa.replace_tokens(tokens, r, rem))), labels)

    patch = None
    if models.classifier is not None:
        clf, px = models.classifier, np.asarray(models.decode(tokens))
        patch = lambda rem: _prob(clf(evaluate.black_out(px, rem)), labels)
    out = {}
    for kind in fa.KINDS:
        for name, r in repl.items():
            out[("iem", name, kind)] = fa.curve(iem_score(r), order, counts, kind)
            if models.classifier is not None:
                out[("classifier", name, kind)] = fa.curve(cls_score(r), order, counts, kind)
        if patch is not None:
            out[("classifier", "patch", kind)] = fa.curve(patch, order, counts, kind)
    return counts, out


def _permuted_iem(
    config: iem.IEMConfig, codebook: np.ndarray, train: Data, cfg: CompareConfig, work: Path
) -> Callable:
    """An IEM of `config` trained on `train` with its labels permuted (the data randomisation
    check): whatever it learns is not the concepts."""
    tokens, labels, _ = train
    perm = np.random.default_rng(cfg.seed).permutation(labels)
    names = [f"class{i}" for i in range(config.n_classes)]
    folder = work / "data"
    shards.write_meta(
        folder,
        {
            "class_names": names,
            "grid_size": int(tokens.shape[1]),
            "codebook_size": int(len(codebook)),
            "source": "permuted labels",
            "shard_size": len(tokens),
        },
    )
    if not shards.shard_done(folder, 0):
        shards.write_shard(folder, 0, tokens.astype(np.int32), perm.astype(np.int32))
    ds = shards.TokenDataset.open(folder)
    tcfg = training.TrainConfig(
        batch_size=min(32, len(tokens)), epochs=cfg.permutation_epochs, seed=cfg.seed
    )
    predict, _ = training.fit_iem(config, tcfg, ds, ds, codebook, work / "iem", fresh=True)
    return predict


def run(
    models: Models,
    config: CompareConfig,
    out: str | os.PathLike,
    data: Data,
    iem_model: tuple[iem.IEMConfig, dict[str, Any]] | None = None,
    permuted_train: Data | None = None,
    clock: StageClock | None = None,
) -> dict[str, Any]:
    """Scores every method (module docstring) and writes OUT/compare.json, compare.md,
    cascade.json and curves/; returns compare.json's content. `iem_model` (the IEM's config and
    variables behind `models.predict`) enables the randomisation checks; with it and
    `permuted_train` (grids, labels, _) the label-permutation check runs too. `clock` gets the
    wall seconds of each stage (the generator's infill, the randomised and permuted IEMs, and
    per method its scores, curves and checks)."""
    out = Path(out)
    clock = clock or StageClock()
    (predict,) = models.require("predict", what="comparing attribution methods")
    check_config(config)
    tokens, labels, masks = data
    config, not_applicable = applicable(config, models, masks is not None)
    cb = np.asarray(models.codebook)
    repl: dict[str, Any] = {}
    if "baseline" in config.removals:
        repl["baseline"] = baseline_token(cb)
    if "generator" in config.removals:
        assert models.infill is not None  # applicable() dropped it otherwise
        n = len(models.class_names)
        cond = labels if config.generator_condition == "own" else (labels + n // 2) % n
        repl["generator"] = np.asarray(models.infill(cond, tokens))
    clock("generator infill")

    stages: list[tuple[str, Callable]] = []
    if iem_model is not None:
        icfg, variables = iem_model
        fwd = iem.predict_fn(icfg)
        e0 = np.zeros((1, *tokens.shape[1:], cb.shape[1]), np.float32)
        layers = fa.forward_order(
            lambda p: fwd(p, variables["batch_stats"], e0), variables["params"]
        )
        cascade = fa.cascading_randomization(
            variables["params"], seed=config.seed, layers=layers[::-1]
        )
        if not config.cascade:
            cascade = cascade[-1:]
        stages = [(layer, iem.predictor(icfg, {**variables, "params": p})) for layer, p in cascade]
    permuted = None
    if iem_model is not None and permuted_train is not None and config.permutation_epochs > 0:
        permuted = _permuted_iem(iem_model[0], cb, permuted_train, config, out / "permuted_iem")
    clock("randomised and permuted-label IEMs")

    ci = lambda v: stats.mean_ci(v, n_boot=config.n_boot, seed=config.seed)
    # Spearman is NaN on images whose scores are constant: the agreement is then undefined
    # (NaN), and the check fails
    nan = float("nan")
    sp = lambda v: (
        ci(v) if np.isfinite(np.asarray(v, float)).all() else {"value": nan, "ci": [nan, nan]}
    )
    methods: dict[str, dict[str, Any]] = {}
    mean_curves: dict[tuple, dict[str, tuple[list[float], list[float]]]] = {}
    cascade_rows: dict[str, list[dict[str, Any]]] = {}
    counts = np.zeros(0)
    for m in config.methods:
        s = scores_of(predict, cb, data, m, config)
        clock(f"{m}: scores")
        order = fa.order_positions(s)
        counts, curves = _curves(models, data, order, config, repl)
        row: dict[str, Any] = {}
        for (judge, removal, kind), c in curves.items():
            row[f"{kind}_auc_{judge}_{removal}"] = ci(fa.auc(counts, c))
            se = c.std(0, ddof=1) / np.sqrt(len(c)) if len(c) > 1 else np.zeros(c.shape[1])
            mean_curves.setdefault((judge, removal, kind), {})[m] = (
                c.mean(0).tolist(),
                se.tolist(),
            )
        if masks is not None:
            g = fa.ground_truth_scores(s, masks, config.top_n)
            row |= {"gt_precision": ci(g["precision"]), "pointing_game": ci(g["pointing"])}
            row["gt_mass"] = ci(g["mass"])
        else:  # the schema stays: NaN, with the reason in settings.not_applicable
            row |= {k: {"value": nan, "ci": [nan, nan]} for k in GT_METRICS}
        clock(f"{m}: curves, ground truth")
        for layer, p in stages:
            a = fa.agreement(s, scores_of(p, cb, data, m, config), config.top_n)
            cascade_rows.setdefault(m, []).append(
                {"layer": layer, "spearman": sp(a["spearman"]), "top_overlap": ci(a["top_overlap"])}
            )
        if stages:
            last = cascade_rows[m][-1]
            row["randomization_spearman"] = last["spearman"]
            row["randomization_top_overlap"] = last["top_overlap"]
        if permuted is not None:
            a = fa.agreement(s, scores_of(permuted, cb, data, m, config), config.top_n)
            row["label_permutation_spearman"] = sp(a["spearman"])
        methods[m] = row
        clock(f"{m}: randomisation checks")

    settings = dataclasses.asdict(config) | {
        "images": len(tokens),
        "grid_size": int(tokens.shape[1]),
        "iem": models.predict_name,
        "classifier": models.classifier_name if models.classifier is not None else None,
        "vqgm": models.name,
        "baseline_token": repl.get("baseline"),
        "curve_counts": [int(c) for c in counts],
        "ci": "95 % percentile bootstrap over images",
        "not_applicable": not_applicable,
    }
    result = {"settings": settings, "methods": methods}
    out.mkdir(parents=True, exist_ok=True)
    shards.atomic_write_json(out / "compare.json", result)
    shards.atomic_write_json(out / "cascade.json", cascade_rows)
    (out / "compare.md").write_text(markdown(result))
    for (judge, removal, kind), series in mean_curves.items():
        plots.masking_curve(
            out / "curves" / f"{kind}_{judge}_{removal}",
            [int(c) for c in counts],
            series,
            f"{kind}, {removal} removal, scored by the {judge}",
            ylabel=f"probability of the concept ({judge})",
            xlabel="token positions removed" if kind == "deletion" else "token positions restored",
        )
    clock("writing the table and curves")
    return result


def markdown(result: dict[str, Any]) -> str:
    """compare.json as one markdown table: methods × metrics, `value [lo, hi]`."""
    methods = result["methods"]
    not_applicable = result.get("settings", {}).get("not_applicable", {})
    metrics: list[str] = []
    for row in methods.values():
        metrics += [k for k in row if k not in metrics]
    lines = [
        "# Attribution methods compared",
        "",
        "Deletion AUC: lower is better; insertion AUC, gt_*, pointing_game: higher is better;",
        "randomization/label_permutation agreement: lower is better. 95 % bootstrap intervals",
        "over images in brackets.",
        "",
        "| metric | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for k in metrics:
        cells = []
        for row in methods.values():
            v = row.get(k)
            if v is None:
                cells.append("")
            elif k in not_applicable:
                cells.append("n/a")
            else:
                cells.append(f"{v['value']:.3f} [{v['ci'][0]:.3f}, {v['ci'][1]:.3f}]")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    if not_applicable:
        head = "Not applicable (n/a here, NaN in compare.json; a removal off has no rows):"
        lines += ["", head, ""]
        lines += [f"- {k}: {why}" for k, why in not_applicable.items()]
    lines += [
        "",
        f"Randomisation checks (pass: 95 % upper bound of Spearman < {MAX_AGREEMENT}):",
        "",
    ]
    for name, row in methods.items():
        verdicts = [
            f"{k}: {'pass' if _passes(row[k]) else 'FAIL'}"
            for k in ("randomization_spearman", "label_permutation_spearman")
            if k in row
        ]
        if verdicts:
            lines.append(f"- {name}: " + ", ".join(verdicts))
    return "\n".join(lines) + "\n"


def metric_names(removals: Sequence[str], classifier: bool) -> list[str]:
    """The faithfulness metric names `run` writes for these removals."""
    names = []
    for kind in fa.KINDS:
        for r in removals:
            names.append(f"{kind}_auc_iem_{r}")
            if classifier:
                names.append(f"{kind}_auc_classifier_{r}")
        if classifier:
            names.append(f"{kind}_auc_classifier_patch")
    return names
