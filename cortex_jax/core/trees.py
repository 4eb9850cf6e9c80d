"""Parameter trees: as flat '/'-joined paths and back (`flatten_paths`, `unflatten_paths`), and
stand-in random weights in a model's layout (`random_like`, `random_init`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np


def unflatten_paths(flat: Mapping[str, Any]) -> dict:
    """{'a/b': x} → {'a': {'b': x}}."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def flatten_paths(tree: Mapping[str, Any], prefix: Sequence[str] = ()) -> dict[str, Any]:
    """{'a/b/c': leaf} for a nested dict."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = (*prefix, str(k))
        if isinstance(v, Mapping):
            out.update(flatten_paths(v, path))
        else:
            out["/".join(path)] = v
    return out


def random_like(shapes: Any, seed: int = 0) -> Any:
    """Random weights in the layout of `shapes` (a tree of arrays or ShapeDtypeStructs, e.g.
    `jax.eval_shape` of a model's init), as numpy arrays from numpy's generator seeded `seed`:
    ones for normalisation scales and variances ('scale', 'var', a vector under a '…norm…'
    path), zeros for biases, means and other vectors, N(0, 1/fan_in) for kernels and
    embeddings (fan_in: the product of all but the last axis). The `:runlocal` dry runs'
    stand-ins: JAX's initialisers compile an XLA program per parameter shape (a ResNet18's
    took 45 s on 2 cores, in every command that loaded it); this takes milliseconds."""
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(getattr(path[-1], "key", ""))
        if name in ("scale", "var") or (len(s.shape) == 1 and "norm" in jax.tree_util.keystr(path)):
            return np.ones(s.shape, s.dtype)
        if name in ("bias", "mean") or len(s.shape) < 2:
            return np.zeros(s.shape, s.dtype)
        fan_in = int(np.prod(s.shape[:-1]))
        return (rng.standard_normal(s.shape) / np.sqrt(fan_in)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def random_init(init: Callable[[], Any], seed: int = 0) -> Any:
    """`random_like` in the layout `init()` returns (a model's initialiser), which is traced for
    its shapes (`jax.eval_shape`), never run or compiled."""
    return random_like(jax.eval_shape(init), seed)
