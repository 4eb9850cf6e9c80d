"""Generation throughput of the cin transformer: `python -m bench.generate [--batch 64]`.

Image tokens/s of KV-cache sampling (top_k 250, temperature 1, one jitted `lax.scan` over the 256
positions) for a random-weight GPT shaped like taming's ImageNet cin_transformer by default
(48 layers, width 1536, 24 heads, vocabulary 16384, block 256: 1.4 B parameters), with the
achieved FLOP/s against the measured matmul peak. FLOPs are counted analytically per token:
2 × (weights touched) + the attention over the cache (which spans the whole block here).
`--n_layer/--n_embd/--n_head` shrink the model (for a CPU smoke run).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from bench.common import add_smoke_flag, matmul_peak, report, sizes, time_fn
from cortex_jax.core import trees
from cortex_jax.models import cin


def flops_per_token(c: cin.GPTConfig) -> float:
    d, L = c.n_embd, c.n_layer
    weights = L * (4 * d * d + 8 * d * d) + d * c.vocab_size  # qkv+proj, MLP 4×, head
    attention = L * 2 * 2 * c.block_size * d  # scores and weighted values over the cache
    return 2 * weights + attention


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--n_layer", type=int, default=48)
    ap.add_argument("--n_embd", type=int, default=1536)
    ap.add_argument("--n_head", type=int, default=24)
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--json", default="bench/results/generate.json")
    add_smoke_flag(ap)
    args = ap.parse_args()
    size = sizes(args)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    peak = matmul_peak(size.peak_n, dtype)
    print(f"matmul peak: {peak / 1e12:.3f} TFLOP/s ({args.dtype})")
    cfg = cin.GPTConfig(
        vocab_size=size.codebook,
        block_size=size.grid**2,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
        image_vocab_size=size.codebook,
        n_classes=size.classes,
    )
    # numpy-filled random weights: JAX's initialisers compile a program per parameter shape
    params = trees.random_init(lambda: cin.init_params(cfg, jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: x.astype(dtype), params)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    classes = jnp.arange(args.batch) % size.classes
    sc = cin.SampleConfig(temperature=1.0, top_k=250)
    run = lambda: cin.sample(cfg, params, classes, jax.random.PRNGKey(1), sc, dtype)
    sec = time_fn(run, warmup=1, repeats=3)
    tokens = args.batch * cfg.n_image_tokens
    flops = flops_per_token(cfg) * tokens
    row = {
        "layers x width": f"{cfg.n_layer}x{cfg.n_embd}",
        "params (M)": n_params / 1e6,
        "dtype": args.dtype,
        "batch": args.batch,
        "tokens/s": tokens / sec,
        "images/s": args.batch / sec,
        "GFLOP/token": flops_per_token(cfg) / 1e9,
        "TFLOP/s": flops / sec / 1e12,
        "% of matmul peak": 100 * flops / sec / peak,
        "matmul peak TFLOP/s": peak / 1e12,
    }
    report(
        "generate",
        [row],
        [
            "layers x width",
            "params (M)",
            "dtype",
            "batch",
            "tokens/s",
            "images/s",
            "GFLOP/token",
            "TFLOP/s",
            "% of matmul peak",
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
