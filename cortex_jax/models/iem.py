"""Information extractors (IEMs): classifiers from the token-based embedding E to concepts.

The three networks compute the authors' functions op by op: their `VQGAN_explanation/model.py`
(repository YangTianze009/CORTEX), classes `ClassificationNet1` (CE), `ClassificationNet3` (RE)
and `ClassificationNet4` (TE), on E as (B, m, m, d) NHWC where they take (B, d, m, m). The same
weights give the same logits to float precision (`tests/test_iem_authors.py` checks each network
against an independent torch rebuild, and each block against NumPy); `io.convert` reads their
`.pth` state dicts into these parameter names.

- CE (Net1): 2 stages of `depth` × [conv3×3 (padding 1, bias), BN, ReLU] then max-pool 2 →
  flatten → FC, BN, ReLU, dropout 0.5 → FC, BN, ReLU → FC classes. Width 512, FC 4096.
  Follows Net1 exactly. The one difference is layout, not function: we flatten (H, W, C), they
  flatten (C, H, W), so `fc1`'s rows are permuted when converting their weights.
- RE (Net3): two stages of `depth` residual blocks (d→512 then 512→512, the first block of each
  with stride 2), GAP → FC 2048, BN, ReLU, dropout 0.4 → FC classes. Block, in their order:
  conv3×3 (stride s, padding (1, 1), no bias), BN, ReLU, conv3×3 (padding (1, 1), no bias), BN;
  **+ shortcut** (identity, or 1×1 conv stride s without padding + BN when the shape changes);
  **then** squeeze-excitation (GAP → FC d/16, ReLU → FC d, sigmoid, scale); then ReLU. Follows
  Net3 exactly. (Corrected on 2026-12-01: SE used to act on the residual branch before the
  shortcut was added, and the stride-2 convolutions padded (0, 1) as flax's "SAME" does, not
  PyTorch's (1, 1).)
- TE (Net4): per-position Linear 512, LayerNorm, GELU (exact erf), ×√512, a CLS token and learned
  positions (trunc-normal 0.02), dropout; 12 pre-LN encoder layers: LN → 8-head self-attention
  (dropout on the attention weights) → BatchNorm → dropout → + residual; LN → Linear 2048, GELU,
  dropout, Linear, dropout → BatchNorm → + residual; head LN → CLS → Linear 1024, LN, GELU,
  dropout → classes (attention-weight dropout draws a mask per image and head, as PyTorch's
  attention does, not flax's default of one mask shared across them). Every LayerNorm has
  PyTorch's epsilon 1e-5 and two-pass variance, and every dropout has the one rate `dropout`
  (0.2), at Net4's places. Follows Net4 exactly, with one option of ours: `attention_dropout`
  sets the attention-weight dropout apart (None, the default, is Net4's: the same rate as the
  rest). (Corrected on 2026-12-01: the LayerNorms had flax's epsilon 1e-6 and one-pass
  variance, and only the embedding and head dropouts were there.)
- BatchNorm everywhere is PyTorch's: epsilon 1e-5, momentum 0.1 (flax 0.9), two-pass batch
  variance; statistics over the batch and, in TE, the positions. (PyTorch updates the running
  variance with the unbiased batch variance, flax with the biased one: a training-time
  difference of a factor n/(n−1), n the values a channel sees in a batch (the batch size, 256
  or 512, for the head's BatchNorms; batch × positions elsewhere), that no evaluation of given
  weights sees. This is the one departure we keep.)

`width`/`depth` options give the small variants used by the toy world and tests; the defaults are
the paper's. `predict` is a pure function of (params, batch_stats, E) in eval mode, so TIS and the
codebook-level optimisation can differentiate it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Variables = dict[str, Any]

ARCHITECTURES = ("ce", "re", "te")


@dataclasses.dataclass(frozen=True)
class IEMConfig:
    """Attributes:
    arch: "ce", "re" or "te".
    n_classes: number of concepts.
    width: conv channels (CE, RE) or model width (TE); 512 in the paper.
    depth: conv layers per CE stage (4), blocks per RE stage (3) or TE layers (12).
    hidden: CE FC width (4096), RE head width (2048), TE head width (1024).
    heads: TE attention heads (8).
    mlp: TE MLP width (2048).
    se_hidden: RE squeeze-excitation bottleneck (32).
    dropout: CE/RE head dropout (0.5, 0.4); TE's one rate at every Net4 dropout place (0.2).
      None → the architecture's value.
    attention_dropout: TE dropout on the attention weights; None (the default) → `dropout`, as
      Net4 (and the paper: 0.2) has it.
    """

    arch: Literal["ce", "re", "te"]
    n_classes: int
    width: int = 512
    depth: int | None = None
    hidden: int | None = None
    heads: int = 8
    mlp: int = 2048
    se_hidden: int = 32
    dropout: float | None = None
    attention_dropout: float | None = None

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown IEM architecture {self.arch!r}; expected one of ce, re, te")
        if self.n_classes < 2:
            raise ValueError(f"n_classes={self.n_classes}; an IEM needs at least 2 classes")
        defaults = {"ce": (4, 4096, 0.5), "re": (3, 2048, 0.4), "te": (12, 1024, 0.2)}[self.arch]
        for name, value in zip(("depth", "hidden", "dropout"), defaults, strict=True):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        rates = {"dropout": self.dropout, "attention_dropout": self.attention_dropout}
        for name, rate in rates.items():
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{name}={rate}; expected a rate in [0, 1)")
        if self.arch == "te" and self.width % self.heads:
            raise ValueError(f"TE width {self.width} is not divisible by heads={self.heads}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # depth, hidden and dropout once resolved (never None after __post_init__)
    @property
    def layers(self) -> int:
        return int(self.depth)  # type: ignore[arg-type]

    @property
    def head_width(self) -> int:
        return int(self.hidden)  # type: ignore[arg-type]

    @property
    def head_dropout(self) -> float:
        return float(self.dropout)  # type: ignore[arg-type]

    @property
    def attention_rate(self) -> float:
        """TE's attention-weight dropout: `attention_dropout`, else the one rate `dropout`."""
        rate = self.dropout if self.attention_dropout is None else self.attention_dropout
        return float(rate)  # type: ignore[arg-type]


# PyTorch's Conv2d(padding=1) pads (1, 1) on each side for every stride; flax's "SAME" pads
# (0, 1) for a stride-2 3×3 convolution on an even size, which moves every window by one.
_TORCH_PAD_1 = ((1, 1), (1, 1))
# PyTorch's LayerNorm epsilon (flax's default is 1e-6).
_LN_EPS = 1e-5


def _ln(dtype: Any, name: str) -> nn.LayerNorm:
    # Two-pass variance as PyTorch computes it: flax's default E[x²] − E[x]² loses the variance
    # of features whose mean is large against their spread (percent-level errors in float32).
    return nn.LayerNorm(epsilon=_LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
    # torch BatchNorm defaults: momentum 0.1 (flax 0.9), eps 1e-5.
    return nn.BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        use_fast_variance=False,
        name=name,
    )


def _head(x: Array, cfg: IEMConfig, train: bool, dtype: Any, layers: int) -> Array:
    """The authors' CE/RE classifier head: `layers` × (Dense `hidden` → BN → ReLU) named fc{j} /
    bn_fc{j}, dropout after the first, then Dense to the classes (float32 logits). Called inside
    a compact `__call__`, so the layers belong to the calling module."""
    for j in range(1, layers + 1):
        x = nn.Dense(cfg.head_width, dtype=dtype, name=f"fc{j}")(x)
        x = nn.relu(_bn(train, f"bn_fc{j}")(x))
        if j == 1:
            x = nn.Dropout(cfg.head_dropout, deterministic=not train)(x)
    return nn.Dense(cfg.n_classes, dtype=dtype, name="out")(x).astype(jnp.float32)


class CE(nn.Module):
    config: IEMConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e: Array, train: bool = False) -> Array:
        cfg = self.config
        x = e.astype(self.dtype)
        for stage in range(2):
            for i in range(cfg.layers):
                x = nn.Conv(
                    cfg.width,
                    (3, 3),
                    padding=_TORCH_PAD_1,
                    dtype=self.dtype,
                    name=f"conv{stage}_{i}",
                )(x)
                x = nn.relu(_bn(train, f"bn{stage}_{i}")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return _head(x.reshape(x.shape[0], -1), cfg, train, self.dtype, layers=2)


class SEBlock(nn.Module):
    """Net3's ResidualBlock: conv-BN-ReLU-conv-BN, + shortcut (1×1 conv + BN if reshaped), then
    squeeze-excitation of the sum, then ReLU."""

    features: int
    stride: int
    se_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        conv = lambda k, s, name: nn.Conv(
            self.features,
            (k, k),
            (s, s),
            padding=_TORCH_PAD_1 if k == 3 else "VALID",
            use_bias=False,
            dtype=self.dtype,
            name=name,
        )
        h = nn.relu(_bn(train, "bn1")(conv(3, self.stride, "conv1")(x)))
        h = _bn(train, "bn2")(conv(3, 1, "conv2")(h))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _bn(train, "bn_short")(conv(1, self.stride, "conv_short")(x))
        h = h + x
        s = jnp.mean(h, axis=(1, 2))
        s = nn.relu(nn.Dense(self.se_hidden, dtype=self.dtype, name="se_fc1")(s))
        s = nn.sigmoid(nn.Dense(self.features, dtype=self.dtype, name="se_fc2")(s))
        return nn.relu(h * s[:, None, None, :])


class RE(nn.Module):
    config: IEMConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e: Array, train: bool = False) -> Array:
        cfg = self.config
        x = e.astype(self.dtype)
        for stage in range(2):
            for i in range(cfg.layers):
                x = SEBlock(
                    cfg.width,
                    2 if i == 0 else 1,
                    cfg.se_hidden,
                    self.dtype,
                    name=f"stage{stage}_{i}",
                )(x, train)
        return _head(jnp.mean(x, axis=(1, 2)), cfg, train, self.dtype, layers=1)


class _EncoderLayer(nn.Module):
    """Net4's TransformerEncoderLayerV2 (pre-LN, BatchNorm on each branch's output)."""

    width: int
    heads: int
    mlp: int
    dtype: Any = jnp.float32
    dropout: float = 0.2
    attention_dropout: float = 0.2

    @nn.compact
    def __call__(self, x: Array, train: bool) -> Array:
        b, t, c = x.shape
        bn = lambda name: lambda y: _bn(train, name)(y.reshape(b * t, c)).reshape(b, t, c)
        drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
        h = _ln(self.dtype, "ln1")(x)
        h = nn.MultiHeadDotProductAttention(
            self.heads,
            dtype=self.dtype,
            dropout_rate=self.attention_dropout,
            broadcast_dropout=False,  # a mask per image and head, as torch's attention draws
            deterministic=not train,
            name="attn",
        )(h, h)
        x = x + drop(bn("bn_attn")(h))
        h = _ln(self.dtype, "ln2")(x)
        h = drop(nn.gelu(nn.Dense(self.mlp, dtype=self.dtype, name="mlp1")(h), approximate=False))
        h = drop(nn.Dense(c, dtype=self.dtype, name="mlp2")(h))
        return x + bn("bn_mlp")(h)


class TE(nn.Module):
    config: IEMConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, e: Array, train: bool = False) -> Array:
        cfg = self.config
        b, h, w, d = e.shape
        x = nn.Dense(cfg.width, dtype=self.dtype, name="embed")(e.reshape(b, h * w, d))
        x = nn.gelu(_ln(self.dtype, "embed_ln")(x), approximate=False)
        x = x * math.sqrt(cfg.width)
        init = nn.initializers.truncated_normal(0.02)
        cls = self.param("cls", init, (1, 1, cfg.width))
        pos = self.param("pos", init, (1, h * w + 1, cfg.width))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, cfg.width)).astype(x.dtype), x], 1)
        x = nn.Dropout(cfg.head_dropout, deterministic=not train)(x + pos.astype(x.dtype))
        for i in range(cfg.layers):
            x = _EncoderLayer(
                cfg.width,
                cfg.heads,
                cfg.mlp,
                self.dtype,
                cfg.head_dropout,
                cfg.attention_rate,
                name=f"layer{i}",
            )(x, train)
        x = _ln(self.dtype, "ln_f")(x)[:, 0]
        x = nn.Dense(cfg.head_width, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(_ln(self.dtype, "head_ln")(x), approximate=False)
        x = nn.Dropout(cfg.head_dropout, deterministic=not train)(x)
        return nn.Dense(cfg.n_classes, dtype=self.dtype, name="out")(x).astype(jnp.float32)


_MODULES = {"ce": CE, "re": RE, "te": TE}


def create_model(config: IEMConfig, dtype: Any = jnp.float32) -> nn.Module:
    return _MODULES[config.arch](config, dtype)


def init_variables(config: IEMConfig, rng: Array, grid_size: int, embed_dim: int) -> Variables:
    """{'params': …, 'batch_stats': …} for inputs (B, grid_size, grid_size, embed_dim)."""
    model = create_model(config)
    x = jnp.zeros((2, grid_size, grid_size, embed_dim), jnp.float32)
    return dict(model.init({"params": rng, "dropout": rng}, x, train=False))


def predict_fn(config: IEMConfig, dtype: Any = jnp.float32) -> Callable[..., Array]:
    """`predict(params, batch_stats, E) -> logits (B, n_classes)` in eval mode: pure, jittable
    and differentiable in E."""
    model = create_model(config, dtype)

    def predict(params, batch_stats, e: Array) -> Array:
        out = model.apply({"params": params, "batch_stats": batch_stats}, e, train=False)
        return cast(Array, out)

    return predict


def predictor(
    config: IEMConfig, variables: Mapping[str, Any], dtype: Any = jnp.float32
) -> Callable[[Array], Array]:
    """`predict(E) -> logits` closed over {'params', 'batch_stats'}: the callable every method
    and experiment takes (a functools.partial, so hashable as jitted code needs it)."""
    return functools.partial(
        predict_fn(config, dtype), variables["params"], variables["batch_stats"]
    )
