"""TIS throughput at ImageNet size: `python -m bench.tis [--archs ce,re] [--batch 4]`.

Images/s of SmoothGrad TIS (1000 classes, E 16×16×256, N = 20 noisy copies, probability
objective) for random-weight CE/RE IEMs, through the public `cx.token_importance` (its input
checks included), with XLA's FLOP count of the same call under jit and the achieved share of the
measured matmul peak. `--methods gradient,integrated_gradients,occlusion,...` adds a row per
method, timed through the public `cx.token_attribution` at the same sizes, its FLOPs XLA's count
of the same method jitted whole (`attribution.attribution_fn`): integrated gradients with
`--ig_steps` path points (`--chunk` per pass), occlusion with m² occluded forward passes per
image (`--occlusion_chunk` positions per pass; 0: all), the single-pass methods (gradient,
grad_x_input, random) on `--single_batch` images a call (default batch × chunk: the rows SmoothGrad
runs a pass, so that every method is timed at the same pass size). Column N: model passes per image
(SmoothGrad's noisy copies, IG's path points, occlusion's m² + 1 forward passes). No ratio
against the authors' PyTorch loop is printed: one measured on another day is no comparison on a
shared, noisy machine; run both in one session to compare.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

import cortex_jax as cx
from bench.common import Sizes, add_smoke_flag, flops_of, matmul_peak, report, sizes, time_fn
from cortex_jax.core import trees
from cortex_jax.method import attribution
from cortex_jax.models import iem


def method_options(method: str, chunk: int, ig_steps: int, occlusion_chunk: int) -> dict:
    """The options a method is timed with (the method's defaults otherwise)."""
    if method == "integrated_gradients":
        return {"steps": ig_steps, "steps_per_chunk": chunk}
    if method == "occlusion":
        return {"positions_per_chunk": occlusion_chunk or None}
    return {}


def _passes(method: str, options: dict, m: int) -> int | None:
    """Model passes per image (forward + backward counted as one) of a method."""
    return {"gradient": 1, "grad_x_input": 1, "random": 0, "occlusion": m * m + 1}.get(
        method, options.get("steps")
    )


def bench_arch(
    arch: str,
    batch: int,
    n_samples: int,
    chunk: int,
    peak: float,
    methods: tuple[str, ...] = (),
    size: Sizes = Sizes(),
    ig_steps: int = 32,
    occlusion_chunk: int = 0,
    single_batch: int = 0,
) -> list[dict]:
    m, d, classes = size.grid, size.dim, size.classes
    cfg = size.iem_config(arch)
    # random weights (throughput does not depend on them), numpy-filled: JAX's initialisers
    # compile a program per parameter shape, seconds per benchmark on a CPU
    v = trees.random_init(lambda: iem.init_variables(cfg, jax.random.PRNGKey(0), m, d))
    predict = iem.predictor(cfg, v)
    e = jax.random.normal(jax.random.PRNGKey(1), (batch, m, m, d))
    y = jnp.arange(batch) % classes
    rng = jax.random.PRNGKey(2)

    def tis(x):
        return cx.token_importance(predict, x, y, rng, n_samples, 0.2, samples_per_chunk=chunk)

    # Under jit the chunk loop unrolls, so XLA counts every chunk of the whole call.
    flops = flops_of(jax.jit(tis), e)
    sec = time_fn(lambda: tis(e), warmup=1, repeats=3)
    rows = [
        {
            "arch": arch,
            "method": "smoothgrad",
            "batch": batch,
            "N": n_samples,
            "chunk": chunk,
            "images/s": batch / sec,
            "GFLOP/image": flops / batch / 1e9,
            "TFLOP/s": flops / sec / 1e12,
            "% of matmul peak": 100 * flops / sec / peak,
        }
    ]
    for method in methods:
        if method == "smoothgrad":
            continue  # the row above
        o = method_options(method, chunk, ig_steps, occlusion_chunk)
        b = (single_batch or batch * chunk) if _passes(method, o, m) in (0, 1) else batch
        x = jax.random.normal(jax.random.PRNGKey(1), (b, m, m, d))
        yb, ids = jnp.arange(b) % classes, jnp.arange(b)
        flops = flops_of(
            jax.jit(attribution.attribution_fn(predict, rng, method, d, **o)), x, yb, ids
        )
        call = lambda: cx.token_attribution(predict, x, yb, rng, method, **o).positions  # noqa: B023
        sec = time_fn(call, warmup=1, repeats=3)
        rows.append(
            {
                "arch": arch,
                "method": method,
                "batch": b,
                "N": _passes(method, o, m),
                "chunk": next((v for k, v in o.items() if k.endswith("_per_chunk")), None),
                "images/s": b / sec,
                "GFLOP/image": flops / b / 1e9,
                "TFLOP/s": flops / sec / 1e12,
                "% of matmul peak": 100 * flops / sec / peak,
            }
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="ce,re")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--n_samples", type=int, default=20)
    ap.add_argument("--chunk", type=int, default=10, help="noisy copies per image per pass")
    ap.add_argument("--methods", default="", help="other attribution methods to time, by name")
    ap.add_argument("--ig_steps", type=int, default=32, help="integrated gradients' path points")
    ap.add_argument(
        "--occlusion_chunk",
        type=int,
        default=8,
        help="positions per pass (0: all); on the 2-core CPU 8 (32 forward rows a pass at batch 4) "
        "reached 80 %% of the peak and all 256 only 63 %% (bench/RESULTS.md)",
    )
    ap.add_argument(
        "--single_batch",
        type=int,
        default=0,
        help="images a call of the single-pass methods; 0: batch × chunk",
    )
    ap.add_argument("--json", default="bench/results/tis.json")
    add_smoke_flag(ap)
    args = ap.parse_args()
    size = sizes(args)
    peak = matmul_peak(size.peak_n)
    print(f"matmul peak: {peak / 1e12:.3f} TFLOP/s (float32)")
    methods = tuple(x for x in args.methods.split(",") if x)
    rows = [
        r
        for a in args.archs.split(",")
        for r in bench_arch(
            a,
            args.batch,
            args.n_samples,
            args.chunk,
            peak,
            methods,
            size,
            args.ig_steps,
            args.occlusion_chunk,
            args.single_batch,
        )  # fmt: skip
    ]
    for r in rows:
        r["matmul peak TFLOP/s"] = peak / 1e12
    cols = ["arch", "method", "batch", "N", "chunk", "images/s", "GFLOP/image", "TFLOP/s"]
    report("tis", rows, [*cols, "% of matmul peak"], args.json)


if __name__ == "__main__":
    main()
