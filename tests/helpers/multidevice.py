"""Run in its own process: 8 fake CPU devices vs 1 device on the same global batches.

Prints JSON {"losses_8": [...], "losses_1": [...], "max_param_diff": x}.
"""

import os

N_DEVICES = int(os.environ.get("N_DEVICES", "8"))
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={N_DEVICES}"

import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cortex_jax.core import sharding  # noqa: E402
from cortex_jax.experiments import training  # noqa: E402
from cortex_jax.io import convert, folders, shards, sources  # noqa: E402
from cortex_jax.models import cin, dalle, maskgit  # noqa: E402
from tests.helpers import tiny  # noqa: E402


def run(mesh, ds, arch):
    cfg = tiny.train_config()
    trainer = training.Trainer(tiny.model_config(arch), cfg, tiny.codebook(), tiny.GRID, 10, mesh)
    reader = shards.BatchReader(ds, cfg.batch_size, seed=0)
    state, losses = trainer.init_state(), []
    for step in range(5):
        state, m = trainer.train_step(state, *sharding.global_batch(mesh, reader.batch(step)))
        losses.append(float(m["loss"]))
    return losses, training.to_numpy_tree(state.params)


def tis_check():
    """score_dataset on 8 devices vs token_importance on one, same global noise keys."""

    from cortex_jax.experiments import sample_level
    from cortex_jax.method import tis
    from cortex_jax.models import iem

    # three shards (24, 24, 4): batches of 16 (2 per device), 8 (1 each) and 4 (padded to 8)
    ds = tiny.make_dataset(Path(tempfile.mkdtemp()), 52, 0, shard_size=24)
    cfg = tiny.model_config("ce")
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), tiny.GRID, tiny.D)
    predict = iem.predictor(cfg, v)
    out = Path(tempfile.mkdtemp())
    scfg = sample_level.SampleLevelConfig(n_samples=4, batch=16)
    sample_level.score_dataset(predict, tiny.codebook(), ds, str(out), scfg)
    got = np.concatenate([np.load(out / f"tis-{s:05d}.npy") for s in range(3)])
    assert len(got) == 52, got.shape
    tokens, labels, _ = ds.arrays()
    e = jax.device_put(tiny.codebook()[tokens.astype(np.int32)], jax.devices()[0])
    want = tis.token_importance(predict, e, labels, jax.random.PRNGKey(0), 4)
    print(
        json.dumps(
            {
                "max_diff": float(np.abs(got.astype(np.float32) - want).max()),
                "scale": float(np.abs(want).max()),
            }
        )
    )


def dalle_check():
    """Sampled, super-conditioned DalleBart tokens (printed), on however many devices."""

    fx = Path(sys.argv[2])
    cfg, p = folders.read_dallebart_folder(fx / "scan")
    io = dict(np.load(fx / "io.npz"))
    rep = lambda a: np.repeat(a, 3, 0)  # batch 6: padded to 8 on 8 devices
    toks = dalle.generate(
        cfg,
        p,
        rep(io["input_ids"]),
        rep(io["attention_mask"]),
        jax.random.PRNGKey(3),
        64,
        10.0,
        rep(io["input_ids_uncond"]),
        rep(io["attention_mask_uncond"]),
        top_k=8,
    )
    print(json.dumps({"devices": len(jax.devices()), "tokens": np.asarray(toks).tolist()}))


def cin_check():
    """Sampled cin tokens for a batch of 6 classes (printed), on however many devices."""

    fx = Path(sys.argv[2])
    params = convert.convert_taming_gpt_state_dict(dict(np.load(fx / "state_dict.npz")))
    cfg = convert.infer_gpt_config(params, n_head=2, n_classes=10)
    toks = cin.sample(
        cfg,
        params,
        [0, 1, 2, 3, 4, 5],
        jax.random.PRNGKey(1),
        cin.SampleConfig(temperature=1.0, top_k=8),
    )
    print(json.dumps({"devices": len(jax.devices()), "tokens": np.asarray(toks).tolist()}))


def maskgit_check():
    """MaskGIT-sampled tokens for 6 classes (printed), on however many devices."""

    vqgm = sources.load_maskgit(Path(sys.argv[2]))
    toks = vqgm.sample_tokens([0, 1, 2, 3, 4, 9], jax.random.PRNGKey(1), maskgit.SampleConfig(8))
    print(json.dumps({"devices": len(jax.devices()), "tokens": np.asarray(toks).tolist()}))


def llamagen_check():
    """LlamaGen-sampled tokens for 3 classes with CFG and top-k (printed), on however many
    devices (3 images on 8 devices: the padding rows must not change a grid)."""
    fx = Path(sys.argv[2])
    vqgm = sources.load_llamagen(fx / "gpt_tiny.pt", fx / "vq_tiny.pt", config=fx / "config.json")
    toks = vqgm.sample_tokens([0, 4, 9], jax.random.PRNGKey(1), top_k=16, top_p=0.9)
    print(json.dumps({"devices": len(jax.devices()), "tokens": np.asarray(toks).tolist()}))


def main():
    arch = sys.argv[1]
    if arch == "maskgit":
        return maskgit_check()
    if arch == "llamagen":
        return llamagen_check()
    if arch == "dalle":
        return dalle_check()
    if arch == "cin":
        return cin_check()
    assert len(jax.devices()) == 8, jax.devices()
    if arch == "tis":
        return tis_check()
    ds = tiny.make_dataset(Path(tempfile.mkdtemp()), 160, 0)
    l8, p8 = run(sharding.data_mesh(), ds, arch)
    l1, p1 = run(Mesh(np.asarray(jax.devices()[:1]), (sharding.DATA_AXIS,)), ds, arch)
    diff = max(
        float(np.abs(a - b).max())
        for a, b in zip(jax.tree_util.tree_leaves(p8), jax.tree_util.tree_leaves(p1), strict=True)
    )
    print(json.dumps({"losses_8": l8, "losses_1": l1, "max_param_diff": diff}))


if __name__ == "__main__":
    main()
