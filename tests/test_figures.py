"""Figures: their data beside them as CSV, and the same figure as the same bytes."""

import csv

import numpy as np

from cortex_jax.figures import plots


def test_a_masking_curve_writes_its_data_and_is_reproducible(tmp_path):
    series = {"tis": ([0.9, 0.5, 0.2], [0.01, 0.02, 0.03]), "random": ([0.9, 0.8, 0.7], [0, 0, 0])}
    paths = [plots.masking_curve(tmp_path / d / "c", [1, 2, 3], series, "t") for d in ("a", "b")]
    rows = list(csv.reader((tmp_path / "a" / "c.csv").open()))
    assert rows[0] == ["n", "tis mean", "tis se", "random mean", "random se"]
    np.testing.assert_allclose([float(x) for x in rows[2]], [2, 0.5, 0.02, 0.8, 0])
    for suffix in (".png", ".svg"):
        a, b = (p.with_suffix(suffix).read_bytes() for p in paths)
        assert a == b, suffix
    assert b"<dc:date>" not in paths[0].with_suffix(".svg").read_bytes()
