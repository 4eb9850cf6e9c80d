"""The ImageNet reproduction (configs/imagenet.py) as library steps; the CLIs only call these.

Layout under `config.workdir`:

    models/vqgan/              the VQGAN (vqgan-jax format), written once by `generate`
    tokens/{train,val,test}/   uint16 token shards; tokens/test/png/ decoded test images
    iem_{ce,re,te}/            train.iem: metrics.jsonl, checkpoints/, iem/ (the best model)
    sample_{arch}/             `sample_level`: tis/ and test_tis/ (float32 per shard),
                               report.json, token_sets.csv, top_tokens.png,
                               image_level_curve.*, arrays.npz
    table5/                    `codebook_level.table5`: table5.json, table5.md
    tables.md, tables.json     `tables`: the paper's Tables 1, 2 and 5 side by side
    atlas/                     `atlas`: the token atlas of sample_{arch} and table5

The workdir (and every path the config derives from it) may be a local folder or a gs:// URL
(`core.paths`): every step reads and writes through epath, each file written whole, the IEM's
orbax checkpoints straight to the bucket; the outputs are the same bytes either way (files name
the files beside them by relative paths). Another URL scheme is refused in one line.

Every step resumes: finished shards (tokens, PNGs, TIS) are skipped, IEM training restarts from
its latest checkpoint, and report files appear whole or not at all. With several processes
(`jax.distributed`), shards are split over processes (shard s → process s mod P) and each batch
over a process's local devices; the small evaluation steps then run on process 0.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from etils import epath
from ml_collections import ConfigDict
from PIL import Image

from cortex_jax.core import imagenet, paths
from cortex_jax.core import progress as progress_lib
from cortex_jax.core.configs import from_section
from cortex_jax.experiments import codebook_level, families, sample_level, sample_stream
from cortex_jax.experiments.bundle import Models, batched, from_files
from cortex_jax.experiments.generate import generate_dataset
from cortex_jax.figures import atlas as atlas_site
from cortex_jax.io import folders, shards, sources
from cortex_jax.io.images import to_uint8
from cortex_jax.io.reports import SampleLevelReport
from cortex_jax.method import selection
from cortex_jax.models.vqgm import ClassConditional

SPLITS = ("train", "val", "test")


class StageBars:
    """The `progress(stage, done, total)` callback the steps take, as one `core.progress.Progress`
    per stage: a tqdm bar on a terminal, throughput and ETA lines in a log (a stage is timed
    from its first call; steps call progress(stage, 0, total) when a stage starts). Process 0
    only. Use as a context manager."""

    def __init__(self, prefix: str = "", unit: str = "img"):
        self.prefix, self.unit = prefix, unit
        self.bar: progress_lib.Progress | None = None
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = progress_lib.Progress(
                f"{self.prefix}{stage}",
                total,
                self.unit,
                enabled=jax.process_index() == 0,
            )
        self.bar.update_to(done, total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def class_ids(spec: str) -> list[int]:
    """'all' → 0..999; otherwise comma-separated ImageNet names, indices or synset ids."""
    if spec == "all":
        return list(range(len(imagenet.classes())))
    return [imagenet.resolve(s.strip()) for s in spec.split(",") if s.strip()]


random_vqgm = families.random_cin  # the cin stand-in, kept under its old name


def family(config: ConfigDict) -> families.Family:
    """The recipe's VQGM family: `config.family` (default 'imagenet', taming's cin)."""
    return families.get(config.get("family", "imagenet"), "class", "the recipe's config.family")


def load_vqgm(config: ConfigDict) -> ClassConditional:
    """The generator, from the registry: the family's checkpoint(s) (config.checkpoint, and
    config.vq_checkpoint / gpt_config where the family reads them), or random weights shaped
    by the config when config.checkpoint is 'random'."""
    fam = family(config)
    if config.checkpoint == "random":
        if fam.random is None:
            raise ValueError(f"the {fam.name} family has no random-weight stand-in")
        return fam.random(config, 0)
    args = families.LoadArgs(
        config.checkpoint,
        config.get("vq_checkpoint"),
        config.get("gpt_config"),
        config.get("n_head") or None,
    )
    return fam.load(args)


def vqgm_identity(config: ConfigDict) -> dict[str, Any]:
    """What identifies the generator in the token datasets' meta.json (their fingerprint): the
    family, and for random weights the settings that shape them, otherwise the sha256 of each
    checkpoint file or folder the config names (another checkpoint at the same path is another
    model; a name that is no file, local or gs://, e.g. a hub repo id, stands for itself)."""
    out: dict[str, Any] = {"family": family(config).name}
    if config.get("n_head"):  # heads change what the weights compute, not their shapes
        out["n_head"] = config.n_head
    if config.checkpoint == "random":
        out["random"] = {
            k: config[k].to_dict() for k in ("random_vqgan", "random_gpt") if k in config
        }
        return out
    for key in ("checkpoint", "vq_checkpoint"):
        value = config.get(key)
        if value:
            path = paths.of(value, f"--config.{key}")
            out[key] = {"sha256": folders.sha256_of(path)} if path.exists() else str(value)
    if config.get("gpt_config"):
        out["gpt_config"] = config.gpt_config
    return out


def sampling(config: ConfigDict) -> Any:
    """The family's sampler settings, its fields read from config.generate where present."""
    return family(config).settings(dict(config.generate), strict=False)


def write_pngs(
    decode: Callable[[np.ndarray], np.ndarray],
    dataset: shards.TokenDataset,
    folder: str | os.PathLike,
    batch: int = 32,
) -> int:
    """Decoded PNGs `folder/NNNNNNN.png` (global dataset index) for every image; a process
    writes the shards it owns (s mod P), each file atomically; existing files are skipped."""
    root = paths.of(folder)
    if not paths.is_remote(root):
        root.mkdir(parents=True, exist_ok=True)
    start, written = 0, 0
    for s, toks in enumerate(dataset.tokens):
        mine = s % jax.process_count() == jax.process_index()
        todo = [i for i in range(len(toks)) if not (root / f"{start + i:07d}.png").exists()]
        for j in range(0, len(todo) if mine else 0, batch):
            rows = todo[j : j + batch]
            px = np.asarray(decode(np.asarray(toks[rows], np.int32)))
            u8 = to_uint8(px)
            for i, img in zip(rows, u8, strict=True):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                shards.atomic_write_bytes(root / f"{start + i:07d}.png", buf.getvalue())
                written += 1
        start += len(toks)
    return written


def _split_progress(progress: Callable[[str, int, int], None], split: str, total: int, n: int):
    progress(split, n, total)


def generate(
    config: ConfigDict, progress: Callable[[str, int, int], None] = lambda s, n, t: None
) -> dict:
    """Step 1: the VQGAN to models/vqgan, then the train/val/test token splits (and test PNGs)."""
    check_paths(config)
    g = config.generate
    vqgm = load_vqgm(config)
    if jax.process_index() == 0 and not (paths.of(config.vqgan) / folders.CONFIG_NAME).exists():
        folders.save_vqgan(vqgm.vqgan, config.vqgan)
    ids = class_ids(g.classes)
    settings = sampling(config)
    identity = vqgm_identity(config)
    out = {}
    for i, split in enumerate(SPLITS):
        per = int(g[split])
        total = per * len(ids)
        progress(split, 0, total)
        ds = generate_dataset(
            vqgm,
            ids,
            per,
            config.data[split],
            g.seed + i,
            settings,
            g.shard_size,
            functools.partial(_split_progress, progress, split, total),
            g.dtype,
            model=identity,
        )
        out[split] = len(ds)
    if g.test_png:
        _sync("test-tokens")
        test = shards.TokenDataset.open(config.data.test)
        decode = functools.partial(vqgm.vqgan.decode_pixels, batch=32)
        out["test_png"] = write_pngs(decode, test, paths.of(config.data.test) / "png")
    _sync("generate")
    return out


def check_paths(config: ConfigDict) -> None:
    """Refuses, in one line before any work, a path of the config (workdir, vqgan, data.*) that
    is a URL of a scheme we do not read (every step takes local paths and gs:// URLs)."""
    named = {"workdir": config.workdir, "vqgan": config.vqgan}
    named.update({f"data.{k}": v for k, v in config.data.items() if isinstance(v, str)})
    for name, value in named.items():
        paths.of(value, f"--config.{name}")


def iem_folder(config: ConfigDict, arch: str | None = None) -> epath.Path:
    """WORKDIR/iem_{arch}/iem, the IEM train.iem wrote, or one line saying how to make it."""
    arch = arch or config.arch
    folder = paths.of(config.workdir) / f"iem_{arch}" / "iem"
    if not folder.exists():
        raise FileNotFoundError(
            f"IEM not found: {folder}; train it first: python -m train.iem --config "
            f"configs/imagenet.py:iem={arch}"
        )
    return folder


def iem_identity(config: ConfigDict, arch: str | None = None) -> dict[str, str]:
    """What identifies the IEM of `arch` for fingerprints: its architecture and the sha256 of its
    folder's config.json and weights (a retrained IEM is another model)."""
    folder = iem_folder(config, arch)
    digest = hashlib.sha256()
    for name in (folders.CONFIG_NAME, folders.WEIGHTS_NAME):
        digest.update((folder / name).read_bytes())
    return {"iem": arch or config.arch, "sha256": digest.hexdigest()}


def classifier_label(config: ConfigDict, classifier: str) -> str:
    """How reports name the pixel classifier `classifier` ("family": the family's own; named from
    the config alone: explain.report registers no families)."""
    own = f"{config.get('family', 'imagenet')} judge"
    return own if classifier == "family" else str(classifier)


def models(config: ConfigDict, classifier: str, batch: int, arch: str | None = None) -> Models:
    """The recipe's bundle for one step: the VQGAN at config.vqgan (decoding `batch` grids at a
    time), the IEM train.iem wrote for `arch`, and the pixel classifier `classifier` (batched;
    "family": the family's own, e.g. the toy world's judge)."""
    own = classifier == "family"
    bundle = from_files(
        config.vqgan,
        iem_folder(config, arch),
        None if own else classifier,
        config.classifier_size,
        decode_batch=batch,
        classifier_batch=batch,
    )
    if own:
        fam = family(config)
        if fam.classifier is None:
            raise ValueError(f"classifier 'family': the {fam.name} family has no classifier")
        bundle = dataclasses.replace(
            bundle,
            classifier=batched(fam.classifier(), batch),
            classifier_name=classifier_label(config, classifier),
        )
    return dataclasses.replace(bundle, predict_name=arch or config.arch, name="imagenet")


def sample_level_step(
    config: ConfigDict, progress: Callable[[str, int, int], None] = lambda s, n, t: None
) -> SampleLevelReport | None:
    """Step 3 (Table 2): TIS over the training and test splits (resumable float32 shards in
    sample_{arch}/tis and test_tis; the test images' noise keyed after the training images'),
    T_concept, then concept- and image-level masking of the test split scored by the classifier;
    written by `sample_level.save` as the toy study's are (top_tokens.png shows
    config.sample.shown_concepts concepts). After the TIS passes everything streams shard by
    shard (`sample_stream`): memory stays flat however many images; arrays.npz keeps the first
    config.sample.arrays_per_concept test images of each concept (all when unset)."""
    check_paths(config)
    s = config.sample
    sample_level.check_shown(s.shown_per_concept, s.shown_concepts)  # before hours of TIS
    out = paths.of(config.workdir) / f"sample_{config.arch}"
    bundle = models(config, config.classifier, s.batch)
    train = shards.TokenDataset.open(config.data.train)
    test = shards.TokenDataset.open(config.data.test)
    cfg = from_section(sample_level.SampleLevelConfig, s)
    cfg.check_sizes(bundle.grid_size, len(bundle.codebook))  # before hours of TIS
    identity = iem_identity(config)
    for name, split, folder, offset in (
        ("train", train, out / "tis", 0),
        ("test", test, out / "test_tis", len(train)),
    ):
        progress(f"TIS ({name} split)", 0, len(split))
        sample_level.score_dataset(
            bundle.require("predict")[0],
            bundle.codebook,
            split,
            folder,
            cfg,
            functools.partial(_split_progress, progress, f"TIS ({name} split)", len(split)),
            model=identity,
            id_offset=offset,
        )
    _sync("tis")
    if jax.process_index() != 0:
        return None
    present = set().union(*(np.unique(lab).tolist() for lab in test.labels))
    concepts = [c for c in class_ids(config.generate.classes) if c in present]
    data = {
        "train": sample_level.dataset_identity(train),
        "test": sample_level.dataset_identity(test),
    }
    report = sample_stream.report(
        bundle,
        train,
        out / "tis",
        test,
        out / "test_tis",
        concepts,
        cfg,
        identity,
        data,
        s.get("arrays_per_concept"),
        progress,
    )
    report = dataclasses.replace(report, classifier=classifier_label(config, config.classifier))
    sample_level.save(report, out, bundle, s.shown_per_concept, s.shown_concepts)
    return report


def codebook_level_step(config: ConfigDict) -> dict | None:
    """Step 4 (Table 5): token selection vs embedding optimisation on test images of each
    source class toward its target, scored by the IEM and by config.edit_classifier."""
    check_paths(config)
    c = config.codebook
    if jax.process_index() != 0:
        return None
    bundle = models(config, config.edit_classifier, c.batch)
    te_tok, te_lab, _ = shards.TokenDataset.open(config.data.test).arrays()
    cfg = from_section(
        codebook_level.Table5Config, c, selection=from_section(selection.SelectionConfig, c)
    )
    pairs = [(int(a), int(b)) for a, b in c.pairs]
    editors, notes = {}, []
    fam = family(config)
    if fam.edit_row and c.get("family_edit", False):  # the family's own region re-sampling
        editor = families.region_editor(load_vqgm(config), jax.random.PRNGKey(c.seed + 1))
        if editor is not None:
            editors[fam.edit_row] = editor
            notes.append(fam.describe_edit(fam.sampling))
    return codebook_level.table5(
        bundle,
        pairs,
        cfg,
        paths.of(config.workdir) / "table5",
        dataset=(te_tok, te_lab),
        editors=editors,
        notes=notes,
        extra={"pairs": [list(p) for p in pairs]},
    )


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------

PAPER: dict[str, dict[str, Any]] = {  # shared/REFERENCE.md
    "table1": {"ce": (53.07, 77.73), "re": (51.43, 76.00), "te": (48.71, 73.63)},
    "table2_tokens": {"ce": 42.2, "re": 40.6, "te": 45.6, "frequency": 64.2},
    "table2_resnet50": {"ce": -46.6, "frequency": -41.9},
    "table5": {"token_selection": (-0.290, 0.162), "embedding_optimisation": (-0.224, 0.127)},
}


def _best_validation(workdir: epath.Path) -> dict | None:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "val_loss" in r]
    if not rows:
        return None
    best = min(rows, key=lambda r: r["val_loss"])
    return {k: v for k, v in best.items() if k != "images_per_s"}  # a measurement, no result


def tables(config: ConfigDict, archs: Sequence[str] = ("ce", "re", "te")) -> tuple[dict, str]:
    """Step 5: the paper's Tables 1, 2 and 5 from the artefacts present (missing steps show as
    'not run'); returns (dict, markdown) and writes WORKDIR/tables.{json,md}."""
    check_paths(config)
    w = paths.of(config.workdir)
    t1 = {a: _best_validation(w / f"iem_{a}") for a in archs}
    t2 = {}
    for a in archs:
        folder = w / f"sample_{a}"
        exists = SampleLevelReport.exists(folder)
        t2[a] = dict(SampleLevelReport.read(folder).summary) if exists else None
    p5 = w / "table5" / "table5.json"
    t5 = json.loads(p5.read_text()) if p5.exists() else None
    md = [
        f"# CORTEX on `{config.variant}`",  # not its workdir: the same bytes wherever it is
        "",
        "## Table 1: IEM validation accuracy",
        "",
        "| IEM | top-1 | top-5 | paper top-1 / top-5 |",
        "|---|---|---|---|",
    ]
    for a in archs:
        r, (p1, p5_) = t1[a], PAPER["table1"][a]
        cells = f"{r['val_top1']:.2%} | {r['val_top5']:.2%}" if r else "not run | not run"
        md.append(f"| {a.upper()} | {cells} | {p1:.2f} % / {p5_:.2f} % |")
    md += [
        "",
        f"## Table 2: concept-level masking (T_concept n={config.sample.n}, "
        f"k={config.sample.k}; classifier {classifier_label(config, config.classifier)})",
        "",
        "| tokens | tokens masked / image | accuracy change | probability change | paper "
        "tokens / ResNet50 accuracy change |",
        "|---|---|---|---|---|",
    ]
    freq = None
    for a in archs:
        r = t2[a]
        acc = PAPER["table2_resnet50"].get(a)
        paper = f"{PAPER['table2_tokens'][a]} / " + (f"{acc:+.1f} %" if acc is not None else "—")
        if r is None:
            md.append(f"| CORTEX {a.upper()} | not run | | | {paper} |")
            continue
        freq = freq or r
        md.append(
            f"| CORTEX {a.upper()} | {r['cortex_tokens_masked']:.1f} | "
            f"{r['cortex_accuracy_change']:+.1%} | {r['cortex_probability_change']:+.3f} | "
            f"{paper} |"
        )
    pf = PAPER["table2_tokens"]["frequency"], PAPER["table2_resnet50"]["frequency"]
    paper_f = f"{pf[0]} / {pf[1]:+.1f} %"
    if freq:
        md.append(
            f"| frequency baseline | {freq['frequency_tokens_masked']:.1f} | "
            f"{freq['frequency_accuracy_change']:+.1%} | "
            f"{freq['frequency_probability_change']:+.3f} | {paper_f} |"
        )
    md += [
        "",
        "## Table 5: codebook-level editing "
        f"(classifier {classifier_label(config, config.edit_classifier)})",
        "",
        "| method | ΔP_orig | ΔP_target | top-1 = target | paper ΔP_orig / ΔP_target |",
        "|---|---|---|---|---|",
    ]
    if t5 is None:
        md.append("| not run | | | | |")
    else:
        for row, v in t5["table"].items():
            ref = PAPER["table5"].get(row.split("/")[0])
            paper_cell = f"{ref[0]:+.3f} / {ref[1]:+.3f}" if ref else "—"
            md.append(
                f"| {row} | {v['delta_judge_orig']:+.3f} | {v['delta_judge_target']:+.3f} "
                f"| {v['judge_target_top1']:.1%} | {paper_cell} |"
            )
        md += [
            "",
            "Like for like: token_selection_from_image vs embedding_optimisation (same "
            "start); token_selection starts from random tokens (the paper's setting).",
        ]
    result = {"table1": t1, "table2": t2, "table5": t5, "paper": PAPER}
    text = "\n".join(md) + "\n"
    if jax.process_index() == 0:
        shards.atomic_write_json(w / "tables.json", result)
        shards.atomic_write_bytes(w / "tables.md", text.encode())
    return result, text


def atlas(config: ConfigDict, compare: str | os.PathLike | None = None) -> dict[str, Any]:
    """Step 6: the token atlas of WORKDIR/sample_{arch} (and WORKDIR/table5 when present, and
    explain.compare's folder `compare` when given) in WORKDIR/atlas, its test images and tokens
    decoded with the VQGAN at config.vqgan (`figures.atlas.build_atlas`). Returns its summary."""
    check_paths(config)
    w = paths.of(config.workdir)
    sample, table5, out = w / f"sample_{config.arch}", w / "table5", w / "atlas"
    if not SampleLevelReport.exists(sample):
        raise FileNotFoundError(
            f"no explain.sample report in {sample}; run `python -m explain.sample --config "
            f"configs/imagenet.py:iem={config.arch}` first"
        )
    folders.check_output(out, "explain.atlas", remote_ok=True)
    SampleLevelReport.read(sample)  # a report this version cannot read: one line, no work
    decode = sources.load_vqgan(config.vqgan).decode_pixels
    return atlas_site.build_atlas(out, sample, decode, None, table5, [], compare)


def n_images(config: ConfigDict) -> dict[str, int]:
    """Images per split the config asks for (for ETAs and docs)."""
    n = len(class_ids(config.generate.classes))
    return {s: n * int(config.generate[s]) for s in SPLITS}
