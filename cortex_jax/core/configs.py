"""Frozen dataclass configs from ml_collections sections, without copying fields one by one.

`from_section(SampleLevelConfig, config.sample)` takes the section's keys that are fields of the
dataclass (other keys are for other consumers, e.g. `shown_concepts`), turns lists into
tuples where the field is a tuple, and lets `overrides` replace or add fields. The dataclass's
own checks then run as for any other construction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def from_section(cls: type[T], section: Mapping[str, Any], **overrides: Any) -> T:
    """An instance of the dataclass `cls` from the matching keys of `section` and `overrides`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
    kwargs = {}
    for name, f in fields.items():
        if name in overrides:
            kwargs[name] = overrides[name]
        elif name in section:
            value = section[name]
            if isinstance(f.default, tuple) and isinstance(value, list | tuple):
                value = tuple(value)
            kwargs[name] = value
    return cls(**kwargs)
