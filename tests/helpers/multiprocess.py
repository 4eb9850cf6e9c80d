"""One of two processes joined by jax.distributed on 127.0.0.1 with gloo collectives.

Usage: multiprocess.py PROCESS_ID PORT FOLDER [MODE].

MODE train (default): trains the tiny CE through train_and_evaluate on FOLDER/train (both
processes read their half of each global batch) and saves its parameters to
FOLDER/params_PROCESS_ID.npz. MODE generate: both processes generate the same toy dataset, each
into its own folder FOLDER/genPROCESS_ID.

MODE pipeline (tests/test_preemption.py): the three resumable multi-process steps, one after the
other, all into FOLDER: generation of a toy token dataset (FOLDER/gen), IEM training on the tiny
datasets FOLDER/train and FOLDER/val (FOLDER/work; process 0 then saves the final and the best
parameters to FOLDER/out/{final,best}.npz), TIS over the tiny dataset FOLDER/tisdata
(FOLDER/tis); each skips or resumes what an earlier run finished. PROCESS_ID -1 runs them in one
process without jax.distributed (the reference; PORT is ignored). Every completed write of
`shards.atomic_write_bytes` (generation's shards, TIS's score files, meta.json, run.json,
fingerprint.json) is appended to FOLDER/writes.log as `RUN PROCESS NAME`, so a test can count
them. The process exits as a CLI does (`one_line_errors`: status 130 after a stop, its message on
stderr). Environment:

  CORTEX_TEST_STEPS=gen,train,tis   the steps to run (default all three).
  CORTEX_TEST_RUN=RUN   the run's label in writes.log.
  CORTEX_TEST_SIGNAL=PROCESS:SIGNAL:POINT   PROCESS sends itself SIGNAL (KILL or TERM) at POINT:
      a file name (for KILL it writes that file's temporary sibling, then dies before the rename,
      as a kill between write and rename leaves it), or step=K (as training step K starts).
  CORTEX_TEST_HEARTBEAT=S   jax.distributed's heartbeat timeout (default 10 s): how long the
      coordinator waits before it ends the run when another process died.
"""

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

T0 = time.time()  # after importing JAX (the helper's own start is a few seconds earlier)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cortex_jax.experiments import training  # noqa: E402
from cortex_jax.io import shards  # noqa: E402
from tests.helpers import tiny  # noqa: E402

GEN = {"classes": [0, 5, 14], "per_class": 4, "shard_size": 2, "seed": 3}  # 6 shards
TIS_DATA = {"n": 48, "seed": 2, "shard_size": 6}  # 8 shards


def generate(folder: Path):
    """Both processes run the same generation; each into its own folder, so the test can see
    which shards each one wrote."""
    from cortex_jax import toy
    from cortex_jax.experiments.generate import generate_dataset

    out = folder / f"gen{jax.process_index()}"
    generate_dataset(
        toy.load_toy_vqgm(),
        [0, 5, 14],
        6,
        out,
        seed=3,
        sample_config=toy.TOY_SAMPLING,
        shard_size=4,
    )


def _hooks(folder: Path, pid: int) -> None:
    """Logs completed writes to FOLDER/writes.log and sends CORTEX_TEST_SIGNAL's signal."""
    run = os.environ.get("CORTEX_TEST_RUN", "0")
    who, sig, point = (os.environ.get("CORTEX_TEST_SIGNAL") or "-2:-:-").split(":", 2)
    mine = int(who) == pid
    signum = getattr(signal, f"SIG{sig}", None)
    write, batch = shards.atomic_write_bytes, shards.BatchReader.batch

    def logged_write(path, payload, exclusive=False):
        path = Path(os.fspath(path))
        if mine and sig == "KILL" and path.name == point:
            _say(f"SIGKILL before renaming {path.name}")
            prefix = shards._temp_prefix(path)  # the writer's own temporary name
            fd, _ = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
            os.write(fd, payload)
            os.fsync(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        write(path, payload, exclusive)
        if mine and signum is not None and sig != "KILL" and path.name == point:
            _say(f"SIG{sig} after writing {path.name}")
            os.kill(os.getpid(), signum)
        with open(folder / "writes.log", "a") as f:
            f.write(f"{run} {pid} {path.relative_to(folder)}\n")

    def hooked_batch(self, step):
        if mine and point == f"step={step}":
            _say(f"SIG{sig} as step {step} starts")
            os.kill(os.getpid(), signum)
        return batch(self, step)

    shards.atomic_write_bytes = logged_write
    shards.BatchReader.batch = hooked_batch


def _save_tree(tree, path: Path) -> None:
    flat = jax.tree_util.tree_flatten_with_path(training.to_numpy_tree(tree))[0]
    np.savez(path, **{jax.tree_util.keystr(k): v for k, v in flat})


def _say(what: str) -> None:
    print(f"[{time.time() - T0:6.1f} s] {what}", file=sys.stderr, flush=True)


def step_generate(out: Path) -> None:
    """The toy token dataset GEN describes, into `out` (shard s by process s mod P)."""
    from cortex_jax import toy
    from cortex_jax.experiments.generate import generate_dataset

    g = GEN
    generate_dataset(
        toy.load_toy_vqgm(),
        g["classes"],
        g["per_class"],
        out,
        seed=g["seed"],
        sample_config=toy.TOY_SAMPLING,
        shard_size=g["shard_size"],
    )


def step_train(folder: Path) -> None:
    """The tiny CE on FOLDER/train and FOLDER/val into FOLDER/work (20 steps, checkpoints every
    3, evaluations every 5); process 0 saves the final and the best parameters to FOLDER/out."""
    train = shards.TokenDataset.open(folder / "train")
    val = shards.TokenDataset.open(folder / "val")
    cfg = tiny.train_config()
    state, _ = training.train_and_evaluate(
        tiny.model_config(), cfg, train, val, tiny.codebook(), folder / "work"
    )
    trainer = training.Trainer(tiny.model_config(), cfg, tiny.codebook(), tiny.GRID, 1)
    best = training.restore_best(trainer, folder / "work")  # every process: orbax syncs them
    if jax.process_index() == 0:
        (folder / "out").mkdir(exist_ok=True)
        _save_tree(state.params, folder / "out" / "final.npz")
        _save_tree(best.params, folder / "out" / "best.npz")


def _linear(e, w):
    return e.reshape(e.shape[0], -1) @ w


def tis_settings():
    """(predict, codebook, config, model) of the TIS step: a fixed linear map of E (an IEM's
    gradients cost seconds to compile, in every run of process 1, whose compilations JAX does
    not cache; what is tested here is which files are written when, not the IEM), one batch a
    shard."""
    import functools

    import jax.numpy as jnp

    from cortex_jax.experiments import sample_level

    w = np.random.default_rng(1).standard_normal((tiny.GRID**2 * tiny.D, tiny.N_CLASSES))
    predict = functools.partial(_linear, w=jnp.asarray(w, jnp.float32))
    cfg = sample_level.SampleLevelConfig(n_samples=4, batch=TIS_DATA["shard_size"])
    return predict, tiny.codebook(), cfg, {"predict": "linear, weights seed 1"}


def step_tis(folder: Path) -> None:
    """TIS of FOLDER/tisdata into FOLDER/tis: `sample_level.score_dataset`, the recipe's stored
    per-shard scores, with `tis_settings`."""
    from cortex_jax.experiments import sample_level

    predict, codebook, cfg, model = tis_settings()
    dataset = shards.TokenDataset.open(folder / "tisdata")
    sample_level.score_dataset(predict, codebook, dataset, folder / "tis", cfg, model=model)


def pipeline(folder: Path, steps: str) -> None:
    """The steps named in `steps` (of gen, train, tis), in that order; then a barrier."""
    for name, step in (("gen", step_generate), ("train", step_train), ("tis", step_tis)):
        if name in steps.split(","):
            _say(name)
            step(folder / "gen" if name == "gen" else folder)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("pipeline done")


def main():
    pid, port, folder = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "train"
    if mode == "pipeline":
        from cortex_jax.core import errors

        _say("imported")
        if pid >= 0:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            jax.distributed.initialize(
                f"127.0.0.1:{port}",
                num_processes=2,
                process_id=pid,
                heartbeat_timeout_seconds=int(os.environ.get("CORTEX_TEST_HEARTBEAT", "10")),
                shutdown_timeout_seconds=30,
            )
        _hooks(folder, pid)
        with errors.one_line_errors():
            pipeline(folder, os.environ.get("CORTEX_TEST_STEPS", "gen,train,tis"))
        _say("done")
        print(json.dumps({"process": pid, "devices": jax.device_count()}))
        return  # jax.distributed shuts down at exit
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    if mode == "generate":
        generate(folder)
        jax.distributed.shutdown()
        return
    train, val = (
        shards.TokenDataset.open(folder / "train"),
        shards.TokenDataset.open(folder / "val"),
    )
    state, _ = training.train_and_evaluate(
        tiny.model_config(),
        tiny.train_config(),
        train,
        val,
        tiny.codebook(),
        folder / "work",
        stop_after=6,
    )
    flat = jax.tree_util.tree_flatten_with_path(training.to_numpy_tree(state.params))[0]
    np.savez(folder / f"params_{pid}.npz", **{jax.tree_util.keystr(k): v for k, v in flat})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
