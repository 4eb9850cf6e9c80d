"""Shared test helpers: where the fixtures live, and in-process imports of entry points."""

import atexit
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# XLA's persistent compilation cache, for this test session only: many tests (and every
# `python -m` they start, which inherits the environment) compile the same toy models again, and
# compiling is about half of a small CLI run on 2 cores. A cache hit is the executable the
# compiler would build, so no result changes. One fresh folder per test session (made by the
# first pytest process, inherited by its xdist workers, removed at exit) unless the developer
# names one in JAX_COMPILATION_CACHE_DIR to keep between runs. JAX writes an entry in place, so a
# process killed mid-write (the interrupt tests) can leave a truncated one: JAX then warns and
# compiles afresh, with the same result; delete a kept folder if such warnings recur.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cortex-jax-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
# A size limit turns on the cache's file lock, so the test workers and the processes they start
# never read an entry another one is still writing.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
if "jax" in sys.modules:  # imported before this file (a plugin) read the environment already
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update(
        "jax_persistent_cache_min_compile_time_secs",
        float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
    )
    jax.config.update(
        "jax_persistent_cache_min_entry_size_bytes",
        int(os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"]),
    )
    jax.config.update(
        "jax_compilation_cache_max_size", int(os.environ["JAX_COMPILATION_CACHE_MAX_SIZE"])
    )

# The suite's longest files, with their rough seconds on the 2-core CI machine (a full run's
# `--durations=0`, summed per file), so that pytest-xdist's `--dist loadfile` hands them out
# first, longest first: in collection (alphabetical) order the two longest came last, and one
# worker ran them alone for several minutes while the other sat idle. Order only: a file not
# named here runs after them, and a stale number costs time, never a result.
LONGEST_FILES = {
    "test_explain_cli.py": 500,
    "test_recipe.py": 300,
    "test_boundaries.py": 250,
    "test_training.py": 250,
    "test_compare.py": 200,
    "test_preemption.py": 200,
    "test_toy_models.py": 200,
    "test_llamagen_e2e.py": 180,
    "test_outputs.py": 170,
    "test_dalle.py": 170,
    "test_maskgit.py": 150,
    "test_bench_device.py": 150,
    "test_llamagen.py": 150,
    "test_iem_authors.py": 140,
    "test_science.py": 140,
    "test_iem.py": 140,
    "test_scale.py": 130,
    "test_conformance_iem.py": 120,
    "test_gcs.py": 110,
    "test_tis.py": 110,
    "test_atlas.py": 110,
    "test_selection.py": 100,
    "test_bias.py": 100,
    "test_cin.py": 100,
}


def pytest_collection_modifyitems(items):
    """Longest files first (LONGEST_FILES), each file's tests in their own order."""
    cost = lambda item: -LONGEST_FILES.get(item.path.name, 0)
    items.sort(key=cost)  # stable: the rest keep the collection order


REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CORTEX_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        message = f"shared fixtures not found at {FIXTURES} (set CORTEX_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI lays shared/ beside the clone: missing means broken
        pytest.skip(message)
    return FIXTURES


@pytest.fixture
def entry_point():
    """Import `python -m` entry points (train.generate, explain.codebook, ...) for one test.

    Each defines its absl flags in the global FLAGS at import, and several define the same name
    (--config); in their own processes that never meets, in one test process it would. The flags
    and modules a test imported are removed when it ends, so the next test can import another.
    """
    import absl.app  # noqa: F401  (its own flags exist before the snapshot and stay)
    from absl import flags

    before = set(flags.FLAGS)
    loaded: list[str] = []

    def load(name: str):
        if name in sys.modules:
            raise RuntimeError(f"{name} was imported outside the entry_point fixture")
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    from tests.helpers import cli

    cli.forget(before, loaded)
