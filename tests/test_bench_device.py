"""bench/device.sh, the one prepared accelerator script, runs to the end (tiny sizes, CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_script_smoke_run_writes_every_table(tmp_path):
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    r = subprocess.run(
        ["bash", "bench/device.sh", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    log = (tmp_path / "device.log").read_text()
    assert log.count("   exit 0") == 5, log[-3000:]
    for name, key in (
        ("iem_train", "images/s/device"),
        ("tis", "images/s"),
        ("tis_methods", "images/s"),
        ("selection", "steps/s x images"),
        ("generate", "tokens/s"),
    ):
        rows = json.loads((tmp_path / f"{name}.json").read_text())["rows"]
        assert rows and all(row[key] > 0 and row["% of matmul peak"] > 0 for row in rows)
    archs = [row["arch"] for row in json.loads((tmp_path / "iem_train.json").read_text())["rows"]]
    assert archs == ["ce", "re", "te"]
    rows = json.loads((tmp_path / "tis_methods.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["smoothgrad", "integrated_gradients", "occlusion"]
    assert rows[2]["N"] == 8 * 8 + 1  # occlusion: a forward pass per position, and the intact one
