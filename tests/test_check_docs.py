"""bench/check_docs.py, without its reruns: for every section of docs/results.md it checks, the
parser finds every number of the section's tables (counted here independently), outputs built
from the page's own values pass, and a value moved past its tolerance fails for exactly that row."""

import ast
import json
import math
import re
from pathlib import Path

import pytest

from bench import check_docs as cd

TEXT = cd.DOCS.read_text()
# the lowest validation accuracy of the documented bias runs, as the page prints it (a fraction)
VAL_MIN = next(c.docs for c in cd.bias_checks(TEXT)[0] if c.key == "bias validation min %") / 100
HEADINGS = {
    "sample": "## Sample level",
    "compare": "## Attribution methods compared",
    "codebook": "## Codebook level",
    "bias": "## Bias audit",
}
LABELS = {"yes": True, "no": False, "n/t": None, "undefined": float("nan")}


def _body_cells(section: str) -> list[list[str]]:
    """The body rows' cells of every table in the section (header and separator rows dropped),
    parsed here without bench/check_docs.py's table reader."""
    lines = section.splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.startswith("|") or line.startswith("|---"):
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            continue  # a header
        rows.append(line.strip().strip("|").split("|"))
    return rows


def _numbers(cell: str) -> int:
    return len(re.findall(r"\d+(?:\.\d+)?", re.sub(r"`[^`]*`", "", cell)))


def _section(name: str) -> str:
    start = TEXT.index(HEADINGS[name])
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end >= 0 else len(TEXT)]


def _checks(name: str) -> list[cd.Check]:
    return cd.SECTION[name][0](TEXT)[0]


def _put(obj, path, value):
    """Sets obj[path...] = value, making dicts (str keys) and lists (int keys) on the way."""
    for here, nxt in zip(path[:-1], path[1:], strict=True):
        empty = [] if isinstance(nxt, int) else {}
        if isinstance(here, int):
            obj.extend([None] * (here + 1 - len(obj)))
            obj[here] = empty if obj[here] is None else obj[here]
        else:
            obj.setdefault(here, empty)
        obj = obj[here]
    if isinstance(path[-1], int):
        obj.extend([None] * (path[-1] + 1 - len(obj)))
    obj[path[-1]] = value


def _stored(check: cd.Check, value: float | str):
    """What the outputs hold for the page value `value` of this check."""
    if isinstance(value, str):
        return LABELS.get(value, value)
    if check.tol == 0.5 and check.scale == 1 and value == int(value):
        return int(value)  # printed without decimals: a count, stored as an int
    return value / check.scale


def _outputs(checks: list[cd.Check]) -> dict:
    out: dict = {}
    for c in checks:
        _put(out, c.path, _stored(c, c.docs))
    return out


def _bad(checks, outputs) -> list[str]:
    return [c.key for c in checks if not cd.agrees(c, cd.run_value(c, outputs))]


@pytest.mark.parametrize("name", list(HEADINGS))
def test_every_table_number_is_checked(name):
    section = _section(name)
    rows = _body_cells(section)
    numeric = [c for c in _checks(name) if c.table and not isinstance(c.docs, str)]
    assert len(numeric) == sum(_numbers(cell) for row in rows for cell in row[1:])
    words = [c for c in _checks(name) if isinstance(c.docs, str)]
    if name == "bias":  # lean and sets agree on every row; the row labels' designed shares
        assert len(words) == 2 * len(rows) and len(rows) == 18
        designed = [c for c in _checks(name) if c.key.endswith(" designed")]
        assert len(designed) == sum(_numbers(row[0]) for row in rows) == 4
    else:
        assert len(words) == sum(cell.strip() == "undefined" for row in rows for cell in row)
    expected = {"sample": 23, "compare": 252, "codebook": 35, "bias": 180}[name]
    assert len(numeric) == expected  # the page's tables as of this test: a changed page says so


@pytest.mark.parametrize("name", list(HEADINGS))
def test_the_pages_own_values_pass_and_each_moved_one_fails_alone(name):
    checks = _checks(name)
    assert len({c.path for c in checks}) == len(checks)  # no two numbers read one value
    outputs = _outputs(checks)
    assert _bad(checks, outputs) == []
    for c in checks:
        if isinstance(c.docs, str):
            other = "no" if c.docs == "yes" else "B" if c.docs == "A" else "yes"
            moved, within = _stored(c, other), None
        else:
            assert c.tol > 0
            moved = _stored(c, c.docs + 1.01 * c.tol + 1e-6)
            within = _stored(c, c.docs - 0.99 * c.tol)
        _put(outputs, c.path, moved)
        assert _bad(checks, outputs) == [c.key]
        if within is not None:
            _put(outputs, c.path, within)
            assert _bad(checks, outputs) == []
        _put(outputs, c.path, _stored(c, c.docs))


def test_printed_rows_and_missing_values():
    checks = _checks("codebook")
    tols = {c.key.split()[-1]: round(c.tol, 6) for c in checks if c.key.startswith("table5 ")}
    assert tols["delta_iem_target"] == 0.0205 and tols["judge_target_top1"] == 0.05  # the page's ±
    outputs = _outputs(checks)
    row = outputs["table5"]["table"]["token_selection_from_image/final"]
    row["delta_judge_target"] += 0.03  # docs +0.378, tolerance 0.02 (the stated spread) + 0.0005
    del outputs["edit"]["images"][0]["f_target"]["final"]
    lines: list[str] = []
    assert cd.compare(checks, outputs, out=lines.append) == 2
    diff = [line.split()[:3] for line in lines if line.endswith("DIFF")]
    assert diff == [
        ["table5", "token_selection_from_image/final", "delta_judge_target"],
        ["edit", "f_target", "final"],
    ]
    assert "missing" in [line for line in lines if line.endswith("DIFF")][1]


def test_the_page_names_the_commands_the_checker_reruns(tmp_path):
    assert cd.sample_checks(TEXT)[1] == {
        "report": "python -m explain.sample --all --out runs/explain_sample_ce"
    }
    _, commands = cd.codebook_checks(TEXT)
    assert cd.argv(commands["table5"], tmp_path) == [
        "explain.codebook", "--concept", "blue-star", "--table5", "--n-images", "8", "--lr",
        "0.05", "--out", str(tmp_path),
    ]  # fmt: skip
    assert commands["edit"].endswith("--from-concept red-star --n-images 1 --lr 0.05")
    _, commands = cd.bias_checks(TEXT)
    assert list(commands.values()) == [
        "python -m explain.bias --neutral circle",
        "python -m explain.bias --neutral star",
        "python -m explain.bias --neutral square",
        "python -m explain.bias --neutral square --mix 0.5",
        "python -m explain.bias --pair red-square,red-cross --mix 0.5",
        "python -m explain.bias --pair red-square,red-cross --mix 0.2",
    ]
    assert cd.compare_checks(TEXT)[1] == {"compare": "python -m explain.compare --out runs/compare"}
    with pytest.raises(SystemExit, match="labels a bias row group"):
        cd.bias_group("`circle` red 0.80")


def test_default_pairs_are_the_toy_worlds():
    """Read from the source, so this test loads no JAX."""
    tree = ast.parse((cd.REPO / "cortex_jax" / "toy" / "world.py").read_text())
    (pairs,) = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "CONTRAST_PAIRS"
        if node.value is not None
    ]
    assert cd.NEUTRAL_PAIRS == {n: (a, b) for a, b, n in pairs}


def test_bias_reports_are_found_by_what_they_audit(tmp_path):
    checks = cd.bias_checks(TEXT)[0]
    outputs = _outputs(checks)
    for i, (key, report) in enumerate(k for k in outputs.items() if k[0] != "iem_validation"):
        a, b, neutral = key.split(",")
        report |= {"concept_a": a, "concept_b": b, "neutral": neutral}
        report["iem_validation"] = {"val_top1": VAL_MIN if i == 2 else 1.0}
        (tmp_path / f"run{i}").mkdir()
        (tmp_path / f"run{i}" / "report.json").write_text(json.dumps(report))
    (tmp_path / "other").mkdir()  # another command's report is passed over
    (tmp_path / "other" / "report.json").write_text(json.dumps({"summary": {}}))
    loaded = cd.load_bias({"0": tmp_path}, checks)
    assert loaded["iem_validation"] == {"min": VAL_MIN, "max": 1.0}
    assert _bad(checks, loaded) == []
    (tmp_path / "run6").mkdir()
    (tmp_path / "run6" / "report.json").write_text((tmp_path / "run0" / "report.json").read_text())
    with pytest.raises(SystemExit, match="two explain.bias reports of red-circle,blue-circle"):
        cd.load_bias({"0": tmp_path}, checks)


def test_main_checks_given_folders_without_rerunning(tmp_path, capsys):
    compare = tmp_path / "compare"
    compare.mkdir()
    outputs = _outputs(cd.compare_checks(TEXT)[0])
    (compare / "compare.json").write_text(json.dumps(outputs))
    assert cd.main(["--compare", str(compare)]) == 0
    assert "255 of 255 numbers as the docs state" in capsys.readouterr().out
    outputs["methods"]["occlusion"]["randomization_spearman"]["value"] = 0.1  # docs: undefined
    (compare / "compare.json").write_text(json.dumps(outputs))
    assert cd.main(["--compare", str(compare), "--section", "compare"]) == 1
    assert "254 of 255" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cd.main(["--compare", str(compare), "--section", "bias"])
    assert "outside --section" in capsys.readouterr().err
    sample = tmp_path / "sample"
    sample.mkdir()
    flat = _outputs(cd.sample_checks(TEXT)[0])
    curve = {"n": [1, 2, 3, 5, 8, 12, 16]}
    for key in ("tis", "random"):
        curve[key] = [flat[f"curve_{key}_n{n}"] for n in curve["n"]]
    pct = lambda *keys: {k: flat[k] / 100 for k in keys}
    report = {
        "summary": pct("cortex_accuracy_change", "frequency_accuracy_change")
        | {k: flat[k] for k in ("cortex_tokens_masked", "frequency_tokens_masked")},
        "ground_truth_precision": pct(
            "concept_cortex", "concept_frequency", "concept_random", "image_cortex", "image_random"
        ),
        "image_level_curve": curve,
    }
    (sample / "report.json").write_text(json.dumps(report))
    assert cd.main(["--report", str(sample)]) == 0
    assert math.isclose(cd.run_numbers(report)["concept_cortex"], 52.0)


def _md_rows(markdown: str, first_header: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the markdown table whose first header cell is `first_header`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return cells(lines[start]), rows


def _plain(cell: str) -> str:
    return re.sub(r"\s+", " ", cell.replace("**", "").replace("−", "-").replace(" %", "%")).strip()


def test_the_commands_own_tables_print_the_page_from_the_outputs_the_checker_accepts():
    """Outputs built from the page, rendered by the writers of table5.md and the audit's
    report.md, print the page's cells: the checker reads the keys, and in the units, that the
    commands print (so a swapped column or a wrong scale fails here, without a rerun)."""
    from cortex_jax.experiments import bias, codebook_level

    docs_header, docs_rows = cd.tables(_section("codebook"))[0]
    outputs = _outputs(cd.codebook_checks(TEXT)[0])["table5"]
    for row in outputs["table"].values():
        row |= {"tokens_changed": 16.0, "delta_judge_target_per_token": 0.0}
    header, rows = _md_rows(codebook_level.table5_markdown(outputs), "method")
    renamed = {"judge says target": "judge top-1 = target"}
    by_name = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    for docs_row in docs_rows:
        name = cd.TABLE5_ROWS[(docs_row[0].replace("*", ""), docs_row[1].replace("*", ""))]
        for head, cell in zip(docs_header[2:], docs_row[2:], strict=True):
            assert _plain(by_name[name][renamed.get(head, head)]) == _plain(cell), (name, head)

    checks = cd.bias_checks(TEXT)[0]
    outputs = _outputs(checks)
    _, docs_rows = cd.tables(_section("bias"))[0]
    groups = [cd.bias_group(r[0]) for r in docs_rows if r[0]]
    agree = {"yes": "yes", "no": "**no**", "n/t": "not testable"}
    i = -1
    for docs_row in docs_rows:
        if docs_row[0]:
            i += 1
            report = outputs[groups[i].identity]
            a, b, neutral = groups[i].identity.split(",")
            report |= {"concept_a": a, "concept_b": b, "neutral": neutral, "iem_validation": {}}
            for r in report["per_n"]:
                r["paper"] |= {"mean_a": 0.0, "mean_b": 0.0, "magnitude": "-", "p": 0.0}
                share = {"share_a": 0.0, "ci": [0.0, 0.0]}
                r["checks"] |= {"share_from_a_tokens": share, "share_from_b_tokens": share}
                r["checks"]["contrast_z"] = 0.0
            md = bias.report_markdown(report, 1000)
            verdicts = iter(_md_rows(md, "n")[1])
            papers = iter(_md_rows(md.split("## The paper's")[1], "n")[1])
            leaks = iter(_md_rows(md.split("## Leaks")[1], "n")[1])
            if docs_row[3]:
                judge = re.search(r"produced\): (.+)\.$", md, re.M)
                assert judge is not None and judge.group(1) == docs_row[3]
        v, p, lk = next(verdicts), next(papers), next(leaks)
        assert v[0] == p[0] == lk[0] == docs_row[1]
        assert _plain(f"{v[1]} {v[2]} {v[3]}") == _plain(docs_row[2])
        assert f"{p[3]} {p[4]}" == docs_row[4]
        assert f"{lk[1]} / {lk[2]}" == docs_row[5]
        assert lk[5] == agree[docs_row[6]]


def test_main_reruns_each_documented_command_once_into_its_own_folder(
    tmp_path, monkeypatch, capsys
):
    """The rerun loop, with a stand-in for the commands that writes what each would."""
    bias_checks, bias_commands = cd.bias_checks(TEXT)
    bias_out = _outputs(bias_checks)
    codebook_out = _outputs(cd.codebook_checks(TEXT)[0])
    labels = [row[0] for row in cd.tables(_section("bias"))[0][1] if row[0]]
    by_flags = {" ".join(g.flags): g for g in map(cd.bias_group, labels)}
    ran = []

    def fake_run(cmd, cwd, check):
        assert cmd[1] == "-m" and cmd[-2] == "--out" and check
        out = Path(cmd[-1])
        ran.append((cmd[2:-2], out))
        out.mkdir(parents=True)
        if cmd[2] == "explain.bias":
            group = by_flags[" ".join(cmd[3:-2])]
            a, b, neutral = group.identity.split(",")
            report = bias_out[group.identity] | {"concept_a": a, "concept_b": b, "neutral": neutral}
            report["iem_validation"] = {"val_top1": VAL_MIN if neutral == "star" else 1.0}
            (out / "report.json").write_text(json.dumps(report))
        elif "--table5" in cmd:
            (out / "table5.json").write_text(json.dumps(codebook_out["table5"]))
        else:
            (out / "tokens.json").write_text(json.dumps(codebook_out["edit"]))

    monkeypatch.setattr(cd.subprocess, "run", fake_run)
    monkeypatch.setattr(cd.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "reruns"))
    assert cd.main(["--section", "bias"]) == 0
    assert [" ".join(args) for args, _ in ran] == [
        c[len("python -m ") :] for c in bias_commands.values()
    ]
    assert len({out for _, out in ran}) == 6
    assert "222 of 222" in capsys.readouterr().out
    ran.clear()
    table5 = tmp_path / "table5"
    table5.mkdir()
    (table5 / "table5.json").write_text(json.dumps(codebook_out["table5"]))
    monkeypatch.setattr(cd.tempfile, "mkdtemp", lambda prefix: str(tmp_path / "reruns2"))
    assert cd.main(["--table5", str(table5)]) == 0  # only the edit is rerun
    assert [args[:3] for args, _ in ran] == [["explain.codebook", "--concept", "blue-star"]]
    assert "--from-concept" in ran[0][0] and "--table5" not in ran[0][0]
    assert "42 of 42" in capsys.readouterr().out
