"""Preemption of a multi-host run: two jax.distributed processes on CPU (gloo), one of them killed
with SIGKILL in the middle of generation, of IEM training and of TIS, or sent SIGTERM during
training; rerunning both ends with the outputs of an uninterrupted one-process run, byte for
byte, and with every shard written exactly once.

One chain of runs of tests/helpers/multiprocess.py (mode pipeline) in one folder, as a pod's
hosts rerun the recipe's commands; each step skips or resumes what an earlier run left:

  run 1  generation: process 0 (the coordinator) dies between writing shard 2's labels and
         renaming them
  run 2  generation finishes; training: process 1 dies as step 8 starts
  run 3  training resumes; process 1 gets SIGTERM as step 12 starts: both stop at one step
  run 4  training finishes; TIS: process 0 dies between writing its second score file and
         renaming it
  run 5  TIS finishes

The references: training in one process with two CPU devices (the same mesh: its numbers are
the two processes' to the bit), generation and TIS in this process (one device, as each of the
two processes has). A survivor must not hang: jax.distributed ends it when the other process
dies (at once when the coordinator died, else within the heartbeat timeout, HEARTBEAT_S here;
`core.sharding`'s docstring states the bound), and the chain fails if it outlives BOUND_S.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from cortex_jax.core import errors, sharding
from cortex_jax.experiments import sample_level, training
from cortex_jax.experiments.generate import write_sampled
from tests.helpers import multiprocess, tiny

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "tests/helpers/multiprocess.py")
HEARTBEAT_S = 10
BOUND_S = HEARTBEAT_S + 30  # after the victim's death (margin for a loaded 2-core machine)
RUN_TIMEOUT_S = 400
CHAIN = [  # (steps, CORTEX_TEST_SIGNAL) of each run
    ("gen", "0:KILL:shard-00002.labels.npy"),
    ("gen,train", "1:KILL:step=8"),
    ("train", "1:TERM:step=12"),
    ("train,tis", "0:KILL:tis-00002.npy"),
    ("tis", ""),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(folder: Path) -> None:
    tiny.make_dataset(folder / "train", 160, 0)
    tiny.make_dataset(folder / "val", 48, 1)
    d = multiprocess.TIS_DATA
    tiny.make_dataset(folder / "tisdata", d["n"], d["seed"], d["shard_size"])


def _run_pair(folder: Path, run: int, steps: str, signal_spec: str) -> dict:
    """Both processes of one run; returns their exit statuses, exit times (s after the start)
    and logs. A process still running RUN_TIMEOUT_S after the start, or BOUND_S after the
    other one died, is killed and marked hung."""
    env = {
        **os.environ,
        "CORTEX_TEST_RUN": str(run),
        "CORTEX_TEST_STEPS": steps,
        "CORTEX_TEST_SIGNAL": signal_spec,
        "CORTEX_TEST_HEARTBEAT": str(HEARTBEAT_S),
    }
    port, logs, procs = str(_free_port()), [], []
    for i in range(2):
        logs.append(folder / f"run{run}-p{i}.log")
        with logs[-1].open("w") as log:
            cmd = [sys.executable, SCRIPT, str(i), port, str(folder), "pipeline"]
            procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log))
    start, ended, hung = time.time(), [None, None], [False, False]
    while None in ended:
        time.sleep(0.2)
        now = time.time() - start
        for i, p in enumerate(procs):
            if ended[i] is None and p.poll() is not None:
                ended[i] = now
        for i, p in enumerate(procs):
            other = ended[1 - i]
            late = other is not None and procs[1 - i].returncode == -9 and now - other > BOUND_S
            if ended[i] is None and (now > RUN_TIMEOUT_S or late):
                p.kill()
                p.wait()
                ended[i], hung[i] = now, True
    return {
        "rc": [p.returncode for p in procs],
        "ended": ended,
        "hung": hung,
        "log": [x.read_text(errors="replace") for x in logs],
        "latest": sorted(
            int(p.name) for p in (folder / "work/checkpoints/latest").glob("*") if p.name.isdigit()
        ),
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("preemption")
    pair, ref = root / "pair", root / "ref"
    for folder in (pair, ref):
        _inputs(folder)
    with (root / "reference-training.log").open("w") as log:  # meanwhile, on the other core
        reference = subprocess.Popen(
            [sys.executable, SCRIPT, "-1", "0", str(ref), "pipeline"],
            cwd=REPO,
            env={
                **os.environ,
                "CORTEX_TEST_STEPS": "train",
                "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
            },
            stdout=log,
            stderr=log,
        )
    runs = [_run_pair(pair, i + 1, *run) for i, run in enumerate(CHAIN)]
    keys = ("rc", "ended", "hung", "latest")  # for a look after a failure
    (root / "chain.json").write_text(json.dumps([{k: r[k] for k in keys} for r in runs]))
    assert reference.wait(timeout=RUN_TIMEOUT_S) == 0, (root / "reference-training.log").read_text()
    assert jax.process_count() == 1 and jax.local_device_count() == 1  # as each process has
    multiprocess.step_generate(ref / "gen")
    multiprocess.step_tis(ref)
    writes = [ln.split() for ln in (pair / "writes.log").read_text().splitlines()]
    return {"pair": pair, "ref": ref, "runs": runs, "writes": writes}


def _tail(run: dict) -> str:
    return "\n".join(f"--- process {i}:\n{log[-3000:]}" for i, log in enumerate(run["log"]))


def _killed(run: dict, victim: int) -> None:
    """The victim died by SIGKILL; the survivor ended by itself (not hung), within BOUND_S."""
    survivor = 1 - victim
    assert run["rc"][victim] == -9, _tail(run)
    assert not run["hung"][survivor], f"process {survivor} hung after the kill\n{_tail(run)}"
    assert run["rc"][survivor] != 0, _tail(run)
    assert run["ended"][survivor] - run["ended"][victim] <= BOUND_S, _tail(run)


def _finished(run: dict) -> None:
    assert run["rc"] == [0, 0], _tail(run)


def _same_files(a: Path, b: Path) -> list[str]:
    """The names in folder a, after checking that b holds the same names with the same bytes."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())  # no temporary file left, none lost
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


def _writes(chain: dict, folder: str) -> list[tuple[int, int, str]]:
    """(run, process, file name) of each completed write under `folder`, in order."""
    return [
        (int(r), int(p), Path(name).name)
        for r, p, name in chain["writes"]
        if Path(name).parent.name == folder
    ]


@pytest.mark.slow
def test_generation_killed_mid_write_resumes_to_the_same_shards_each_written_once(chain):
    runs = chain["runs"]
    _killed(runs[0], victim=0)  # the coordinator: the survivor is ended at once
    names = _same_files(chain["pair"] / "gen", chain["ref"] / "gen")
    assert len([n for n in names if n.endswith(".labels.npy")]) == 6
    writes = _writes(chain, "gen")
    labels = [w for w in writes if w[2].endswith(".labels.npy")]
    # a shard is complete once its labels are renamed into place: each is, exactly once
    assert sorted(w[2] for w in labels) == sorted(n for n in names if n.endswith(".labels.npy"))
    assert [w[2] for w in writes].count("meta.json") == 1
    # the killed write (run 1) completed in run 2, by its owner (shard s → process s mod 2);
    # the shard's tokens, renamed before the kill, were written again: labels come last
    assert [(r, p) for r, p, n in labels if n == "shard-00002.labels.npy"] == [(2, 0)]
    assert [(r, p) for r, p, n in writes if n == "shard-00002.tokens.npy"] == [(1, 0), (2, 0)]
    for i, (r, p, n) in enumerate(writes):  # nothing is written once its shard is complete
        complete = next(
            j for j, w in enumerate(writes) if w[2] == n.replace(".tokens.", ".labels.")
        )
        assert i <= complete, (r, p, n)
        assert n == "meta.json" or int(n[6:11]) % 2 == p, (r, p, n)


@pytest.mark.slow
def test_training_killed_resumes_to_the_uninterrupted_weights(chain):
    runs = chain["runs"]
    _killed(runs[1], victim=1)  # process 0 fails at its next collective, or jax ends it
    assert max(runs[1]["latest"]) < 8  # it died mid-run: the resume starts from a checkpoint
    pair, ref = chain["pair"], chain["ref"]
    for name in ("final.npz", "best.npz"):
        a, b = np.load(pair / "out" / name), np.load(ref / "out" / name)
        assert a.files == b.files and len(a.files) > 5
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")

    def rows(folder: Path) -> list[dict]:
        lines = (folder / "work/metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]

    assert rows(pair) == rows(ref)  # every logged step once, with the same numbers
    writes = _writes(chain, "work")
    assert [w for w in writes if w[2] == "run.json"] == [writes[0]]  # claimed once, first
    # metrics.jsonl is appended in place; a resume rewrites it once, cut back to its checkpoint
    cuts = [(r, p) for r, p, name in writes if name == "metrics.jsonl"]
    assert len(cuts) == len(set(cuts)) and {w[2] for w in writes} <= {"run.json", "metrics.jsonl"}


@pytest.mark.slow
def test_sigterm_stops_both_processes_at_one_saved_step(chain):
    run = chain["runs"][2]
    assert run["rc"] == [130, 130], _tail(run)  # a CLI's exit status after a stop
    steps = [re.findall(r"stopped by SIGTERM; state saved at step (\d+),", x) for x in run["log"]]
    assert len(steps[0]) == len(steps[1]) == 1 and steps[0] == steps[1], _tail(run)
    step = int(steps[0][0])
    assert 13 <= step < 20 and step in run["latest"], (step, run["latest"])
    assert run["ended"][1] - run["ended"][0] < BOUND_S  # both stopped, neither waited out


@pytest.mark.slow
def test_tis_killed_mid_write_resumes_to_the_same_scores_each_written_once(chain):
    runs = chain["runs"]
    _killed(runs[3], victim=0)
    _finished(runs[4])
    names = _same_files(chain["pair"] / "tis", chain["ref"] / "tis")
    assert names == ["fingerprint.json"] + [f"tis-{s:05d}.npy" for s in range(8)]
    writes = _writes(chain, "tis")
    assert sorted(n for _, _, n in writes) == names  # each score file written exactly once
    assert [(r, p) for r, p, n in writes if n == "tis-00000.npy"] == [(4, 0)]
    assert [(r, p) for r, p, n in writes if n == "tis-00002.npy"] == [(5, 0)]
    assert all(int(n[4:9]) % 2 == p for _, p, n in writes if n.startswith("tis-"))


# The stops a SIGTERM causes in a multi-process run, each process's side: the agreement itself
# (JAX's preemption service) is the chain's run 3; here `preemption_agreed` is made to say yes.


def _agree_at(monkeypatch, at: int) -> list[int]:
    asked: list[int] = []

    def agreed(step: int | None = None) -> bool:  # the shard loops count their calls
        asked.append(len(asked) if step is None else step)
        return asked[-1] == at

    monkeypatch.setattr(sharding, "preemption_agreed", agreed)
    return asked


def _sample(labels, rng):
    return np.asarray(jax.random.randint(rng, (len(labels), 2, 2), 0, 9))


def test_generation_stops_before_the_agreed_shard_and_resumes_to_the_same_bytes(
    tmp_path, monkeypatch
):
    labels, meta = np.arange(9, dtype=np.int32) % 3, {"class_names": ["a", "b", "c"]}
    asked = _agree_at(monkeypatch, 3)
    with pytest.raises(errors.Interrupted, match="^stopped by SIGTERM before shard 3; the finish"):
        write_sampled(_sample, labels, tmp_path / "d", meta, shard_size=2)
    assert asked == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "d").glob("*.labels.npy")) == [
        f"shard-{s:05d}.labels.npy" for s in range(3)
    ]
    monkeypatch.undo()
    write_sampled(_sample, labels, tmp_path / "d", meta, shard_size=2)
    write_sampled(_sample, labels, tmp_path / "whole", meta, shard_size=2)
    for f in sorted((tmp_path / "whole").iterdir()):
        assert (tmp_path / "d" / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.slow
def test_tis_stops_before_the_agreed_shard_and_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    d = multiprocess.TIS_DATA
    ds = tiny.make_dataset(tmp_path / "d", 4 * d["shard_size"], 0, d["shard_size"])
    predict, codebook, cfg, _ = multiprocess.tis_settings()  # the chain's: compiled already
    _agree_at(monkeypatch, 2)
    with pytest.raises(errors.Interrupted, match="^stopped by SIGTERM before shard 2; the finish"):
        sample_level.score_dataset(predict, codebook, ds, tmp_path / "tis", cfg)
    assert sorted(p.name for p in (tmp_path / "tis").glob("tis-*")) == [
        "tis-00000.npy",
        "tis-00001.npy",
    ]
    monkeypatch.undo()
    again = sample_level.score_dataset(predict, codebook, ds, tmp_path / "tis", cfg)
    assert [Path(p).name for p in again] == ["tis-00002.npy", "tis-00003.npy"]
    sample_level.score_dataset(predict, codebook, ds, tmp_path / "whole", cfg)
    for f in sorted((tmp_path / "whole").iterdir()):
        assert (tmp_path / "tis" / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.slow
def test_training_saves_the_agreed_step_and_stops_there(tmp_path, monkeypatch):
    train = tiny.make_dataset(tmp_path / "train", 80, 0)
    val = tiny.make_dataset(tmp_path / "val", 16, 1)
    args = (tiny.model_config(), tiny.train_config(), train, val, tiny.codebook(), tmp_path / "w")
    _agree_at(monkeypatch, 4)  # between the checkpoints of steps 3 and 6
    with pytest.raises(errors.Interrupted, match="^stopped by SIGTERM; state saved at step 4,"):
        training.train_and_evaluate(*args)
    monkeypatch.undo()
    resumed: list[int] = []
    state, _ = training.train_and_evaluate(*args, on_resume=resumed.append, stop_after=5)
    assert resumed == [4] and int(state.step) == 5
