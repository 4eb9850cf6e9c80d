"""The independent pixel classifiers of the ImageNet evaluation: torchvision's ResNets in Flax.

The paper scores masked and edited images with torchvision ResNet18/50 (ImageNet weights), after
resizing to 224 and ImageNet normalisation. This is that network, with torchvision's parameter
names (`layer2_0/downsample_0` for `layer2.0.downsample.0`) so a torchvision state dict (`.pth`,
read without torch by the restricted unpickler) converts by renaming and transposing only.

`load_classifier` returns a callable pixels (B, H, W, 3) in [-1, 1] → class probabilities, the
`evaluate.Classifier` the experiments take. Sources: a torchvision state dict file
(`resnet50-0676ba61.pth`, architecture from its shapes), a folder written by `save_classifier`,
or `random:resnet18` (random weights, for dry runs).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision's depths per stage.
_ARCHS = {
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

    block: str = "bottleneck"
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


def probabilities_fn(config: ResNetConfig, variables) -> Callable[[np.ndarray], np.ndarray]:
    """A jitted `evaluate.Classifier`: [-1, 1] pixels → softmax probabilities (numpy)."""
    model = ResNet(config)

    @jax.jit
    def probs(px):
        return jax.nn.softmax(model.apply(variables, preprocess(px, config.image_size)), -1)

    return lambda px: np.asarray(probs(jnp.asarray(px)))


def init_variables(config: ResNetConfig, seed: int = 0) -> dict:
    x = jnp.zeros((1, config.image_size, config.image_size, 3))
    return ResNet(config).init(jax.random.PRNGKey(seed), x)


# ---------------------------------------------------------------------------------------------
# torchvision state dicts
# ---------------------------------------------------------------------------------------------


def infer_config(state_dict: Mapping[str, np.ndarray], image_size: int = 224) -> ResNetConfig:
    """The architecture of a torchvision ResNet state dict, from its keys and shapes."""
    if "conv1.weight" not in state_dict or "fc.weight" not in state_dict:
        raise ValueError(
            "not a torchvision ResNet state dict: it lacks conv1.weight / fc.weight "
            f"(first keys: {sorted(state_dict)[:5]})"
        )
    layers = []
    for i in range(1, 5):
        blocks = {k.split(".")[1] for k in state_dict if k.startswith(f"layer{i}.")}
        if not blocks:
            break
        layers.append(len(blocks))
    bottleneck = "layer1.0.conv3.weight" in state_dict
    return ResNetConfig(
        "bottleneck" if bottleneck else "basic",
        tuple(layers),
        int(state_dict["conv1.weight"].shape[0]),
        int(state_dict["fc.weight"].shape[0]),
        image_size,
    )


def convert_torchvision_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """torchvision names/layouts → {'params': …, 'batch_stats': …} of `ResNet`."""
    params: dict = {}
    stats: dict = {}

    def put(tree, path, value):
        for p in path[:-1]:
            tree = tree.setdefault(p, {})
        tree[path[-1]] = np.asarray(value, np.float32)

    for key, value in state_dict.items():
        *mods, leaf = key.split(".")
        if leaf == "num_batches_tracked":
            continue
        # 'layer1.0.downsample.0' → ('layer1_0', 'downsample_0')
        path, i = [], 0
        while i < len(mods):
            if i + 1 < len(mods) and mods[i + 1].isdigit():
                path.append(f"{mods[i]}_{mods[i + 1]}")
                i += 2
            else:
                path.append(mods[i])
                i += 1
        v = np.asarray(value)
        if leaf == "weight" and v.ndim == 4:
            put(params, path + ["kernel"], v.transpose(2, 3, 1, 0))
        elif leaf == "weight" and v.ndim == 2:
            put(params, path + ["kernel"], v.T)
        elif leaf == "weight":
            put(params, path + ["scale"], v)
        elif leaf == "bias":
            put(params, path + ["bias"], v)
        elif leaf == "running_mean":
            put(stats, path + ["mean"], v)
        elif leaf == "running_var":
            put(stats, path + ["var"], v)
        else:
            raise ValueError(f"unexpected torchvision ResNet key {key!r}")
    return {"params": params, "batch_stats": stats}


def _check(config: ResNetConfig, variables, source) -> None:
    from cortex_jax.checkpoints import check_params

    want = jax.eval_shape(lambda: init_variables(config))
    for col in ("params", "batch_stats"):
        check_params(variables.get(col, {}), want[col], f"{source} ({col})")


def save_classifier(folder: str | os.PathLike, config: ResNetConfig, variables) -> Path:
    """A folder (config.json + flax_model.msgpack) that `load_classifier` reads."""
    from cortex_jax.checkpoints import write_model_folder

    return write_model_folder(folder, config.to_dict(), jax.tree.map(np.asarray, variables))


def load_classifier(
    source: str | os.PathLike, image_size: int = 224
) -> tuple[ResNetConfig, dict, Callable[[np.ndarray], np.ndarray]]:
    """(config, variables, probabilities) from a torchvision `.pth`/`.pt` state dict, a folder
    written by `save_classifier`, or 'random:ARCH[:n_classes[:width]]'."""
    from cortex_jax import checkpoints

    s = str(source)
    if s.startswith("random:"):
        parts = s.split(":")[1:]
        kw = {"image_size": image_size}
        if len(parts) > 1:
            kw["n_classes"] = int(parts[1])
        if len(parts) > 2:
            kw["width"] = int(parts[2])
        config = ResNetConfig.named(parts[0], **kw)
        variables = init_variables(config)
        return config, variables, probabilities_fn(config, variables)
    path = Path(s)
    if path.is_dir():
        cfg_dict, variables = checkpoints.read_model_folder(path, "classifier")
        config = ResNetConfig.from_dict(cfg_dict)
    elif path.is_file():
        sd = checkpoints.read_state_dict(path)
        config = infer_config(sd, image_size)
        variables = convert_torchvision_state_dict(sd)
    else:
        raise FileNotFoundError(
            f"classifier not found: {s!r}; expected a torchvision ResNet state dict (e.g. "
            "resnet50-0676ba61.pth from download.pytorch.org/models), a folder written by "
            "save_classifier, or random:resnet18"
        )
    _check(config, variables, s)
    variables = jax.tree.map(jnp.asarray, variables)
    return config, variables, probabilities_fn(config, variables)
