"""Run tests/helpers/multidevice.py MODE in a fresh process with N fake CPU devices."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_on(n_devices: int, mode: str, *args: str) -> dict:
    r = subprocess.run(
        [sys.executable, str(REPO / "tests/helpers/multidevice.py"), mode, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "N_DEVICES": str(n_devices)},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])
