"""The one-million-image rehearsal (bench/scale.py, configs/toy_scale.py) and the progress lines
it reads: the config's counts, the log's throughput and ETA, the extrapolation, and the whole
rehearsal end to end at 200 images."""

import io
import json
import subprocess
import sys

import pytest

from bench import scale
from configs import toy_scale
from cortex_jax.core.progress import Progress
from tests.conftest import REPO


def test_the_config_spreads_the_papers_counts_over_the_concepts():
    c = toy_scale.get_config()
    assert (c.generate.train, c.generate.val, c.generate.test) == (71429, 21429, 3571)
    assert c.generate.classes == ",".join(str(i) for i in range(14)) and c.family == "toy"
    small = toy_scale.get_config("n=10_000,iem=te,epochs=2")
    assert (small.generate.train, small.generate.val, small.generate.test) == (714, 214, 36)
    assert small.arch == "te" and small.train.epochs == 2
    assert small.workdir == "runs/toy_scale_10000"
    small.workdir = "/tmp/x"  # every path follows the workdir
    assert (small.data.train, small.iem_workdir) == ("/tmp/x/tokens/train", "/tmp/x/iem_te")
    assert toy_scale.get_config("n=14").generate.test == 1  # at least one image a concept
    for bad, needle in (("n=0", "n='0'"), ("n=ten", "n='ten'"), ("size=3", "unknown"),
                        ("iem=xx", "unknown IEM")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            toy_scale.get_config(bad)


def test_progress_in_a_log_gives_throughput_eta_and_the_stages_total(monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 40.0, 40.0])
    monkeypatch.setattr("cortex_jax.core.progress.time.monotonic", lambda: next(clock))
    out = io.StringIO()  # not a terminal: lines, no bar
    with Progress("TIS (train split)", 100, every=15.0, stream=out) as p:
        p.update_to(10)  # t=10: too soon for a line
        p.update_to(40)  # t=20: 2 img/s, 60 left
    lines = out.getvalue().splitlines()
    assert lines == [
        "[progress] TIS (train split): 40/100 img (40.0%), 2 img/s, ETA 30s",
        "[progress] TIS (train split): done, 40 img in 40.000 s, 1 img/s",
    ]
    m = scale._DONE.match(lines[1])
    assert m and (m["stage"], m["n"], m["unit"], m["s"]) == (
        "TIS (train split)",
        "40",
        "img",
        "40.000",
    )


def test_extrapolation_fits_a_fixed_cost_and_a_cost_per_image():
    run = lambda n, wall: {"n": n, "rows": [{"step": "a", "wall_s": wall}]}  # noqa: E731
    rows = scale.extrapolate(run(10_000, 110.0), run(1_000, 20.0), 1_000_000)
    assert rows[0]["s/1k train images"] == pytest.approx(10.0)  # 90 s for 9,000 images
    assert rows[0]["hours@1000000"] == pytest.approx((10 + 10_000) / 3600)
    assert rows[-1] == {"step": "total", "hours@1000000": pytest.approx((10 + 10_000) / 3600)}


def test_a_rehearsal_starts_from_an_empty_workdir_and_takes_key_value_overrides(tmp_path):
    (tmp_path / "old.txt").write_text("someone's")
    with pytest.raises(SystemExit, match="is not empty"):
        scale.rehearse(200, tmp_path)
    assert (tmp_path / "old.txt").read_text() == "someone's"
    with pytest.raises(SystemExit, match="--set 'sample.n_samples'; expected KEY=VALUE"):
        scale.rehearse(200, tmp_path / "new", overrides=("sample.n_samples",))
    assert not (tmp_path / "new").exists()


def test_a_rehearsal_resumes_only_an_unfinished_one_with_the_same_settings(tmp_path):
    state, work = tmp_path / "scale.json", tmp_path / "w"
    with pytest.raises(SystemExit, match="--resume: no rehearsal recorded in"):
        scale.rehearse(200, work, state=state, resume=True)
    mine = "configs/toy_scale.py:n=200,iem=ce,epochs=3"
    for recorded, says in (
        ({"complete": True, "config": mine}, "holds a finished rehearsal"),
        ({"complete": False, "config": mine.replace("n=200", "n=300")}, "holds a run of .*n=300.*"),
    ):
        state.write_text(json.dumps({**recorded, "rows": [], "anon_MB_over_s": {}}))
        with pytest.raises(SystemExit, match=f"--resume: .*{says}, not an unfinished one of"):
            scale.rehearse(200, work, state=state, resume=True)
    assert not work.exists()  # refused before any step ran


@pytest.mark.slow
def test_the_rehearsal_runs_every_step_and_measures_each(tmp_path):
    """n = 200 (196 / 56 / 14 images), one epoch, 2 noisy copies, shards of 14 images: one
    shape for every compiled function, so the test times processes, not compilers."""
    out = tmp_path / "scale.json"
    cmd = [sys.executable, "-m", "bench.scale", "--n", "200", "--workdir", str(tmp_path / "w")]
    fast = ("--epochs", "1", "--set", "sample.n_samples=2", "--set", "generate.shard_size=14")
    r = subprocess.run(
        [*cmd, *fast, "--json", str(out), "--quiet"], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["complete"] and result["counts"] == {"train": 196, "val": 56, "test": 14}
    assert result["config"].endswith("--config.generate.shard_size=14")
    rows = {row["step"].strip(): row for row in result["rows"]}
    for step in scale.STEPS:
        row = rows[step]
        for key in ("wall_s", "peak_rss_MB", "peak_anon_MB", "disk_MB"):
            assert row[key] > 0, (step, key, row[key])
    for step, images in (("train.generate", 266), ("train.iem", 128), ("explain.sample", 210)):
        assert rows[step]["images"] == images and rows[step]["images/s"] > 0
    for stage, images in (
        ("TIS (train split)", 196),
        ("TIS (test split)", 14),
        ("T_concept (train split)", 196),
        ("masking evaluation (test split)", 14),
        ("generate train", 196),
    ):
        assert rows[stage]["images"] == images and rows[stage]["wall_s"] > 0, stage
    assert rows["total"]["wall_s"] >= sum(rows[s]["wall_s"] for s in scale.STEPS) - 1e-6
    assert "explain.atlas" in r.stdout and (tmp_path / "w" / "atlas" / "index.html").is_file()
    # the reports name the classifier config.classifier = "family" stands for
    assert "(T_concept n=" in (tables := (tmp_path / "w" / "tables.md").read_text())
    assert "classifier toy judge)" in tables and "classifier family" not in tables
    assert json.loads((tmp_path / "w" / "sample_ce" / "report.json").read_text())["classifier"] == (
        "toy judge"
    )
