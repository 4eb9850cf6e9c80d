"""Shared test helpers: where the fixtures live, and a tolerance report."""

import os
from pathlib import Path

import pytest

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
