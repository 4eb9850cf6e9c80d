"""IEM training: learning, resume, 8 devices = 1 device, two processes agree."""

import dataclasses
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from cortex_jax.core import errors, sharding
from cortex_jax.experiments import training
from cortex_jax.io import shards
from tests.helpers import tiny

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokens")
    return tiny.make_dataset(root / "train", 160, 0), tiny.make_dataset(root / "val", 48, 1)


@pytest.mark.parametrize("arch", ["ce", "re", "te"])
def test_tiny_iem_overfits_a_batch(arch, datasets):
    cfg = tiny.train_config(learning_rate=3e-3)
    # no dropout: memorising one batch is the point (Net4's 0.2 at every branch slows it)
    model = dataclasses.replace(tiny.model_config(arch), dropout=0.0)
    trainer = training.Trainer(model, cfg, tiny.codebook(), tiny.GRID, 10)
    batch = sharding.global_batch(trainer.mesh, shards.BatchReader(datasets[0], 16).batch(0))
    state = trainer.init_state()
    losses = []
    for _ in range(60):
        state, m = trainer.train_step(state, *batch)
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.25 * losses[0], losses
    valid = sharding.global_batch(trainer.mesh, np.ones(16, bool))
    ev = trainer.eval_step(state, *batch, valid)
    assert int(ev["top1"]) >= 15  # of 16: memorised


def test_validation_covers_every_image_of_a_split_that_is_not_a_multiple_of_the_batch(tmp_path):
    val = tiny.make_dataset(tmp_path / "val", 21, 3)  # 2 batches of 8 and 5 left over
    trainer = training.Trainer(
        tiny.model_config(), tiny.train_config(), tiny.codebook(), tiny.GRID, 1
    )
    state = trainer.init_state()
    got = trainer.evaluate(state, shards.BatchReader(val, 8, shuffle=False))
    tokens, labels, _ = val.arrays()
    e = tiny.codebook()[tokens.astype(np.int32)]
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits = np.asarray(trainer.model.apply(variables, e, train=False), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True))
    logp -= logits.max(1, keepdims=True)
    want_loss = -np.mean(logp[np.arange(21), labels])
    rank = (logits > logits[np.arange(21), labels][:, None]).sum(1)
    np.testing.assert_allclose(got["val_loss"], want_loss, rtol=1e-5)
    for k in training.TOPK:
        assert got[f"val_top{k}"] == pytest.approx(np.mean(rank < k)), k
    assert len(shards.BatchReader(val, 8).full_pass().__next__()[0]) == 8
    assert sum(int(v.sum()) for _, _, v in shards.BatchReader(val, 8).full_pass()) == 21


def _params(state):
    return jax.tree_util.tree_leaves(training.to_numpy_tree(state.params))


def test_kill_and_resume_equals_uninterrupted(datasets, tmp_path):
    train, val = datasets
    args = (tiny.model_config(), tiny.train_config(), train, val, tiny.codebook())
    full, best_full = training.train_and_evaluate(*args, tmp_path / "full")
    rows = [json.loads(x) for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    want = min(evals, key=lambda r: r["val_loss"])
    assert best_full == {k: want[k] for k in best_full} and best_full["step"] == want["step"]
    training.train_and_evaluate(*args, tmp_path / "resumed", stop_after=7)  # "killed" at 7
    steps = json.loads(Path(tmp_path / "resumed/metrics.jsonl").read_text().splitlines()[-1])
    assert steps["step"] == 7
    resumed, best = training.train_and_evaluate(*args, tmp_path / "resumed")
    assert int(resumed.step) == int(full.step) == 2 * (160 // 16)
    for a, b in zip(_params(full), _params(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    lines = [json.loads(x) for x in (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == sorted({x["step"] for x in lines})  # no duplicates
    # the TensorBoard curves are metrics.jsonl's, also across the resume
    for run in ("full", "resumed"):
        rows = [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        want = {(r["step"], k): v for r in rows for k, v in r.items() if k != "step"}
        got = _tensorboard_scalars(tmp_path / run / "tensorboard")
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-6)


def test_event_files_are_written_without_importing_torch(tmp_path):
    """tensorboardX imports torch when it can (the conformance extra installs it): 7 s of every
    train.iem on 2 cores, for tensors we never pass. The events must still be TensorBoard's."""
    code = (
        "import sys; from cortex_jax.io import events\n"
        f"with events.ScalarLog({str(tmp_path)!r}) as log: log.write(3, {{'loss': 0.5}})\n"
        "print('torch' in sys.modules); import torch; print(torch.ones(1).item())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.split() == ["False", "1.0"], r.stderr[-2000:]
    assert _tensorboard_scalars(tmp_path) == {(3, "loss"): 0.5}


def _tensorboard_scalars(folder: Path) -> dict[tuple[int, str], float]:
    """{(step, tag): value} as TensorBoard reads the event files: records framed as
    length (u64), its CRC, the Event, its CRC; a SessionLog START at step s drops what earlier
    files logged from s on."""
    from tensorboardX.proto import event_pb2

    out: dict[tuple[int, str], float] = {}
    for f in sorted(folder.glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime_ns):
        data, i = f.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event.FromString(data[i + 12 : i + 12 + n])
            i += 12 + n + 4
            if event.session_log.status == event_pb2.SessionLog.START:
                out = {k: v for k, v in out.items() if k[0] < event.step}
            for v in event.summary.value:
                out[(event.step, v.tag)] = v.simple_value
    return out


def test_ctrl_c_saves_the_state_and_the_rerun_resumes_there(datasets, tmp_path):
    train, val = datasets
    args = (tiny.model_config(), tiny.train_config(), train, val, tiny.codebook(), tmp_path)

    def ctrl_c(step, total, m):
        raise KeyboardInterrupt  # lands at step 5, between the checkpoints of steps 3 and 6

    with pytest.raises(errors.Interrupted, match="state saved at step 5, rerun the same"):
        training.train_and_evaluate(*args, ctrl_c)
    resumed = []
    state, _ = training.train_and_evaluate(*args, on_resume=resumed.append, stop_after=6)
    assert resumed == [5] and int(state.step) == 6
    with pytest.raises(SystemExit) as e, errors.one_line_errors():
        raise errors.Interrupted("interrupted; state saved at step 5")
    assert e.value.code == errors.INTERRUPTED_STATUS


def test_sigterm_stops_at_the_next_step_with_the_state_saved(datasets, tmp_path):
    # A preempted VM gets SIGTERM: the loop ends at the next step boundary (never inside a
    # checkpoint write) with that step saved, and the handlers are the old ones afterwards.
    train, val = datasets
    args = (tiny.model_config(), tiny.train_config(), train, val, tiny.codebook(), tmp_path)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def preempt(step, total, m):
        if step == 5:  # called at step 5 (an evaluation), of 9
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(errors.Interrupted, match="^stopped by SIGTERM; state saved at step 5,"):
        training.train_and_evaluate(*args, preempt)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    resumed = []
    training.train_and_evaluate(*args, on_resume=resumed.append, stop_after=6)
    assert resumed == [5]


def test_stop_requests_leave_an_ignored_signal_ignored():
    # A job started in the background ignores SIGINT: training must not start obeying it.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with errors.stop_requests() as requested:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            assert requested() == "SIGTERM"
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        with errors.stop_requests(enabled=False) as requested:
            assert requested() is None and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, old)


def test_best_checkpoint_has_lowest_validation_loss(datasets, tmp_path):
    train, val = datasets
    cfg = tiny.train_config(epochs=3)
    training.train_and_evaluate(tiny.model_config(), cfg, train, val, tiny.codebook(), tmp_path)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "val_loss" in x]
    best_step = min(evals, key=lambda x: x["val_loss"])["step"]
    trainer = training.Trainer(tiny.model_config(), cfg, tiny.codebook(), tiny.GRID, 10)
    assert int(training.restore_best(trainer, tmp_path).step) == best_step


def test_eight_fake_devices_match_one(tmp_path):
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/helpers/multidevice.py"), "re"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["losses_8"], out["losses_1"], rtol=1e-5, atol=1e-6)
    # Adam divides by √v: a near-zero gradient whose sign differs with the reduction order moves
    # its parameter by up to lr (3e-3) a step, so parameters agree to Adam's step, not to 1e-6.
    assert out["max_param_diff"] < 3e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree(tmp_path):
    tiny.make_dataset(tmp_path / "train", 160, 0)
    tiny.make_dataset(tmp_path / "val", 48, 1)
    port = str(_free_port())
    script = str(REPO / "tests/helpers/multiprocess.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(i), port, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    a, b = np.load(tmp_path / "params_0.npz"), np.load(tmp_path / "params_1.npz")
    assert a.files == b.files and len(a.files) > 5
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_dataset_tis_on_eight_devices_matches_one():
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/helpers/multidevice.py"), "tis"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["scale"] > 0 and out["max_diff"] <= 2e-3 * out["scale"]  # float16 storage


def test_bfloat16_compute_learns(datasets):
    cfg = tiny.train_config(dtype="bfloat16", learning_rate=3e-3)
    trainer = training.Trainer(tiny.model_config("ce"), cfg, tiny.codebook(), tiny.GRID, 10)
    batch = sharding.global_batch(trainer.mesh, shards.BatchReader(datasets[0], 16).batch(0))
    state = trainer.init_state()
    losses = []
    for _ in range(40):
        state, m = trainer.train_step(state, *batch)
        losses.append(float(m["loss"]))
    assert jax.tree_util.tree_leaves(state.params)[0].dtype == np.float32  # params stay f32
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.slow
def test_two_processes_write_their_own_generation_shards(tmp_path):
    from cortex_jax import toy
    from cortex_jax.experiments.generate import generate_dataset

    port = str(_free_port())
    script = str(REPO / "tests/helpers/multiprocess.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(i), port, str(tmp_path), "generate"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    single = generate_dataset(
        toy.load_toy_vqgm(),
        [0, 5, 14],
        6,
        tmp_path / "single",
        seed=3,
        sample_config=toy.TOY_SAMPLING,
        shard_size=4,
    )
    written = [
        sorted(p.name[6:11] for p in (tmp_path / f"gen{i}").glob("shard-*.labels.npy"))
        for i in range(2)
    ]
    assert written == [["00000", "00002", "00004"], ["00001", "00003"]]  # shard s → process s % 2
    for i in range(2):
        for name in written[i]:
            for kind in ("tokens", "labels"):
                f = f"shard-{name}.{kind}.npy"
                assert (tmp_path / f"gen{i}" / f).read_bytes() == (
                    tmp_path / "single" / f
                ).read_bytes()
    assert len(single.labels) == 5  # 18 images in shards of 4
