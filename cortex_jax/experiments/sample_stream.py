"""The sample-level experiment over token datasets on disk, one shard or batch at a time.

`sample_level.run` takes its splits as arrays in memory, which suits the toy study (hundreds of
images). The recipe's step (`recipe.sample_level_step`) runs at the paper's scale, 1,000,000
training images and 50,000 test images, so it reads the splits and their stored TIS
(`sample_level.score_dataset`'s tis-NNNNN.npy) shard by shard instead, and computes the same
report: T_concept and the frequency baseline from per-shard counts, the concept-level masking
effects and the image-level curve from per-batch sums. What it holds in memory does not grow with
the number of images:

  `concept_sets`        one shard's tokens and TIS, and two (classes, K) int64 count tables
  `masking_evaluation`  one batch of test images decoded, the classifier's outputs for that
                        batch, per-concept sums (a few floats a concept) and per-n sums of the
                        curve, and the report's sample of the test split (`keep_per_concept`
                        images of each concept: what arrays.npz, top_tokens.png and the atlas show)

The results equal `sample_level.run`'s on the same images and scores (T_concept and the
frequency baseline exactly; masking effects and the curve up to float summation order; the curve's
standard errors those of one pass over the whole test split).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from etils import epath

from cortex_jax.core import paths
from cortex_jax.experiments import sample_level
from cortex_jax.experiments.bundle import Models
from cortex_jax.io import shards
from cortex_jax.io.reports import ConceptResult, EvalArrays, ImageLevelCurve, SampleLevelReport
from cortex_jax.method import evaluate, tis


@dataclasses.dataclass(frozen=True)
class ConceptSets:
    """Per class id: T_concept (`cortex`, eq. 5, counted once per T_image set) and the frequency
    baseline's k ids (`frequency`, counted per position), each with its counts (lists indexed
    by class id, as `tis.concept_tokens` returns them)."""

    cortex: list[np.ndarray]
    cortex_counts: list[np.ndarray]
    frequency: list[np.ndarray]
    frequency_counts: list[np.ndarray]


def _tis_shard(tis_dir: epath.Path, s: int, n: int) -> np.ndarray:
    path = tis_dir / f"tis-{s:05d}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run the TIS pass (score_dataset) first")
    scores = shards.load_npy(path, mmap=True)  # a bucket's: through its checked local copy
    if len(scores) != n:
        raise ValueError(f"{path} holds {len(scores)} scores for the {n} images of its shard")
    return scores


def concept_sets(
    dataset: shards.TokenDataset,
    tis_dir: str | os.PathLike,
    n: int,
    k: int,
    n_classes: int,
    codebook_size: int,
    progress: Callable[[int], None] = lambda done: None,
) -> ConceptSets:
    """T_concept (T_image size `n`, `k` ids) and the frequency baseline of every class of a token
    dataset whose TIS `score_dataset` stored in `tis_dir`, from counts summed shard by shard:
    the counts are sums over images, so the sets are those of the whole split at once.
    `progress(images done)` after each shard."""
    tis_dir = paths.of(tis_dir)
    t_image = np.zeros((n_classes, codebook_size), np.int64)
    occurrences = np.zeros((n_classes, codebook_size), np.int64)
    done = 0
    for s, (toks, labels) in enumerate(zip(dataset.tokens, dataset.labels, strict=True)):
        b = len(labels)
        scores = np.asarray(_tis_shard(tis_dir, s, b))
        grids = np.asarray(toks, np.int32)
        labels = np.asarray(labels)
        _, ids = tis.image_tokens(jnp.asarray(scores), jnp.asarray(grids), n)
        t_image += np.asarray(tis.token_counts(ids, labels, n_classes, codebook_size, "paper"))
        occurrences += np.asarray(
            tis.token_counts(grids.reshape(b, -1), labels, n_classes, codebook_size, "authors")
        )
        done += b
        progress(done)
    cortex, cortex_counts = tis.top_tokens(t_image, k)
    frequency, frequency_counts = tis.top_tokens(occurrences, k)
    return ConceptSets(cortex, cortex_counts, frequency, frequency_counts)


def _members(sets: Sequence[np.ndarray], n_classes: int, codebook_size: int) -> np.ndarray:
    """(n_classes, K) bool: id t is in class c's set."""
    table = np.zeros((n_classes, codebook_size), bool)
    for c, ids in enumerate(sets[:n_classes]):
        table[c, np.asarray(ids, np.int64)] = True
    return table


class _Sums:
    """Running sums of the masking evaluation: per concept (index j) the counts behind
    `evaluate.masking_effect`, per curve point the sum and sum of squares of the probability."""

    def __init__(self, n_concepts: int, n_points: int):
        z = lambda *shape: np.zeros(shape, np.float64)  # noqa: E731
        self.images = z(n_concepts)
        self.correct_before, self.p_before = z(n_concepts), z(n_concepts)
        self.correct_after = {s: z(n_concepts) for s in ("cortex", "frequency")}
        self.p_after = {s: z(n_concepts) for s in ("cortex", "frequency")}
        self.masked = {s: z(n_concepts) for s in ("cortex", "frequency")}
        self.curve = {s: (z(n_points), z(n_points)) for s in ("tis", "random")}
        self.curve_images = 0

    def masking(self, j: int) -> dict[str, dict[str, float]]:
        n = self.images[j]
        acc_b, p_b = self.correct_before[j] / n, self.p_before[j] / n
        return {
            s: evaluate.masking_summary(
                acc_b,
                self.correct_after[s][j] / n,
                p_b,
                self.p_after[s][j] / n,
                self.masked[s][j] / n,
            )
            for s in ("cortex", "frequency")
        }

    def image_level_curve(self, ns: Sequence[int]) -> dict[str, Any]:
        n = self.curve_images
        out: dict[str, Any] = {"n": list(ns)}
        for s, (s1, s2) in self.curve.items():
            mean = s1 / n
            var = np.maximum(s2 - s1 * mean, 0.0) / (n - 1) if n > 1 else np.zeros_like(s1)
            out[s] = [float(x) for x in mean]
            out[f"{s}_se"] = [float(x) for x in np.sqrt(var / n)] if n > 1 else [0.0] * len(ns)
        return out


def masking_evaluation(
    models: Models,
    test: shards.TokenDataset,
    tis_dir: str | os.PathLike,
    concepts: Sequence[int],
    sets: ConceptSets,
    cfg: sample_level.SampleLevelConfig,
    id_offset: int = 0,
    keep_per_concept: int | None = None,
    progress: Callable[[int], None] = lambda done: None,
) -> tuple[dict[int, ConceptResult], dict[str, Any], EvalArrays, int]:
    """The test split's concept-level masking (each concept's T_concept and frequency set) and
    the image-level curve (top-n TIS positions vs n random ones, random positions keyed by the
    global image id `id_offset` + index in the split), `cfg.batch` images at a time, over the
    test images of `concepts`. Returns (rows per concept, the curve's dict, the first
    `keep_per_concept` test images of each concept with their TIS (all when None), the number
    of test images evaluated). `progress(images done)` after each batch."""
    predict, classifier = models.require("predict", "classifier", what="the masking evaluation")
    del predict  # required so the report names an IEM; the stored TIS stand for it
    tis_dir = paths.of(tis_dir)
    k_size = len(models.codebook)
    n_classes = int(max(concepts)) + 1
    index = np.full(n_classes, -1, np.int64)
    index[np.asarray(concepts)] = np.arange(len(concepts))
    member = {
        "cortex": _members(sets.cortex, n_classes, k_size),
        "frequency": _members(sets.frequency, n_classes, k_size),
    }
    m = int(test.tokens[0].shape[1])
    ns = [n for n in cfg.curve_ns if n <= m * m]
    sums = _Sums(len(concepts), len(ns))
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    kept_count = np.zeros(len(concepts), np.int64)
    start, done = 0, 0
    for s, (toks, labels) in enumerate(zip(test.tokens, test.labels, strict=True)):
        scores = _tis_shard(tis_dir, s, len(labels))
        labels = np.asarray(labels)
        ours = labels < n_classes
        ours[ours] = index[labels[ours]] >= 0
        rows_all = np.flatnonzero(ours)
        for i in range(0, len(rows_all), cfg.batch):
            rows = rows_all[i : i + cfg.batch]
            grids = np.asarray(toks[rows], np.int32)
            lab = labels[rows]
            sc = np.asarray(scores[rows], np.float32)
            j = index[lab]
            ids = id_offset + start + rows
            _accumulate(sums, models.decode, classifier, grids, lab, j, sc, member, ns, m, ids)
            if keep_per_concept is None:
                kept.append((grids, lab, sc))
            else:
                take = np.zeros(len(rows), bool)
                for jj in np.unique(j):  # the first images of each concept, up to the cap
                    where = np.flatnonzero(j == jj)[: max(0, keep_per_concept - kept_count[jj])]
                    take[where] = True
                    kept_count[jj] += len(where)
                if take.any():
                    kept.append((grids[take], lab[take], sc[take]))
            done += len(rows)
            progress(done)
        start += len(labels)
    per_concept: dict[int, ConceptResult] = {}
    for jj, c in enumerate(concepts):
        if sums.images[jj] == 0:
            continue
        masking = sums.masking(jj)
        per_concept[int(c)] = ConceptResult(
            cortex=tuple(sets.cortex[c].tolist()),
            cortex_counts=tuple(np.asarray(sets.cortex_counts[c]).tolist()),
            frequency=tuple(sets.frequency[c].tolist()),
            frequency_counts=tuple(np.asarray(sets.frequency_counts[c]).tolist()),
            masking_cortex=masking["cortex"],
            masking_frequency=masking["frequency"],
        )
    if not kept:
        raise ValueError(f"the test split {test.folder} has no image of concepts {list(concepts)}")
    arrays = EvalArrays(*(np.concatenate([part[x] for part in kept]) for x in range(3)))
    return per_concept, sums.image_level_curve(ns), arrays, done


def _accumulate(
    sums: _Sums,
    decode: Callable[[np.ndarray], Any],
    classifier: Callable[[np.ndarray], Any],
    grids: np.ndarray,
    labels: np.ndarray,
    j: np.ndarray,
    scores: np.ndarray,
    member: Mapping[str, np.ndarray],
    ns: Sequence[int],
    m: int,
    ids: np.ndarray,
) -> None:
    """One batch of test images into `sums` (j: each image's concept index)."""
    b = len(labels)
    rows = np.arange(b)
    nj = len(sums.images)
    px = np.asarray(decode(grids))
    before = np.asarray(classifier(px))
    sums.images += np.bincount(j, minlength=nj)
    sums.correct_before += np.bincount(j, before.argmax(-1) == labels, nj)
    sums.p_before += np.bincount(j, before[rows, labels].astype(np.float64), nj)
    for s, table in member.items():
        mask = table[labels[:, None, None], grids]
        after = np.asarray(classifier(evaluate.black_out(px, mask)))
        sums.correct_after[s] += np.bincount(j, after.argmax(-1) == labels, nj)
        sums.p_after[s] += np.bincount(j, after[rows, labels].astype(np.float64), nj)
        sums.masked[s] += np.bincount(j, mask.reshape(b, -1).sum(1), nj)
    order = np.argsort(-scores.reshape(b, -1), axis=1, kind="stable")
    rand = evaluate.random_positions(b, m, max(ns), 42, ids)  # image_level_curve's seed
    for q, n in enumerate(ns):
        for s, pos in (("tis", order), ("random", rand)):
            mask = evaluate.positions_mask(pos[:, :n], m)
            p = np.asarray(classifier(evaluate.black_out(px, mask)))[rows, labels]
            p = p.astype(np.float64)
            sums.curve[s][0][q] += p.sum()
            sums.curve[s][1][q] += (p * p).sum()
    sums.curve_images += b


def report(
    models: Models,
    train: shards.TokenDataset,
    train_tis: str | os.PathLike,
    test: shards.TokenDataset,
    test_tis: str | os.PathLike,
    concepts: Sequence[int],
    cfg: sample_level.SampleLevelConfig,
    model: Mapping[str, Any],
    data: Mapping[str, Any] | None = None,
    keep_per_concept: int | None = None,
    progress: Callable[[str, int, int], None] = lambda stage, done, total: None,
) -> SampleLevelReport:
    """The recipe's sample-level report from stored TIS: `concept_sets` on the training split
    (`train_tis`), then `masking_evaluation` of the test split (`test_tis`, its images keyed
    after the training split's: id = len(train) + index), as `sample_level.run` reports it
    (`model`, `data`: the fingerprint's IEM identity and data). `progress(stage, done, total)`."""
    cfg.check_sizes(models.grid_size, len(models.codebook))
    n_classes = int(max(concepts)) + 1
    k_size = len(models.codebook)
    progress("T_concept (train split)", 0, len(train))
    sets = concept_sets(
        train,
        train_tis,
        cfg.n,
        cfg.k,
        n_classes,
        k_size,
        lambda d: progress("T_concept (train split)", d, len(train)),
    )
    progress("masking evaluation (test split)", 0, len(test))
    per_concept, curve, arrays, n_test = masking_evaluation(
        models,
        test,
        test_tis,
        concepts,
        sets,
        cfg,
        len(train),
        keep_per_concept,
        lambda d: progress("masking evaluation (test split)", d, len(test)),
    )
    names = models.class_names
    return SampleLevelReport(
        config=sample_level.config_dict(cfg),
        concepts=per_concept,
        summary=sample_level.summarize(per_concept),
        image_level_curve=ImageLevelCurve.of(curve),
        iem=models.predict_name,
        concept_names={int(c): names[c] for c in concepts},
        fingerprint=sample_level.report_fingerprint(models.codebook, cfg, model, data),
        test_images=n_test,
        arrays=arrays,
    )
