"""python -m explain.compare: the one table of attribution methods, on the toy world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cortex_jax.experiments import compare
from tests.helpers import cli

TINY = (
    "--per-concept", "2", "--train-per-concept", "2", "--permutation-epochs", "1",
    "--steps", "4", "--n-samples", "2", "--ig-steps", "2", "--n-boot", "200",
)  # fmt: skip


@pytest.mark.slow
def test_compare_writes_the_table_and_real_methods_beat_random(tmp_path):
    out = tmp_path / "cmp"
    methods = "gradient,occlusion,random,frequency"  # --cascade: every stage, top layer first
    cli.run(
        "explain.compare", "--methods", methods, "--out", str(out), "--cascade", *TINY, check=True
    )
    result = json.loads((out / "compare.json").read_text())
    assert set(result) == {"settings", "methods"}
    assert set(result["methods"]) == {"gradient", "occlusion", "random", "frequency"}
    expected = compare.metric_names(("baseline", "generator"), classifier=True) + [
        "gt_precision",
        "pointing_game",
        "randomization_spearman",
        "label_permutation_spearman",
    ]
    for name, row in result["methods"].items():
        for metric in expected:
            v = row[metric]
            assert set(v) == {"value", "ci"} and len(v["ci"]) == 2, (name, metric)
            if metric.endswith("_spearman") and np.isnan(v["value"]):
                assert np.isnan(v["ci"]).all()  # undefined: a randomised model's scores are flat
                continue
            assert v["ci"][0] <= v["value"] <= v["ci"][1], (name, metric, v)
    rand = result["methods"]["random"]
    for m in ("gradient", "occlusion"):
        row = result["methods"][m]
        # a behaviour, not a schema: real methods delete the concept faster than random order,
        # with the interval clear of random's mean
        assert (
            row["deletion_auc_iem_baseline"]["ci"][1] < rand["deletion_auc_iem_baseline"]["value"]
        )
        assert row["gt_precision"]["value"] > rand["gt_precision"]["value"]
    # the model-free reference fails both randomisation checks, by construction
    assert rand["randomization_spearman"]["value"] == pytest.approx(1)
    assert rand["label_permutation_spearman"]["value"] == pytest.approx(1)
    assert (out / "compare.md").read_text().startswith("# Attribution methods compared")
    for ext in ("png", "svg", "csv"):
        assert (out / "curves" / f"deletion_iem_baseline.{ext}").is_file()
    assert [r["layer"] for r in json.loads((out / "cascade.json").read_text())["gradient"]][
        0
    ] == "out"
    stages = json.loads((out / "timings.json").read_text())  # what bench/compare.py prints
    assert {"loading the toy models", "occlusion: scores", "writing the table and curves"} <= set(
        stages
    ) and all(v >= 0 for v in stages.values())


def test_compare_unknown_method_is_one_line(tmp_path):
    r = cli.run("explain.compare", "--methods", "nope", "--out", str(tmp_path / "x"), *TINY)
    cli.one_line_error(r, "method='nope'")


def test_markdown_table_has_a_row_per_metric():
    res = {"methods": {"a": {"m1": {"value": 0.5, "ci": [0.4, 0.6]}}, "b": {}}}
    md = compare.markdown(res)
    assert "| m1 | 0.500 [0.400, 0.600] |  |" in md
    assert compare.baseline_token(np.array([[0.0, 0.0], [1.0, 1.0], [0.4, 0.6]])) == 2


def test_stage_clock_adds_the_time_since_the_last_mark_per_stage(monkeypatch):
    now = iter([10.0, 11.0, 13.5, 14.0])
    monkeypatch.setattr(compare.time, "perf_counter", lambda: next(now))
    clock = compare.StageClock()
    clock("a")
    clock("b")
    clock("a")
    assert clock.seconds == {"a": 1.5, "b": 2.5}
