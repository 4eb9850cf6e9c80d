"""The sample-level report (`SampleLevelReport`): one typed object, written and read here only.

A folder holding one (explain.sample's --out, the ImageNet recipe's WORKDIR/sample_{arch}):

  report.json      the settings, per concept T_concept and the frequency baseline with their
                   counts and masking effects, the summary (Table 2), the image-level curve
                   (Figure 4), ground-truth precision (toy world), the IEM, the concept names and
                   the fingerprint: what made the report (format version, method and options,
                   IEM identity, codebook hash, data)
  token_sets.csv   one row per (concept, method, rank): the token sets of report.json
  arrays.npz       the evaluated test split: token grids (uint16), labels (int32), float32 TIS
                   (N, m, m), in report.json's order (what explain.atlas draws)

The figures beside them (top_tokens.png, image_level_curve.*) are drawn by
`experiments.sample_level.save`. The folder may be a gs:// URL (`core.paths`); each file is
written whole (`shards.atomic_write_bytes`). Reading is strict: a missing or unknown key, or
another format version, is one line naming it; `read(folder, expect=fingerprint)` also
refuses a report made with other settings, naming the fields that differ.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from cortex_jax.core import paths
from cortex_jax.io import shards

FORMAT = 1  # the layout of a sample-level report; a change to what readers find bumps it
REPORT_NAME = "report.json"
TOKEN_SETS_NAME = "token_sets.csv"
ARRAYS_NAME = "arrays.npz"


class ReportError(ValueError):
    """A report file that does not hold what this version reads (one line)."""


def _keys(obj: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()):
    if not isinstance(obj, Mapping):
        raise ReportError(f"{where} is {type(obj).__name__}; expected an object")
    missing = [k for k in required if k not in obj]
    unknown = [k for k in obj if k not in required + optional]
    if missing or unknown:
        what = f"lacks {missing[0]!r}" if missing else f"has an unknown key {unknown[0]!r}"
        raise ReportError(f"{where} {what}; expected keys {list(required + optional)}")


@dataclasses.dataclass(frozen=True)
class ConceptResult:
    """One concept's row: T_concept (`cortex`) and the frequency baseline's set of the same k,
    each with its counts over the explanation split, the masking effect of each set on the test
    images (`evaluate.masking_effect`'s dict), and, with a ground-truth split, the share of each
    set's occurrences on the object (cortex, frequency, random)."""

    cortex: tuple[int, ...]
    cortex_counts: tuple[int, ...]
    frequency: tuple[int, ...]
    frequency_counts: tuple[int, ...]
    masking_cortex: Mapping[str, float]
    masking_frequency: Mapping[str, float]
    ground_truth_precision: Mapping[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in ("cortex", "cortex_counts", "frequency", "frequency_counts"):
            out[name] = list(out[name])
        for name in ("masking_cortex", "masking_frequency", "ground_truth_precision"):
            out[name] = None if out[name] is None else dict(out[name])
        if out["ground_truth_precision"] is None:
            del out["ground_truth_precision"]
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ConceptResult:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _keys(obj, where, names[:-1], names[-1:])
        gt = obj.get("ground_truth_precision")
        return cls(
            cortex=tuple(obj["cortex"]),
            cortex_counts=tuple(obj["cortex_counts"]),
            frequency=tuple(obj["frequency"]),
            frequency_counts=tuple(obj["frequency_counts"]),
            masking_cortex=dict(obj["masking_cortex"]),
            masking_frequency=dict(obj["masking_frequency"]),
            ground_truth_precision=None if gt is None else dict(gt),
        )


@dataclasses.dataclass(frozen=True)
class ImageLevelCurve:
    """Figure 4: mean probability of the true class after masking the top-n TIS positions
    (`tis`) vs n random positions (`random`), with standard errors, for each n."""

    n: tuple[int, ...]
    tis: tuple[float, ...]
    random: tuple[float, ...]
    tis_se: tuple[float, ...]
    random_se: tuple[float, ...]

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if len(getattr(self, f.name)) != len(self.n):
                raise ReportError(
                    f"image_level_curve.{f.name} has {len(getattr(self, f.name))} values for "
                    f"{len(self.n)} n"
                )

    def to_json(self) -> dict[str, list]:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> ImageLevelCurve:
        _keys(obj, where, tuple(f.name for f in dataclasses.fields(cls)))
        return cls.of(obj)

    @classmethod
    def of(cls, curve: Mapping[str, Any]) -> ImageLevelCurve:
        """From `evaluate.image_level_curve`'s dict (or report.json's)."""
        return cls(
            n=tuple(int(n) for n in curve["n"]),
            tis=tuple(float(x) for x in curve["tis"]),
            random=tuple(float(x) for x in curve["random"]),
            tis_se=tuple(float(x) for x in curve["tis_se"]),
            random_se=tuple(float(x) for x in curve["random_se"]),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class EvalArrays:
    """The evaluated test split, in the report's order: token grids `tokens` (N, m, m), `labels`
    (N,) and per-position scores `tis` (N, m, m). Stored as uint16, int32 and float32."""

    tokens: np.ndarray
    labels: np.ndarray
    tis: np.ndarray

    def __post_init__(self):
        t, y, s = (np.asarray(x) for x in (self.tokens, self.labels, self.tis))
        if t.ndim != 3 or y.shape != t.shape[:1] or s.shape != t.shape:
            raise ReportError(
                f"arrays: tokens {t.shape}, labels {y.shape}, tis {s.shape}; expected (N, m, m), "
                "(N,) and (N, m, m)"
            )
        for name, x in (("tokens", t), ("labels", y), ("tis", s)):
            object.__setattr__(self, name, x)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EvalArrays):
            return NotImplemented
        return all(
            np.array_equal(getattr(self, k), getattr(other, k)) for k in ("tokens", "labels", "tis")
        )

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        np.savez_compressed(
            buf,
            test_tokens=np.asarray(self.tokens, np.uint16),
            test_labels=np.asarray(self.labels, np.int32),
            test_tis=np.asarray(self.tis, np.float32),
        )
        return buf.getvalue()

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> EvalArrays:
        with np.load(io.BytesIO(paths.of(path).read_bytes()), allow_pickle=False) as z:
            _keys(dict.fromkeys(z.files), str(path), ("test_tokens", "test_labels", "test_tis"))
            return cls(z["test_tokens"], z["test_labels"], z["test_tis"])


@dataclasses.dataclass(frozen=True)
class SampleLevelReport:
    """What the sample-level experiment found (`experiments.sample_level.run`, `study`, the
    recipe's step) and what every reader reads.

    Attributes:
      config: the settings as `sample_level.config_dict` records them.
      concepts: concept id → its row (only concepts with test images).
      summary: the masking effects averaged over concepts, {cortex,frequency}_{accuracy_change,
        probability_change, tokens_masked}.
      image_level_curve: Figure 4.
      iem: how the run names its IEM (ce, re, te, or a checkpoint path).
      concept_names: concept id → name, for every concept asked.
      fingerprint: what made the report: {"format": FORMAT, "method": the attribution method,
        its options and seed, "sets": n, k and curve_ns, "iem": the IEM's identity,
        "codebook_sha256", "data": what the images came from}.
      ground_truth_precision: image- and concept-level precision against object masks (toy).
      test_images: images in the test split (the recipe records it).
      classifier: the pixel classifier the recipe scored with.
      arrays: the evaluated test split (arrays.npz); None when read without it.
    """

    config: Mapping[str, Any]
    concepts: Mapping[int, ConceptResult]
    summary: Mapping[str, float]
    image_level_curve: ImageLevelCurve
    iem: str
    concept_names: Mapping[int, str]
    fingerprint: Mapping[str, Any]
    ground_truth_precision: Mapping[str, float] | None = None
    test_images: int | None = None
    classifier: str | None = None
    arrays: EvalArrays | None = None

    def __post_init__(self):  # settings as JSON holds them (tuples as lists), so reads compare
        for name in ("config", "fingerprint"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))

    def to_json(self) -> dict[str, Any]:
        """report.json's content, in its key order (optional keys only when set)."""
        out: dict[str, Any] = {
            "config": dict(self.config),
            "concepts": {str(c): row.to_json() for c, row in self.concepts.items()},
            "summary": dict(self.summary),
            "image_level_curve": self.image_level_curve.to_json(),
        }
        if self.ground_truth_precision is not None:
            out["ground_truth_precision"] = dict(self.ground_truth_precision)
        if self.test_images is not None:
            out["test_images"] = self.test_images
        out["iem"] = self.iem
        if self.classifier is not None:
            out["classifier"] = self.classifier
        out["concept_names"] = {str(c): n for c, n in self.concept_names.items()}
        out["fingerprint"] = dict(self.fingerprint)
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str = REPORT_NAME) -> SampleLevelReport:
        """The report of report.json's content; one line (ReportError) on a missing or unknown
        key or another format version."""
        optional = ("ground_truth_precision", "test_images", "classifier")
        required = tuple(
            f.name for f in dataclasses.fields(cls) if f.name not in (*optional, "arrays")
        )
        if isinstance(obj, Mapping) and "fingerprint" not in obj and "concepts" in obj:
            raise ReportError(
                f"{where} has no fingerprint (written before reports recorded what made them, "
                f"format {FORMAT}); rerun the command that wrote it"
            )
        _keys(obj, where, required, optional)
        fp = obj["fingerprint"]
        version = fp.get("format") if isinstance(fp, Mapping) else None
        if version != FORMAT:
            raise ReportError(
                f"{where} has report format {version!r}; this cortex-jax reads format {FORMAT}"
            )
        return cls(
            config=dict(obj["config"]),
            concepts={
                int(c): ConceptResult.from_json(row, f"{where}: concepts.{c}")
                for c, row in obj["concepts"].items()
            },
            summary=dict(obj["summary"]),
            image_level_curve=ImageLevelCurve.from_json(
                obj["image_level_curve"], f"{where}: image_level_curve"
            ),
            iem=obj["iem"],
            concept_names={int(c): n for c, n in obj["concept_names"].items()},
            fingerprint=dict(fp),
            ground_truth_precision=obj.get("ground_truth_precision"),
            test_images=obj.get("test_images"),
            classifier=obj.get("classifier"),
        )

    def token_sets_csv(self) -> str:
        """token_sets.csv: concept name, method (cortex | frequency), rank, token id, count."""
        buf = io.StringIO(newline="")
        w = csv.writer(buf)
        w.writerow(["concept", "method", "rank", "token_id", "count"])
        for c, row in self.concepts.items():
            for method in ("cortex", "frequency"):
                ids, counts = getattr(row, method), getattr(row, f"{method}_counts")
                for r, (t, n) in enumerate(zip(ids, counts, strict=True)):
                    w.writerow([self.concept_names[c], method, r + 1, t, n])
        return buf.getvalue()

    def write(self, folder: str | os.PathLike) -> None:
        """FOLDER/arrays.npz (when `arrays` is set), token_sets.csv, then report.json, each
        written atomically (report.json last: a folder with it holds the whole report)."""
        root = paths.of(folder)
        if not paths.is_remote(root):
            root.mkdir(parents=True, exist_ok=True)
        if self.arrays is not None:
            shards.atomic_write_bytes(root / ARRAYS_NAME, self.arrays.to_npz())
        shards.atomic_write_bytes(root / TOKEN_SETS_NAME, self.token_sets_csv().encode())
        shards.atomic_write_json(root / REPORT_NAME, self.to_json())

    @staticmethod
    def exists(folder: str | os.PathLike) -> bool:
        """Whether FOLDER holds a report (report.json), without reading it."""
        return (paths.of(folder) / REPORT_NAME).is_file()

    @classmethod
    def read(
        cls,
        folder: str | os.PathLike,
        arrays: bool = False,
        expect: Mapping[str, Any] | None = None,
    ) -> SampleLevelReport:
        """The report in FOLDER; `arrays`: with arrays.npz (one line if it is missing).
        `expect`: a fingerprint the report must have (e.g. `sample_level.report_fingerprint` of
        the settings asked now); another is refused in one line naming the fields that differ."""
        path = paths.of(folder) / REPORT_NAME
        if not path.is_file():
            raise FileNotFoundError(f"no sample-level report in {folder} ({REPORT_NAME} missing)")
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ReportError(f"{path} is not JSON ({e.msg}, line {e.lineno})") from None
        report = cls.from_json(obj, str(path))
        if expect is not None:
            want = json.loads(json.dumps(expect))
            if report.fingerprint != want:
                raise ReportError(
                    f"{path} was made with other settings "
                    f"({shards.differences(dict(report.fingerprint), want)}); rerun it with these"
                )
        if arrays:
            npz = paths.of(folder) / ARRAYS_NAME
            if not npz.is_file():
                raise FileNotFoundError(
                    f"{npz} is missing; rerun explain.sample (it writes the test images and TIS "
                    "the concept pages are drawn from)"
                )
            report = dataclasses.replace(report, arrays=EvalArrays.from_npz(npz))
        return report
