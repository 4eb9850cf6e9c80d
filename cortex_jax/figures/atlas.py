"""The token atlas: one self-contained static site of every explanation a workdir holds.

`build_atlas` reads what explain.sample, explain.codebook (an edit, and --table5) and
explain.bias wrote, and writes a folder with `index.html` that opens from file:// with no server,
no network and no CDN: plain HTML, one CSS file, one small script, PNG thumbnails. It holds

- an index of concepts with a search box and each concept's headline numbers (judge accuracy
  change when masking T_concept vs the frequency baseline, tokens masked, ground-truth precision
  where the world has masks), the image-level masking curve with its 95 % band and the
  concept-level table (the paper's Figure 4 and Table 2);
- a page per concept: test images with their top-n TIS positions boxed and a toggle to a TIS
  heatmap; its T_concept tokens ranked, each as a **token portrait** (the image patches where
  that id has the highest TIS, and the id decoded alone when a decoder is given), its share of
  the concept's images against all images, and links to the other concepts whose sets hold it
  (test images are decoded from their tokens with the model's VQGAN);
- the codebook-level edit (frames and animation) and the Table 5 rows;
- every bias audit: the verdict, the per-image count histograms, and neutral images with the
  over-represented concept's tokens boxed;
- a methods page (methods.html) from what explain.compare wrote: the table of every attribution
  method against every faithfulness, sanity and ground-truth metric (value and 95 % interval)
  and its deletion/insertion curves.

Concept pages are separate files and images load lazily, so 1000 concepts stay browsable; the
site's size is about 30 KB a concept plus the plots. Every folder it reads or writes may be a
gs:// URL (`core.paths`); each file is written whole (`shards.atomic_write_bytes`).
"""

from __future__ import annotations

import html
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from etils import epath
from PIL import Image

from cortex_jax.core import paths
from cortex_jax.figures import plots
from cortex_jax.io import folders, shards
from cortex_jax.io.images import grid_image, to_uint8
from cortex_jax.io.reports import EvalArrays, SampleLevelReport

Decode = Callable[[np.ndarray], np.ndarray]  # token grids (B, m, m) → pixels in [−1, 1]
THUMBNAIL = 128  # pixels a side, at most, of the images on concept pages

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }
h1, h2, h3 { font-weight: 600; } a { color: #0a58ca; }
table { border-collapse: collapse; margin: .5em 0 1.5em; display: block; max-width: 100%;
        overflow-x: auto; }
img { max-width: 100%; height: auto; }
#concepts th { cursor: pointer; } #concepts th[data-dir="asc"]::after { content: " ▲"; }
#concepts th[data-dir="desc"]::after { content: " ▼"; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 6px; width: 230px; }
.card img, .shot img { image-rendering: pixelated; }
.shot img.heat { display: none; }
body.heatmap .shot img.heat { display: inline; } body.heatmap .shot img.boxes { display: none; }
input#search { font-size: 15px; padding: .3em .5em; width: 22em; }
.small { color: #666; font-size: 12px; }
figure { margin: 0 0 1em; } figure img { max-width: 520px; }
"""

_JS = r"""
function filterConcepts(q) {
  // every word of the query, in any order: "star red" finds red-star
  var words = q.toLowerCase().split(/[\s,]+/).filter(function (w) { return w; });
  document.querySelectorAll('#concepts tbody tr').forEach(function (tr) {
    var name = tr.dataset.name;
    var hit = words.every(function (w) { return name.indexOf(w) >= 0; });
    tr.style.display = hit ? '' : 'none';
  });
}
function sortBy(th) {
  // a click on a column's header sorts by it (numbers as numbers, '—' last); again: reversed
  var row = th.parentNode, col = Array.prototype.indexOf.call(row.children, th);
  var body = th.closest('table').tBodies[0];
  var dir = th.dataset.dir === 'asc' ? 'desc' : 'asc';
  row.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
  th.dataset.dir = dir;
  var key = function (tr) {
    var t = tr.children[col].textContent.trim(), x = parseFloat(t.replace(/[^0-9.+-]/g, ''));
    return isNaN(x) || col === 0 ? t.toLowerCase() : x;  // the first column: names
  };
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = key(a), y = key(b), s = dir === 'asc' ? 1 : -1;
    if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * s;
  });
  rows.forEach(function (tr) { body.appendChild(tr); });
}
function toggleHeatmap() {
  document.body.classList.toggle('heatmap');
  var b = document.getElementById('toggle');
  var on = document.body.classList.contains('heatmap');
  b.textContent = on ? 'show TIS boxes' : 'show TIS heatmap';
}
"""


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "concept"


def _page(title: str, body: str, depth: int = 0) -> str:
    up = "../" * depth
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f'</title><link rel="stylesheet" href="{up}style.css"><script src="{up}atlas.js"></script>'
        f"</head><body>{body}</body></html>\n"
    )


def _write(path: epath.Path, payload: bytes | str) -> None:
    """`payload` (text as UTF-8) at `path`, whole or not at all, its folder made if local."""
    if not paths.is_remote(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    shards.atomic_write_bytes(path, payload.encode() if isinstance(payload, str) else payload)


def _png(path: epath.Path, pixels_u8: np.ndarray, scale: int = 1) -> None:
    img = Image.fromarray(pixels_u8)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    _write(path, buf.getvalue())


HEAT_CMAP = "inferno"


def _heatmap(pixels_u8: np.ndarray, tis: np.ndarray) -> np.ndarray:
    """The image under its TIS map (per image normalised, inferno colours, half transparent)."""
    from matplotlib import colormaps

    t = np.asarray(tis, np.float64)
    t = (t - t.min()) / (np.ptp(t) or 1.0)
    f = pixels_u8.shape[0] // t.shape[0]
    colour = colormaps[HEAT_CMAP](np.kron(t, np.ones((f, f))))[..., :3] * 255
    return (0.45 * pixels_u8 + 0.55 * colour).astype(np.uint8)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], attrs: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table {attrs}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pct(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def _share(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _copy(src: epath.Path, dst: epath.Path) -> None:
    _write(dst, src.read_bytes())


def _copy_figure(src_stem: epath.Path, dst: epath.Path) -> str | None:
    """Copies SRC.png/.svg/.csv into dst's folder; returns the PNG's name, None if absent."""
    if not src_stem.with_suffix(".png").is_file():
        return None
    for ext in (".png", ".svg", ".csv"):
        if src_stem.with_suffix(ext).is_file():
            _copy(src_stem.with_suffix(ext), dst.with_suffix(ext))
    return dst.with_suffix(".png").name


def _figure_html(
    name: str, caption: str, prefix: str = "", exts: Sequence[str] = (".svg", ".csv")
) -> str:
    stem = name[:-4]
    links = " · ".join(f'<a href="{prefix}{stem}{e}">{e[1:]}</a>' for e in exts)
    alt = html.escape(caption)
    return (
        f'<figure><img src="{prefix}{name}" alt="{alt}" loading="lazy">'
        f'<figcaption class="small">{alt}{f" ({links})" if links else ""}</figcaption></figure>'
    )


def _concept_pages(
    out: epath.Path,
    report: SampleLevelReport,
    arrays: EvalArrays,
    decode: Decode,
    n_show: int,
    n_patches: int,
    n_portraits: int,
) -> dict[int, str]:
    """Writes concepts/<slug>.html for every concept; returns {concept id: relative link}."""
    names, concepts = report.concept_names, report.concepts
    toks, labels, tis = arrays.tokens, arrays.labels, arrays.tis
    shown = np.concatenate([np.flatnonzero(labels == c)[:n_show] for c in concepts]).astype(int)
    dec = np.concatenate(
        [
            to_uint8(decode(toks[shown[i : i + 64]].astype(np.int64)))
            for i in range(0, len(shown), 64)
        ]
    )
    px = dict(zip(shown.tolist(), dec, strict=True))  # only the shown images are decoded
    b, m = toks.shape[0], toks.shape[1]
    f = dec.shape[1] // m
    scale = max(1, 96 // dec.shape[1])  # small images are enlarged …
    thumb = max(m, min(dec.shape[1], THUMBNAIL) // m * m)  # … large ones shown as thumbnails
    n = int(report.config["n"])
    holders: dict[int, list[int]] = {}  # token id → concepts whose T_concept holds it
    for c, row in concepts.items():
        for t in row.cortex:
            holders.setdefault(int(t), []).append(c)
    holding = _ImagesHolding(toks, labels)
    links = {c: f"concepts/{_slug(names[c])}.html" for c in concepts}
    plots.save_png(  # the heat maps' colour scale, shown beside them on every concept page
        plots.colour_scale_figure(
            HEAT_CMAP, "the image's lowest TIS", "its highest TIS", "TIS heat map colours"
        ),
        out / "img" / "tis_scale.png",
    )
    top = np.argsort(-tis[shown].reshape(len(shown), -1), axis=1, kind="stable")[:, :n]
    order = dict(zip(shown.tolist(), top, strict=True))  # the shown images' top-n positions
    decoded: dict[int, str] = {}
    for c, row in concepts.items():
        slug = _slug(names[c])
        img_dir = out / "img" / slug
        shots = []
        for i in np.flatnonzero(labels == c)[:n_show]:
            boxes = np.zeros(m * m, bool)
            boxes[order[int(i)]] = True
            small = _resize(px[int(i)], thumb)
            framed = np.asarray(
                grid_image(
                    small[None].astype(np.float32) / 127.5 - 1,
                    1,
                    boxes=boxes.reshape(1, m, m),
                    pad=0,
                )
            )
            _png(img_dir / f"test{i}.png", framed, scale)
            _png(img_dir / f"test{i}_heat.png", _heatmap(small, tis[i]), scale)
            shots.append(
                f'<span class="shot"><img class="boxes" src="../img/{slug}/test{i}.png" '
                f'alt="test image {i} with its top-{n} TIS positions boxed" loading="lazy">'
                f'<img class="heat" src="../img/{slug}/test{i}_heat.png" alt="TIS heatmap of '
                f'test image {i}" loading="lazy"></span>'
            )
        cards = []
        in_concept = int((labels == c).sum())
        for rank, (t, count) in enumerate(zip(row.cortex, row.cortex_counts, strict=True)):
            t = int(t)
            where = np.argwhere(toks[shown] == t)  # (image, row, col) among the decoded images
            where[:, 0] = shown[where[:, 0]]
            patches = []
            if len(where) and rank < n_portraits:
                strength = tis[where[:, 0], where[:, 1], where[:, 2]]
                for j, (i, r, cc) in enumerate(where[np.argsort(-strength)][:n_patches]):
                    r0, c0 = max(0, (r - 1) * f), max(0, (cc - 1) * f)
                    crop = px[int(i)][r0 : (r + 2) * f, c0 : (cc + 2) * f]
                    _png(img_dir / f"token{t}_patch{j}.png", crop, max(1, 48 // crop.shape[0]))
                    patches.append(
                        f'<img src="../img/{slug}/token{t}_patch{j}.png" alt="a patch '
                        f'where token {t} has a high TIS" loading="lazy">'
                    )
            if t not in decoded and rank < n_portraits:
                alone = np.asarray(decode(np.full((1, m, m), t, np.int32)))[0]
                _png(
                    out / "img" / "tokens" / f"{t}.png", _resize(to_uint8(alone), thumb // 2), scale
                )
                decoded[t] = f"../img/tokens/{t}.png"
            alone_img = (
                f'<img src="{decoded[t]}" alt="token {t} decoded alone" loading="lazy">'
                if t in decoded
                else ""
            )
            share_c = holding.count(t, c) / in_concept
            share_all = holding.count(t) / b
            others = [
                f'<a href="{_slug(names[o])}.html">{html.escape(names[o])}</a>'
                for o in holders.get(t, [])
                if o != c
            ]
            cards.append(
                f'<div class="card" id="token{t}"><b>#{rank + 1} token {t}</b> '
                f'<span class="small">in {count} T_image sets</span><br>{"".join(patches)}'
                f'<br>{alone_img}<div class="small">in {_share(share_c)} of '
                f"{html.escape(names[c])}'s test images, {_share(share_all)} of all</div>"
                f'<div class="small">also in T_concept of: {", ".join(others) or "none"}</div>'
                "</div>"
            )
        mc, mf = row.masking_cortex, row.masking_frequency
        gt = row.ground_truth_precision or {}
        numbers = _table(
            [
                "tokens masked",
                "set",
                "per image",
                "judge accuracy change (points)",
                "probability change",
                "ground-truth precision",
            ],
            [
                [
                    "T_concept",
                    "CORTEX",
                    f"{mc['tokens_masked']:.1f}",
                    _pct(mc["accuracy_change"]),
                    f"{mc['probability_change']:+.3f}",
                    _share(gt.get("cortex")),
                ],
                [
                    "frequency",
                    "baseline",
                    f"{mf['tokens_masked']:.1f}",
                    _pct(mf["accuracy_change"]),
                    f"{mf['probability_change']:+.3f}",
                    _share(gt.get("frequency")),
                ],
            ],
        )
        body = (
            f'<p><a href="../index.html">← all concepts</a></p><h1>{html.escape(names[c])}</h1>'
            f'{numbers}<h2>Test images</h2><p><button id="toggle" onclick="toggleHeatmap()">'
            f'show TIS heatmap</button> <span class="small">boxes: the top-{n} TIS positions '
            "(T_image); heatmap: each image's TIS scaled from its own lowest (dark purple) to "
            "its highest (yellow), inferno colours</span> "
            '<img class="scale" src="../img/tis_scale.png" alt="colour scale of the TIS heat '
            "maps: dark purple is the image's lowest TIS, yellow its highest\"></p>"
            f'<div class="grid" id="shots">{"".join(shots)}</div>'
            f'<h2>T_concept tokens</h2><div class="grid" id="tokens">{"".join(cards)}</div>'
        )
        _write(out / links[c], _page(names[c], body, depth=1))
    return links


class _ImagesHolding:
    """How many images (of the report's test images, or of one concept's) hold token id t, from
    sorted (concept, id) codes counted in row chunks: memory a few bytes per distinct pair, not
    an (images, K) table."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray, chunk: int = 4096):
        b = len(tokens)
        self.k = int(tokens.max()) + 1 if b else 1
        codes, counts = [], []
        for i in range(0, b, chunk):
            ids = np.sort(tokens[i : i + chunk].reshape(min(chunk, b - i), -1).astype(np.int64), 1)
            first = np.ones(ids.shape, bool)  # each id once per image
            first[:, 1:] = ids[:, 1:] != ids[:, :-1]
            lab = np.broadcast_to(np.asarray(labels[i : i + chunk], np.int64)[:, None], ids.shape)
            u, n = np.unique(lab[first] * self.k + ids[first], return_counts=True)
            codes.append(u)
            counts.append(n)
        all_codes = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        self.codes, where = np.unique(all_codes, return_inverse=True)
        self.counts = np.bincount(where, np.concatenate(counts) if counts else None).astype(int)
        self.per_id = np.bincount(self.codes % self.k, self.counts, self.k).astype(int)

    def count(self, t: int, concept: int | None = None) -> int:
        """Images holding id `t` (of `concept` only, when given)."""
        if not 0 <= t < self.k:
            return 0
        if concept is None:
            return int(self.per_id[t])
        code = concept * self.k + t
        i = int(np.searchsorted(self.codes, code))
        return int(self.counts[i]) if i < len(self.codes) and self.codes[i] == code else 0


def _resize(pixels_u8: np.ndarray, side: int) -> np.ndarray:
    if pixels_u8.shape[0] <= side:
        return pixels_u8
    return np.asarray(Image.fromarray(pixels_u8).resize((side, side), Image.Resampling.BILINEAR))


def _sample_section(
    out: epath.Path,
    report: SampleLevelReport,
    decode: Decode,
    n_show: int,
    n_patches: int,
    n_portraits: int,
) -> tuple[str, int]:
    assert report.arrays is not None  # read with its arrays
    links = _concept_pages(out, report, report.arrays, decode, n_show, n_patches, n_portraits)
    names = report.concept_names
    rows = []
    for c, row in sorted(report.concepts.items()):
        mc, mf = row.masking_cortex, row.masking_frequency
        gt = row.ground_truth_precision or {}
        name = html.escape(names[c])
        rows.append(
            [
                f'<a href="{links[c]}">{name}</a>',
                _pct(mc["accuracy_change"]),
                _pct(mf["accuracy_change"]),
                f"{mc['tokens_masked']:.1f}",
                f"{mf['tokens_masked']:.1f}",
                _share(gt.get("cortex")),
                _share(gt.get("frequency")),
            ]
        )
    table = _table(
        [
            "concept",
            "judge accuracy change (points), CORTEX",
            "judge accuracy change (points), frequency baseline",
            "tokens masked, CORTEX",
            "tokens masked, frequency baseline",
            "ground-truth precision, CORTEX",
            "ground-truth precision, frequency baseline",
        ],
        rows,
        'id="concepts"',
    ).replace("<th>", '<th onclick="sortBy(this)" title="sort by this column">')
    table = re.sub(  # each row carries its concept's name for the search box
        r"<tr><td><a href=\"[^\"]+\">([^<]+)</a>",
        lambda mt: f'<tr data-name="{mt.group(1).lower()}">' + mt.group(0)[4:],
        table,
    )
    s = report.summary
    summary = _table(
        [
            "token set (Table 2 shape)",
            "tokens masked per image",
            "judge accuracy change (points)",
            "probability change",
        ],
        [
            [
                "CORTEX T_concept",
                f"{s['cortex_tokens_masked']:.1f}",
                _pct(s["cortex_accuracy_change"]),
                f"{s['cortex_probability_change']:+.3f}",
            ],
            [
                "frequency baseline",
                f"{s['frequency_tokens_masked']:.1f}",
                _pct(s["frequency_accuracy_change"]),
                f"{s['frequency_probability_change']:+.3f}",
            ],
        ],
    )
    lc = report.image_level_curve
    curve = plots.masking_curve(
        out / "figures" / "image_level_curve",
        list(lc.n),
        {
            "top-n TIS positions": (list(lc.tis), list(lc.tis_se)),
            "n random positions": (list(lc.random), list(lc.random_se)),
        },
        "Image level (Figure 4)",
        ylabel="classifier probability of the concept",
    )
    fig = _figure_html(
        f"figures/{curve.name}",
        "Image level: probability of the concept after "
        "masking the top-n TIS positions vs n random ones, 95 % bands",
    )
    body = (
        '<h2>Concepts</h2><p><input id="search" type="search" '
        'placeholder="filter: words in any order…" '
        'oninput="filterConcepts(this.value)"></p>'
        + table
        + "<h2>Concept level (Table 2)</h2>"
        + summary
        + "<h2>Image level (Figure 4)</h2>"
        + fig
    )
    return body, len(links)


def _codebook_section(
    out: epath.Path, edit_dir: epath.Path | None, table5_dir: epath.Path | None
) -> str:
    parts = []
    if edit_dir is not None and (edit_dir / "tokens.json").is_file():
        info = json.loads((edit_dir / "tokens.json").read_text())
        files = []
        for name in ("progression.png", "progression.gif"):
            if (edit_dir / name).is_file():
                _copy(edit_dir / name, out / "codebook" / name)
                alt = f"edit toward {html.escape(info['target'])} ({name[-3:]})"
                files.append(f'<img src="codebook/{name}" alt="{alt}" loading="lazy">')
        im = info["images"][0]
        parts.append(
            f"<h3>Edit toward {html.escape(info['target'])} (Figure 5)</h3>"
            f'<p class="small">f_target {im["f_target"]["before"]:.3f} → '
            f"{im['f_target']['final']:.3f}; frames every logged step, then the animation</p>"
            + "<br>".join(files)
        )
    if table5_dir is not None and (table5_dir / "table5.json").is_file():
        t5 = json.loads((table5_dir / "table5.json").read_text())
        rows = [
            [
                html.escape(k),
                f"{v['delta_judge_orig']:+.3f}",
                f"{v['delta_judge_target']:+.3f}",
                f"{100 * v['judge_target_top1']:.1f} %",
                f"{v.get('tokens_changed', float('nan')):.1f}",
                f"{v['delta_iem_orig']:+.3f}",
                f"{v['delta_iem_target']:+.3f}",
            ]
            for k, v in t5["table"].items()
        ]
        parts.append(
            f"<h3>Table 5 ({t5['n_images']} images)</h3>"
            + _table(
                [
                    "method",
                    "ΔP_orig (judge)",
                    "ΔP_target (judge)",
                    "judge says target",
                    "tokens changed",
                    "ΔP_orig (IEM)",
                    "ΔP_target (IEM)",
                ],
                rows,
            )
            + '<p class="small">Like for like: token_selection_from_image vs '
            "embedding_optimisation (same start).</p>"
        )
    return "<h2>Codebook level</h2>" + "".join(parts) if parts else ""


def _bias_section(out: epath.Path, bias_dirs: Sequence[epath.Path]) -> str:
    parts = []
    for d in bias_dirs:
        rep_file = d / "report.json"
        if not rep_file.is_file():
            continue
        r = json.loads(rep_file.read_text())
        slug = _slug(d.name)
        rows = [
            [
                x["n"],
                f"{x['verdict']['share_a']:.3f}",
                f"[{x['verdict']['ci'][0]:.2f}, {x['verdict']['ci'][1]:.2f}]",
                x["verdict"]["lean"],
                f"{x['paper']['cliffs_delta']:+.3f}",
                f"{x['leak']['a_tokens_on_b']:.2f} / {x['leak']['b_tokens_on_a']:.2f}",
            ]
            for x in r["per_n"]
        ]
        figs = []
        for x in r["per_n"]:
            name = _copy_figure(d / f"counts_n{x['n']}", out / "bias" / f"{slug}_counts_n{x['n']}")
            if name:
                figs.append(_figure_html(f"bias/{name}", f"per-image counts, n = {x['n']}"))
        if (d / "neutral_tokens.png").is_file():
            _copy(d / "neutral_tokens.png", out / "bias" / f"{slug}_neutral.png")
            figs.append(
                f'<figure><img src="bias/{slug}_neutral.png" alt="neutral images with '
                'the over-represented concept\'s tokens boxed" loading="lazy">'
                '<figcaption class="small">neutral images, the over-represented '
                "concept's tokens boxed</figcaption></figure>"
            )
        a, b = html.escape(r["concept_a"]), html.escape(r["concept_b"])
        parts.append(
            f"<h3>{html.escape(r['neutral'])}: {a} (A) vs {b} (B)</h3>"
            + _table(
                ["n", f"verdict: share {a}", "95 % CI", "lean", "paper's Cliff's δ", "leak A / B"],
                rows,
            )
            + '<div class="grid">'
            + "".join(figs)
            + "</div>"
        )
    return "<h2>Bias audits</h2>" + "".join(parts) if parts else ""


def _cell(v: dict[str, Any] | None) -> str:
    """One compare.json metric as `value [lo, hi]`; — when absent or undefined (NaN)."""
    if v is None or not np.isfinite(v["value"]):
        return "—"
    lo, hi = v["ci"]
    return f"{v['value']:.3f} [{lo:.3f}, {hi:.3f}]"


def methods_page(out: str | os.PathLike, compare_dir: str | os.PathLike) -> str:
    """Writes OUT/methods.html (and OUT/methods/, the curves) from explain.compare's folder:
    its compare.json as a metrics × methods table and every curves/*.png with its SVG and CSV.
    Returns the index's section linking it; "" when the folder holds no compare.json."""
    root, src = paths.of(out), paths.of(compare_dir)
    if not (src / "compare.json").is_file():
        return ""
    result = json.loads((src / "compare.json").read_text())
    methods: dict[str, dict[str, Any]] = result["methods"]
    metrics: list[str] = []
    for row in methods.values():
        metrics += [k for k in row if k not in metrics]
    table = _table(
        ["metric", *methods],
        [[html.escape(k), *(_cell(row.get(k)) for row in methods.values())] for k in metrics],
        'id="methods"',
    )
    s = result.get("settings", {})
    known = ("images", "grid_size", "iem", "classifier", "vqgm", "steps", "n_boot", "ci")
    settings = ", ".join(f"{k}: {html.escape(str(s[k]))}" for k in known if k in s)
    figs = []
    for png in sorted((src / "curves").glob("*.png")):
        name = _copy_figure(png.with_suffix(""), root / "methods" / png.stem)
        if name:
            caption = f"{png.stem.replace('_', ' ')}: mean curve per method"
            exts = [e for e in (".svg", ".csv") if png.with_suffix(e).is_file()]
            figs.append(_figure_html(f"methods/{name}", caption, exts=exts))
    body = (
        '<p><a href="index.html">← atlas</a></p><h1>Attribution methods compared</h1>'
        f'<p class="small">From {html.escape(paths.relative(src, root))} (explain.compare); '
        f"{settings}."
        " Deletion AUC and randomisation / label-permutation agreement: lower is better; "
        "insertion AUC, gt_*, pointing_game: higher is better. Each cell: value [95 % "
        "interval].</p>" + table + '<h2>Curves</h2><div class="grid">' + "".join(figs) + "</div>"
    )
    _write(root / "methods.html", _page("Attribution methods compared", body))
    return (
        f'<h2>Attribution methods</h2><p><a href="methods.html">{len(methods)} methods '
        f"against {len(metrics)} metrics</a>: faithfulness curves, sanity checks, ground "
        "truth.</p>"
    )


def build_atlas(
    out: str | os.PathLike,
    sample_dir: str | os.PathLike,
    decode: Decode,
    edit_dir: str | os.PathLike | None = None,
    table5_dir: str | os.PathLike | None = None,
    bias_dirs: Sequence[str | os.PathLike] = (),
    compare_dir: str | os.PathLike | None = None,
    title: str = "CORTEX token atlas",
    n_show: int = 8,
    n_patches: int = 4,
    n_portraits: int = 20,
) -> dict[str, Any]:
    """Writes the site into `out` (index.html, concepts/, img/, figures/), replacing an atlas built
    there before and refusing a folder that holds anything else (`folders.claim_output`); returns
    {'index': path, 'concepts': count, 'bytes': size of the site}. Per concept: `n_show` test
    images, and portraits (`n_patches` patches and the id decoded alone) for its first
    `n_portraits` tokens; the rest of T_concept is listed without images. With `compare_dir`
    (explain.compare's folder) the site gets the methods page (`methods_page`)."""
    report = SampleLevelReport.read(sample_dir, arrays=True)  # a bad report: before any change
    # only its own files go; a gs:// `out` is written there directly
    root = folders.claim_output(out, "explain.atlas", rebuild=True, remote_ok=True)
    _write(root / "style.css", _CSS)
    _write(root / "atlas.js", _JS)
    sample_body, n_concepts = _sample_section(root, report, decode, n_show, n_patches, n_portraits)
    source = html.escape(paths.relative(sample_dir, root))  # the same name wherever the tree is
    body = (
        f'<h1>{html.escape(title)}</h1><p class="small">Built from {source}'
        "; every number names the command that wrote it in docs/results.md.</p>"
        + sample_body
        + _codebook_section(
            root,
            paths.of(edit_dir) if edit_dir else None,
            paths.of(table5_dir) if table5_dir else None,
        )
        + _bias_section(root, [paths.of(d) for d in bias_dirs])
        + (methods_page(root, compare_dir) if compare_dir else "")
    )
    _write(root / "index.html", _page(title, body))
    folders.finish_output(root, "explain.atlas")
    size = sum(shards.file_sizes(root).values())
    return {"index": os.fspath(root / "index.html"), "concepts": n_concepts, "bytes": size}
