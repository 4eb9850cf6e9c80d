"""The sample-level CORTEX experiment as one function: TIS → T_image → T_concept → evaluation.

It composes the algorithms (`tis`, `evaluate`) over callables, so it serves the toy world and
ImageNet alike: `decode` (token grids → pixels), `predict` (E → IEM logits), `classifier`
(pixels → probabilities of an independent model). Returns a `reports.SampleLevelReport`;
`save` writes it with its figures, for the toy study and the ImageNet recipe alike.

Protocol: T_concept is computed on an explanation split and evaluated on a disjoint test split
(the authors use the training images for the former). Concept level masks, in each test image of
a concept, every position whose token id is in that concept's set (T_concept, or the frequency
baseline's set of the same k). Image level masks the top-n TIS positions of each test image
against n random positions. With a ground-truth split (toy world: encoded images with object
masks) it also scores the precision of T_image and T_concept against the truth.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cortex_jax.core import errors, paths, sharding
from cortex_jax.experiments.bundle import Models, Sample
from cortex_jax.figures import plots
from cortex_jax.io import reports, shards
from cortex_jax.io.reports import ConceptResult, EvalArrays, ImageLevelCurve, SampleLevelReport
from cortex_jax.method import attribution, evaluate, tis

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SampleLevelConfig:
    """Attributes: n (T_image size), k (T_concept size), n_samples and alpha (SmoothGrad),
    objective ("probability" | "logit"), curve_ns (image-level n values), batch, seed.

    `attribution`: None (default) scores positions by SmoothGrad TIS with the flat n_samples,
    alpha and objective, the paper's method; or a method of `method.attribution` with its options
    nested, e.g. {"method": "integrated_gradients", "steps": 64, "baseline": "mean"}, which then
    replaces the flat SmoothGrad fields (they must stay at their defaults). The bundle's codebook
    is the methods' `codebook` option."""

    n: int = 5
    k: int = 10
    n_samples: int = 20
    alpha: float = 0.2
    objective: Literal["probability", "logit"] = "probability"
    curve_ns: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 16)
    batch: int = 128
    seed: int = 0
    attribution: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self):
        for name in ("n", "k", "n_samples", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected at least 1")
        if not self.alpha > 0:
            raise ValueError(f"alpha={self.alpha}; expected a positive noise scale")
        if not self.curve_ns or min(self.curve_ns) < 1:
            raise ValueError(f"curve_ns={self.curve_ns}; expected positive numbers of tokens")

        if self.attribution is None:
            return
        spec = attribution.config_spec(self.attribution)
        object.__setattr__(self, "attribution", spec)
        for name in ("n_samples", "alpha", "objective"):
            if getattr(self, name) != SampleLevelConfig.__dataclass_fields__[name].default:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} next to attribution={spec['method']!r}; "
                    "give the method's options inside attribution"
                )

    def check_sizes(self, grid_size: int | None, codebook_size: int) -> None:
        """Raises one line if n exceeds the m·m positions of a grid or k the codebook's K (before
        any TIS is computed)."""
        if grid_size is not None and self.n > grid_size * grid_size:
            raise ValueError(
                f"n={self.n}; a {grid_size}x{grid_size} token grid has {grid_size * grid_size} "
                "positions, expected 1..that"
            )
        if self.k > codebook_size:
            raise ValueError(f"k={self.k}; the codebook has {codebook_size} entries")


def config_dict(cfg: SampleLevelConfig) -> dict[str, Any]:
    """The config as report.json records it (no `attribution` key when it is None, so the
    default report is what it was before the field existed)."""
    out = dataclasses.asdict(cfg)
    if out["attribution"] is None:
        del out["attribution"]
    return out


def scores_for(
    predict: Callable[[Array], Array],
    codebook: ArrayLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    cfg: SampleLevelConfig,
    ids: np.ndarray | None = None,
) -> np.ndarray:
    """TIS (N, m, m) float32 for token grids with cfg's SmoothGrad settings; noise keyed by each
    image's global id `ids` (N,) (default 0..N−1). With cfg.attribution set: that method's
    per-position scores, on the same batched driver and keys."""
    if cfg.attribution is not None:
        options = {k: v for k, v in cfg.attribution.items() if k != "method"}
        return attribution.attribution_batched(
            predict,
            codebook,
            tokens,
            labels,
            jax.random.PRNGKey(cfg.seed),
            cfg.attribution["method"],
            batch=cfg.batch,
            image_ids=ids,
            **options,
        )
    return tis.token_importance_batched(
        predict,
        codebook,
        tokens,
        labels,
        jax.random.PRNGKey(cfg.seed),
        cfg.n_samples,
        cfg.alpha,
        objective=cfg.objective,
        batch=cfg.batch,
        image_ids=ids,
    )


def summarize(per_concept: Mapping[int, ConceptResult]) -> dict[str, float]:
    """Concept-level masking effects averaged over concepts: {cortex,frequency}_{accuracy_change,
    probability_change, tokens_masked}."""
    return {
        f"{name}_{key}": float(
            np.mean([getattr(r, f"masking_{name}")[key] for r in per_concept.values()])
        )
        for name in ("cortex", "frequency")
        for key in ("accuracy_change", "probability_change", "tokens_masked")
    }


def method_spec(cfg: SampleLevelConfig) -> dict[str, Any]:
    """The attribution method behind the scores with its options and seed (what changes a
    score; not n, k, curve_ns or batch)."""
    method: dict[str, Any] = (
        {"method": "smoothgrad", "n_samples": cfg.n_samples, "alpha": cfg.alpha}
        | {"objective": cfg.objective}
        if cfg.attribution is None
        else dict(cfg.attribution)
    )
    return {**method, "seed": cfg.seed}


def codebook_sha256(codebook: ArrayLike) -> str:
    return hashlib.sha256(np.asarray(codebook, np.float32).tobytes()).hexdigest()


def report_fingerprint(
    codebook: ArrayLike,
    cfg: SampleLevelConfig,
    model: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What a sample-level report depends on: the report format (`reports.FORMAT`), the method
    with its options and seed, the sets' sizes (n, k, curve_ns), `model` (what identifies the
    IEM), the codebook's hash and `data` (what the images came from). `reports.SampleLevelReport
    .read(folder, expect=…)` refuses a report whose fingerprint is not this."""
    return {
        "format": reports.FORMAT,
        "method": method_spec(cfg),
        "sets": {"n": cfg.n, "k": cfg.k, "curve_ns": list(cfg.curve_ns)},
        "iem": dict(model),
        "codebook_sha256": codebook_sha256(codebook),
        "data": None if data is None else dict(data),
    }


def run(
    models: Models,
    concepts: Sequence[int],
    explain_set: tuple[np.ndarray, np.ndarray],
    test_set: tuple[np.ndarray, np.ndarray],
    cfg: SampleLevelConfig = SampleLevelConfig(),
    truth_set: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    explain_tis: np.ndarray | None = None,
    test_ids: np.ndarray | None = None,
    model: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> SampleLevelReport:
    """Runs the experiment for `concepts` (IEM class ids) with the bundle's `predict` (the IEM),
    `classifier` (scores the masked images) and `decode`. Sets are (tokens (N, m, m), labels)
    and for the truth set also masks (N, m, m). `explain_tis` (N, m, m): TIS of the explanation
    split computed beforehand (e.g. by `score_dataset`), skipping that pass. `test_ids` (N_test,):
    global ids of the test images, which key their SmoothGrad noise and random baseline
    positions (default: len(explain split) + 0..N_test−1), so a test split evaluated in concept
    chunks gives each image the draws it gets in one pass. `model` (what identifies the IEM;
    default its `predict_name`) and `data` (what the images came from) go into the report's
    fingerprint. The report carries the test split's tokens, labels and TIS (`arrays`)."""
    predict, classifier = models.require(
        "predict", "classifier", what="the sample-level experiment"
    )
    codebook = models.codebook
    n_classes = int(max(concepts)) + 1
    k_size = codebook.shape[0]
    m = explain_set[0].shape[1]

    progress("TIS on the explanation split")
    ex_tok, ex_lab = explain_set
    if explain_tis is None:
        explain_tis = scores_for(predict, codebook, ex_tok, ex_lab, cfg)
    ex_tis = explain_tis
    _, ex_ids = tis.image_tokens(jnp.asarray(ex_tis), jnp.asarray(ex_tok), cfg.n)
    t_concept, t_counts = tis.concept_tokens(ex_ids, ex_lab, n_classes, k_size, cfg.k)
    freq, freq_counts = tis.frequency_baseline(ex_tok, ex_lab, n_classes, k_size, cfg.k)

    progress("masking evaluation on the test split")
    te_tok, te_lab = test_set
    if test_ids is None:
        test_ids = len(ex_tok) + np.arange(len(te_tok))
    test_ids = np.asarray(test_ids)
    te_px = np.asarray(models.decode(te_tok))
    per_concept: dict[int, ConceptResult] = {}
    for c in concepts:
        sel = te_lab == c
        if not sel.any():
            continue
        masking = {
            name: evaluate.masking_effect(
                classifier, te_px[sel], te_lab[sel], evaluate.token_id_mask(te_tok[sel], ids)
            )
            for name, ids in (("cortex", t_concept[c]), ("frequency", freq[c]))
        }
        per_concept[int(c)] = ConceptResult(
            cortex=tuple(t_concept[c].tolist()),
            cortex_counts=tuple(np.asarray(t_counts[c]).tolist()),
            frequency=tuple(freq[c].tolist()),
            frequency_counts=tuple(np.asarray(freq_counts[c]).tolist()),
            masking_cortex=masking["cortex"],
            masking_frequency=masking["frequency"],
        )
    te_tis = scores_for(predict, codebook, te_tok, te_lab, cfg, ids=test_ids)
    order = np.argsort(-te_tis.reshape(len(te_tok), -1), axis=1, kind="stable")
    ns = [n for n in cfg.curve_ns if n <= m * m]
    curve = evaluate.image_level_curve(classifier, te_px, te_lab, order, m, ns, image_ids=test_ids)

    precision = None
    if truth_set is not None:
        progress("ground-truth precision on encoded images")
        gt_tok, gt_lab, gt_mask = truth_set
        gt_ids = 10**7 + np.arange(len(gt_tok))
        gt_tis = scores_for(predict, codebook, gt_tok, gt_lab, cfg, ids=gt_ids)
        pos, _ = tis.image_tokens(jnp.asarray(gt_tis), jnp.asarray(gt_tok), cfg.n)
        rand = evaluate.random_positions(len(gt_tok), m, cfg.n, cfg.seed + 42, gt_ids)
        prec = {
            "image_cortex": evaluate.position_precision(np.asarray(pos), gt_mask),
            "image_random": evaluate.position_precision(rand, gt_mask),
        }
        per: dict[str, list[float]] = {"cortex": [], "frequency": [], "random": []}
        for c in concepts:
            sel = gt_lab == c
            if not sel.any():
                continue
            rng = np.random.default_rng((cfg.seed, 7, int(c)))  # one draw per concept
            sets = {
                "cortex": t_concept[c],
                "frequency": freq[c],
                "random": rng.choice(k_size, len(t_concept[c]), replace=False),
            }
            for name, ids in sets.items():
                per[name].append(evaluate.occurrence_precision(gt_tok[sel], gt_mask[sel], ids))
            if int(c) in per_concept:  # per concept too, for the atlas
                per_concept[int(c)] = dataclasses.replace(
                    per_concept[int(c)],
                    ground_truth_precision={k: v[-1] for k, v in per.items()},
                )
        for name, vals in per.items():
            prec[f"concept_{name}"] = float(np.nanmean(vals))
        prec["object_share_of_positions"] = float(gt_mask.mean())
        precision = prec
    names = models.class_names
    return SampleLevelReport(
        config=config_dict(cfg),
        concepts=per_concept,
        summary=summarize(per_concept),
        image_level_curve=ImageLevelCurve.of(curve),
        iem=models.predict_name,
        concept_names={int(c): names[c] for c in concepts},
        fingerprint=report_fingerprint(
            codebook, cfg, model if model is not None else {"iem": models.predict_name}, data
        ),
        ground_truth_precision=precision,
        arrays=EvalArrays(te_tok, te_lab, te_tis),
    )


TIS_FORMAT = 1  # the layout of OUT/tis-NNNNN.npy; a change that alters stored scores bumps it


def tis_fingerprint(
    codebook: ArrayLike,
    dataset: shards.TokenDataset,
    cfg: SampleLevelConfig,
    model: Mapping[str, Any] | None = None,
    id_offset: int = 0,
) -> dict[str, Any]:
    """What stored per-image scores depend on: the method and its options (not n, k, curve_ns or
    batch, which do not change a score), the codebook and the dataset (hashes), `model` (what
    identifies the predictor), TIS_FORMAT, and `id_offset` (the first image's noise key) when
    it is not 0."""
    out = {
        "format": TIS_FORMAT,
        "method": method_spec(cfg),
        "codebook_sha256": codebook_sha256(codebook),
        "dataset": dataset_identity(dataset),
        "model": dict(model) if model is not None else None,
    }
    return out | ({"id_offset": id_offset} if id_offset else {})


def dataset_identity(dataset: shards.TokenDataset) -> dict[str, Any]:
    """A token dataset for fingerprints: its size and the hashes of its shard sizes and meta."""
    meta = json.dumps(dataset.meta, sort_keys=True).encode()
    sizes = [len(x) for x in dataset.labels]
    return {
        "images": int(sum(sizes)),
        "shard_sizes_sha256": hashlib.sha256(json.dumps(sizes).encode()).hexdigest(),
        "meta_sha256": hashlib.sha256(meta).hexdigest(),
    }


def score_dataset(
    predict: Callable[[Array], Array],
    codebook: ArrayLike,
    dataset: shards.TokenDataset,
    out: str | os.PathLike,
    cfg: SampleLevelConfig = SampleLevelConfig(),
    progress: Callable[[int], None] = lambda n: None,
    model: Mapping[str, Any] | None = None,
    id_offset: int = 0,
) -> list[str]:
    """TIS for every image of a token dataset, one float32 file per dataset shard.

    OUT/fingerprint.json records what made the scores (`tis_fingerprint`: the scoring settings,
    the codebook's and the dataset's hashes, `model`: what identifies `predict`, e.g. the IEM's
    architecture and weights hash, and the format version). A rerun with the same fingerprint
    skips the finished shards; with another it is refused in one line naming what differs.

    OUT/tis-NNNNN.npy holds (n, m, m) float32 TIS of shard NNNNN (1 KiB an image at 16×16),
    enough to re-derive T_image for any n later without the N backward passes. float32, not
    float16: with the probability objective confident images have scores below float16's normal
    range, and the cast changed their top-n sets (ties fell to the top-left positions).

    Dataset shards are split over processes (shard s → process s mod P); a process splits each
    batch over its local devices; noise is keyed by global image index, so the result does not
    depend on the number of devices. Finished shards are skipped on restart. Image i's noise is
    keyed by `id_offset` + i (a test split scored after a training split: its length). With
    several processes a SIGTERM to any of them stops them all with `errors.Interrupted` before one
    shard index (`sharding.preemption_agreed`): the one past the furthest any process had
    reached, so each finishes the shard it is scoring (one behind the others first catches up).
    """
    out_dir = paths.of(out)
    fingerprint = tis_fingerprint(codebook, dataset, cfg, model, id_offset)
    shards.claim_fingerprint(out_dir, fingerprint, "scores")
    shards.clean_stale_temps(out_dir)  # a kill between write and rename leaves one behind
    offsets = np.cumsum([0] + [len(x) for x in dataset.labels])
    written, done = [], 0
    for s, (toks, labels) in enumerate(zip(dataset.tokens, dataset.labels, strict=True)):
        if sharding.preemption_agreed():
            raise errors.Interrupted(
                f"stopped by SIGTERM before shard {s}; the finished score files are kept, rerun "
                "the same command to resume"
            )
        path = out_dir / f"tis-{s:05d}.npy"
        if s % jax.process_count() != jax.process_index() or path.exists():
            done += len(labels)
            progress(done)
            continue
        ids = id_offset + offsets[s] + np.arange(len(labels))
        scores = scores_for(predict, codebook, np.asarray(toks), np.asarray(labels), cfg, ids)
        shards.atomic_save_npy(path, scores)
        written.append(str(path))
        done += len(labels)
        progress(done)
    return written


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The sample-level study on a generator: `method` (the explanation's settings), images
    generated per concept for T_concept (`per_concept`) and for the test split
    (`test_per_concept`), test images shown per concept in top_tokens.png (`shown_per_concept`).
    The explanation split is sampled with seed `method.seed`, the test split with seed + 1."""

    method: SampleLevelConfig = SampleLevelConfig()
    per_concept: int = 100
    test_per_concept: int = 40
    shown_per_concept: int = 8

    def __post_init__(self):
        for name in ("per_concept", "test_per_concept", "shown_per_concept"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected at least 1")


def _generated(sample: Sample, concepts: Sequence[int], per: int, seed: int):
    ids = np.repeat(np.asarray(concepts), per)
    return np.asarray(sample(ids, seed)), ids.astype(np.int32)


def shown_images(labels: np.ndarray, concepts: Sequence[int], per: int) -> tuple[np.ndarray, int]:
    """Indices of the images a figure shows, one row per concept in `concepts` order, and the row
    length: `per` images, or as many as every concept has when that is fewer (test_per_concept
    below shown_per_concept), so that rows and concept labels always correspond."""
    per = min(per, *(int((labels == c).sum()) for c in concepts))
    return np.concatenate([np.flatnonzero(labels == c)[:per] for c in concepts]), per


def study(
    models: Models,
    concepts: Sequence[int],
    cfg: StudyConfig,
    out: str | os.PathLike,
    truth_set: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    progress: Callable[[str], None] = lambda stage: None,
    model: Mapping[str, Any] | None = None,
) -> SampleLevelReport:
    """The sample-level study of `concepts` on images the bundle's generator makes: `run` (with
    ground-truth precision when `truth_set` (tokens, labels, masks) is given), then `save` to
    OUT. `model`: what identifies the IEM in the report's fingerprint (default its name).
    Returns the report."""
    sample, _, _ = models.require("sample", "predict", "classifier", what="the sample-level study")
    m = cfg.method
    m.check_sizes(models.grid_size, len(models.codebook))
    explain_set = _generated(sample, concepts, cfg.per_concept, m.seed)
    test_set = _generated(sample, concepts, cfg.test_per_concept, m.seed + 1)
    data = {
        "generator": models.name,
        "per_concept": cfg.per_concept,
        "test_per_concept": cfg.test_per_concept,
        "truth_images": 0 if truth_set is None else len(truth_set[0]),
    }
    report = run(
        models, concepts, explain_set, test_set, m, truth_set, progress, model=model, data=data
    )
    save(report, out, models, cfg.shown_per_concept)
    return report


def save(
    report: SampleLevelReport,
    out: str | os.PathLike,
    models: Models,
    shown_per_concept: int = 8,
    shown_concepts: int | None = None,
) -> None:
    """Every file of a sample-level report, the toy study's and the ImageNet recipe's alike:
    OUT/top_tokens.png (test images with their top-n TIS positions boxed, the paper's Figure 3:
    `shown_per_concept` images of each of the first `shown_concepts` concepts, all by default),
    OUT/image_level_curve.* (Figure 4), after `report.write` (arrays.npz, token_sets.csv and
    report.json: the numbers are on disk before a figure can fail). Only the shown images are
    decoded (the bundle's `decode`)."""
    if report.arrays is None:
        raise ValueError("save needs the report's arrays (the test split run evaluated)")
    check_shown(shown_per_concept, shown_concepts)
    root = paths.of(out)
    report.write(root)
    names, n = report.concept_names, int(report.config["n"])
    concepts = list(report.concepts)[:shown_concepts]
    labels, scores = report.arrays.labels, report.arrays.tis
    shown, per = shown_images(labels, concepts, shown_per_concept)
    px = np.asarray(models.decode(np.asarray(report.arrays.tokens[shown], np.int32)))
    top = np.argsort(-scores[shown].reshape(len(shown), -1), axis=1)[:, :n]
    grid = plots.image_grid_figure(
        px,
        per,
        [names[c] for c in concepts],
        f"Test images per concept: top-{n} TIS positions ({models.predict_name.upper()} IEM)",
        boxes=evaluate.positions_mask(top, scores.shape[1]),
        box_label=f"top-{n} TIS positions of the image's own concept (T_image)",
        scale=max(1, 128 // px.shape[1]),
    )
    plots.save_png(grid, root / "top_tokens.png")
    curve = report.image_level_curve
    plots.masking_curve(
        root / "image_level_curve",
        list(curve.n),
        {
            "top-n TIS positions": (list(curve.tis), list(curve.tis_se)),
            "n random positions": (list(curve.random), list(curve.random_se)),
        },
        f"Image level: {models.predict_name.upper()} IEM, {models.classifier_name}",
        ylabel=f"{models.classifier_name} probability of the concept",
    )


def check_shown(shown_per_concept: int, shown_concepts: int | None) -> None:
    """The figure sizes `save` takes: one-line ValueError unless each is ≥ 1 (None: all)."""
    for name, v in (("shown_per_concept", shown_per_concept), ("shown_concepts", shown_concepts)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name}={v!r}; expected a whole number ≥ 1 (images in the figure)")
