"""Do docs/results.md's numbers equal what their commands print? Reruns them and says.

    python -m bench.check_docs                     # sample level: explain.sample --all (≈4 min)
    python -m bench.check_docs --section all       # every section below (≈1–1.5 h on 2 CPUs)
    python -m bench.check_docs --report runs/explain_sample_ce     # an existing sample --out
    python -m bench.check_docs --table5 runs/table5 --edit runs/explain_codebook
    python -m bench.check_docs --bias runs/bias    # explain.bias --out folders, or their parent
    python -m bench.check_docs --compare runs/compare

Sections (`--section sample|codebook|bias|compare|all`), each a part of docs/results.md and the
files its commands write:

- sample: the masking table, the ground-truth precision table and the image-level curve, from
  `explain.sample --all`'s report.json.
- compare: every cell of the methods × metrics table, from `explain.compare`'s compare.json
  (methods[NAME][METRIC]: value and both ends of ci; "undefined" is a NaN value), and the images
  compared and the baseline token id the prose names (settings.images, settings.baseline_token).
- codebook: every cell of the Table 5 table (table5.json `table`: the row a method cell and its
  start name, the column its header names; "judge says target" is judge_target_top1 in %), the
  "Before editing" line (`before`) and the images in all (`n_images`), from the heading's
  `explain.codebook --table5` command; and the single edit's "f_target logit A → B"
  (tokens.json images[0].f_target before / final) from the `--from-concept` command below it.
- bias: every cell of the audit table, from explain.bias's report.json; a row group's first cell
  names its command (`circle` is `--neutral circle`, `square --mix 0.5` is `--neutral square --mix
  0.5`, `A vs B` adds `--pair A,B`) and its designed share of A (true_share_a); its rows are
  per_n in order (n, verdict share / ci / lean, paper cliffs_delta / ci, leak a_tokens_on_b /
  b_tokens_on_a, checks.sets_agree as yes / no / n/t), the judge cell judge_share_a (share_a,
  ci95). A report is matched to its row group by (concept_a, concept_b, neutral). Also the
  intro's validation accuracy range: min and max of iem_validation.val_top1 over those runs.

Each number is printed as a row: the docs' value, the run's, the tolerance and OK or DIFF (exit
status 1 on any DIFF or missing value). Tolerance: half a unit of the last digit the docs print,
plus, where docs/results.md states a machine-to-machine spread, that spread (the CORTEX masking
change ±0.4 points and the concept precision ±0.6 points, from one T_concept tie; each Table 5
ΔP ±0.02, read from the page's "read each ΔP as ±…"). Words the
docs print (lean, sets agree, "undefined") must be equal. The commands are the ones
docs/results.md names (heading and row labels), read from the page, so the page and the check
cannot drift apart; the checker refuses a page whose tables it cannot map. Not checked: the
numbers the prose repeats from these tables (the bullets under them), the README's, and the
bias section's coverage rates (tests/test_bias.py's simulations, not these commands).

A folder flag replaces that part's rerun; any part without one is rerun into a fresh temporary
folder (printed, so a failed check can be repeated against it). Without --section, the sections
whose folders are given are checked, or the sample level when none is. Reruns take too long for
CI (tests/test_check_docs.py checks the parser and the comparison instead): run this before
editing the page, and after any change that could move a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "results.md"
SECTIONS = ("sample", "compare", "codebook", "bias")  # the page's order
NUM = r"[−+\-]?\d+(?:\.\d+)?"
Loc = tuple[str | int, ...]  # keys and list indices into a section's outputs


@dataclasses.dataclass(frozen=True)
class Check:
    """One number (or word) of the page: `docs` the value printed, `tol` the allowed |run − docs|
    (unused for words, which must be equal), `path` where the run's value lies in the section's
    outputs (`load_*`), `scale` from the outputs' units to the page's (100 for %). `table`: a
    cell of a table (right of its label column), as opposed to a number in a label or prose."""

    key: str
    docs: float | str
    tol: float
    path: Loc
    scale: float = 1.0
    table: bool = True


def _error(message: str) -> SystemExit:
    return SystemExit(f"error: docs/results.md {message}; update bench/check_docs.py with the page")


def _section(text: str, heading: str = "## Sample level") -> str:
    if heading not in text:
        raise _error(f"has no section {heading!r}")
    start = text.index(heading)
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _number(s: str) -> tuple[float, float]:
    """(value, half a unit of its last printed digit) of a cell such as '**−44.8 %**'."""
    m = re.fullmatch(rf"\**\s*({NUM})\s*%?\s*\**", s.strip())
    if m is None:
        raise _error(f"prints {s!r} where a number belongs")
    v = m.group(1).replace("−", "-")
    decimals = len(v.split(".")[1]) if "." in v else 0
    return float(v), 0.5 * 10.0**-decimals


def _check(key: str, text: str, path: Loc, scale: float = 1.0, table: bool = True) -> Check:
    """The check of the number printed as `text`, to half a unit of its last digit."""
    value, half_unit = _number(text)
    return Check(key, value, half_unit, path, scale, table)


def tables(section: str) -> list[tuple[list[str], list[list[str]]]]:
    """Every markdown table of a section: (header cells, body rows of cells)."""
    out: list[tuple[list[str], list[list[str]]]] = []
    block: list[list[str]] = []
    for line in [*section.splitlines(), ""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip()[1:-1].split("|")])
        elif block:
            if len(block) >= 2 and all(set(c) <= set("-: ") for c in block[1]):
                out.append((block[0], block[2:]))
            block = []
    return out


def _command(section: str) -> str:
    """The heading's command, e.g. 'python -m explain.compare --out runs/compare'."""
    m = re.match(r"## [^`\n]*`(python -m [^`]+)`", section)
    if m is None:
        raise _error(f"names no command in its heading {section.splitlines()[0]!r}")
    return m.group(1)


def argv(command: str, out: Path) -> list[str]:
    """A documented command's `python -m` arguments with `--out` set to `out`."""
    parts = shlex.split(command)
    if parts[:2] != ["python", "-m"]:
        raise _error(f"names {command!r}; expected a `python -m …` command")
    if "--out" in parts:
        i = parts.index("--out")
        del parts[i : i + 2]
    return [*parts[2:], "--out", str(out)]


# ---------------------------------------------------------------------------------------------
# Sample level (explain.sample --all)
# ---------------------------------------------------------------------------------------------


def docs_numbers(text: str) -> dict[str, tuple[float, float]]:
    """{quantity: (value, half a unit of its last printed digit)} from the sample-level section."""
    sec = _section(text)

    def num(pattern: str) -> tuple[float, float]:
        m = re.search(pattern, sec)
        if m is None:
            raise SystemExit(f"error: docs/results.md's sample-level section lacks {pattern!r}")
        s = m.group(1).replace("−", "-")
        decimals = len(s.split(".")[1]) if "." in s else 0
        return float(s), 0.5 * 10.0**-decimals

    out = {
        "cortex_accuracy_change": num(r"CORTEX T_concept \| \*\*([−\-\d.]+) points"),
        "cortex_tokens_masked": num(r"CORTEX T_concept \|[^|]*\| \*\*([\d.]+)\*\*"),
        "frequency_accuracy_change": num(r"frequency baseline[^|]*\| ([−\-\d.]+) points"),
        "frequency_tokens_masked": num(r"frequency baseline[^|]*\|[^|]*\| ([\d.]+)"),
        "concept_cortex": num(r"on the object \| \*\*([\d.]+) %"),
        "concept_frequency": num(r"on the object \|[^|]*\| ([\d.]+) %"),
        "concept_random": num(r"on the object \|[^|]*\|[^|]*\| ([\d.]+) %"),
        "image_cortex": num(r"positions on the object \| \*\*([\d.]+) %"),
        "image_random": num(r"positions on the object \|[^|]*\|[^|]*\| ([\d.]+) %"),
    }
    ns = re.search(r"^\| n \|([^\n]+)", sec, re.M)
    if ns is None:
        raise SystemExit("error: docs/results.md lacks the image-level curve table")
    n_values = [int(x) for x in ns.group(1).strip(" |").split("|")]
    for row, key in (("top-n TIS", "tis"), ("random", "random")):
        m = re.search(rf"^\| {row} \|([^\n]+)", sec, re.M)
        assert m is not None, row
        for n, v in zip(n_values, m.group(1).strip(" |").split("|"), strict=True):
            out[f"curve_{key}_n{n}"] = (float(v), 0.005)
    return out


def run_numbers(report: dict) -> dict[str, float]:
    """The same quantities from report.json, in the docs' units (points, %)."""
    s, g, c = report["summary"], report["ground_truth_precision"], report["image_level_curve"]
    out = {
        "cortex_accuracy_change": 100 * s["cortex_accuracy_change"],
        "cortex_tokens_masked": s["cortex_tokens_masked"],
        "frequency_accuracy_change": 100 * s["frequency_accuracy_change"],
        "frequency_tokens_masked": s["frequency_tokens_masked"],
        **{k: 100 * g[k] for k in ("concept_cortex", "concept_frequency", "concept_random")},
        **{k: 100 * g[k] for k in ("image_cortex", "image_random")},
    }
    for key in ("tis", "random"):
        for n, v in zip(c["n"], c[key], strict=True):
            out[f"curve_{key}_n{n}"] = v
    return out


SPREAD = {"cortex_accuracy_change": 0.4, "concept_cortex": 0.6}  # docs/results.md's stated spread


def sample_checks(text: str) -> tuple[list[Check], dict[str, str]]:
    """The sample level's checks (outputs: `run_numbers` of report.json) and its command."""
    checks = [
        Check(key, value, SPREAD.get(key, 0.0) + half_unit, (key,))
        for key, (value, half_unit) in docs_numbers(text).items()
    ]
    return checks, {"report": _command(_section(text))}


def load_sample(folders: dict[str, Path], checks: Sequence[Check]) -> dict[str, Any]:
    return run_numbers(json.loads((folders["report"] / "report.json").read_text()))


# ---------------------------------------------------------------------------------------------
# Attribution methods compared (explain.compare)
# ---------------------------------------------------------------------------------------------

COMPARE_METHODS = {
    "smoothgrad (TIS)": "smoothgrad",
    "gradient": "gradient",
    "grad×input": "grad_x_input",
    "integrated gradients": "integrated_gradients",
    "occlusion": "occlusion",
    "random": "random",
    "frequency": "frequency",
}
COMPARE_METRICS = {
    "T_image precision on the object (top 8)": "gt_precision",
    "pointing game": "pointing_game",
    "positive mass on the object": "gt_mass",
    "Spearman with a fully randomised IEM": "randomization_spearman",
    "Spearman with a label-permuted IEM": "label_permutation_spearman",
}


def _compare_metric(label: str) -> str:
    m = re.fullmatch(r"(deletion|insertion) AUC, (IEM|judge), (baseline|generator|patch)", label)
    if m:
        judge = "iem" if m.group(2) == "IEM" else "classifier"
        return f"{m.group(1)}_auc_{judge}_{m.group(3)}"
    if label not in COMPARE_METRICS:
        raise _error(f"compares the metric {label!r}, which compare.json does not name")
    return COMPARE_METRICS[label]


def compare_checks(text: str) -> tuple[list[Check], dict[str, str]]:
    """Every cell of the methods × metrics table (outputs: compare.json) and its command."""
    sec = _section(text, "## Attribution methods compared")
    header, rows = tables(sec)[0]
    unknown = [h for h in header[1:] if h not in COMPARE_METHODS]
    if header[0] != "metric" or unknown:
        raise _error(f"compares methods {unknown or header[:1]} compare.json does not name")
    checks = []
    for row in rows:
        metric = _compare_metric(row[0])
        for head, cell in zip(header[1:], row[1:], strict=True):
            method = COMPARE_METHODS[head]
            path: Loc = ("methods", method, metric)
            key = f"compare {metric} {method}"
            if cell == "undefined":
                checks.append(Check(key, "undefined", 0.0, (*path, "value")))
                continue
            m = re.fullmatch(rf"(\**{NUM}\**)(?: \[({NUM}), ({NUM})\])?", cell)
            if m is None:
                raise _error(f"prints {cell!r} for {metric} of {method}")
            checks.append(_check(key, m.group(1), (*path, "value")))
            if m.group(2) is not None:
                checks.append(_check(f"{key} lo", m.group(2), (*path, "ci", 0)))
                checks.append(_check(f"{key} hi", m.group(3), (*path, "ci", 1)))
    for pattern, field in (
        (r"(\d+) encoded procedural images", "images"),
        (r"nearest the mean, id (\d+)", "baseline_token"),
    ):
        found = re.search(pattern, sec)
        if found is None:
            raise _error(f"no longer says {pattern!r} in the compare section")
        checks.append(_check(f"compare {field}", found.group(1), ("settings", field), table=False))
    return checks, {"compare": _command(sec)}


def load_compare(folders: dict[str, Path], checks: Sequence[Check]) -> dict[str, Any]:
    return json.loads((folders["compare"] / "compare.json").read_text())


# ---------------------------------------------------------------------------------------------
# Codebook level (explain.codebook --table5, and one edit)
# ---------------------------------------------------------------------------------------------

TABLE5_ROWS = {  # (method cell without bold, start) → table5.json row
    ("random tokens, no optimisation", "random"): "random_tokens/start",
    ("token selection, final step (the paper's)", "random"): "token_selection/final",
    ("token selection, best logged step", "random"): "token_selection/best",
    ("token selection, final step", "image"): "token_selection_from_image/final",
    ("token selection, best logged step", "image"): "token_selection_from_image/best",
    ("embedding optimisation, final", "image"): "embedding_optimisation/final",
    ("embedding optimisation, best", "image"): "embedding_optimisation/best",
}
TABLE5_COLUMNS = {  # header → (table5.json column, scale to the page's unit)
    "ΔP_orig (judge)": ("delta_judge_orig", 1.0),
    "ΔP_target (judge)": ("delta_judge_target", 1.0),
    "judge says target": ("judge_target_top1", 100.0),
    "ΔP_orig (IEM)": ("delta_iem_orig", 1.0),
    "ΔP_target (IEM)": ("delta_iem_target", 1.0),
}


def codebook_checks(text: str) -> tuple[list[Check], dict[str, str]]:
    """The Table 5 cells, the 'Before editing' line, the images in all (outputs: {"table5":
    table5.json, "edit": tokens.json}) and the single edit's f_target; the two commands."""
    sec = _section(text, "## Codebook level")
    header, rows = tables(sec)[0]
    if header[:2] != ["method", "start"] or any(h not in TABLE5_COLUMNS for h in header[2:]):
        raise _error(f"gives Table 5 the columns {header}, which table5.json does not name")
    spread = re.search(rf"read each ΔP as ±({NUM})", sec)  # the page's stated machine spread
    checks = []
    for row in rows:
        label = (row[0].replace("*", ""), row[1].replace("*", ""))
        if label not in TABLE5_ROWS:
            raise _error(f"gives Table 5 the row {label}, which table5.json does not name")
        name = TABLE5_ROWS[label]
        for head, cell in zip(header[2:], row[2:], strict=True):
            column, scale = TABLE5_COLUMNS[head]
            path = ("table5", "table", name, column)
            check = _check(f"table5 {name} {column}", cell, path, scale)
            if spread and head.startswith("ΔP"):
                check = dataclasses.replace(check, tol=check.tol + float(spread.group(1)))
            checks.append(check)
    before = re.search(
        rf"Before editing: judge P_orig ({NUM}), P_target ({NUM}); IEM ({NUM}) / ({NUM})\.", sec
    )
    in_all = re.search(r"\((\d+) in all\)", sec)
    edit = re.search(
        rf"`(python -m explain\.codebook [^`]+)` \(f_target\s+logit ({NUM}) → ({NUM})\)", sec
    )
    if before is None or in_all is None or edit is None:
        raise _error("lacks the Table 5 'Before editing' line, '(N in all)' or the edit's f_target")
    for i, which in enumerate(("judge_orig", "judge_target", "iem_orig", "iem_target")):
        where: Loc = ("table5", "before", which)
        checks.append(_check(f"table5 before {which}", before.group(i + 1), where, table=False))
    checks.append(_check("table5 n_images", in_all.group(1), ("table5", "n_images"), table=False))
    for i, which in enumerate(("before", "final")):
        where = ("edit", "images", 0, "f_target", which)
        checks.append(_check(f"edit f_target {which}", edit.group(i + 2), where, table=False))
    return checks, {"table5": _command(sec), "edit": edit.group(1)}


def load_codebook(folders: dict[str, Path], checks: Sequence[Check]) -> dict[str, Any]:
    return {
        "table5": json.loads((folders["table5"] / "table5.json").read_text()),
        "edit": json.loads((folders["edit"] / "tokens.json").read_text()),
    }


# ---------------------------------------------------------------------------------------------
# Bias audit (explain.bias, one run a row group)
# ---------------------------------------------------------------------------------------------

# world.CONTRAST_PAIRS, the pair `--neutral NAME` audits by default (not imported: this module
# loads no JAX; tests/test_check_docs.py checks that the two agree)
NEUTRAL_PAIRS = {
    "circle": ("red-circle", "blue-circle"),
    "star": ("red-star", "blue-star"),
    "square": ("red-square", "blue-square"),
}
BIAS_HEADER = [
    "neutral (designed share of A)",
    "n",
    "**verdict: share A [95 % CI], lean**",
    "judge: share A",
    "paper's δ [paired 95 % CI]",
    "leak A / B",
    "sets agree",
]
AGREE = {"yes": True, "no": False, "n/t": None}


@dataclasses.dataclass(frozen=True)
class BiasGroup:
    """A row group of the audit table: its name, the explain.bias flags that make it, the report
    it must come from ("A,B,neutral" as report.json names them) and the designed share of A."""

    name: str
    flags: tuple[str, ...]
    identity: str
    designed: str | None


def bias_group(label: str) -> BiasGroup:
    """A row group's first cell → its run: '`circle` (red 0.80)', '`square --mix 0.5` (exactly
    0.50)' or 'red-square vs red-cross `--mix 0.2`'."""
    m = re.fullmatch(r"(?:(\S+) vs (\S+) )?`([^`]+)`(?: \((?:[a-z]+ )?([\d.]+)\))?", label)
    if m is None:
        raise _error(
            f"labels a bias row group {label!r}; expected '`NEUTRAL [--mix S]`' or 'A vs B'"
        )
    words = m.group(3).split()
    flags = words if words[0].startswith("--") else ["--neutral", *words]
    neutral = flags[flags.index("--neutral") + 1] if "--neutral" in flags else "circle"
    if m.group(1):
        pair = (m.group(1), m.group(2))
        flags = ["--pair", f"{pair[0]},{pair[1]}", *flags]
    elif neutral in NEUTRAL_PAIRS:
        pair = NEUTRAL_PAIRS[neutral]
    else:
        raise _error(f"labels a bias row group {label!r} whose neutral has no default pair")
    if "--mix" in flags:
        neutral = f"mix:{float(flags[flags.index('--mix') + 1]):g}"  # as explain.bias names it
    name = " ".join(([f"{pair[0]},{pair[1]}"] if m.group(1) else []) + words)
    return BiasGroup(name, tuple(flags), f"{pair[0]},{pair[1]},{neutral}", m.group(4))


def bias_checks(text: str) -> tuple[list[Check], dict[str, str]]:
    """Every cell of the audit table, each group's designed share and the validation range
    (outputs: {identity: report.json, "iem_validation": {"min", "max"}}); a command a group."""
    sec = _section(text, "## Bias audit")
    header, rows = tables(sec)[0]
    if header != BIAS_HEADER:
        raise _error(f"gives the bias table the columns {header}; expected {BIAS_HEADER}")
    checks: list[Check] = []
    commands: dict[str, str] = {}
    group: BiasGroup | None = None
    i = 0
    for row in rows:
        if row[0]:
            group, i = bias_group(row[0]), 0
            if group.name in commands:
                raise _error(f"has two bias row groups {group.name!r}")
            commands[group.name] = "python -m explain.bias " + shlex.join(group.flags)
            if group.designed is not None:
                where: Loc = (group.identity, "true_share_a")
                checks.append(
                    _check(f"bias {group.name} designed", group.designed, where, 1, False)
                )
        if group is None:
            raise _error("starts the bias table without a row group label")
        verdict = re.fullmatch(rf"\*\*({NUM}) \[({NUM}), ({NUM})\]\*\* (A|B|none)", row[2])
        judge = re.fullmatch(rf"({NUM}) \[({NUM}), ({NUM})\]", row[3])
        paper = re.fullmatch(rf"({NUM}) \[({NUM}), ({NUM})\]", row[4])
        leak = re.fullmatch(rf"({NUM}) / ({NUM})", row[5])
        if None in (verdict, paper, leak) or (row[3] and not judge) or row[6] not in AGREE:
            raise _error(f"prints the bias row {row} in an unknown form")
        assert verdict is not None and paper is not None and leak is not None
        at: Loc = (group.identity, "per_n", i)
        key = f"bias {group.name} n={row[1]}"
        cells: list[tuple[str, str, Loc]] = [
            ("n", row[1], ("n",)),
            ("share", verdict.group(1), ("verdict", "share_a")),
            ("share lo", verdict.group(2), ("verdict", "ci", 0)),
            ("share hi", verdict.group(3), ("verdict", "ci", 1)),
            ("delta", paper.group(1), ("paper", "cliffs_delta")),
            ("delta lo", paper.group(2), ("paper", "ci", 0)),
            ("delta hi", paper.group(3), ("paper", "ci", 1)),
            ("leak a_tokens_on_b", leak.group(1), ("leak", "a_tokens_on_b")),
            ("leak b_tokens_on_a", leak.group(2), ("leak", "b_tokens_on_a")),
        ]
        checks += [_check(f"{key} {what}", cell, (*at, *path)) for what, cell, path in cells]
        checks.append(Check(f"{key} lean", verdict.group(4), 0.0, (*at, "verdict", "lean")))
        checks.append(Check(f"{key} sets agree", row[6], 0.0, (*at, "checks", "sets_agree")))
        if judge is not None:  # one judged share a run, on its group's first row
            for j, (what, path) in enumerate(
                (("judge", ("share_a",)), ("judge lo", ("ci95", 0)), ("judge hi", ("ci95", 1)))
            ):
                where = (group.identity, "judge_share_a", *path)
                checks.append(_check(f"bias {group.name} {what}", judge.group(j + 1), where))
        i += 1
    found = re.search(rf"validation accuracy ({NUM})–({NUM}) %", sec)
    if found is None:
        raise _error("no longer states the binary IEMs' validation accuracy range")
    for j, which in enumerate(("min", "max")):
        where = ("iem_validation", which)
        checks.append(_check(f"bias validation {which} %", found.group(j + 1), where, 100, False))
    return checks, commands


def load_bias(folders: dict[str, Path], checks: Sequence[Check]) -> dict[str, Any]:
    """Every report.json in the given folders or their subfolders, keyed "A,B,neutral" (two of
    one key are refused), and the range of the documented runs' validation top-1."""
    reports: dict[str, dict] = {}
    for folder in dict.fromkeys(folders.values()):
        for path in sorted([folder / "report.json", *folder.glob("*/report.json")]):
            if path.is_file():
                r = json.loads(path.read_text())
                if not {"concept_a", "concept_b", "neutral", "per_n"} <= set(r):
                    continue  # another command's report
                key = f"{r['concept_a']},{r['concept_b']},{r['neutral']}"
                if key in reports:
                    raise SystemExit(f"error: two explain.bias reports of {key} under {folder}")
                reports[key] = r
    named = {str(c.path[0]) for c in checks} & set(reports)
    top1 = [reports[k]["iem_validation"]["val_top1"] for k in sorted(named)]
    out: dict[str, Any] = dict(reports)
    if top1:
        out["iem_validation"] = {"min": min(top1), "max": max(top1)}
    return out


# ---------------------------------------------------------------------------------------------
# Comparing and running
# ---------------------------------------------------------------------------------------------

ChecksOf = Callable[[str], tuple[list[Check], dict[str, str]]]
Loader = Callable[[dict[str, Path], Sequence[Check]], dict[str, Any]]
SECTION: dict[str, tuple[ChecksOf, Loader]] = {
    "sample": (sample_checks, load_sample),
    "compare": (compare_checks, load_compare),
    "codebook": (codebook_checks, load_codebook),
    "bias": (bias_checks, load_bias),
}


def run_value(check: Check, outputs: Any) -> float | str | None:
    """The run's value at the check's path in the page's units, or None when it is missing. A
    NaN is 'undefined' where the page says so; sets_agree's True/False/None is yes/no/n/t."""
    v = outputs
    try:
        for p in check.path:
            v = v[p]
    except (KeyError, IndexError, TypeError):
        return None
    if isinstance(check.docs, str):
        if v is None or isinstance(v, bool):
            return {True: "yes", False: "no", None: "n/t"}[v]
        if check.docs == "undefined" and isinstance(v, float) and math.isnan(v):
            return "undefined"
        return v if isinstance(v, str) else float(v) if isinstance(v, int | float) else None
    try:
        return float(v) * check.scale
    except (TypeError, ValueError):
        return None


def agrees(check: Check, got: float | str | None) -> bool:
    if got is None or isinstance(check.docs, str) or isinstance(got, str):
        return got is not None and got == check.docs
    return math.isfinite(got) and abs(got - check.docs) <= check.tol + 1e-9  # spread: printed


def compare(checks: Sequence[Check], outputs: Any, out=print) -> int:
    """Prints one row per check (docs, run, tolerance, OK/DIFF); returns how many disagree."""
    width = max(28, *(len(c.key) for c in checks))
    bad = 0
    out(f"{'quantity':{width}} {'docs':>8} {'run':>9} {'±':>6}  verdict")
    for c in checks:
        got = run_value(c, outputs)
        ok = agrees(c, got)
        bad += not ok
        docs = f"{c.docs:8.3f}" if isinstance(c.docs, float) else f"{c.docs:>8}"
        run = "missing" if got is None else got if isinstance(got, str) else f"{got:.4f}"
        tol = "=" if isinstance(c.docs, str) else f"{c.tol:.4g}"
        out(f"{c.key:{width}} {docs} {run:>9} {tol:>6}  {'OK' if ok else 'DIFF'}")
    return bad


FOLDER_FLAGS = {  # flag → (section, output name)
    "report": ("sample", "report"),
    "compare": ("compare", "compare"),
    "table5": ("codebook", "table5"),
    "edit": ("codebook", "edit"),
}


def main(argv_: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--section", choices=[*SECTIONS, "all"], help="default: see the docstring")
    ap.add_argument("--report", help="an explain.sample --all --out folder to check, not a rerun")
    ap.add_argument("--compare", help="an explain.compare --out folder")
    ap.add_argument("--table5", help="an explain.codebook --table5 --out folder")
    ap.add_argument("--edit", help="the single explain.codebook edit's --out folder")
    ap.add_argument("--bias", help="explain.bias --out folders (comma-separated) or a parent")
    args = ap.parse_args(argv_)
    given = {f: getattr(args, f) for f in (*FOLDER_FLAGS, "bias") if getattr(args, f)}
    with_folders = {FOLDER_FLAGS[f][0] if f in FOLDER_FLAGS else "bias" for f in given}
    if args.section is None:
        sections = [s for s in SECTIONS if s in with_folders] or ["sample"]
    else:
        sections = list(SECTIONS) if args.section == "all" else [args.section]
        if with_folders - set(sections):
            ap.error(f"folders given for {sorted(with_folders - set(sections))} outside --section")
    for name, value in given.items():
        for part in value.split(",") if name == "bias" else [value]:
            if not Path(part).is_dir():
                ap.error(f"--{name} {part}: no such folder")
    text = DOCS.read_text()
    parsed = {s: SECTION[s][0](text) for s in sections}  # a page it cannot map: before any rerun
    tmp: Path | None = None
    bad = total = 0
    for section in sections:
        checks, commands = parsed[section]
        folders: dict[str, Path] = {}
        if section == "bias" and "bias" in given:
            folders = {f"{i}": Path(p) for i, p in enumerate(given["bias"].split(","))}
        elif section != "bias":
            folders = {
                o: Path(given[f])
                for f, (s, o) in FOLDER_FLAGS.items()
                if f in given and s == section
            }
        for name, command in commands.items():
            if name in folders or (section == "bias" and "bias" in given):
                continue
            if tmp is None:
                tmp = Path(tempfile.mkdtemp(prefix="check-docs-"))
                print(f"reruns write under {tmp}", flush=True)
            folder = tmp / section / name.replace(" ", "_").replace(",", "-")
            cmd = [sys.executable, "-m", *argv(command, folder)]
            print("running:", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, cwd=REPO, check=True)
            folders[name] = folder
        print(f"\n## {section}")
        try:
            outputs = SECTION[section][1](folders, checks)
        except (OSError, KeyError, ValueError) as e:  # a folder not made by the command
            raise SystemExit(f"error: {section}: cannot read the outputs ({e!r})") from None
        bad += compare(checks, outputs)
        total += len(checks)
    print(f"{total - bad} of {total} numbers as the docs state")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
