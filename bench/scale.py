"""The one-million-image rehearsal: `python -m bench.scale --n 10000 --workdir DIR`.

Runs the recipe's disk-based, resumable steps on the toy world's shipped VQGM at `n` training
images (configs/toy_scale.py:n=N: 0.3 n validation and 0.05 n test images, the paper's
proportions over the 14 toy concepts), each step its documented command in a fresh process, in
order:

    train.generate   the train / val / test token splits         (images: all three)
    train.iem        IEM training, a few epochs                   (images: epochs × train)
    explain.sample   TIS over the train and test splits, T_concept, the masking evaluation,
                     the report's figures                         (rows per stage as well)
    explain.report   the tables
    explain.atlas    the static site

and prints per step the wall time, images/s, peak RSS (the process's high-water mark from
wait4's rusage, which counts the pages of memory-mapped shards it touched), the peak of its
anonymous memory (sampled from /proc every 0.2 s: what the process itself allocated, the number
that must stay flat with n) and the disk the step added, as a table and as JSON
(bench/results/scale_N.json, with each step's anonymous memory over time in `anon_MB_over_s`).
The stages of a step (generate's splits; explain.sample's TIS, T_concept and masking) are timed
from its log lines (`core.progress`: a stage's totals when it ends) and get the anonymous peak
sampled during them.
Each finished step is recorded in the JSON at once (`"complete": false` until the last):
`--resume` continues a rehearsal that stopped (a failed step, a killed run) in the same workdir
from its first unrecorded step, if the settings are the same (each step also skips the work
its outputs already hold).
`--extrapolate A.json B.json` fits wall = a + b·n per step through two runs and prints the
time at `--to` images (default 1,000,000).

What each step holds in memory (none holds the dataset's tokens, embeddings, scores or pixels
at once; the mapped shards are file pages the kernel can drop):
  train.generate  one shard (1024 grids) being sampled, its KV cache; shards go to disk whole.
  train.iem       the model and optimiser state, one batch; the epoch's permutation of the
                  training indices (8 bytes an image: 8 MB at 1M), read through memory-mapped
                  shards; validation streams batch by batch.
  explain.sample  TIS: one batch of SmoothGrad's noisy copies, one shard's scores;
                  T_concept: one shard's tokens and TIS, two (classes, K) count tables;
                  masking: one batch decoded and its classifier outputs, per-concept sums, the
                  report's sample of the test split (config.sample.arrays_per_concept images a
                  concept; sample_stream's docstring).
  explain.report  the reports' JSON.
  explain.atlas   the report's sample (arrays.npz), the shown images decoded (8 a concept).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, device_name, report
from configs import toy_scale
from cortex_jax.io import shards

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("train.generate", "train.iem", "explain.sample", "explain.report", "explain.atlas")
COLUMNS = (
    "step",
    "images",
    "wall_s",
    "images/s",
    "peak_rss_MB",
    "peak_anon_MB",
    "disk_MB",
)
_DONE = re.compile(
    r"^\[progress\] (?P<stage>.+): done, (?P<n>\d+) (?P<unit>\S+) in (?P<s>[0-9.]+) s"
)


def disk_bytes(folder: Path) -> int:
    """Bytes allocated on disk under `folder` (st_blocks, as du counts)."""
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def _anon_kb(pid: int) -> int | None:
    """RssAnon of a live process in KiB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def run_step(argv: list[str], env: dict[str, str], echo: bool = True) -> dict[str, Any]:
    """Runs one command; returns its wall time, exit code, peak RSS (wait4), sampled anonymous
    memory over time and the `[progress] … done` lines it printed, each with when it arrived."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    samples: list[tuple[float, int]] = []
    done_lines: list[tuple[float, str, int, str, float]] = []
    tail: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            kb = _anon_kb(proc.pid)
            if kb is not None:
                samples.append((time.monotonic() - t0, kb))
            stop.wait(0.2)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic() - t0
            if echo:
                sys.stderr.write(line)
            tail[:] = (tail + [line])[-20:]
            if m := _DONE.match(line):
                done_lines.append((now, m["stage"], int(m["n"]), m["unit"], float(m["s"])))

    threads = [threading.Thread(target=f, daemon=True) for f in (sample, read)]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    return {
        "rc": proc.returncode,
        "wall_s": wall,
        "peak_rss_MB": usage.ru_maxrss / 1024,  # Linux: KiB
        "samples": samples,
        "done": done_lines,
        "tail": "".join(tail),
    }


def _peak(
    samples: list[tuple[float, int]], lo: float = 0.0, hi: float = float("inf")
) -> float | None:
    inside = [kb for t, kb in samples if lo <= t <= hi]
    return max(inside) / 1024 if inside else None


def step_images(step: str, cfg: Any) -> int | None:
    """The images a step processes (None: no per-image work)."""
    g = cfg.generate
    per = {s: int(g[s]) * toy_scale.N_CONCEPTS for s in ("train", "val", "test")}
    if step == "train.generate":
        return sum(per.values())
    if step == "train.iem":
        batch = int(cfg.train.batch_size)
        return int(cfg.train.epochs) * (per["train"] // batch) * batch
    if step == "explain.sample":
        return per["train"] + per["test"]
    return None


def rehearse(
    n: int,
    workdir: Path,
    iem: str = "ce",
    epochs: int = 3,
    echo: bool = True,
    overrides: tuple[str, ...] = (),
    state: Path | None = None,
    resume: bool = False,
) -> dict:
    """Every step at size `n` into `workdir` (which must not hold anything yet); the rows.
    `overrides`: KEY=VALUE config overrides every step gets (`--config.KEY=VALUE`). After each
    step the rows so far go to `state` (JSON, `"complete": false`, written atomically): with
    `resume` a rehearsal that stopped (a failed step, a killed run) continues in the same
    workdir from the first step `state` does not hold, if it was made with the same settings."""
    for o in overrides:
        if "=" not in o or not o.split("=", 1)[0]:
            raise SystemExit(f"error: --set {o!r}; expected KEY=VALUE, e.g. sample.n_samples=2")
    arg = f"n={n},iem={iem},epochs={epochs}"
    config = " ".join([f"configs/toy_scale.py:{arg}", *(f"--config.{o}" for o in overrides)])
    rows: list[dict[str, Any]] = []
    timelines: dict[str, list[tuple[float, float]]] = {}
    if resume:
        if state is None or not state.is_file():
            raise SystemExit(f"error: --resume: no rehearsal recorded in {state}")
        old = json.loads(state.read_text())
        if old.get("complete", True) or old.get("config") != config:
            raise SystemExit(
                f"error: --resume: {state} holds a "
                + ("finished rehearsal" if old.get("complete", True) else f"run of {old['config']}")
                + f", not an unfinished one of {config}"
            )
        rows, timelines = old["rows"], old["anon_MB_over_s"]
    elif workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"error: --workdir {workdir} is not empty; a rehearsal starts from none")
    cfg = toy_scale.get_config(arg)
    for o in overrides:  # the counts the steps will read (generate.*, train.*), for the rows
        key, value = o.split("=", 1)
        *parents, leaf = key.split(".")
        section = cfg
        for p in parents:
            section = section.get(p, {})
        if isinstance(section.get(leaf), int) and not isinstance(section.get(leaf), bool):
            section[leaf] = int(value)
    counts = {s: int(cfg.generate[s]) * toy_scale.N_CONCEPTS for s in ("train", "val", "test")}
    path = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    used = disk_bytes(workdir) if workdir.exists() else 0
    done = {r["step"] for r in rows}

    def result(complete: bool) -> dict:
        return {
            "n": n,
            "counts": counts,
            "config": config,
            "complete": complete,
            "rows": rows,
            "anon_MB_over_s": timelines,
        }

    for step in STEPS:
        if step in done:
            continue
        argv = [
            sys.executable,
            "-m",
            step,
            f"--config={ROOT / 'configs' / 'toy_scale.py'}:{arg}",
            f"--config.workdir={workdir.resolve()}",
            *(f"--config.{o}" for o in overrides),
        ]
        print(f"== {step}", file=sys.stderr, flush=True)
        r = run_step(argv, env, echo)
        if r["rc"] != 0:
            raise SystemExit(f"error: {step} exited with {r['rc']}:\n{r['tail']}")
        now_used = disk_bytes(workdir)
        images = step_images(step, cfg)
        rows.append(
            {
                "step": step,
                "images": images,
                "wall_s": r["wall_s"],
                "images/s": images / r["wall_s"] if images else None,
                "peak_rss_MB": r["peak_rss_MB"],
                "peak_anon_MB": _peak(r["samples"]),
                "disk_MB": (now_used - used) / 2**20,
            }
        )
        used = now_used
        every = max(1, len(r["samples"]) // 300)  # anonymous MB over the step's seconds
        timelines[step] = [(round(t, 1), round(kb / 1024)) for t, kb in r["samples"][::every]]
        if len(r["done"]) > 1:  # the step's stages, as their log lines time them
            for t, stage, count, unit, secs in r["done"]:
                rows.append(
                    {
                        "step": f"  {stage}",
                        "images": count if unit == "img" else None,
                        "wall_s": secs,
                        "images/s": count / secs if secs > 0 and unit == "img" else None,
                        "peak_anon_MB": _peak(r["samples"], t - secs, t),
                    }
                )
        if state is not None:
            shards.atomic_write_json(state, result(False))
    total = {
        "step": "total",
        "images": None,
        "wall_s": sum(r["wall_s"] for r in rows if not r["step"].startswith(" ")),
        "disk_MB": used / 2**20,
    }
    rows.append(total)
    return result(True)


def extrapolate(a: dict, b: dict, to: int) -> list[dict[str, Any]]:
    """Per step, wall = fixed + per_image·n through runs `a` and `b` (by their n), at `to`."""
    (small, large) = sorted((a, b), key=lambda r: r["n"])
    by_step = {r["step"]: r for r in small["rows"]}
    out = []
    for r in large["rows"]:
        s = by_step.get(r["step"])
        if s is None or r["step"] == "total":
            continue
        slope = (r["wall_s"] - s["wall_s"]) / (large["n"] - small["n"])
        fixed = r["wall_s"] - slope * large["n"]
        out.append(
            {
                "step": r["step"],
                f"wall_s@{small['n']}": s["wall_s"],
                f"wall_s@{large['n']}": r["wall_s"],
                "s/1k train images": slope * 1000,
                f"hours@{to}": (fixed + slope * to) / 3600,
            }
        )
    top = [r for r in out if not r["step"].startswith(" ")]
    out.append({"step": "total", f"hours@{to}": sum(r[f"hours@{to}"] for r in top)})
    return out


def machine() -> dict[str, Any]:
    """What ran it: the CPU model, its cores, the load average at the end."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "loadavg_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=10_000, help="training images (val 0.3 n, test 0.05 n)"
    )
    ap.add_argument("--workdir", type=Path, help="an empty or new folder for the run's files")
    ap.add_argument("--iem", default="ce", choices=("ce", "re", "te"))
    ap.add_argument("--epochs", type=int, default=3, help="IEM training epochs")
    ap.add_argument("--json", help="output JSON (default bench/results/scale_N.json)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the steps' output")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished rehearsal recorded in --json, in the same --workdir",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every step (e.g. sample.n_samples=2); repeatable",
    )
    ap.add_argument(
        "--extrapolate", nargs=2, metavar="JSON", help="two runs' JSON: fit and project"
    )
    ap.add_argument("--to", type=int, default=1_000_000, help="--extrapolate to this many images")
    args = ap.parse_args()
    if args.extrapolate:
        runs = [json.loads(Path(p).read_text()) for p in args.extrapolate]
        rows = extrapolate(*runs, args.to)
        report(f"rehearsal extrapolated to n={args.to}", rows, list(rows[0]), None)
        return
    if args.n < toy_scale.N_CONCEPTS:
        raise SystemExit(f"error: --n {args.n}; expected at least {toy_scale.N_CONCEPTS}")
    if args.workdir is None:
        raise SystemExit("error: give --workdir DIR (an empty or new folder)")
    out = args.json or str(RESULTS / f"scale_{args.n}.json")
    result = rehearse(
        args.n,
        args.workdir,
        args.iem,
        args.epochs,
        not args.quiet,
        tuple(args.set),
        Path(out),
        args.resume,
    )
    report(f"rehearsal n={args.n} ({result['config']})", result["rows"], COLUMNS, None)
    result = {"benchmark": "scale", "device": device_name(), "machine": machine(), **result}
    shards.atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
