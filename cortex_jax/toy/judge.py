"""The toy world's independent pixel classifier ("judge"): what ResNet/ViT are for ImageNet.

A small CNN trained on procedural images only (never on VQGAN outputs), half of them lightly
blurred so that it judges shape and colour rather than texture; evaluations use it to say whether
a generated or edited image shows a concept. It classifies the 14 concepts, not neutral classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cortex_jax.toy import world

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class JudgeConfig:
    """Attributes: widths per stage (two 3×3 convs each, then 2×2 max-pool), n_classes."""

    widths: tuple[int, ...] = (32, 64, 128)
    n_classes: int = len(world.CONCEPTS)

    def to_dict(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "n_classes": self.n_classes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeConfig:
        return cls(tuple(d["widths"]), int(d["n_classes"]))


class PixelJudge(nn.Module):
    """Pixels (B, 32, 32, 3) in [-1, 1] → concept logits (B, n_classes)."""

    config: JudgeConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for i, w in enumerate(self.config.widths):
            x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}_a")(x))
            x = nn.relu(nn.Conv(w, (3, 3), name=f"conv{i}_b")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        return nn.Dense(self.config.n_classes, name="head")(x)


def blur(pixels: Array) -> Array:
    """A light 3×3 box blur, (B, H, W, C)."""
    k = jnp.ones((3, 3, 1, 1), pixels.dtype) / 9.0
    c = pixels.shape[-1]
    return jax.lax.conv_general_dilated(
        pixels,
        jnp.tile(k, (1, 1, 1, c)),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )
