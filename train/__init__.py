"""Thin `python -m train.*` entry points: flags → config → cortex_jax call → files."""

import sys

from explain import quiet_interrupts_at_startup

if sys.argv[:1] == ["-m"]:  # `python -m train.…` (argv[0] is "-m" while it is located)
    quiet_interrupts_at_startup()
