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
# compiler would build, so no result changes. A fresh folder per session (removed at exit) unless
# the developer names one in JAX_COMPILATION_CACHE_DIR to keep between runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="cortex-jax-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
if "jax" in sys.modules:  # imported before this file (a plugin): set it there too
    import jax

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])

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
    from absl import flags

    before = set(flags.FLAGS)
    loaded: list[str] = []

    def load(name: str):
        if name in sys.modules:
            raise RuntimeError(f"{name} was imported outside the entry_point fixture")
        loaded.append(name)
        return importlib.import_module(name)

    yield load
    flags.FLAGS.unparse_flags()
    for flag in set(flags.FLAGS) - before:
        delattr(flags.FLAGS, flag)
    for name in loaded:
        sys.modules.pop(name, None)
