"""Thin `python -m train.*` entry points: flags → config → cortex_jax call → files."""
