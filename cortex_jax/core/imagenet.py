"""The 1000 ImageNet-1k classes in the standard index order (the cin transformer's class ids and
torchvision's), with their WordNet synset ids and names, and concept resolution by name.

A concept resolves from an index ("11"), a synset id ("n01531178") or any of a class's names,
case-insensitive ("goldfinch"). A name several classes share ("crane": 134 and 517) is an error
listing the candidates; an unknown one lists close matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from importlib import resources


@dataclasses.dataclass(frozen=True)
class ImageNetClass:
    index: int
    synset: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[0]


@functools.cache
def classes() -> tuple[ImageNetClass, ...]:
    text = resources.files("cortex_jax").joinpath("data/imagenet_classes.tsv").read_text()
    out = []
    for line in text.splitlines()[1:]:
        idx, synset, names = line.split("\t")
        out.append(ImageNetClass(int(idx), synset, tuple(n.strip() for n in names.split(","))))
    return tuple(out)


@functools.cache
def _by_name() -> dict[str, list[int]]:
    table: dict[str, list[int]] = {}
    for c in classes():
        for n in c.names:
            table.setdefault(n.lower(), []).append(c.index)
    return table


def resolve(concept: str) -> int:
    """Class index of an index, synset id or name; ValueError naming candidates otherwise."""
    key = concept.strip()
    if key.isdigit():
        i = int(key)
        if not 0 <= i < len(classes()):
            raise ValueError(f"ImageNet class index {i} is outside 0..{len(classes()) - 1}")
        return i
    if key.startswith("n") and key[1:].isdigit():
        for c in classes():
            if c.synset == key:
                return c.index
        raise ValueError(f"unknown ImageNet synset id {key!r}")
    hits = _by_name().get(key.lower(), [])
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        options = "; ".join(
            f"{i} ({classes()[i].synset}, {', '.join(classes()[i].names)})" for i in hits
        )
        raise ValueError(
            f"ImageNet concept {concept!r} is ambiguous: {options}; pass the index or synset id"
        )
    close = difflib.get_close_matches(key.lower(), list(_by_name()), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown ImageNet concept {concept!r}{hint}")
