"""The independent pixel classifiers of the ImageNet evaluation: torchvision's ResNets in Flax.

The paper scores masked and edited images with torchvision ResNet18/50 (ImageNet weights), after
resizing to 224 and ImageNet normalisation. This is that network, with torchvision's parameter
names (`layer2_0/downsample_0` for `layer2.0.downsample.0`) so a torchvision state dict (`.pth`,
read without torch by the restricted unpickler) converts by renaming and transposing only
(`cortex_jax.io.convert`).

`probabilities_fn(config, variables)` is the callable pixels (B, H, W, 3) in [-1, 1] → class
probabilities, the `evaluate.Classifier` the experiments take; `cortex_jax.io.sources.
load_classifier` builds it from a torchvision `.pth`, a classifier folder or `random:resnet18`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


# torchvision's depths per stage.
_ARCHS: dict[str, tuple[Literal["basic", "bottleneck"], tuple[int, ...]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Attributes: block ('basic' | 'bottleneck'), layers (blocks per stage), width (stage-1
    channels; 64 in torchvision), n_classes, image_size (the classifier's input side: pixels are
    resized to it, 224 for ImageNet)."""

    block: Literal["basic", "bottleneck"] = "bottleneck"
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    n_classes: int = 1000
    image_size: int = 224

    @classmethod
    def named(cls, arch: str, **kw) -> ResNetConfig:
        if arch not in _ARCHS:
            raise ValueError(
                f"unknown classifier architecture {arch!r}; expected one of {sorted(_ARCHS)}"
            )
        block, layers = _ARCHS[arch]
        return cls(block, layers, **kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"layers": list(self.layers)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResNetConfig:
        return cls(**{**d, "layers": tuple(d["layers"])})


def _bn(name):
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class _Block(nn.Module):
    features: int
    stride: int
    bottleneck: bool
    downsample: bool

    @nn.compact
    def __call__(self, x):
        conv = functools.partial(nn.Conv, use_bias=False)
        s = (self.stride, self.stride)
        if self.bottleneck:
            y = nn.relu(_bn("bn1")(conv(self.features, (1, 1), name="conv1")(x)))
            y = conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), name="conv2")(y)
            y = nn.relu(_bn("bn2")(y))
            y = _bn("bn3")(conv(self.features * 4, (1, 1), name="conv3")(y))
            out = self.features * 4
        else:
            y = conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), name="conv1")(x)
            y = nn.relu(_bn("bn1")(y))
            y = _bn("bn2")(conv(self.features, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y))
            out = self.features
        if self.downsample:
            x = _bn("downsample_1")(conv(out, (1, 1), s, name="downsample_0")(x))
        return nn.relu(x + y)


class ResNet(nn.Module):
    """torchvision's ResNet on NHWC input that is already normalised; returns logits."""

    config: ResNetConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        bottleneck = c.block == "bottleneck"
        x = nn.Conv(
            c.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, name="conv1"
        )(x)
        x = nn.relu(_bn("bn1")(x))
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        channels = c.width
        for i, n in enumerate(c.layers):
            feats = c.width * 2**i
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                out = feats * (4 if bottleneck else 1)
                down = j == 0 and (stride != 1 or channels != out)
                x = _Block(feats, stride, bottleneck, down, name=f"layer{i + 1}_{j}")(x)
                channels = out
        return nn.Dense(c.n_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


def preprocess(pixels: Array, image_size: int) -> Array:
    """[-1, 1] pixels (B, H, W, 3) → resized to image_size (bilinear, antialiased) and
    normalised with the ImageNet mean and std, as torchvision's eval transform."""
    x = (pixels.astype(jnp.float32) + 1) / 2
    if x.shape[1:3] != (image_size, image_size):
        x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bilinear")
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def probabilities_fn(
    config: ResNetConfig, variables: Mapping[str, Any]
) -> Callable[[np.ndarray], np.ndarray]:
    """A jitted `evaluate.Classifier`: [-1, 1] pixels → softmax probabilities (numpy)."""
    model = ResNet(config)

    @jax.jit
    def probs(px):
        return jax.nn.softmax(model.apply(variables, preprocess(px, config.image_size)), -1)

    return lambda px: np.asarray(probs(jnp.asarray(px)))


def init_variables(config: ResNetConfig, seed: int = 0) -> dict:
    x = jnp.zeros((1, config.image_size, config.image_size, 3))
    return cast(dict, ResNet(config).init(jax.random.PRNGKey(seed), x))
