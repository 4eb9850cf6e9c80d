"""TIS throughput at ImageNet size: `python -m bench.tis [--archs ce,re] [--batch 4]`.

Images/s of SmoothGrad TIS (1000 classes, E 16×16×256, N = 20 noisy copies, probability
objective) for random-weight CE/RE IEMs, with XLA's FLOP count and the achieved share of the
measured matmul peak, both from the same run. No ratio against the authors' PyTorch loop is
printed: one measured on another day is no comparison on a shared, noisy machine; run both in one
session to compare.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from bench.common import flops_of, matmul_peak, report, time_fn
from cortex_jax.method import tis
from cortex_jax.models import iem


def bench_arch(arch: str, batch: int, n_samples: int, chunk: int, peak: float) -> dict:
    cfg = iem.IEMConfig(arch, 1000)
    v = iem.init_variables(cfg, jax.random.PRNGKey(0), 16, 256)
    predict = iem.predictor(cfg, v)
    e = jax.random.normal(jax.random.PRNGKey(1), (batch, 16, 16, 256))
    y = jnp.arange(batch) % 1000
    rng, ids = jax.random.PRNGKey(2), jnp.arange(batch)
    args = (predict, e, y, rng, ids, n_samples, 0.2, "probability", False, chunk)
    # XLA counts a loop body once, so count one jitted chunk and multiply by the chunks.
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(ids)
    one = (predict, e, y, keys, jnp.ones(batch), 0, chunk, n_samples, "probability")
    flops = flops_of(tis._tis_chunk, *one) * -(-n_samples // chunk)
    sec = time_fn(lambda: tis._tis(*args), warmup=1, repeats=3)
    row = {
        "arch": arch,
        "batch": batch,
        "N": n_samples,
        "chunk": chunk,
        "images/s": batch / sec,
        "GFLOP/image": flops / batch / 1e9,
        "TFLOP/s": flops / sec / 1e12,
        "% of matmul peak": 100 * flops / sec / peak,
    }
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="ce,re")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n_samples", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=10, help="noisy copies per image per pass")
    ap.add_argument("--json", default="bench/results/tis.json")
    args = ap.parse_args()
    peak = matmul_peak()
    print(f"matmul peak: {peak / 1e12:.3f} TFLOP/s (float32)")
    rows = [
        bench_arch(a, args.batch, args.n_samples, args.chunk, peak) for a in args.archs.split(",")
    ]
    for r in rows:
        r["matmul peak TFLOP/s"] = peak / 1e12
    cols = ["arch", "batch", "N", "chunk", "images/s", "GFLOP/image", "TFLOP/s", "% of matmul peak"]
    report("tis", rows, cols, args.json)


if __name__ == "__main__":
    main()
