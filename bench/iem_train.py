"""IEM training throughput at ImageNet size: `python -m bench.iem_train [--archs ce,re,te]`.

Images/s per device for CE/RE/TE (1000 classes, E 16×16×256 looked up from a 16384-row codebook
on device), with XLA's FLOP count of the train step and the achieved share of the measured
matmul peak. Random weights and tokens: throughput does not depend on them.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from bench.common import Sizes, add_smoke_flag, flops_of, matmul_peak, report, sizes, time_fn
from cortex_jax.core import sharding
from cortex_jax.experiments import training


def bench_arch(
    arch: str, batch_per_device: int, dtype: str, peak: float, size: Sizes = Sizes()
) -> dict:
    n_dev = len(jax.devices())
    opt = "adamw_cosine" if arch == "te" else "adam_step"
    cfg = training.TrainConfig(batch_per_device * n_dev, epochs=1, dtype=dtype, optimizer=opt)
    shape = (size.codebook, size.dim)
    codebook = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    trainer = training.Trainer(size.iem_config(arch), cfg, codebook, size.grid, 100)
    rng = np.random.default_rng(1)
    grid = (cfg.batch_size, size.grid, size.grid)
    toks = rng.integers(0, size.codebook, grid).astype(np.uint16)
    labels = rng.integers(0, size.classes, cfg.batch_size).astype(np.int32)
    batch = sharding.global_batch(trainer.mesh, (toks, labels))
    state = trainer.init_state()
    flops = flops_of(trainer.train_step, state, *batch)
    holder = {"s": state}

    def step():
        holder["s"], m = trainer.train_step(holder["s"], *batch)
        return m["loss"]

    sec = time_fn(step, warmup=1, repeats=3)
    return {
        "arch": arch,
        "dtype": dtype,
        "batch/device": batch_per_device,
        "images/s/device": cfg.batch_size / sec / n_dev,
        "GFLOP/image": flops / cfg.batch_size / 1e9,
        "TFLOP/s": flops / sec / 1e12,
        "% of matmul peak": 100 * flops / sec / peak,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="ce,re,te")
    ap.add_argument("--batch_per_device", type=int, default=8)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--json", default="bench/results/iem_train.json")
    add_smoke_flag(ap)
    args = ap.parse_args()
    size = sizes(args)
    dtype = jax.numpy.bfloat16 if args.dtype == "bfloat16" else jax.numpy.float32
    peak = matmul_peak(size.peak_n, dtype)
    print(f"matmul peak: {peak / 1e12:.3f} TFLOP/s ({args.dtype})")
    rows = [
        bench_arch(a, args.batch_per_device, args.dtype, peak, size) for a in args.archs.split(",")
    ]
    for r in rows:
        r["matmul peak TFLOP/s"] = peak / 1e12
    report(
        "iem_train",
        rows,
        [
            "arch",
            "dtype",
            "batch/device",
            "images/s/device",
            "GFLOP/image",
            "TFLOP/s",
            "% of matmul peak",
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
