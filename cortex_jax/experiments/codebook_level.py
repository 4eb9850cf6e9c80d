"""Codebook-level experiments built on `selection`: decoded edit progressions and the paper's
Table 5 design (each image's region optimised toward a partner concept, token selection vs
embedding optimisation, judged by the IEM and by an independent classifier on decoded pixels).

The paper's comparison is confounded by its start point: token selection starts from random
tokens in the region (the authors' N(0, 1) logits) while the embedding baseline starts from the
image's own rows. `pair_study` therefore also reports the controls that separate start from
optimisation: random tokens with no optimisation (`random_tokens/start`), and token selection
started from the image's own tokens (`token_selection_from_image`). The like-for-like comparison
is `token_selection_from_image` against `embedding_optimisation`: same start, loss, steps and
step size; `token_selection` against `random_tokens/start` is what optimising adds to the
authors' random start.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from PIL import Image

from cortex_jax.core import paths
from cortex_jax.experiments import families
from cortex_jax.experiments.bundle import Models
from cortex_jax.figures import plots
from cortex_jax.io import folders, shards
from cortex_jax.io.images import read_image, to_uint8
from cortex_jax.io.shards import atomic_write_bytes, atomic_write_json
from cortex_jax.method import selection

Decode = Callable[[np.ndarray], np.ndarray]
Editor = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def progression_grids(
    base: np.ndarray, result: selection.SelectionResult, i: int = 0
) -> np.ndarray:
    """Token grids of image i: the original, then every logged step, (L + 1, m, m)."""
    grids = [base[i]]
    flat = base[i].reshape(-1)
    for toks in result.trajectory_tokens[i]:
        g = flat.copy()
        g[result.positions] = toks
        grids.append(g.reshape(base[i].shape))
    return np.stack(grids)


def progression(
    decode: Decode, base: np.ndarray, result: selection.SelectionResult, i: int = 0
) -> np.ndarray:
    """Decoded images of image i: the original, then every logged step, (L + 1, H, W, 3)."""
    return np.asarray(decode(progression_grids(base, result, i)))


def target_probability(models: Models, grids: np.ndarray, target: int) -> np.ndarray:
    """The IEM's softmax probability of class `target` for each token grid (N, m, m): (N,)."""
    (predict,) = models.require("predict", what="the target's probability")
    e = np.asarray(models.codebook)[np.asarray(grids)]
    return np.asarray(jax.jit(lambda x: jax.nn.softmax(predict(x), -1)[:, target])(e))


PNG_FRAMES = 12  # progression.png shows at most this many logged steps (the GIF shows them all)


def png_frames(n: int) -> np.ndarray:
    """Indices of the frames progression.png shows: all of `n`, or PNG_FRAMES spread evenly
    with the first and the last among them."""
    return np.unique(np.linspace(0, n - 1, min(n, PNG_FRAMES)).round().astype(int))


def _study_batch(
    models: Models,
    base: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    cfg: selection.SelectionConfig,
    seed: int,
    image_ids: np.ndarray | None,
    editors: Mapping[str, Editor],
) -> dict:
    predict, classifier = models.require("predict", "classifier", what="the Table 5 pair study")
    codebook, decode = models.codebook, models.decode
    rows = np.arange(len(base))
    iem_probs = jax.jit(lambda e: jax.nn.softmax(predict(e), -1))

    def measure(grids):
        """P(orig), P(target) from the IEM and the classifier, one pass each over the grids."""
        e = np.asarray(codebook)[grids]
        p_iem = np.concatenate([np.asarray(iem_probs(e[j : j + 1])) for j in range(len(grids))])
        p_judge = np.asarray(classifier(np.asarray(decode(grids))))
        return {
            "iem_orig": p_iem[rows, sources],
            "iem_target": p_iem[rows, targets],
            "judge_orig": p_judge[rows, sources],
            "judge_target": p_judge[rows, targets],
        }, p_judge.argmax(-1) == targets

    before, _ = measure(base)
    key = jax.random.PRNGKey(seed)
    select = lambda c: selection.select_tokens(
        predict, codebook, base, mask, targets, sources, key, c, image_ids=image_ids
    )
    runs = {
        "token_selection": select(dataclasses.replace(cfg, init="random")),
        "token_selection_from_image": select(dataclasses.replace(cfg, init="image")),
        "embedding_optimisation": selection.optimize_embedding(
            predict, codebook, base, mask, targets, sources, dataclasses.replace(cfg, init="image")
        ),
    }
    edits = {"random_tokens/start": runs["token_selection"].edited(base, "start")}
    for name, res in runs.items():
        for which in ("final", "best"):
            edits[f"{name}/{which}"] = res.edited(base, which)
    for name, edit in editors.items():
        edits[f"{name}/final"] = np.asarray(edit(base, sources, targets, mask))
    table = {}
    for row_name, grids in edits.items():
        after, top1 = measure(grids)
        row = {f"delta_{k}": float(np.mean(after[k] - before[k])) for k in after}
        changed = float(np.mean((np.asarray(grids) != base).reshape(len(base), -1).sum(1)))
        table[row_name] = row | {
            "judge_target_top1": float(np.mean(top1)),
            "tokens_changed": changed,
        }
    return {"before": {k: float(np.mean(v)) for k, v in before.items()}, "table": table}


def pair_study(
    models: Models,
    base: np.ndarray,
    sources: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    cfg: selection.SelectionConfig,
    seed: int = 0,
    image_ids: np.ndarray | None = None,
    editors: Mapping[str, Editor] | None = None,
    batch: int | None = None,
) -> dict:
    """Table 5: ΔP_orig and ΔP_target (mean over images) for token selection (from random tokens,
    the authors' start, and from the image's own), the embedding baseline and the random-token
    control, from the IEM (softmax of the bundle's `predict`) and from its `classifier` on
    decoded images, at the final step and at the best logged step (by IEM f_target).

    base (B, m, m) token grids with sources (B,) and targets (B,) class ids; mask (m, m) the
    region that may change. `image_ids` (B,): global ids that seed each image's init and Gumbel
    noise (default 0..B−1), so results do not depend on how images are batched; `batch` images
    are optimised at a time (all at once when None) and the means merged over batches.
    `editors` add rows for other editing methods, each (base, sources, targets, mask) → edited
    grids (for example MaskGIT's own re-mask and re-decode, `MaskGITVQGM.edit_tokens`). Every
    row also reports how many tokens an image had changed and ΔP_target (judge) per changed
    token (a ratio of the two means), so methods that change different numbers of tokens
    compare fairly."""
    models.require("predict", "classifier", what="the Table 5 pair study")  # before any work
    base, sources, targets = np.asarray(base), np.asarray(sources), np.asarray(targets)
    ids = np.arange(len(base)) if image_ids is None else np.asarray(image_ids)
    step = batch or max(len(base), 1)
    parts, weights = [], []
    for i in range(0, len(base), step):
        sl = slice(i, i + step)
        parts.append(
            _study_batch(
                models, base[sl], sources[sl], targets[sl], mask, cfg, seed, ids[sl], editors or {}
            )
        )
        weights.append(len(base[sl]))
    w = np.asarray(weights, np.float64)

    def mean(values):  # over images: batches weighted by their size (one batch: as it is)
        return float(values[0]) if len(values) == 1 else float(np.dot(w, values) / w.sum())

    table = {}
    for row, cols in parts[0]["table"].items():
        merged = {k: mean([p["table"][row][k] for p in parts]) for k in cols}
        changed = merged["tokens_changed"]
        per_token = merged["delta_judge_target"] / changed if changed else float("nan")
        table[row] = merged | {"delta_judge_target_per_token": per_token}
    return {
        "before": {k: mean([p["before"][k] for p in parts]) for k in parts[0]["before"]},
        "table": table,
        "n_images": int(len(base)),
        "region_tokens": int(mask.sum()),
    }


def pairs_from(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Name pairs → index pairs, in both directions (each concept optimised toward its partner)."""
    out = []
    for a, b in pairs:
        ia, ib = list(names).index(a), list(names).index(b)
        out += [(ia, ib), (ib, ia)]
    return out


# ---------------------------------------------------------------------------------------------
# The experiments: a codebook-level edit, and the Table 5 pair study, each writing its files
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EditConfig:
    """A codebook-level edit: the optimisation (`selection`), the region ('r0:r1,c0:c1',
    'center', 'full'; None: the start's default) and the seed of the init and Gumbel noise."""

    selection: selection.SelectionConfig = selection.SelectionConfig()
    region: str | None = None
    seed: int = 0


def start_from_image(models: Models, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(grids (1, m, m), sources [-1], 'center') of an image (1, H, W, 3) in [-1, 1]."""
    (encode,) = models.require("encode", what="starting from an image")
    return np.asarray(encode(pixels), np.int32), np.array([-1]), "center"


def start_from_dataset(
    models: Models, tokens: np.ndarray, labels: np.ndarray, index: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(grids (1, m, m), sources [label], 'center') of grid `index` of a token dataset."""
    if not 0 <= index < len(tokens):
        raise ValueError(f"--from-index {index} is outside the dataset's 0..{len(tokens) - 1}")
    if labels[index] >= len(models.class_names):
        raise ValueError(
            f"--from-index {index} has label {labels[index]}, which the IEM's "
            f"{len(models.class_names)} classes do not include"
        )
    grids = np.asarray(tokens[index : index + 1], np.int32)
    models.embed(grids)  # ids checked against the codebook
    return grids, np.asarray(labels[index : index + 1]), "center"


def start_from_concept(
    models: Models, concept: int, n_images: int, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """(grids (n, m, m), sources, 'center') generated for `concept`."""
    (sample,) = models.require("sample", what="starting from generated images")
    ids = np.full(n_images, concept)
    return np.asarray(sample(ids, seed)), ids, "center"


def start_from_codebook(models: Models) -> tuple[np.ndarray, np.ndarray, str]:
    """(one zero grid, sources [-1], 'full'): the whole grid from random logits, a pure
    codebook-level explanation."""
    if models.grid_size is None:
        raise ValueError("a start from the codebook alone needs the bundle's grid_size")
    m = models.grid_size
    return np.zeros((1, m, m), np.int32), np.array([-1]), "full"


def edit(
    models: Models,
    target: int,
    start: tuple[np.ndarray, np.ndarray, str],
    cfg: EditConfig,
    out: str | os.PathLike,
) -> dict:
    """Searches the codebook for the tokens that make the IEM see class `target` inside the
    region of each start grid (`start_from_*`), then writes OUT/tokens.json (T_codebook per
    image, final and best step), OUT/progression.png (image 0's decoded edit at every logged step,
    the paper's Figure 5: step labels, the region outlined, the IEM's P(target) per frame),
    OUT/progression.gif and OUT/table.md (f_orig / f_target before and after). Returns tokens.json's
    content. Nothing is written until everything is computed."""
    (predict,) = models.require("predict", what="a codebook-level edit")
    base, sources, default_region = start
    mask = selection.region_mask(base.shape[1], cfg.region or default_region)
    src = np.where(sources < 0, target, sources)  # no source concept: track the target twice
    res = selection.select_tokens(
        predict,
        models.codebook,
        base,
        mask,
        target,
        src,
        jax.random.PRNGKey(cfg.seed),
        cfg.selection,
    )
    grids = progression_grids(base, res, 0)
    frames = np.asarray(models.decode(grids))
    names = models.class_names
    every = cfg.selection.log_every
    labels = [
        "start" if sources[0] < 0 else f"start: {names[sources[0]]}",
        *(f"step {every * (j + 1)}" for j in range(len(frames) - 1)),
    ]
    shown = png_frames(len(frames))
    strip = plots.frames_figure(
        frames[shown],
        [labels[j] for j in shown],
        f"Token selection toward {names[target]}: image 0, logged every {every} steps",
        region=mask,
        target_probs=target_probability(models, grids[shown], target),
        target=names[target],
    )
    big = [
        Image.fromarray(f).resize((256, 256), Image.Resampling.NEAREST) for f in to_uint8(frames)
    ]
    info = {
        "target": names[target],
        "region_positions": res.positions.tolist(),
        "images": [
            {
                "source": names[s] if s >= 0 else None,
                "tokens_final": res.tokens[i].tolist(),
                "tokens_best": res.best_tokens[i].tolist(),
                "f_target": {
                    "before": float(res.start_f_target[i]),
                    "final": float(res.f_target[i, -1]),
                    "best": float(res.f_target[i].max()),
                },
                "f_original": {
                    "before": float(res.start_f_original[i]),
                    "final": float(res.f_original[i, -1]),
                },
            }
            for i, s in enumerate(sources)
        ],
        "config": {
            "steps": cfg.selection.steps,
            "lr": cfg.selection.learning_rate,
            "objective": cfg.selection.objective,
        },
    }
    lines = [
        "| image | f_orig before | f_orig after | f_target before | f_target after |",
        "|---|---|---|---|---|",
    ]
    for i, im in enumerate(info["images"]):
        fo, ft = im["f_original"], im["f_target"]
        lines.append(
            f"| {i} | {fo['before']:.3f} | {fo['final']:.3f} | {ft['before']:.3f} | "
            f"{ft['final']:.3f} |"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots.save_png(strip, out / "progression.png")
    big[0].save(out / "progression.gif", save_all=True, append_images=big[1:], duration=400, loop=0)
    (out / "tokens.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    return info


def apply_tokens(
    models: Models, pixels: np.ndarray, positions: np.ndarray, tokens: np.ndarray
) -> np.ndarray:
    """An edit applied to an image (1, H, W, 3): its grid with `tokens` written at the flat
    `positions` (row-major), decoded beside the unedited grid: pixels (2, H, W, 3)."""
    return np.asarray(models.decode(edited_grids(models, pixels, positions, tokens)))


def edited_grids(
    models: Models, pixels: np.ndarray, positions: np.ndarray, tokens: np.ndarray
) -> np.ndarray:
    """The image's (1, H, W, 3) token grid and the same grid with `tokens` written at the flat
    `positions` (row-major): (2, m, m)."""
    (encode,) = models.require("encode", what="applying tokens to an image")
    grid = np.array(encode(pixels), np.int32)
    m = grid.shape[-1]
    flat = grid.reshape(len(grid), -1).copy()
    if positions.size and positions.max() >= flat.shape[1]:
        raise ValueError(f"tokens.json positions reach {positions.max()}, beyond this VQGAN's grid")
    k = len(models.codebook)
    if tokens.size and tokens.max() >= k:
        raise ValueError(
            f"tokens.json holds token id {tokens.max()}, outside this VQGAN's codebook [0, {k})"
        )
    flat[0, positions] = tokens
    return np.concatenate([grid, flat.reshape(len(grid), m, m)])


@dataclasses.dataclass(frozen=True)
class Table5Config:
    """The Table 5 pair study: the optimisation (`selection`), the images per directed pair,
    the region, the seed and the images optimised at a time (`batch`; None: all at once)."""

    selection: selection.SelectionConfig = selection.SelectionConfig()
    images_per_pair: int = 4
    region: str = "center"
    seed: int = 0
    batch: int | None = None

    def __post_init__(self):
        if self.images_per_pair < 1:
            raise ValueError(f"images_per_pair={self.images_per_pair}; expected at least 1")


def pair_bases(
    models: Models,
    pairs: Sequence[tuple[int, int]],
    per_pair: int,
    seed: int,
    dataset: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(base grids, sources, targets) for directed (source, target) class pairs: the first
    `per_pair` grids of each source class in `dataset` (tokens, labels), or `per_pair` grids the
    bundle's generator makes for it (seed `seed`) when no dataset is given."""
    if dataset is None:
        (sample,) = models.require("sample", what="the pair study without a dataset")
        src = np.repeat([s for s, _ in pairs], per_pair)
        tgt = np.repeat([t for _, t in pairs], per_pair)
        return np.asarray(sample(src, seed)), src, tgt
    tokens, labels = dataset
    grids: list[np.ndarray] = []
    src_ids: list[int] = []
    tgt_ids: list[int] = []
    for s_id, t_id in pairs:
        rows = np.flatnonzero(labels == s_id)[:per_pair]
        if not len(rows):
            raise ValueError(
                f"the dataset has no images of {models.class_names[s_id]!r} (class {s_id}) for "
                f"the pair {s_id}→{t_id}; generate that class first"
            )
        grids.append(np.asarray(tokens[rows], np.int32))
        src_ids += [s_id] * len(rows)
        tgt_ids += [t_id] * len(rows)
    base = np.concatenate(grids)
    models.embed(base)  # ids checked against the codebook
    return base, np.asarray(src_ids), np.asarray(tgt_ids)


def table5_markdown(result: dict, notes: Sequence[str] = ()) -> str:
    """table5.md: one row per method, then the notes."""
    rows = [
        "| method | tokens changed | ΔP_orig (judge) | ΔP_target (judge) | ΔP_target per token "
        "| judge top-1 = target | ΔP_orig (IEM) | ΔP_target (IEM) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, v in result["table"].items():
        rows.append(
            f"| {k} | {v['tokens_changed']:.1f} | {v['delta_judge_orig']:+.3f} | "
            f"{v['delta_judge_target']:+.3f} | {v['delta_judge_target_per_token']:+.4f} | "
            f"{v['judge_target_top1']:.1%} | {v['delta_iem_orig']:+.3f} | "
            f"{v['delta_iem_target']:+.3f} |"
        )
    rows += [
        "",
        "Like for like: token_selection_from_image vs embedding_optimisation (both start "
        "from the image's own tokens). token_selection starts from random tokens, as the "
        "authors; random_tokens/start is that start without optimisation.",
    ]
    for note in notes:
        rows += ["", note]
    return "\n".join(rows) + "\n"


def table5(
    models: Models,
    pairs: Sequence[tuple[int, int]],
    cfg: Table5Config,
    out: str | os.PathLike,
    dataset: tuple[np.ndarray, np.ndarray] | None = None,
    editors: Mapping[str, Editor] | None = None,
    notes: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The Table 5 experiment for directed (source, target) class pairs (`pair_bases`, then
    `pair_study`): writes OUT/table5.json (with `extra` merged in) and OUT/table5.md, and
    returns the result. Image ids are global (0..B−1 in pair order), so `cfg.batch` does not
    change the result. OUT may be a gs:// URL."""
    base, src, tgt = pair_bases(models, pairs, cfg.images_per_pair, cfg.seed, dataset)
    mask = selection.region_mask(base.shape[1], cfg.region)
    result = pair_study(
        models,
        base,
        src,
        tgt,
        mask,
        cfg.selection,
        cfg.seed,
        image_ids=np.arange(len(base)),
        editors=editors,
        batch=cfg.batch,
    )
    result |= dict(extra or {})
    root = paths.of(out)
    atomic_write_json(root / "table5.json", result)
    atomic_write_bytes(root / "table5.md", table5_markdown(result, notes).encode())
    return result


# The command: explain.codebook's flags as one request, checked, then run
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """What `explain.codebook` asks for, a field a flag (its module docstring says what each
    does). `real_models`: the bundle comes from files, not the toy world (Table 5 then reads
    its grids from `dataset` and needs `classifier`). `edit_family`: a registered family whose
    own region re-sampling becomes a Table 5 row, loaded from `edit_args`, with the sampler
    settings `edit_settings` over its defaults; no family of it is named here."""

    concept: str | None = None
    from_image: str | None = None
    from_concept: str | None = None
    from_index: int | None = None
    dataset: str | None = None
    region: str | None = None
    steps: int = 500
    log_every: int = 50
    learning_rate: float = selection.SelectionConfig().learning_rate
    n_images: int = 4
    seed: int = 0
    table5: bool = False
    pairs: str = ""
    real_models: bool = False
    iem_checkpoint: str | None = None
    classifier: str | None = None
    classifier_size: int = 224
    edit_family: str | None = None
    edit_args: families.LoadArgs = families.LoadArgs()
    edit_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def selection(self) -> selection.SelectionConfig:
        return selection.SelectionConfig(
            steps=self.steps, learning_rate=self.learning_rate, log_every=self.log_every
        )


def editing_model(
    table5: bool,
    family: str | None,
    checkpoint: str | None,
    vq_checkpoint: str | None,
    maskgit: str | None,
    maskgit_iter: int,
    given: Sequence[str],
) -> tuple[str | None, families.LoadArgs, dict[str, Any]]:
    """explain.codebook's editing-model flags (`given`: those on the command line) → (family,
    its LoadArgs, its sampler settings), refusing in one line every combination that would be
    ignored: editing flags without --table5, a checkpoint without a family, --maskgit beside
    --edit-checkpoint, --maskgit-iter for another family or below 1."""
    args = families.LoadArgs(checkpoint, vq_checkpoint)
    if given and not table5:
        raise ValueError(f"{', '.join(given)} only apply with --table5 (an editing model's row)")
    if maskgit:
        if family not in (None, "maskgit") or checkpoint:
            raise ValueError("give --maskgit DIR or --edit-model maskgit --edit-checkpoint DIR")
        family, args = "maskgit", families.LoadArgs(maskgit)
    if family is None and (checkpoint or vq_checkpoint):
        raise ValueError("--edit-checkpoint/--edit-vq-checkpoint need --edit-model FAMILY")
    if family is not None and not args.checkpoint:
        raise ValueError(f"--edit-model {family} needs --edit-checkpoint (its model file/folder)")
    if "--maskgit-iter" in given and family != "maskgit":
        raise ValueError(f"--maskgit-iter applies to MaskGIT's editing; --edit-model is {family}")
    if maskgit_iter < 1:
        raise ValueError(f"--maskgit-iter {maskgit_iter}; expected at least 1")
    return family, args, {"num_iter": maskgit_iter} if family == "maskgit" else {}


def check_request(req: Request, out: Path, command: str) -> None:
    """Every field and input file, and the output folder, before a model is loaded or fetched:
    one ValueError / FileNotFoundError naming the flag."""
    for flag, value in (
        ("--steps", req.steps),
        ("--log-every", req.log_every),
        ("--n-images", req.n_images),
        ("--classifier-size", req.classifier_size),
    ):
        if value < 1:
            raise ValueError(f"{flag} {value}; expected at least 1")
    if not req.learning_rate > 0:
        raise ValueError(f"--lr {req.learning_rate}; expected a positive learning rate")
    req.selection  # noqa: B018  (--steps must be a multiple of --log-every)
    if req.edit_family is not None:
        families.edit_family(req.edit_family, req.edit_settings)
    if not req.table5 and not req.concept:
        raise ValueError("name the target concept with --concept NAME")
    starts = [
        f
        for f, v in (
            ("--from-image", req.from_image),
            ("--from-concept", req.from_concept),
            ("--from-index", req.from_index),
        )
        if v is not None
    ]
    if len(starts) > 1:
        raise ValueError(f"{' and '.join(starts)} both name a start; pass one of them")
    for flag, path, is_file in (
        ("--from-image", req.from_image, True),
        ("--dataset", req.dataset, False),
        ("--iem-checkpoint", req.iem_checkpoint, False),
        ("--edit-checkpoint (or --maskgit)", req.edit_args.checkpoint, False),
        ("--edit-vq-checkpoint", req.edit_args.vq_checkpoint, True),
    ):
        if path and not (Path(path).is_file() if is_file else Path(path).exists()):
            raise FileNotFoundError(f"{flag} not found: {path}")
    if req.from_index is not None and not req.dataset:
        raise ValueError("--from-index needs --dataset DIR (a token dataset)")
    folders.check_output(out, command)
    if req.table5 and req.real_models and (not req.dataset or not req.classifier):
        raise ValueError(
            "--table5 with real models needs --dataset DIR (test token grids) and --classifier "
            "(a torchvision .pth, a classifier folder or random:ARCH)"
        )


def run_request(models: Models, req: Request, out: Path, command: str) -> dict:
    """Runs a checked request on `models` (`check_request`): the edit (`edit`, returning
    tokens.json's content) or, with `req.table5`, the pair study (`table5`, returning
    table5.json's content; table5.md beside it). The output folder is claimed only once the
    request has resolved its names, start and region, and marked finished at the end."""
    if req.table5:
        return _table5_request(models, req, out, command)
    target = models.class_id(str(req.concept))
    start = _start(models, req)
    selection.region_mask(start[0].shape[1], req.region or start[2])  # before any folder
    cfg = EditConfig(req.selection, req.region, req.seed)
    folders.claim_output(out, command)
    info = edit(models, target, start, cfg, out)
    folders.finish_output(out, command)
    return info


def _start(models: Models, req: Request) -> tuple[np.ndarray, np.ndarray, str]:
    """The start grids, their source concepts and the default region."""
    if req.from_image:
        return start_from_image(models, read_image(req.from_image, models.image_size or 256))
    if req.from_index is not None:
        if not req.dataset:
            raise ValueError("--from-index needs --dataset DIR (a token dataset)")
        tokens, labels, _ = shards.TokenDataset.open(req.dataset).arrays()
        return start_from_dataset(models, tokens, labels, req.from_index)
    if req.from_concept:
        if models.sample is None:
            raise ValueError(
                "--from-concept generates images and needs the toy world; use "
                "--from-image or --from-index with real models"
            )
        src = models.class_id(req.from_concept)
        return start_from_concept(models, src, req.n_images, req.seed)
    return start_from_codebook(models)


def _table5_request(models: Models, req: Request, out: Path, command: str) -> dict:
    pairs = []
    for p in req.pairs.split(","):
        parts = [x.strip() for x in p.split(":")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"--pairs entry {p!r}; expected A:B")
        pairs.append(tuple(parts))
    ids = [(models.class_id(a), models.class_id(b)) for a, b in pairs]
    directed = [x for a, b in ids for x in ((a, b), (b, a))]  # each concept toward its partner
    dataset = None
    if req.real_models:
        tokens, labels, _ = shards.TokenDataset.open(str(req.dataset)).arrays()
        dataset = (tokens, labels)
    editors, notes = {}, []
    if req.edit_family is not None:
        key = jax.random.PRNGKey(req.seed + 1)
        row, editor, note = families.family_editor(
            req.edit_family, req.edit_args, models.codebook, key, req.edit_settings
        )
        editors[row] = editor
        notes.append(note)
    cfg = Table5Config(req.selection, req.n_images, req.region or "center", req.seed)
    if models.grid_size:  # a bad --region before any folder is made
        selection.region_mask(models.grid_size, cfg.region)
    folders.claim_output(out, command)
    extra = {
        "pairs": [f"{a}<->{b}" for a, b in pairs],
        "classifier": req.classifier if req.real_models else "toy pixel judge",
    }
    result = table5(models, directed, cfg, out, dataset, editors, notes, extra)
    folders.finish_output(out, command)
    return result
