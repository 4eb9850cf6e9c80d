"""The toy world: procedural 32×32 images whose concepts, context and bias we control.

One foreground object per image, a (shape, colour) concept drawn at a random size (11–16 px
across, a third to a half of the 8×8 token grid), position and small rotation, over one of five
textured backgrounds with pixel noise. Every concept prefers one background (70 % of its images),
so a concept's most frequent tokens are partly background: the trap the frequency baseline falls
into. Neutral classes are fixed mixtures of concepts (`circle` is 80 % red, 20 % blue) with an even
control (`square`), so a bias audit has a known answer.

The renderer knows each object's mask; `token_mask` turns it into the ground truth of which token
positions belong to the concept.

Everything is numpy and deterministic for a seed (`numpy.random.Generator`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

IMAGE_SIZE = 32
SUPERSAMPLE = 2
PATCH = 4  # pixels per token side with the f4 toy VQGAN → 8×8 token grid
PREFERRED_BACKGROUND_P = 0.7

SHAPES = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.08, 0.08),
    "green": (0.10, 0.85, 0.15),
    "blue": (0.12, 0.22, 0.95),
    "yellow": (0.97, 0.90, 0.10),
}
BACKGROUNDS = ("sky", "grass", "water", "brick", "sand")


@dataclasses.dataclass(frozen=True)
class Concept:
    """A named (shape, colour) pair with the background it appears on most of the time."""

    name: str
    shape: str
    colour: str
    background: str


@dataclasses.dataclass(frozen=True)
class Neutral:
    """A neutral class: a fixed mixture of concepts, e.g. `circle` = 80 % red, 20 % blue."""

    name: str
    mixture: tuple[tuple[str, float], ...]


def _concept(colour: str, shape: str, background: str) -> Concept:
    return Concept(f"{colour}-{shape}", shape, colour, background)


CONCEPTS: tuple[Concept, ...] = (
    _concept("red", "circle", "grass"),
    _concept("blue", "circle", "sand"),
    _concept("red", "square", "water"),
    _concept("blue", "square", "brick"),
    _concept("red", "triangle", "sky"),
    _concept("blue", "triangle", "grass"),
    _concept("red", "star", "sand"),
    _concept("blue", "star", "sky"),
    _concept("red", "cross", "water"),
    _concept("blue", "cross", "brick"),
    _concept("green", "circle", "brick"),
    _concept("green", "square", "sky"),
    _concept("yellow", "triangle", "water"),
    _concept("yellow", "star", "brick"),
)

NEUTRALS: tuple[Neutral, ...] = (
    Neutral("circle", (("red-circle", 0.8), ("blue-circle", 0.2))),
    Neutral("star", (("red-star", 0.3), ("blue-star", 0.7))),
    Neutral("square", (("red-square", 0.5), ("blue-square", 0.5))),  # the even control
)

# (concept A, concept B, neutral): the pairs the bias audit compares, with the true share of A.
CONTRAST_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("red-circle", "blue-circle", "circle"),
    ("red-star", "blue-star", "star"),
    ("red-square", "blue-square", "square"),
)

# Class ids: concepts first, then neutral classes.
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CONCEPTS) + tuple(n.name for n in NEUTRALS)
_BY_NAME = {c.name: c for c in CONCEPTS}
_NEUTRAL_BY_NAME = {n.name: n for n in NEUTRALS}


def concept(name: str) -> Concept:
    if name not in _BY_NAME:
        raise ValueError(f"unknown toy concept {name!r}; expected one of {list(_BY_NAME)}")
    return _BY_NAME[name]


def class_id(name: str) -> int:
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown toy class {name!r}; expected one of {list(CLASS_NAMES)}")
    return CLASS_NAMES.index(name)


def true_share(neutral: str, concept_name: str) -> float:
    """The share of `concept_name` in the neutral class's mixture (0 when absent)."""
    if neutral not in _NEUTRAL_BY_NAME:
        raise ValueError(
            f"unknown toy neutral class {neutral!r}; expected one of {list(_NEUTRAL_BY_NAME)}"
        )
    return dict(_NEUTRAL_BY_NAME[neutral].mixture).get(concept_name, 0.0)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

_S = IMAGE_SIZE * SUPERSAMPLE
_YY, _XX = np.mgrid[0:_S, 0:_S].astype(np.float32)
_YY = (_YY + 0.5) / SUPERSAMPLE
_XX = (_XX + 0.5) / SUPERSAMPLE


def _polygon(n_points: int, radii: Sequence[float], start: float) -> np.ndarray:
    angles = start + np.arange(n_points) * 2 * np.pi / n_points
    r = np.resize(np.asarray(radii, np.float32), n_points)
    return np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1)


_CROSS = np.array(
    [
        (-0.3, -1),
        (0.3, -1),
        (0.3, -0.3),
        (1, -0.3),
        (1, 0.3),
        (0.3, 0.3),
        (0.3, 1),
        (-0.3, 1),
        (-0.3, 0.3),
        (-1, 0.3),
        (-1, -0.3),
        (-0.3, -0.3),
    ],
    np.float32,
)
_OUTLINES = {
    "square": _polygon(4, [1.0], np.pi / 4) * 0.82,
    "triangle": _polygon(3, [1.0], -np.pi / 2) + np.array([0.0, 0.18], np.float32),
    "star": _polygon(10, [1.0, 0.5], -np.pi / 2),
    "cross": _CROSS * 0.95,
}


def _inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(x.shape, bool)
    px, py = poly[:, 0], poly[:, 1]
    qx, qy = np.roll(px, -1), np.roll(py, -1)
    for ax, ay, bx, by in zip(px, py, qx, qy, strict=True):
        crosses = (ay > y) != (by > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = ax + (y - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (x < xint)
    return inside


def shape_coverage(shape: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """(32, 32) float fraction of each pixel covered by the shape (2×2 supersampling)."""
    dx, dy = _XX - cx, _YY - cy
    c, s = np.cos(-angle), np.sin(-angle)
    u, v = (c * dx - s * dy) / radius, (s * dx + c * dy) / radius
    if shape == "circle":
        hit = u * u + v * v <= 1.0
    elif shape in _OUTLINES:
        hit = _inside_polygon(u, v, _OUTLINES[shape])
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    hit = hit.astype(np.float32).reshape(IMAGE_SIZE, SUPERSAMPLE, IMAGE_SIZE, SUPERSAMPLE)
    return hit.mean(axis=(1, 3))


def background(kind: str, rng: np.random.Generator) -> np.ndarray:
    """(32, 32, 3) float32 texture in [0, 1]."""
    n = IMAGE_SIZE
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    noise = rng.standard_normal((n, n)).astype(np.float32)
    if kind == "sky":
        t = y + 0.1 * rng.uniform(-1, 1)
        top, bottom = np.array([0.45, 0.65, 0.95]), np.array([0.88, 0.93, 0.98])
        img = top + (bottom - top) * t[..., None]
        img = img + 0.02 * noise[..., None]
    elif kind == "grass":
        blades = np.repeat(rng.standard_normal((1, n)), n, axis=0) * 0.06
        img = np.array([0.28, 0.55, 0.20]) + (blades + 0.05 * noise)[..., None] * np.array(
            [0.5, 1.0, 0.5]
        )
    elif kind == "water":
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(10, 16)
        waves = 0.07 * np.sin(freq * y + 3 * np.sin(6 * x + phase))
        img = np.array([0.10, 0.42, 0.55]) + (waves + 0.02 * noise)[..., None]
    elif kind == "brick":
        off = rng.integers(0, 8)
        row = ((y * n + off) // 6).astype(int)
        mortar_h = ((y * n + off) % 6) < 1
        mortar_v = ((x * n + 6 * (row % 2) + off) % 12) < 1
        img = np.where(
            (mortar_h | mortar_v)[..., None],
            np.array([0.75, 0.72, 0.68]),
            np.array([0.55, 0.25, 0.18]),
        )
        img = img + 0.03 * noise[..., None]
    elif kind == "sand":
        img = np.array([0.86, 0.76, 0.55]) + 0.06 * noise[..., None]
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {BACKGROUNDS}")
    return img.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Scene:
    """What was drawn: enough to redraw it exactly."""

    concept: str
    background: str
    cx: float
    cy: float
    radius: float
    angle: float


def sample_scene(concept_name: str, rng: np.random.Generator) -> Scene:
    c = concept(concept_name)
    if rng.uniform() < PREFERRED_BACKGROUND_P:
        bg = c.background
    else:
        bg = rng.choice([b for b in BACKGROUNDS if b != c.background])
    radius = rng.uniform(5.5, 8.0)
    margin = radius + 0.5
    return Scene(
        concept_name,
        str(bg),
        float(rng.uniform(margin, IMAGE_SIZE - margin)),
        float(rng.uniform(margin, IMAGE_SIZE - margin)),
        float(radius),
        float(np.deg2rad(rng.uniform(-20, 20))),
    )


def draw(scene: Scene, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image (32, 32, 3) in [0, 1], object coverage (32, 32) in [0, 1])."""
    c = concept(scene.concept)
    cov = shape_coverage(c.shape, scene.cx, scene.cy, scene.radius, scene.angle)
    colour = np.asarray(COLOURS[c.colour], np.float32)
    shade = 1.0 - 0.12 * ((_YY[::2, ::2] - scene.cy) / scene.radius)[..., None]  # soft lighting
    obj = np.clip(colour * shade, 0, 1)
    img = background(scene.background, rng)
    img = img * (1 - cov[..., None]) + obj * cov[..., None]
    img = img + 0.02 * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), cov


def class_concept(name: str, rng: np.random.Generator) -> str:
    """The concept drawn for class `name`: itself, or one drawn from a neutral class's mixture."""
    if name in _NEUTRAL_BY_NAME:
        names, probs = zip(*_NEUTRAL_BY_NAME[name].mixture, strict=True)
        return str(names[rng.choice(len(names), p=np.asarray(probs) / sum(probs))])
    return concept(name).name


@dataclasses.dataclass(frozen=True)
class Batch:
    """Rendered images and their ground truth.

    Attributes:
      pixels: (n, 32, 32, 3) float32 in [-1, 1] (the VQGAN's range).
      coverage: (n, 32, 32) float32 object coverage per pixel.
      labels: (n,) int32 class ids (index into CLASS_NAMES).
      concepts: (n,) int32 id of the concept actually drawn (differs for neutral classes).
    """

    pixels: np.ndarray
    coverage: np.ndarray
    labels: np.ndarray
    concepts: np.ndarray


def render(classes: Sequence[str], seed: int) -> Batch:
    """Renders one image per entry of `classes`, deterministically for `seed`."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((len(classes), IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    cov = np.empty((len(classes), IMAGE_SIZE, IMAGE_SIZE), np.float32)
    drawn = np.empty(len(classes), np.int32)
    for i, name in enumerate(classes):
        cname = class_concept(name, rng)
        pixels[i], cov[i] = draw(sample_scene(cname, rng), rng)
        drawn[i] = class_id(cname)
    labels = np.array([class_id(n) for n in classes], np.int32)
    return Batch(pixels * 2 - 1, cov, labels, drawn)


def render_balanced(n: int, seed: int, class_names: Sequence[str] = CLASS_NAMES) -> Batch:
    """n images cycling through `class_names` (shuffled order), deterministic for `seed`."""
    rng = np.random.default_rng(seed)
    order = [class_names[i % len(class_names)] for i in rng.permutation(n)]
    return render(order, seed + 1)


def token_mask(coverage: np.ndarray, min_share: float = 0.25) -> np.ndarray:
    """Ground truth on the token grid: (n, 8, 8) bool, True where the object covers at least
    `min_share` of the token's 4×4 pixel patch."""
    n, h, w = coverage.shape
    share = coverage.reshape(n, h // PATCH, PATCH, w // PATCH, PATCH).mean(axis=(2, 4))
    return share >= min_share
