"""ImageNet class resolution."""

import pytest

from cortex_jax.core import imagenet


def test_thousand_classes_in_order():
    cs = imagenet.classes()
    assert len(cs) == 1000 and [c.index for c in cs] == list(range(1000))
    assert cs[11].synset == "n01531178" and cs[11].name == "goldfinch"


@pytest.mark.parametrize("query", ["goldfinch", "Goldfinch", "11", "n01531178"])
def test_resolve_forms(query):
    assert imagenet.resolve(query) == 11


def test_ambiguous_and_unknown_names():
    with pytest.raises(ValueError, match=r"'crane' is ambiguous: 134 \(n02012849.*517 \(n03126707"):
        imagenet.resolve("crane")
    with pytest.raises(ValueError, match="did you mean goldfinch"):
        imagenet.resolve("goldfnch")
    with pytest.raises(ValueError, match="index 1000 is outside"):
        imagenet.resolve("1000")
