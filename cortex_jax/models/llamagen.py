"""LlamaGen (Sun et al. 2024, FoundationVision/LlamaGen) natively in JAX: its VQ tokenizer, its
class-conditional Llama-style GPT and its sampler, with the released checkpoints' parameters.

- `LlamaGenTokenizer` is a `VQTokenizer` (the base of taming's `VQGAN` too) for every purpose of
  this project (codebook, encode, embed, decode, decode_code, decode_pixels). The architecture
  follows `tokenizer/tokenizer_image/vq_model.py`: taming-style ResnetBlocks (GroupNorm 32 groups,
  eps 1e-6, swish), single-head attention after every residual block of the lowest resolution only,
  Downsample = pad right/bottom by one then a stride-2 3×3 conv, nearest ×2 Upsample, and an
  l2-normalised codebook: latents and codebook rows are both normalised before the nearest-row
  search and the codebook is normalised again at lookup. `ch` is a config field (the released models
  use 128; LlamaGen's VQModel never passes it). Pixels are in [−1, 1] as for every VQGAN here. **E
  for CORTEX is the normalised codebook rows on the grid** (what LlamaGen's `get_codebook_entry`
  returns and its decoder reads); `codebook` is that normalised (K, d) table.
- The GPT is `autoregressive/models/gpt.py`'s c2i Transformer as functions of a parameter tree:
  pre-norm blocks with RMSNorm (computed in float32), a fused wqkv projection (grouped K/V heads
  supported), 2D RoPE on interleaved pairs (first half of the pairs by row, second by column;
  the class position's rotation is zero, so its q and k are zero), SwiGLU feed-forward whose
  hidden size is `find_multiple(int(8·dim/3) [· ffn_dim_multiplier], multiple_of)`, and a class
  table with a last, null row for classifier-free guidance. `gpt_logits` gives the 1 + L
  teacher-forced positions (position 0 = the class token, predicting token 0).
- `rollout` is `autoregressive/models/generate.py` with a KV cache in one jitted `lax.scan`:
  CFG on logits (`uncond + (cond − uncond)·scale` when scale > 1, both halves fed the
  conditional token, off after `cfg_interval`), then logits / max(temperature, 1e-5), top-k
  (ties kept), top-p on the filtered logits, softmax and a draw (or the argmax). Each image draws
  with its own key, so batching never changes a result; torch's multinomial draws themselves
  cannot be reproduced, the probabilities drawn from are.
- `LlamaGenVQGM` bundles the two with class names: `logits`, `sample_tokens`, `decode`.

The checkpoint files are read by `cortex_jax.io.sources` (`load_llamagen`,
`load_llamagen_tokenizer`); `io.convert` turns their state dicts into the trees used here."""

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

from cortex_jax.core import sharding
from cortex_jax.models.cin import filter_logits
from cortex_jax.models.vqgan import (
    AttnBlock,
    Downsample,
    ResnetBlock,
    TokenizerNames,
    Upsample,
    VQTokenizer,
    _conv,
    _group_norm,
)
from cortex_jax.models.vqgm import VQGMBase

Array = jax.Array
PRNGKey = jax.Array

_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize


# ----------------------------------------------------------------------------- tokenizer


@dataclasses.dataclass(frozen=True)
class TokenizerConfig(TokenizerNames):
    """LlamaGen's VQ `ModelArgs` plus what the weights do not record (image size).

    Attributes: codebook_size (K), codebook_embed_dim (d), ch (base channels, 128 released),
    encoder_ch_mult, decoder_ch_mult, z_channels, num_res_blocks, image_size,
    codebook_l2_norm (True in every release).
    """

    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    num_res_blocks: int = 2
    image_size: int = 256
    codebook_l2_norm: bool = True

    def __post_init__(self):
        object.__setattr__(self, "encoder_ch_mult", tuple(self.encoder_ch_mult))
        object.__setattr__(self, "decoder_ch_mult", tuple(self.decoder_ch_mult))
        if len(self.encoder_ch_mult) != len(self.decoder_ch_mult):
            raise ValueError(
                f"encoder_ch_mult {self.encoder_ch_mult} and decoder_ch_mult "
                f"{self.decoder_ch_mult} have different numbers of levels"
            )
        self.check_image_size()

    # with TokenizerNames: the VQGANConfig names the rest of the project reads
    embed_dim = property(lambda self: self.codebook_embed_dim)
    levels = property(lambda self: len(self.encoder_ch_mult))

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values, with `family: llamagen`."""
        return dataclasses.asdict(self) | {"family": "llamagen"}


def l2_normalize(x: Array) -> Array:
    """x / max(‖x‖, 1e-12) over the last axis (torch's F.normalize)."""
    n = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
    return x / jnp.maximum(n, _NORMALIZE_EPS)


class _Level(nn.Module):
    """One of LlamaGen's `conv_blocks`: `res_j` (+ `attn_j` after each), then the resampler."""

    out_channels: int
    num_blocks: int
    with_attn: bool
    resample: str | None  # "down", "up" or None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        for j in range(self.num_blocks):
            x = ResnetBlock(self.out_channels, name=f"res_{j}")(x)
            if self.with_attn:
                x = AttnBlock(name=f"attn_{j}")(x)
        if self.resample == "down":
            x = Downsample(name="downsample")(x)
        elif self.resample == "up":
            x = Upsample(name="upsample")(x)
        return x


def _mid(x: Array) -> Array:
    # LlamaGen's `mid` ModuleList: mid_0 res, mid_1 attention, mid_2 res.
    c = x.shape[-1]
    x = ResnetBlock(c, name="mid_0")(x)
    x = AttnBlock(name="mid_1")(x)
    return ResnetBlock(c, name="mid_2")(x)


def _head(x: Array, features: int) -> Array:
    x = nn.swish(_group_norm(jnp.float32, "norm_out")(x))
    return _conv(features, 3, jnp.float32, "conv_out")(x)


class _Encoder(nn.Module):
    config: TokenizerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        x = _conv(c.ch, 3, jnp.float32, "conv_in")(x)
        last = len(c.encoder_ch_mult) - 1
        for i, mult in enumerate(c.encoder_ch_mult):
            x = _Level(
                c.ch * mult,
                c.num_res_blocks,
                i == last,
                None if i == last else "down",
                name=f"conv_blocks_{i}",
            )(x)
        return _head(_mid(x), c.z_channels)


class _Decoder(nn.Module):
    config: TokenizerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        mults = c.decoder_ch_mult
        x = _mid(_conv(c.ch * mults[-1], 3, jnp.float32, "conv_in")(x))
        for j, i in enumerate(reversed(range(len(mults)))):  # conv_blocks_0 = lowest resolution
            x = _Level(
                c.ch * mults[i],
                c.num_res_blocks + 1,
                j == 0,
                None if i == 0 else "up",
                name=f"conv_blocks_{j}",
            )(x)
        return _head(x, 3)


class TokenizerModule(nn.Module):
    """encoder → quant_conv → l2-normalised nearest codebook row → post_quant_conv → decoder, with
    the parameter names of LlamaGen's state dict (`x.N` → `x_N`, convs as NHWC kernels)."""

    config: TokenizerConfig

    def setup(self):
        c = self.config
        self.encoder = _Encoder(c)
        self.decoder = _Decoder(c)
        self.quantize = _Codebook(c)
        self.quant_conv = _conv(c.codebook_embed_dim, 1, jnp.float32, "quant_conv", padding="VALID")
        self.post_quant_conv = _conv(
            c.z_channels, 1, jnp.float32, "post_quant_conv", padding="VALID"
        )

    def encode_latents(self, pixels: Array) -> Array:
        """z_e (B, m, m, d): the latent before normalisation and quantisation."""
        return self.quant_conv(self.encoder(pixels))

    def codebook(self) -> Array:
        """(K, d) codebook rows as the decoder reads them (normalised when codebook_l2_norm)."""
        return self.quantize.table()

    def encode(self, pixels: Array) -> tuple[Array, Array]:
        """Pixels → (E (B, m, m, d), indices (B, m·m))."""
        z = self.encode_latents(pixels)
        table = self.quantize.table()
        if self.config.codebook_l2_norm:
            z = l2_normalize(z)
        flat = z.reshape(-1, z.shape[-1])
        dist = (
            jnp.sum(flat**2, axis=1, keepdims=True)
            + jnp.sum(table**2, axis=1)
            - 2.0 * jnp.dot(flat, table.T, precision=jax.lax.Precision.HIGHEST)
        )
        idx = jnp.argmin(dist, axis=1).astype(jnp.int32)
        return table[idx].reshape(z.shape), idx.reshape(z.shape[0], -1)

    def decode(self, embedding: Array) -> Array:
        """E (B, m, m, d) → pixels (B, H, W, 3), unclipped."""
        return self.decoder(self.post_quant_conv(embedding))

    def __call__(self, pixels: Array) -> Array:
        return self.decode(self.encode(pixels)[0])


class _Codebook(nn.Module):
    config: TokenizerConfig

    def setup(self):
        c = self.config
        self.embedding = nn.Embed(c.codebook_size, c.codebook_embed_dim, name="embedding")

    def table(self) -> Array:
        e = self.embedding.embedding
        return l2_normalize(e) if self.config.codebook_l2_norm else e


def tokenizer_param_shapes(config: TokenizerConfig) -> dict:
    """The tokenizer's parameter tree as ShapeDtypeStructs, without allocating it."""
    f = config.downsample_factor
    x = jax.ShapeDtypeStruct((1, f, f, 3), jnp.float32)
    return jax.eval_shape(lambda p: TokenizerModule(config).init(jax.random.PRNGKey(0), p), x)[
        "params"
    ]


def init_tokenizer(config: TokenizerConfig, key: Array) -> LlamaGenTokenizer:
    """A tokenizer with Flax's default random initialisation (for dry runs and tests)."""
    f = config.downsample_factor
    params = TokenizerModule(config).init(key, jnp.zeros((1, f, f, 3), jnp.float32))["params"]
    return LlamaGenTokenizer(config, jax.tree_util.tree_map(np.asarray, params))


@dataclasses.dataclass(frozen=True, eq=False)
class LlamaGenTokenizer(VQTokenizer):
    """LlamaGen's VQ tokenizer behind the `VQTokenizer` interface (pixels in [−1, 1]).

    Attributes: config (TokenizerConfig), params (LlamaGen's tree: encoder, decoder,
    quantize/embedding/embedding (unnormalised, as stored), quant_conv, post_quant_conv), dtype
    (float32 only: the tokenizer is small next to the GPT).
    """

    config: TokenizerConfig

    def _apply(self, method: str):
        module = TokenizerModule(self.config)
        fn = jax.jit(
            lambda p, x: module.apply({"params": p}, x, method=getattr(TokenizerModule, method))
        )
        return lambda x: fn(self.params, x)

    @functools.cached_property
    def _codebook(self) -> Array:
        e = jnp.asarray(self.params["quantize"]["embedding"]["embedding"], jnp.float32)
        return l2_normalize(e) if self.config.codebook_l2_norm else e

    @property
    def codebook(self) -> Array:
        """(K, d) the l2-normalised codebook rows: E = codebook[ids] on the grid."""
        return self._codebook


# ----------------------------------------------------------------------------- GPT


def find_multiple(n: int, k: int) -> int:
    """The smallest multiple of k that is ≥ n (LlamaGen's rounding of the SwiGLU width)."""
    return n if n % k == 0 else n + k - n % k


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """LlamaGen's c2i `ModelArgs` (the fields inference uses).

    Attributes: dim, n_layer, n_head, n_kv_head (None = n_head), multiple_of,
    ffn_dim_multiplier, rope_base, norm_eps, num_classes (the class table has one more, null,
    row), vocab_size (the tokenizer's K), block_size (m·m image tokens), cls_token_num (1).
    """

    dim: int = 4096
    n_layer: int = 32
    n_head: int = 32
    n_kv_head: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    num_classes: int = 1000
    vocab_size: int = 16384
    block_size: int = 256
    cls_token_num: int = 1

    def __post_init__(self):
        if self.dim % self.n_head:
            raise ValueError(f"dim={self.dim} is not divisible by n_head={self.n_head}")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.kv_heads}")
        if self.head_dim % 4:
            raise ValueError(f"head_dim {self.head_dim} is not a multiple of 4 (2D RoPE needs it)")
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(f"block_size={self.block_size} is not a square number of tokens")
        if self.cls_token_num != 1:
            raise ValueError(f"cls_token_num={self.cls_token_num}; c2i models use 1")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def grid_size(self) -> int:
        return math.isqrt(self.block_size)

    @property
    def ffn_hidden(self) -> int:
        hidden = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return find_multiple(hidden, self.multiple_of)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values."""
        return dataclasses.asdict(self)


# LlamaGen's named class-conditional sizes (gpt.py's GPT_models); 3B is the one released c2i
# model whose heads are not 64 wide.
GPT_PRESETS: dict[str, dict[str, int]] = {
    "GPT-B": dict(n_layer=12, n_head=12, dim=768),
    "GPT-L": dict(n_layer=24, n_head=16, dim=1024),
    "GPT-XL": dict(n_layer=36, n_head=20, dim=1280),
    "GPT-XXL": dict(n_layer=48, n_head=24, dim=1536),
    "GPT-XXXL": dict(n_layer=48, n_head=40, dim=2560),
    "GPT-3B": dict(n_layer=24, n_head=32, dim=3200),
}


def gpt_param_shapes(config: GPTConfig) -> dict:
    """The GPT parameter tree (as converted from LlamaGen's state dict) as ShapeDtypeStructs.

    Linear kernels are (in, out); `cls_embedding` has num_classes + 1 rows (the last is null)."""
    c = config
    s = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
    qkv = (c.n_head + 2 * c.kv_heads) * c.head_dim
    layer = {
        "wqkv": s(c.dim, qkv),
        "wo": s(c.dim, c.dim),
        "w1": s(c.dim, c.ffn_hidden),
        "w3": s(c.dim, c.ffn_hidden),
        "w2": s(c.ffn_hidden, c.dim),
        "attention_norm": s(c.dim),
        "ffn_norm": s(c.dim),
    }
    tree: dict[str, Any] = {
        "cls_embedding": s(c.num_classes + 1, c.dim),
        "tok_embeddings": s(c.vocab_size, c.dim),
        "norm": s(c.dim),
        "output": s(c.dim, c.vocab_size),
    }
    return tree | {f"layers_{i}": dict(layer) for i in range(c.n_layer)}


def init_gpt_params(config: GPTConfig, key: Array, std: float = 0.02) -> dict:
    """Random GPT parameters in `gpt_param_shapes`' layout: N(0, std) weights (LlamaGen's
    init) and RMSNorm weights of one (for dry runs and tests)."""
    shapes = gpt_param_shapes(config)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    out = []
    for i, (path, leaf) in enumerate(leaves):
        if "norm" in jax.tree_util.keystr(path):
            out.append(np.ones(leaf.shape, np.float32))
        else:
            w = std * jax.random.normal(jax.random.fold_in(key, i), leaf.shape, jnp.float32)
            out.append(np.asarray(w))
    return jax.tree_util.tree_unflatten(treedef, out)


def rope_table(config: GPTConfig) -> np.ndarray:
    """(1 + L, head_dim/2, 2) float32 (cos, sin) per position and pair: row 0 (the class token)
    is all zero; token t at (t // m, t % m) turns pair j by row·f_j for j < head_dim/4 and by
    col·f_{j − head_dim/4} after, f_j = rope_base^(−2j / (head_dim/2))."""
    half = config.head_dim // 2
    freqs = 1.0 / (config.rope_base ** (np.arange(0, half, 2)[: half // 2] / half))
    m = config.grid_size
    t = np.arange(config.block_size)
    angles = np.concatenate([np.outer(t // m, freqs), np.outer(t % m, freqs)], axis=-1)
    table = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    return np.concatenate([np.zeros((1, half, 2)), table]).astype(np.float32)


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype) * weight


def _rope(x: Array, table: Array) -> Array:
    """x (N, T, H, hd) rotated by table (T, hd/2, 2) on interleaved pairs, in float32."""
    xs = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    c, s = table[None, :, None, :, 0], table[None, :, None, :, 1]
    out = jnp.stack([xs[..., 0] * c - xs[..., 1] * s, xs[..., 1] * c + xs[..., 0] * s], -1)
    return out.reshape(x.shape).astype(x.dtype)


def _attention(c: GPTConfig, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """q (N, T, H, hd); k, v (N, S, KVH, hd); mask (T, S) → (N, T, H·hd)."""
    rep = c.n_head // c.kv_heads
    k, v = jnp.repeat(k, rep, axis=2), jnp.repeat(v, rep, axis=2)
    scores = jnp.einsum("nthd,nshd->nhts", q, k) / jnp.sqrt(jnp.float32(c.head_dim)).astype(q.dtype)
    scores = jnp.where(mask, scores.astype(jnp.float32), -jnp.inf)
    w = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("nhts,nshd->nthd", w, v)
    return out.reshape(*out.shape[:2], -1)


def _block(c: GPTConfig, p: Mapping[str, Array], x: Array, table: Array, kv_fn) -> tuple:
    """One pre-norm block; `kv_fn(k, v) -> (keys, values, mask, carry)` supplies what the
    queries attend to (the sequence itself, or the updated cache)."""
    n, t, _ = x.shape
    h = _rms_norm(x, p["attention_norm"], c.norm_eps)
    kv = c.kv_heads * c.head_dim
    qkv = h @ p["wqkv"]
    q = qkv[..., : c.dim].reshape(n, t, c.n_head, c.head_dim)
    k = qkv[..., c.dim : c.dim + kv].reshape(n, t, c.kv_heads, c.head_dim)
    v = qkv[..., c.dim + kv :].reshape(n, t, c.kv_heads, c.head_dim)
    q, k = _rope(q, table), _rope(k, table)
    keys, values, mask, carry = kv_fn(k, v)
    x = x + _attention(c, q, keys, values, mask) @ p["wo"]
    h = _rms_norm(x, p["ffn_norm"], c.norm_eps)
    return x + (jax.nn.silu(h @ p["w1"]) * (h @ p["w3"])) @ p["w2"], carry


def _cast(params: Any, dtype: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def _output(c: GPTConfig, params: Any, x: Array) -> Array:
    return (_rms_norm(x, params["norm"], c.norm_eps) @ params["output"]).astype(jnp.float32)


def gpt_logits(
    config: GPTConfig, params: Any, class_ids: Array, tokens: Array, dtype: Any = jnp.float32
) -> Array:
    """Teacher-forced logits (N, 1 + L, V) of [class embedding, tokens 0 … L−1]: position 0 is
    the class token's (predicting token 0), position L follows the last token. `class_ids` may
    be the null class (num_classes) for the unconditional branch."""
    c = config
    p = _cast(params, dtype)
    x = jnp.concatenate(
        [p["cls_embedding"][class_ids][:, None], p["tok_embeddings"][tokens]], axis=1
    )
    t = x.shape[1]
    table = jnp.asarray(rope_table(c))[:t]
    mask = jnp.tril(jnp.ones((t, t), bool))
    for i in range(c.n_layer):
        x, _ = _block(c, p[f"layers_{i}"], x, table, lambda k, v: (k, v, mask, None))
    return _output(c, p, x)


def cfg_combine(cond: Any, uncond: Any, scale: Any) -> Any:
    """LlamaGen's guidance on logits: uncond + (cond − uncond)·scale."""
    return uncond + (cond - uncond) * scale


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """LlamaGen's sampling options (sample_c2i.py's defaults).

    Attributes:
      cfg_scale: guidance on logits; ≤ 1 samples from the conditional logits alone (no null row).
      cfg_interval: −1 = guidance at every step; else off for tokens t ≥ cfg_interval + 2.
      temperature: logits / max(temperature, 1e-5) before the filters.
      top_k: 0 = off; ties with the k-th logit are kept.
      top_p: 1.0 = off; nucleus on the top-k-filtered logits.
      sample_logits: False takes the argmax instead of drawing (LlamaGen's greedy).
    """

    cfg_scale: float = 4.0
    cfg_interval: int = -1
    temperature: float = 1.0
    top_k: int = 2000
    top_p: float = 1.0
    sample_logits: bool = True

    def __post_init__(self):
        if self.top_k < 0 or not 0.0 < self.top_p <= 1.0 or self.temperature < 0:
            raise ValueError(
                f"top_k={self.top_k}, top_p={self.top_p}, temperature={self.temperature}; "
                "expected top_k ≥ 0, 0 < top_p ≤ 1 and temperature ≥ 0"
            )
        if self.cfg_interval < -1:
            raise ValueError(f"cfg_interval={self.cfg_interval}; expected −1 (always) or ≥ 0")


def sampling_logits(logits: Array, sc: SampleConfig) -> Array:
    """What LlamaGen's `sample()` draws from, as logits: temperature, then top-k, then top-p
    (−inf where filtered); softmax of it is the sampling distribution."""
    scaled = logits / max(sc.temperature, 1e-5)
    return filter_logits(scaled, sc.top_k or None, sc.top_p)


def uses_cfg(position: Array | int, sc: SampleConfig) -> Array:
    """Whether token `position` (0-based) is chosen with guidance: always for the first (the
    prefill), then for decode step i = position − 1 while i ≤ cfg_interval (or always for −1)."""
    pos = jnp.asarray(position)
    return (sc.cfg_interval < 0) | (pos - 1 <= sc.cfg_interval)


def _rollout_one(
    c: GPTConfig,
    sc: SampleConfig,
    dtype: Any,
    params: Any,
    class_id: Array,
    key: Array,
    forced: Any,
    keep: Any = None,
) -> tuple[Array, Array]:
    """One image: (tokens (L,), the combined logits of every step (L, V)). With `forced` (L,)
    tokens fed instead of the chosen ones (teacher forcing through the cache); with `keep` (L,)
    bool as well, only where `keep` is set (the chosen token is fed elsewhere)."""
    p = _cast(params, dtype)
    cfg = sc.cfg_scale > 1.0
    rows = jnp.stack([class_id, jnp.int32(c.null_class)]) if cfg else class_id[None]
    n, s = rows.shape[0], 1 + c.block_size
    table = jnp.asarray(rope_table(c))
    cache0 = jnp.zeros((c.n_layer, 2, n, s, c.kv_heads, c.head_dim), dtype)
    cls = p["cls_embedding"][rows][:, None]

    def step(carry, pos):
        prev, cache = carry
        x = jnp.where(pos == 0, cls, p["tok_embeddings"][jnp.full((n, 1), prev)])
        rot = jax.lax.dynamic_slice_in_dim(table, pos, 1)
        mask = (jnp.arange(s) <= pos)[None]
        zero = jnp.zeros((), jnp.int32)
        for i in range(c.n_layer):

            def kv_fn(k, v, i=i, cache=cache):
                # one slice written into the whole cache, which XLA updates in place
                kv = jnp.stack([k, v]).astype(dtype)[None]
                start = (jnp.int32(i), zero, zero, pos.astype(jnp.int32), zero, zero)
                cache = jax.lax.dynamic_update_slice(cache, kv, start)
                return cache[i, 0], cache[i, 1], mask, cache

            x, cache = _block(c, p[f"layers_{i}"], x, rot, kv_fn)
        lg = _output(c, p, x)[:, 0]
        if cfg:
            lg = jnp.where(uses_cfg(pos, sc), cfg_combine(lg[0], lg[1], sc.cfg_scale), lg[0])
        else:
            lg = lg[0]
        filt = sampling_logits(lg, sc)
        if sc.sample_logits:
            tok = jax.random.categorical(jax.random.fold_in(key, pos), filt)
        else:
            tok = jnp.argmax(filt)
        tok = tok.astype(jnp.int32)
        if forced is None:
            nxt = tok
        elif keep is None:
            nxt = forced[pos]
        else:
            nxt = jnp.where(keep[pos], forced[pos], tok)
        return (nxt, cache), (tok, lg)

    _, (toks, lgs) = jax.lax.scan(step, (jnp.int32(0), cache0), jnp.arange(c.block_size))
    return toks, lgs


@functools.lru_cache(maxsize=16)
def _rollout_fn(c: GPTConfig, sc: SampleConfig, dtype_name: str, forced: bool, keep: bool = False):
    dtype = jnp.dtype(dtype_name)
    if keep:
        part = lambda p, cid, key, f, k: _rollout_one(c, sc, dtype, p, cid, key, f, k)  # noqa: E731
        return jax.jit(jax.vmap(part, in_axes=(None, 0, 0, 0, 0)))
    if forced:
        one = lambda p, cid, key, f: _rollout_one(c, sc, dtype, p, cid, key, f)  # noqa: E731
        return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))
    free = lambda p, cid, key: _rollout_one(c, sc, dtype, p, cid, key, None)  # noqa: E731
    return jax.jit(jax.vmap(free, in_axes=(None, 0, 0)))


def per_image_keys(key: Array, n: int) -> Array:
    """One raw key per image: image i of a batch draws with fold_in(key, i); a stack of n keys
    is used as given (so one image can be re-drawn alone with its own key)."""
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.ndim == 1:
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    if key.ndim != 2 or key.shape[0] != n:
        raise ValueError(f"keys have shape {key.shape}; expected one key or one per image ({n})")
    return key


def rollout(
    config: GPTConfig,
    params: Any,
    class_ids: Any,
    key: Array,
    sample_config: SampleConfig = SampleConfig(),
    dtype: Any = jnp.float32,
    forced_tokens: Any = None,
    keep: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """LlamaGen's `generate()` for (B,) class ids: (tokens (B, L), the logits each step chose
    from (B, L, V), CFG-combined where guidance was on, before temperature).

    KV cache in one jitted `lax.scan` per image, images vmapped and split over the local
    devices; image i draws with its own key (see `per_image_keys`). With `forced_tokens`
    (B, L) the cache is fed those tokens instead of the chosen ones (the returned tokens are
    still the ones the sampler chose), which checks the cached path against a reference. With
    `keep` (B, L) bool as well, only the kept positions are forced and the others are fed the
    sampler's choice (`LlamaGenVQGM.resample_region`)."""
    ids = np.asarray(class_ids, np.int32)
    keys = per_image_keys(key, len(ids))
    if keep is not None and forced_tokens is None:
        raise ValueError("keep needs forced_tokens: the tokens kept at those positions")
    name = jnp.dtype(dtype).name
    fn = _rollout_fn(config, sample_config, name, forced_tokens is not None, keep is not None)
    rows: list[Any] = [ids, np.asarray(keys)]
    if forced_tokens is not None:
        rows.append(np.asarray(forced_tokens, np.int32))
    if keep is not None:
        rows.append(np.asarray(keep, bool))
    b, placed = sharding.split_over_local_devices(*rows)
    toks, lgs = fn(params, *placed)
    return np.asarray(toks)[:b], np.asarray(lgs)[:b]


# ----------------------------------------------------------------------------- the VQGM


@dataclasses.dataclass(frozen=True, eq=False)
class LlamaGenVQGM(VQGMBase):
    """LlamaGen's class-conditional model: tokenizer + GPT + class names (grid, codebook,
    names, class-id checks, encode and decode: `VQGMBase`).

    Attributes: name, vqgan (LlamaGenTokenizer), gpt_config, gpt_params (float32 tree from
    `io.convert.convert_llamagen_gpt_state_dict`), class_names, dtype (the GPT's compute dtype:
    float32, or bfloat16 as LlamaGen's default `--precision bf16`, RMSNorm and RoPE in float32).
    """

    name: str
    vqgan: LlamaGenTokenizer
    gpt_config: GPTConfig
    gpt_params: Any
    class_names: tuple[str, ...]
    dtype: Any = jnp.float32

    def __post_init__(self):
        c, m = self.gpt_config, self.vqgan.grid_size
        if c.block_size != m * m:
            raise ValueError(
                f"the GPT generates {c.block_size} tokens but the tokenizer grid is {m}x{m} at "
                f"image_size {self.vqgan.config.image_size}; set image_size to "
                f"{c.grid_size * self.vqgan.config.downsample_factor}"
            )
        if c.vocab_size != self.vqgan.config.codebook_size:
            raise ValueError(
                f"GPT vocabulary {c.vocab_size} != tokenizer codebook "
                f"{self.vqgan.config.codebook_size}"
            )
        if len(self.class_names) != c.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {c.num_classes} classes")

    @functools.cached_property
    def _params(self) -> Any:
        # once on every local device, in the compute dtype (bf16 halves the copy)
        mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), (sharding.DATA_AXIS,))
        cast = jax.tree_util.tree_map(lambda a: np.asarray(a).astype(self.dtype), self.gpt_params)
        return jax.device_put(cast, sharding.replicated(mesh))

    def check_tokens(self, tokens: Any, batch: int) -> np.ndarray:
        """(B, L) or (B, m, m) token ids of this model, as (B, L) int32, or one-line ValueError."""
        t = np.asarray(tokens)
        m, n = self.grid_size, self.gpt_config.block_size
        if t.ndim == 3 and t.shape[1:] == (m, m):
            t = t.reshape(len(t), n)
        if t.ndim != 2 or t.shape != (batch, n) or not np.issubdtype(t.dtype, np.integer):
            raise ValueError(
                f"tokens have shape {t.shape} / dtype {t.dtype}; expected ({batch}, {n}) or "
                f"({batch}, {m}, {m}) integer ids"
            )
        self.vqgan.check_indices(t)
        return t.astype(np.int32)

    def logits(self, class_ids: Any, tokens: Any, cfg_scale: float | None = None) -> np.ndarray:
        """Teacher-forced logits (B, 1 + L, V): position 0 predicts token 0, position L follows
        the last token. With `cfg_scale`, uncond + (cond − uncond)·scale, the unconditional
        branch being the null class on the same tokens."""
        ids = self.check_classes(class_ids)
        toks = self.check_tokens(tokens, len(ids))
        c, dtype = self.gpt_config, self.dtype
        fn = _logits_fn(c, jnp.dtype(dtype).name)
        cond = np.asarray(fn(self._params, ids, toks))
        if cfg_scale is None:
            return cond
        uncond = np.asarray(fn(self._params, np.full_like(ids, c.null_class), toks))
        return np.asarray(cfg_combine(cond, uncond, cfg_scale))

    def sample_tokens(
        self,
        class_ids: Any,
        key: Array,
        sample_config: SampleConfig | None = None,
        dtype: Any = None,
        *,
        cfg_scale: float | None = None,
        cfg_interval: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        sample_logits: bool | None = None,
    ) -> np.ndarray:
        """(B,) class ids → (B, m, m) token grids, sampled as LlamaGen's generate() samples.

        The options are `sample_config` (default: sample_c2i.py's, `SampleConfig()`) with any
        keyword given replacing its field; `dtype` (default: the model's) is the GPT's compute
        type. `key` is one key (image i draws with fold_in(key, i)) or one key per image; either
        way an image's grid does not depend on the batch around it. `sample_logits=False` takes
        the argmax at every step (LlamaGen's greedy)."""
        ids = self.check_classes(class_ids)
        sc = self._options(sample_config, locals())
        toks, _ = rollout(self.gpt_config, self._params_for(dtype), ids, key, sc, self._dt(dtype))
        m = self.grid_size
        return toks.reshape(len(ids), m, m)

    def resample_region(
        self,
        tokens: Any,
        mask: Any,
        class_ids: Any,
        key: Array,
        sample_config: SampleConfig | None = None,
    ) -> np.ndarray:
        """LlamaGen's own way to re-draw a region: (B, m, m) grids, a (m, m) or (B, m, m) bool
        `mask` and (B,) target classes → grids whose masked positions are re-sampled for the
        target class and whose other positions are kept.

        The model is autoregressive in raster order, so this is done as LlamaGen would: one
        rollout for the target class in which the unmasked prefix is teacher-forced, each masked
        position is sampled (`sample_config`, default sample_c2i.py's), and the kept tokens after
        it are teacher-forced again. A masked position therefore conditions on the kept tokens
        before it only (the prefix), never on those after it; the kept tokens are not re-scored.
        `key` as for `sample_tokens`."""
        ids = self.check_classes(class_ids)
        base = self.check_tokens(tokens, len(ids))
        m = self.grid_size
        msk = np.asarray(mask, bool)
        if msk.shape not in ((m, m), (len(ids), m, m)):
            raise ValueError(
                f"mask has shape {msk.shape}; expected ({m}, {m}) or ({len(ids)}, {m}, {m})"
            )
        keep = ~np.broadcast_to(msk, (len(ids), m, m)).reshape(len(ids), m * m)
        sc = sample_config or SampleConfig()
        toks, _ = rollout(
            self.gpt_config, self._params, ids, key, sc, self.dtype, forced_tokens=base, keep=keep
        )
        return np.where(keep, base, toks).reshape(len(ids), m, m)

    def _dt(self, dtype: Any) -> Any:
        return self.dtype if dtype is None else dtype

    @functools.cached_property
    def _twins(self) -> dict[str, Any]:
        return {}  # dtype name → this model's parameters placed in that dtype

    def _params_for(self, dtype: Any) -> Any:
        if dtype is None or jnp.dtype(dtype) == jnp.dtype(self.dtype):
            return self._params
        name = jnp.dtype(dtype).name
        if name not in self._twins:
            self._twins[name] = dataclasses.replace(self, dtype=jnp.dtype(dtype))._params
        return self._twins[name]

    @staticmethod
    def _options(sample_config: SampleConfig | None, given: Mapping[str, Any]) -> SampleConfig:
        fields = [f.name for f in dataclasses.fields(SampleConfig)]
        over = {k: given[k] for k in fields if given.get(k) is not None}
        return dataclasses.replace(sample_config or SampleConfig(), **over)


@functools.lru_cache(maxsize=8)
def _logits_fn(c: GPTConfig, dtype_name: str):
    dtype = jnp.dtype(dtype_name)
    return jax.jit(lambda p, ids, toks: gpt_logits(c, p, ids, toks, dtype))
