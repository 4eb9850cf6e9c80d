"""The entry points run as a user runs them (`python -m …` from the repo root), and the check
that a bad input ended in one `error: …` line and no traceback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# explain.sample at sizes that run in seconds on the toy world (images per concept, SmoothGrad N)
SMALL_SAMPLE = (
    "--per-concept",
    "12",
    "--test-per-concept",
    "6",
    "--truth-per-concept",
    "6",
    "--n-samples",
    "4",
)

# what a sample-level run writes, the toy study's and the ImageNet recipe's alike
SAMPLE_FILES = (
    "report.json",
    "token_sets.csv",
    "arrays.npz",
    "top_tokens.png",
    "image_level_curve.png",
    "image_level_curve.svg",
    "image_level_curve.csv",
)


def run(
    *args: str, cwd: Path = REPO, env: dict | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """`python -m args…`; the package is importable from any `cwd` (PYTHONPATH is the repo unless
    `env` is given whole). `check`: assert it succeeded, showing the end of stderr if not."""
    env = env if env is not None else {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, env=env
    )
    if log := os.environ.get("CORTEX_TEST_COMMAND_LOG"):  # sizing tests: seconds per command
        with open(log, "a") as f:
            f.write(f"{time.perf_counter() - start:7.1f}s  {' '.join(args)[:160]}\n")
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def in_process(module: str, *args: str) -> None:
    """`python -m module args…` in this process: its flags parsed from `args`, its `main` run
    (an error ends it in SystemExit("error: …"), as on the command line), then its flags and
    the module removed again, as the entry_point fixture does, so the next call can import a
    command that defines the same flag names. For a flow of several commands whose outputs are
    the point, not their start-up: the jitted code of one is reused by the next."""
    import importlib

    import absl.app  # noqa: F401  (its own flags exist before the snapshot and stay)
    from absl import flags

    if module in sys.modules:
        raise RuntimeError(f"{module} was imported elsewhere; its flags would clash")
    before, argv = set(flags.FLAGS), sys.argv
    try:
        cmd = importlib.import_module(module)
        # ml_collections' --config reads its --config.a.b overrides from sys.argv
        sys.argv = [module, *args]
        flags.FLAGS(sys.argv)
        cmd.main([])
    finally:
        sys.argv = argv
        forget(before, [module])


def forget(before: set[str], modules: list[str]) -> None:
    """Undoes imports of entry points: the absl flags not in `before` (the set of flag names
    then) and the `modules` go, so the next import of a command may define the same names."""
    from absl import flags

    flags.FLAGS.unparse_flags()
    for flag in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag)
    for name in modules:
        sys.modules.pop(name, None)


def popen(*args: str, cwd: Path = REPO, **kwargs) -> subprocess.Popen:
    """`python -m args…` started in the background (text pipes for stdout and stderr), with
    SIGINT at its default, as from a terminal: pytest-xdist's workers ignore SIGINT, a
    disposition a child inherits, and Python then never raises KeyboardInterrupt on Ctrl-C."""
    env = kwargs.pop("env", None) or {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kwargs,
    )


def wait_until_loading(p: subprocess.Popen, library: str, timeout: float = 120) -> None:
    """Waits until the process `p` has mapped a shared object whose path holds `library` (Linux's
    /proc/PID/maps): e.g. "jaxlib" while JAX imports, after the entry point's own start-up."""
    deadline = time.time() + timeout
    maps = Path(f"/proc/{p.pid}/maps")
    while library not in maps.read_text():
        if p.poll() is not None or time.time() > deadline:
            p.kill()
            raise AssertionError(f"{library} never loaded: {p.communicate()[1][-2000:]}")
        time.sleep(0.01)


def one_line_error(r: subprocess.CompletedProcess, *needles: str, status: int | None = None):
    """The run failed (with exit `status` when given) and its last stderr line is our one-line
    error, holding every needle."""
    if status is None:
        assert r.returncode != 0, r.stderr[-2000:]
    else:
        assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in last, last
