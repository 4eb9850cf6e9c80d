"""One of two processes joined by jax.distributed on 127.0.0.1 with gloo collectives.

Usage: multiprocess.py PROCESS_ID PORT FOLDER. Trains the tiny CE through train_and_evaluate on
FOLDER/train (both processes read their half of each global batch) and saves its parameters to
FOLDER/params_PROCESS_ID.npz.
"""

import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cortex_jax.experiments import training  # noqa: E402
from cortex_jax.io import shards
from tests.helpers import tiny  # noqa: E402


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


def main():
    pid, port, folder = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    assert jax.process_count() == 2 and len(jax.devices()) == 2
    if len(sys.argv) > 4 and sys.argv[4] == "generate":
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
