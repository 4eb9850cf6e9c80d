"""Shared benchmark helpers: a measured matmul peak, timing, XLA FLOP counts, table + JSON."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from cortex_jax.models import iem

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    """The model sizes a benchmark runs at: ImageNet's (VQGAN f16: a 16×16 grid of K = 16384
    rows of d = 256; 1000 classes; the paper's IEMs; a 4096² matmul for the peak) unless
    `--smoke`, which checks that a script runs to its table on a CPU in seconds and measures
    nothing worth keeping."""

    codebook: int = 16384
    dim: int = 256
    grid: int = 16
    classes: int = 1000
    peak_n: int = 4096
    iem: tuple[tuple[str, int], ...] = ()  # IEMConfig fields; () = the paper's network

    def iem_config(self, arch: str) -> iem.IEMConfig:
        return iem.IEMConfig(arch, self.classes, **dict(self.iem))  # type: ignore[arg-type]


SMOKE = Sizes(
    codebook=512,
    dim=32,
    grid=8,
    classes=10,
    peak_n=512,
    iem=(("width", 16), ("depth", 1), ("hidden", 32), ("heads", 2), ("mlp", 32)),
)


def add_smoke_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script runs")


def sizes(args: argparse.Namespace) -> Sizes:
    """The sizes `--smoke` asks for; a smoke run never writes over bench/results/ (the numbers
    there are measurements RESULTS.md quotes)."""
    if args.smoke and str(Path(args.json).resolve()).startswith(str(RESULTS.resolve())):
        raise SystemExit(f"error: --smoke with --json {args.json}; give a --json outside {RESULTS}")
    return SMOKE if args.smoke else Sizes()


def device_name() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", d.platform)
    if d.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {len(jax.devices())} device)"
    return f"{kind} x{len(jax.devices())}"


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 3) -> float:
    """Median seconds of `fn()` (blocking on its result) after `warmup` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def matmul_peak(n: int = 4096, dtype=jnp.float32) -> float:
    """Measured FLOP/s of one large square matmul: the practical ceiling here."""
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / time_fn(lambda: f(a), warmup=1, repeats=3)


def flops_of(jitted, *args) -> float:
    """XLA's FLOP count of one call of a jitted function."""
    cost = jitted.lower(*args).compile().cost_analysis()
    if isinstance(cost, Sequence):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else 0.0


def report(name: str, rows: list[dict[str, Any]], columns: Sequence[str], out: str | None) -> None:
    """Prints a fixed-width table and writes {device, rows} as JSON when `out` is given."""
    widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
    print(f"{name} on {device_name()}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=True)))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(
            json.dumps({"benchmark": name, "device": device_name(), "rows": rows}, indent=2) + "\n"
        )


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return "" if v is None else str(v)
