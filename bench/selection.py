"""Codebook-level selection throughput at ImageNet size: `python -m bench.selection`.

Optimisation steps/s × images for CE (K = 16384, d = 256, 16×16 grid, centre 4×4 mask,
1000 classes, random weights), one image and a vmapped batch, with XLA's FLOP count per step
(`selection.step_flops`) and the achieved share of the matmul peak measured in the same run. No
ratio against the authors' loop is printed (see bench/tis.py).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import Sizes, add_smoke_flag, matmul_peak, report, sizes, time_fn
from cortex_jax.core import trees
from cortex_jax.method import selection
from cortex_jax.models import iem


def bench(arch: str, batch: int, steps: int, peak: float, size: Sizes = Sizes()) -> dict:
    m, k = size.grid, size.codebook
    cfg = size.iem_config(arch)
    init = lambda: iem.init_variables(cfg, jax.random.PRNGKey(0), m, size.dim)
    v = trees.random_init(init)  # numpy-filled: no initialiser compiles
    predict = iem.predictor(cfg, v)
    codebook = jax.random.normal(jax.random.PRNGKey(1), (k, size.dim))
    base = jnp.asarray(np.random.default_rng(0).integers(0, k, (batch, m, m)), jnp.int32)
    mask = selection.region_mask(m)
    positions = np.flatnonzero(mask.ravel())
    scfg = selection.SelectionConfig(steps=steps, log_every=steps)
    t = jnp.arange(batch) % size.classes
    rng = jax.random.PRNGKey(2)
    # one jitted step over the batch, × steps (the public count; this process's backend)
    flops = selection.step_flops(predict, codebook, np.asarray(base), mask, t, rng, scfg) * steps

    def run():
        return selection.select_tokens(predict, codebook, base, mask, t, t, rng, scfg).f_target

    sec = time_fn(run, warmup=1, repeats=3)
    row = {
        "arch": arch,
        "images": batch,
        "steps": steps,
        "steps/s": steps / sec,
        "steps/s x images": steps * batch / sec,
        "GFLOP/step/image": flops / steps / batch / 1e9,
        "% of matmul peak": 100 * flops / sec / peak,
        "P floats/image": len(positions) * k,
    }
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="ce")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", default="bench/results/selection.json")
    add_smoke_flag(ap)
    args = ap.parse_args()
    size = sizes(args)
    peak = matmul_peak(size.peak_n)
    print(f"matmul peak: {peak / 1e12:.3f} TFLOP/s (float32)")
    rows = [
        bench(a, int(b), args.steps, peak, size)
        for a in args.archs.split(",")
        for b in args.batches.split(",")
    ]
    for r in rows:
        r["matmul peak TFLOP/s"] = peak / 1e12
    cols = [
        "arch",
        "images",
        "steps",
        "steps/s",
        "steps/s x images",
        "GFLOP/step/image",
        "% of matmul peak",
        "P floats/image",
    ]
    report("selection", rows, cols, args.json)


if __name__ == "__main__":
    main()
