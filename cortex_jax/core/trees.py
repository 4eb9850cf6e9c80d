"""Parameter trees as flat '/'-joined paths and back (`flatten_paths`, `unflatten_paths`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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
