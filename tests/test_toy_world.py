"""The procedural world: determinism, its declared statistics, and ground-truth masks."""

import numpy as np
import pytest

from cortex_jax.toy import world


def test_render_deterministic_for_seed():
    a = world.render_balanced(40, seed=3)
    b = world.render_balanced(40, seed=3)
    c = world.render_balanced(40, seed=4)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.pixels, c.pixels)
    assert a.pixels.shape == (40, 32, 32, 3) and a.pixels.dtype == np.float32
    assert a.pixels.min() >= -1 and a.pixels.max() <= 1


def test_world_has_required_concepts():
    shapes = {c.shape for c in world.CONCEPTS}
    colours = {c.colour for c in world.CONCEPTS}
    assert {"circle", "square", "triangle", "star", "cross"} <= shapes
    assert {"red", "green", "blue", "yellow"} <= colours
    assert len(world.CONCEPTS) >= 12 and len(set(world.BACKGROUNDS)) >= 5
    for a, b, neutral in world.CONTRAST_PAIRS:
        assert world.true_share(neutral, a) + world.true_share(neutral, b) == pytest.approx(1.0)


def test_neutral_mixture_and_preferred_background_rates():
    rng = np.random.default_rng(0)
    drawn = [world.class_concept("circle", rng) for _ in range(4000)]
    share = np.mean([d == "red-circle" for d in drawn])
    assert abs(share - 0.8) < 4 * np.sqrt(0.8 * 0.2 / 4000)  # 4 standard errors
    backgrounds = [world.sample_scene("red-star", rng).background for _ in range(4000)]
    pref = np.mean([b == world.concept("red-star").background for b in backgrounds])
    assert abs(pref - world.PREFERRED_BACKGROUND_P) < 4 * np.sqrt(0.7 * 0.3 / 4000)


def test_circle_coverage_area_and_object_size():
    cov = world.shape_coverage("circle", 16.0, 16.0, 6.0, 0.0)
    assert cov.sum() == pytest.approx(np.pi * 36, rel=0.03)
    rng = np.random.default_rng(1)
    for _ in range(50):  # objects span a third to a half of the 8-token grid
        s = world.sample_scene("blue-cross", rng)
        assert 11 <= 2 * s.radius <= 16
        assert s.radius <= s.cx <= 32 - s.radius and s.radius <= s.cy <= 32 - s.radius


def test_token_mask_marks_covered_patches():
    cov = np.zeros((1, 32, 32), np.float32)
    cov[0, 8:16, 4:8] = 1.0  # exactly tokens (2..3, 1)
    cov[0, 0:1, 0:4] = 1.0  # 1/4 of token (0, 0): at the threshold
    cov[0, 0:1, 28:31] = 1.0  # 3/16 of token (0, 7): below it
    mask = world.token_mask(cov)
    want = np.zeros((1, 8, 8), bool)
    want[0, 2:4, 1] = True
    want[0, 0, 0] = True
    np.testing.assert_array_equal(mask, want)


def test_object_pixels_have_the_concept_colour():
    b = world.render(["yellow-star"] * 20, seed=5)
    inside = b.coverage > 0.99
    rgb01 = (b.pixels + 1) / 2
    mean = rgb01[inside].mean(axis=0)
    np.testing.assert_allclose(mean, world.COLOURS["yellow"], atol=0.08)
    assert (b.concepts == world.class_id("yellow-star")).all()


def test_unknown_names_refused():
    with pytest.raises(ValueError, match="unknown toy concept 'purple-circle'"):
        world.render(["purple-circle"], seed=0)
    with pytest.raises(ValueError, match="unknown toy neutral class"):
        world.true_share("hexagon", "red-circle")
