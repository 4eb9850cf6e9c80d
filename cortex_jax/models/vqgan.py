"""VQGAN (taming-transformers family) as Flax linen modules, NHWC, pixels in [-1, 1].

The parameter tree is exactly the one of vqgan-jax (`dalle-mini/vqgan_imagenet_f16_16384` on the
Hugging Face hub), so its `flax_model.msgpack` loads without renaming; the forward pass follows
taming-transformers (the attention block i runs right after residual block i of a level).

The token-based embedding of the paper, E, is the codebook rows laid out on the token grid,
*before* `post_quant_conv`: `embed(indices)` returns it and `decode(E)` maps it to pixels.

Caveats:
- `dtype` is the compute dtype; parameters stay float32. The nearest-codebook search always runs in
  float32 so token ids do not depend on the compute dtype.
- Any square image whose side is a multiple of the downsampling factor is accepted; attention
  placement follows `config.resolution`, as in the original code."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


Params = Mapping[str, Any]


# Keys that vqgan-jax / transformers write into config.json but that are not model options.
_IGNORED_CONFIG_KEYS = frozenset(
    {"architectures", "transformers_version", "num_resolutions", "model_type", "_name_or_path"}
)


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
    """Architecture of a taming-family VQGAN.

    Attributes:
      ch: base channel count.
      ch_mult: channel multiplier per resolution level; len(ch_mult) levels, one fewer downsamples.
      num_res_blocks: residual blocks per encoder level (decoder levels have one more).
      attn_resolutions: feature-map sides (relative to `resolution`) that get self-attention.
      z_channels: channels of the encoder output / decoder input.
      embed_dim: codebook vector size d.
      n_embed: codebook size K.
      resolution: nominal image side; decides where attention sits.
      in_channels: image channels in.
      out_ch: image channels out.
      double_z: encoder emits 2·z_channels (unused by VQGAN, kept for format compatibility).
      dropout: dropout rate in residual blocks (inactive at inference).
      resamp_with_conv: convolutional up/downsampling (average pool / plain resize otherwise).
      give_pre_end: decoder returns features before its output head.
    """

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 16384
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    double_z: bool = False
    dropout: float = 0.0
    resamp_with_conv: bool = True
    give_pre_end: bool = False

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(int(c) for c in self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if not self.ch_mult:
            raise ValueError("VQGANConfig.ch_mult is empty; expected at least one level")
        for name in ("ch", "num_res_blocks", "z_channels", "embed_dim", "n_embed", "resolution"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"VQGANConfig.{name}={getattr(self, name)!r}; expected > 0")

    @property
    def num_resolutions(self) -> int:
        return len(self.ch_mult)

    @property
    def downsample_factor(self) -> int:
        """Pixels per token side (16 for the f16 ImageNet model)."""
        return 2 ** (self.num_resolutions - 1)

    @property
    def grid_size(self) -> int:
        """Token grid side m at the nominal resolution."""
        return self.resolution // self.downsample_factor

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VQGANConfig:
        """Builds a config from a vqgan-jax `config.json` dict (extra bookkeeping keys ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields - _IGNORED_CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"unknown VQGAN config keys {sorted(unknown)}; "
                f"expected a subset of {sorted(fields)}"
            )
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self) -> dict[str, Any]:
        """The vqgan-jax `config.json` layout."""
        d = dataclasses.asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        d["num_resolutions"] = self.num_resolutions
        return d


PRESETS: dict[str, VQGANConfig] = {
    # taming-transformers `vqgan_imagenet_f16_16384` (= dalle-mini/vqgan_imagenet_f16_16384).
    "imagenet_f16_16384": VQGANConfig(),
    # taming-transformers `vqgan_imagenet_f16_1024`.
    "imagenet_f16_1024": VQGANConfig(n_embed=1024),
}


class TokenizerNames:
    """The `VQGANConfig` names the rest of the project reads (n_embed, resolution, in_channels,
    downsample_factor, grid_size), for another family's tokenizer config (MaskGIT's,
    LlamaGen's), a frozen dataclass with the fields `codebook_size` and `image_size` and the
    property `levels` (resolution levels; one fewer downsamples) and `embed_dim`."""

    codebook_size: int
    image_size: int
    levels = property(lambda self: 1)

    n_embed = property(lambda self: self.codebook_size)
    resolution = property(lambda self: self.image_size)
    in_channels = property(lambda self: 3)
    downsample_factor = property(lambda self: 2 ** (self.levels - 1))
    grid_size = property(lambda self: self.image_size // self.downsample_factor)

    def check_image_size(self) -> None:
        """One ValueError unless image_size is a multiple of the downsampling factor."""
        if self.image_size % self.downsample_factor:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of the tokenizer's downsampling "
                f"factor {self.downsample_factor}"
            )


# Where each preset's weights live on the Hugging Face hub (vqgan-jax format).
PRESET_REPOS: dict[str, str] = {"imagenet_f16_16384": "dalle-mini/vqgan_imagenet_f16_16384"}


def _group_norm(dtype, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, dtype=dtype, name=name)


def _conv(features: int, kernel: int, dtype, name: str, stride: int = 1, padding=None) -> nn.Conv:
    if padding is None:
        padding = ((kernel // 2, kernel // 2), (kernel // 2, kernel // 2))
    return nn.Conv(
        features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        dtype=dtype,
        name=name,
    )


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv twice, with a 1×1 `nin_shortcut` when the channel count changes."""

    out_channels: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        h = nn.swish(_group_norm(self.dtype, "norm1")(x))
        h = _conv(self.out_channels, 3, self.dtype, "conv1")(h)
        h = nn.swish(_group_norm(self.dtype, "norm2")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = _conv(self.out_channels, 3, self.dtype, "conv2")(h)
        if x.shape[-1] != self.out_channels:
            x = _conv(self.out_channels, 1, self.dtype, "nin_shortcut", padding="VALID")(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1×1 conv projections."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = _group_norm(self.dtype, "norm")(x)
        q = _conv(c, 1, self.dtype, "q", padding="VALID")(h).reshape(b, hh * ww, c)
        k = _conv(c, 1, self.dtype, "k", padding="VALID")(h).reshape(b, hh * ww, c)
        v = _conv(c, 1, self.dtype, "v", padding="VALID")(h).reshape(b, hh * ww, c)
        w = jnp.einsum("bqc,bkc->bqk", q, k) * (c**-0.5)
        w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(v.dtype)
        h = jnp.einsum("bqk,bkc->bqc", w, v).reshape(b, hh, ww, c)
        return x + _conv(c, 1, self.dtype, "proj_out", padding="VALID")(h)


class Downsample(nn.Module):
    """Stride-2 VALID conv after padding one row and column at the bottom/right (as taming)."""

    with_conv: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if not self.with_conv:
            return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return _conv(x.shape[-1], 3, self.dtype, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    with_conv: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        if self.with_conv:
            x = _conv(x.shape[-1], 3, self.dtype, "conv")(x)
        return x


class _Level(nn.Module):
    """One resolution level: residual blocks, each followed by its attention block if any."""

    out_channels: int
    num_blocks: int
    with_attn: bool
    resample: str | None  # "down", "up" or None
    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        for j in range(self.num_blocks):
            x = ResnetBlock(self.out_channels, self.config.dropout, self.dtype, name=f"block_{j}")(
                x, deterministic
            )
            if self.with_attn:
                x = AttnBlock(self.dtype, name=f"attn_{j}")(x)
        if self.resample == "down":
            x = Downsample(self.config.resamp_with_conv, self.dtype, name="downsample")(x)
        elif self.resample == "up":
            x = Upsample(self.config.resamp_with_conv, self.dtype, name="upsample")(x)
        return x


class _Mid(nn.Module):
    dropout: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        c = x.shape[-1]
        x = ResnetBlock(c, self.dropout, self.dtype, name="block_1")(x, deterministic)
        x = AttnBlock(self.dtype, name="attn_1")(x)
        return ResnetBlock(c, self.dropout, self.dtype, name="block_2")(x, deterministic)


class Encoder(nn.Module):
    """Pixels (B, H, W, in_channels) → features (B, H/f, W/f, z_channels)."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        x = _conv(cfg.ch, 3, self.dtype, "conv_in")(x)
        res = cfg.resolution
        for i, mult in enumerate(cfg.ch_mult):
            last = i == cfg.num_resolutions - 1
            x = _Level(
                cfg.ch * mult,
                cfg.num_res_blocks,
                res in cfg.attn_resolutions,
                None if last else "down",
                cfg,
                self.dtype,
                name=f"down_{i}",
            )(x, deterministic)
            if not last:
                res //= 2
        x = _Mid(cfg.dropout, self.dtype, name="mid")(x, deterministic)
        x = nn.swish(_group_norm(self.dtype, "norm_out")(x))
        z = 2 * cfg.z_channels if cfg.double_z else cfg.z_channels
        return _conv(z, 3, self.dtype, "conv_out")(x)


class Decoder(nn.Module):
    """Features (B, m, m, z_channels) → pixels (B, m·f, m·f, out_ch)."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        cfg = self.config
        x = _conv(cfg.ch * cfg.ch_mult[-1], 3, self.dtype, "conv_in")(x)
        x = _Mid(cfg.dropout, self.dtype, name="mid")(x, deterministic)
        res = cfg.grid_size
        for i in reversed(range(cfg.num_resolutions)):
            x = _Level(
                cfg.ch * cfg.ch_mult[i],
                cfg.num_res_blocks + 1,
                res in cfg.attn_resolutions,
                None if i == 0 else "up",
                cfg,
                self.dtype,
                name=f"up_{i}",
            )(x, deterministic)
            if i != 0:
                res *= 2
        if cfg.give_pre_end:
            return x
        x = nn.swish(_group_norm(self.dtype, "norm_out")(x))
        return _conv(cfg.out_ch, 3, self.dtype, "conv_out")(x)


def nearest_codes(z: Array, codebook: Array) -> Array:
    """Index of the nearest codebook row for each vector: argmin |z|² + |e|² − 2 z·e.

    Args:
      z: (..., d) vectors.
      codebook: (K, d).
    Returns:
      (...) int32 indices.
    """
    z = z.astype(jnp.float32)
    codebook = codebook.astype(jnp.float32)
    flat = z.reshape(-1, z.shape[-1])
    dist = (
        jnp.sum(flat**2, axis=1, keepdims=True)
        + jnp.sum(codebook**2, axis=1)
        - 2.0 * jnp.dot(flat, codebook.T, precision=jax.lax.Precision.HIGHEST)
    )
    return jnp.argmin(dist, axis=1).astype(jnp.int32).reshape(z.shape[:-1])


class VectorQuantizer(nn.Module):
    """The codebook (K, d), stored as `embedding/embedding` like vqgan-jax's nn.Embed."""

    config: VQGANConfig

    def setup(self):
        self.embedding = nn.Embed(self.config.n_embed, self.config.embed_dim, name="embedding")

    def codebook(self) -> Array:
        return self.embedding.embedding

    def __call__(self, z: Array) -> tuple[Array, Array]:
        """(B, m, m, d) latents → (E (B, m, m, d) codebook rows, indices (B, m·m))."""
        idx = nearest_codes(z, self.embedding.embedding)
        return self.embedding(idx), idx.reshape(idx.shape[0], -1)

    def lookup(self, indices: Array) -> Array:
        """(B, h, w) indices → (B, h, w, d) codebook rows."""
        return self.embedding(indices)


class VQModule(nn.Module):
    """encoder → quant_conv → quantize → post_quant_conv → decoder, with vqgan-jax's names."""

    config: VQGANConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg, self.dtype)
        self.decoder = Decoder(cfg, self.dtype)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = _conv(cfg.embed_dim, 1, self.dtype, "quant_conv", padding="VALID")
        self.post_quant_conv = _conv(
            cfg.z_channels, 1, self.dtype, "post_quant_conv", padding="VALID"
        )

    def encode_latents(self, pixels: Array, deterministic: bool = True) -> Array:
        """z_e: the continuous latents before quantisation, (B, m, m, d)."""
        return self.quant_conv(self.encoder(pixels, deterministic))

    def encode(self, pixels: Array, deterministic: bool = True) -> tuple[Array, Array]:
        """Pixels → (E, indices (B, m·m))."""
        return self.quantize(self.encode_latents(pixels, deterministic))

    def embed(self, indices: Array) -> Array:
        return self.quantize.lookup(indices)

    def decode(self, embedding: Array, deterministic: bool = True) -> Array:
        return self.decoder(self.post_quant_conv(embedding), deterministic)

    def codebook(self) -> Array:
        return self.quantize.codebook()

    def __call__(self, pixels: Array, deterministic: bool = True) -> tuple[Array, Array]:
        e, idx = self.encode(pixels, deterministic)
        return self.decode(e, deterministic), idx


def init_params(config: VQGANConfig, rng: Array, image_size: int | None = None) -> dict:
    """Random parameters for `config` (the nested dict vqgan-jax stores, no 'params' wrapper)."""
    size = image_size or config.resolution
    x = jnp.zeros((1, size, size, config.in_channels), jnp.float32)
    return VQModule(config).init(rng, x)["params"]


def param_shapes(config: VQGANConfig) -> dict:
    """The parameter tree of `config` as ShapeDtypeStructs, without allocating it."""
    f = config.downsample_factor
    return jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0), image_size=f))


# Decoded images overshoot [-1, 1] a little and are fed back (edits, reconstructions): allowed.
PIXEL_TOLERANCE = 0.05


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True, eq=False)
class VQTokenizer:
    """A VQ tokenizer with its weights, as every command and experiment reads it: encode pixels
    in [−1, 1] to token ids, embed ids as E (codebook rows on the grid), decode E to pixels,
    with the checks that turn bad input into one-line errors. `VQGAN` (taming's) and the
    MaskGIT and LlamaGen tokenizers (`maskgit.MaskGITTokenizer`, `llamagen.LlamaGenTokenizer`)
    are its families: each gives its `config` (with the names n_embed, embed_dim, resolution,
    in_channels, downsample_factor, grid_size), `codebook` and `_apply(method)`, a function of
    pixels or E that runs the family's jitted `encode` / `decode` / `encode_latents` on `params`.

    Attributes:
      config: the architecture.
      params: the parameter tree (float32).
      dtype: compute dtype.
    """

    config: Any
    params: Params
    dtype: Any = jnp.float32

    def _apply(self, method: str):
        raise NotImplementedError(f"{type(self).__name__} does not define _apply")

    @property
    def codebook(self) -> Array:
        """(K, d) codebook rows."""
        raise NotImplementedError(f"{type(self).__name__} does not define codebook")

    @functools.cached_property
    def _encode(self):
        return self._apply("encode")

    @functools.cached_property
    def _decode(self):
        return self._apply("decode")

    @functools.cached_property
    def _encode_latents(self):
        return self._apply("encode_latents")

    @property
    def grid_size(self) -> int:
        return self.config.grid_size

    def check_pixels(self, pixels: Any) -> None:
        """Raises ValueError unless pixels is (B, H, W, in_channels) with H, W multiples of f."""
        shape = tuple(np.shape(pixels))
        c, f = self.config.in_channels, self.config.downsample_factor
        if len(shape) != 4:
            raise ValueError(
                f"pixels have shape {shape} (rank {len(shape)}); expected (batch, height, width, "
                f"{c}) NHWC in [-1, 1]"
            )
        if shape[-1] != c:
            raise ValueError(
                f"pixels have {shape[-1]} channels (shape {shape}); expected {c} channels, NHWC"
            )
        if shape[1] < f or shape[1] % f or shape[2] < f or shape[2] % f:
            raise ValueError(
                f"pixel size {shape[1]}x{shape[2]} is not a multiple of the downsampling factor "
                f"{f}; expected e.g. {self.config.resolution}x{self.config.resolution}"
            )
        if _is_concrete(pixels):
            arr = np.asarray(pixels)
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(
                    f"pixels have dtype {arr.dtype}; expected floats in [-1, 1] "
                    "(uint8 x → x / 127.5 − 1)"
                )
            bad = ~np.isfinite(arr)
            if bad.any():
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(f"pixel {pos} is {arr[pos]}; expected finite values in [-1, 1]")
            lo, hi = float(arr.min()), float(arr.max())
            if lo < -1 - PIXEL_TOLERANCE or hi > 1 + PIXEL_TOLERANCE:
                hint = " (0..255 images: x / 127.5 − 1)" if hi > 2 else ""
                raise ValueError(f"pixels span {lo:g}..{hi:g}; expected [-1, 1]{hint}")

    def check_indices(self, indices: Any) -> None:
        """Raises ValueError for token ids outside [0, K) or a shape that is not a grid."""
        shape = tuple(np.shape(indices))
        if len(shape) == 2:
            m = math.isqrt(shape[1])
            if m * m != shape[1]:
                raise ValueError(
                    f"indices have shape {shape}; expected (batch, m*m) with m*m a square "
                    f"number, or (batch, m, m)"
                )
        elif len(shape) != 3:
            raise ValueError(f"indices have shape {shape}; expected (batch, m*m) or (batch, m, m)")
        if _is_concrete(indices):
            arr = np.asarray(indices)
            if not np.issubdtype(arr.dtype, np.integer):
                raise ValueError(f"indices have dtype {arr.dtype}; expected integer token ids")
            bad = (arr < 0) | (arr >= self.config.n_embed)
            if bad.any():
                pos = tuple(int(i) for i in np.argwhere(bad)[0])
                raise ValueError(
                    f"token id {int(arr[pos])} at index {pos} is outside the codebook "
                    f"[0, {self.config.n_embed})"
                )

    def check_embedding(self, embedding: Any) -> None:
        shape = tuple(np.shape(embedding))
        d = self.config.embed_dim
        if len(shape) != 4 or shape[-1] != d:
            raise ValueError(f"E has shape {shape}; expected (batch, m, m, {d})")

    def encode(self, pixels: Any) -> Array:
        """Pixels (B, H, W, 3) in [-1, 1] → token ids (B, m·m), row-major (index = row·m + col)."""
        self.check_pixels(pixels)
        return self._encode(jnp.asarray(pixels, jnp.float32))[1]

    def encode_latents(self, pixels: Any) -> Array:
        """Pixels → z_e (B, m, m, d), the encoder output before quantisation."""
        self.check_pixels(pixels)
        return self._encode_latents(jnp.asarray(pixels, jnp.float32))

    def embed(self, indices: Any) -> Array:
        """Token ids (B, m·m) or (B, m, m) → E (B, m, m, d): codebook rows on the grid."""
        self.check_indices(indices)
        idx = jnp.asarray(indices, jnp.int32)
        if idx.ndim == 2:
            m = math.isqrt(idx.shape[1])
            idx = idx.reshape(idx.shape[0], m, m)
        return jnp.take(self.codebook, idx, axis=0)

    def decode(self, embedding: Any) -> Array:
        """E (B, m, m, d) → pixels (B, m·f, m·f, 3), unclipped."""
        self.check_embedding(embedding)
        return self._decode(jnp.asarray(embedding))

    def decode_code(self, indices: Any) -> Array:
        """Token ids (B, m·m) → pixels."""
        return self.decode(self.embed(indices))

    def decode_pixels(self, indices: Any, batch: int | None = None) -> np.ndarray:
        """Token ids (B, m, m) or (B, m·m) → pixels (B, H, W, 3) clipped to [-1, 1], as numpy,
        `batch` grids at a time (all at once when None). The ids are checked first."""
        indices = np.asarray(indices, np.int32)
        self.check_indices(indices)
        step = batch or max(len(indices), 1)
        parts = [
            np.clip(np.asarray(self.decode_code(indices[i : i + step])), -1, 1)
            for i in range(0, len(indices), step)
        ]
        if not parts:
            raise ValueError("no token grids to decode")
        return np.concatenate(parts)

    def reconstruct(self, pixels: Any) -> tuple[Array, Array]:
        """Pixels → (reconstructed pixels, token ids)."""
        idx = self.encode(pixels)
        return self.decode_code(idx), idx


@dataclasses.dataclass(frozen=True, eq=False)
class VQGAN(VQTokenizer):
    """A VQGAN with its weights: the public face of this module (everything but the network is
    `VQTokenizer`'s).

    Attributes:
      config: the architecture.
      params: the vqgan-jax parameter tree (float32).
      dtype: compute dtype (float32, or bfloat16 for speed).
    """

    config: VQGANConfig
    params: Params
    dtype: Any = jnp.float32

    @functools.cached_property
    def module(self) -> VQModule:
        return VQModule(self.config, self.dtype)

    def _apply(self, method: str):
        m = self.module
        fn = jax.jit(lambda p, x: m.apply({"params": p}, x, method=getattr(VQModule, method)))
        return lambda x: fn(self.params, x)

    @property
    def codebook(self) -> Array:
        """(K, d) codebook rows."""
        return jnp.asarray(self.params["quantize"]["embedding"]["embedding"])


def count_params(tree: Any) -> tuple[int, int]:
    """(number of scalars, number of leaves) of a parameter tree or its ShapeDtypeStructs."""
    leaves = jax.tree_util.tree_leaves(tree)
    return int(sum(math.prod(x.shape) for x in leaves)), len(leaves)
