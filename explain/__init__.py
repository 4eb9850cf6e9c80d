"""Thin `python -m explain.*` entry points: flags → config → cortex_jax call → files."""
