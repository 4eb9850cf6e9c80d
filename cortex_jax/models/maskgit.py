"""MaskGIT (Chang et al., CVPR 2022; google-research/maskgit) natively in Flax: its VQGAN-style
tokenizer, its bidirectional transformer and its parallel decoding, with the released
checkpoints' parameter trees.

- `MaskGITTokenizer` is a `VQTokenizer` (the base of taming's `VQGAN` too) for every purpose
  of this project (codebook, encode, embed, decode, E = codebook rows), so IEMs, TIS,
  selection, editing and audits run on it unchanged.
  MaskGIT works on [0, 1] images, the project on [−1, 1]: the conversion happens at this
  boundary, so `encode(x)` gives MaskGIT's indices for (x + 1)/2 and `decode_code` returns 2y − 1
  of MaskGIT's decode y. The architecture follows `maskgit/nets/vqgan_tokenizer.py`, quirks
  included: no attention layers; GroupNorm (32 groups) and swish; average-pool downsampling
  (`conv_downsample` false in the released model); and a `ResBlock` whose channel-changing
  shortcut conv is applied to the block's *output* (the input is then not added at all).
- `BidirectionalTransformer` follows `maskgit/nets/maskgit_transformer.py` (BERT-style post-LN
  layers, approximate GELU, an MLM head tied to the word embeddings). Its sequence is the class
  token (label + codebook size) followed by the m·m image ids; `[MASK]` is −1, which the
  embedding reads as its last row, as in MaskGIT.
- `parallel_decode` is `maskgit/libml/parallel_decode.py`: `num_iter` steps, each sampling every
  masked position, keeping the most confident ones by the cosine schedule with Gumbel noise
  annealed by `choice_temperature · (1 − t/T)`; the PRNG is split exactly as there, so the same
  key reproduces its sequences.
- `MaskGITVQGM` samples token grids for class ids (batched, one key per image, data-parallel over
  local devices) and edits regions (re-mask, re-decode for a target class: MaskGIT's own editing).

`infer_tokenizer_config` and `infer_transformer_config` read the architecture off a parameter
tree's shapes; the checkpoint files themselves are read by `cortex_jax.io.sources`
(`load_maskgit_tokenizer`, `load_maskgit`)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, Literal, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.core import sharding
from cortex_jax.models.vqgan import TokenizerNames, VQTokenizer
from cortex_jax.models.vqgm import VQGMBase

Array = jax.Array


MASK_TOKEN_ID = -1


_LN_EPS = 1e-12  # BERT's layer norm epsilon, as MaskGIT's transformer


@dataclasses.dataclass(frozen=True)
class TokenizerConfig(TokenizerNames):
    """MaskGIT's `config.vqvae` plus the image size (which weights do not record).

    Attributes: filters, channel_multipliers, num_res_blocks, embedding_dim, codebook_size,
    image_size, activation ("swish" in the released model, or "relu"), conv_downsample.
    """

    filters: int = 128
    channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    embedding_dim: int = 256
    codebook_size: int = 1024
    image_size: int = 256
    activation: Literal["swish", "relu"] = "swish"
    conv_downsample: bool = False

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(self.channel_multipliers))
        if self.activation not in ("swish", "relu"):
            raise ValueError(f"activation={self.activation!r}; expected 'swish' or 'relu'")
        self.check_image_size()

    # with TokenizerNames: the VQGANConfig names the rest of the project reads
    embed_dim = property(lambda self: self.embedding_dim)
    levels = property(lambda self: len(self.channel_multipliers))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"family": "maskgit"}


def _act(name: str):
    return nn.swish if name == "swish" else nn.relu


class ResBlock(nn.Module):
    """MaskGIT's residual block (its name is part of the checkpoint's parameter paths)."""

    filters: int
    activation: str

    @nn.compact
    def __call__(self, x):
        act = _act(self.activation)
        input_dim = x.shape[-1]
        h = nn.Conv(self.filters, (3, 3), use_bias=False)(act(nn.GroupNorm()(x)))
        h = nn.Conv(self.filters, (3, 3), use_bias=False)(act(nn.GroupNorm()(h)))
        if input_dim != self.filters:  # MaskGIT's quirk: the shortcut conv reads the output
            return h + nn.Conv(self.filters, (1, 1), use_bias=False)(h)
        return h + x


def _avg_pool2(x):
    # TF-style 'SAME' average pooling, as MaskGIT's layers.dsample (padding cells not counted).
    window, strides = (1, 2, 2, 1), (1, 2, 2, 1)
    s = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, "SAME")
    n = jax.lax.reduce_window(jnp.ones_like(x), 0.0, jax.lax.add, window, strides, "SAME")
    return s / n


# Flax names submodules by class and creation order (Conv_0, ResBlock_0, GroupNorm_0, …), which
# is MaskGIT's tree; these helpers create them inside the calling module's compact method.
def _res_blocks(x, filters: int, c: TokenizerConfig):
    for _ in range(c.num_res_blocks):
        x = ResBlock(filters, c.activation)(x)
    return x


def _head(x, features: int, kernel: tuple[int, int], c: TokenizerConfig):
    return nn.Conv(features, kernel)(_act(c.activation)(nn.GroupNorm()(x)))


class _Encoder(nn.Module):
    config: TokenizerConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        x = nn.Conv(c.filters, (3, 3), use_bias=False)(x)
        for i, mult in enumerate(c.channel_multipliers):
            filters = c.filters * mult
            x = _res_blocks(x, filters, c)
            if i < len(c.channel_multipliers) - 1:
                down = nn.Conv(filters, (4, 4), strides=(2, 2)) if c.conv_downsample else None
                x = down(x) if down else _avg_pool2(x)
        return _head(_res_blocks(x, filters, c), c.embedding_dim, (1, 1), c)


class _Decoder(nn.Module):
    config: TokenizerConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        filters = c.filters * c.channel_multipliers[-1]
        x = _res_blocks(nn.Conv(filters, (3, 3), use_bias=True)(x), filters, c)
        for i in reversed(range(len(c.channel_multipliers))):
            filters = c.filters * c.channel_multipliers[i]
            x = _res_blocks(x, filters, c)
            if i > 0:
                n, h, w, ch = x.shape
                x = jax.image.resize(x, (n, 2 * h, 2 * w, ch), method="nearest")
                x = nn.Conv(filters, (3, 3))(x)
        return _head(x, 3, (3, 3), c)


def _tokenizer_fns(config: TokenizerConfig):
    enc, dec = _Encoder(config), _Decoder(config)

    def encode_latents(params, pixels):
        return enc.apply({"params": params["encoder"]}, (pixels + 1.0) / 2.0)

    def encode(params, pixels):
        z = encode_latents(params, pixels)
        cb = params["quantizer"]["codebook"]
        flat = z.reshape(-1, z.shape[-1])
        # MaskGIT's squared_euclidean_distance: ‖z‖² − 2 z·c + ‖c‖², argmin over codes.
        d = (
            jnp.sum(flat**2, axis=1, keepdims=True)
            - 2 * jnp.matmul(flat, cb.T, precision=jax.lax.Precision.HIGHEST)
            + jnp.sum(cb**2, axis=1)[None]
        )
        idx = jnp.argmin(d, axis=-1).reshape(z.shape[0], -1)
        return cb[idx].reshape(z.shape), idx

    def decode(params, embedding):
        return 2.0 * dec.apply({"params": params["decoder"]}, embedding) - 1.0

    return {"encode": encode, "decode": decode, "encode_latents": encode_latents}


@dataclasses.dataclass(frozen=True, eq=False)
class MaskGITTokenizer(VQTokenizer):
    """MaskGIT's tokenizer behind the `VQTokenizer` interface (pixels in [−1, 1]).

    Attributes: config (TokenizerConfig), params (MaskGIT's tree: encoder, decoder,
    quantizer/codebook), dtype.
    """

    config: TokenizerConfig

    def _apply(self, method: str):
        fn = jax.jit(_tokenizer_fns(self.config)[method])
        return lambda x: fn(self.params, x)

    @property
    def codebook(self) -> Array:
        return jnp.asarray(self.params["quantizer"]["codebook"])


def infer_tokenizer_config(params: dict, **overrides: Any) -> TokenizerConfig:
    """The tokenizer's architecture from its parameter shapes (image size and activation from
    `overrides`, default 256 and swish)."""
    try:
        enc, dec = params["encoder"], params["decoder"]
        codebook_size, embedding_dim = np.shape(params["quantizer"]["codebook"])
        filters = np.shape(enc["Conv_0"]["kernel"])[-1]
        blocks = sorted(int(k.split("_")[1]) for k in enc if k.startswith("ResBlock_"))
        n_dec_convs = len([k for k in dec if k.startswith("Conv_")])
        n_enc_convs = len([k for k in enc if k.startswith("Conv_")])
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"not a MaskGIT tokenizer parameter tree (missing {e}); expected params with "
            "encoder/, decoder/ and quantizer/codebook"
        ) from None
    levels = n_dec_convs - 1  # conv_in, one conv per upsampling, conv_out
    if levels < 1 or len(blocks) % (levels + 1):
        raise ValueError(
            f"MaskGIT tokenizer tree has {len(blocks)} encoder blocks and {n_dec_convs} decoder "
            "convs, which fit no channel_multipliers / num_res_blocks"
        )
    nrb = len(blocks) // (levels + 1)
    mults = tuple(
        int(np.shape(enc[f"ResBlock_{i * nrb}"]["Conv_1"]["kernel"])[-1] // filters)
        for i in range(levels)
    )
    fields: dict[str, Any] = dict(
        filters=int(filters),
        channel_multipliers=mults,
        num_res_blocks=nrb,
        embedding_dim=int(embedding_dim),
        codebook_size=int(codebook_size),
        conv_downsample=n_enc_convs > 2,
    )
    return TokenizerConfig(**(fields | overrides))


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """MaskGIT's transformer: vocab = codebook_size + classes + 1 (the last row is [MASK]).

    Attributes: vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
    max_position_embeddings (1 + m·m), codebook_size.
    """

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 3072
    max_position_embeddings: int = 257
    codebook_size: int = 1024

    @property
    def num_classes(self) -> int:
        return self.vocab_size - self.codebook_size - 1

    @property
    def n_image_tokens(self) -> int:
        return self.max_position_embeddings - 1


class _Attention(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        h = nn.MultiHeadDotProductAttention(
            c.num_heads, qkv_features=c.hidden_size, name="self_attention"
        )(x, x)
        return nn.LayerNorm(epsilon=_LN_EPS, name="attention_output_ln")(h + x)


class _Mlp(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        h = jax.nn.gelu(nn.Dense(c.intermediate_size, name="intermediate_output")(x))
        h = nn.Dense(c.hidden_size, name="layer_output")(h)
        return nn.LayerNorm(epsilon=_LN_EPS, name="layer_output_ln")(h + x)


class BidirectionalTransformer(nn.Module):
    """(B, L) ids (class token first, −1 = [MASK]) → logits (B, L, vocab_size)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, ids):
        c = self.config
        ids = jnp.asarray(ids, jnp.int32)
        ids = jnp.where(ids < 0, c.vocab_size + ids, ids)  # −1 → the last row, as jnp.take does
        emb = _Embed(c, name="Embed_0")
        x = emb(ids)
        for i in range(c.num_layers):
            x = _TransformerLayer(c, name=f"TransformerLayer_{i}")(x)
        words = emb.variables["params"]["word_embeddings"]["embedding"]
        return _MlmLayer(c, name="MlmLayer_0")(x, words)


class _TransformerLayer(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x):
        return _Mlp(self.config, name="Mlp_0")(_Attention(self.config, name="Attention_0")(x))


class _Embed(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, ids):
        c = self.config
        words = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(ids)
        pos = nn.Embed(c.max_position_embeddings, c.hidden_size, name="position_embeddings")(
            jnp.arange(ids.shape[-1])[None]
        )
        return nn.LayerNorm(epsilon=_LN_EPS, name="embeddings_ln")(words + pos)


class _MlmLayer(nn.Module):
    config: TransformerConfig

    @nn.compact
    def __call__(self, x, words):
        c = self.config
        h = jax.nn.gelu(nn.Dense(c.hidden_size, name="mlm_dense")(x))
        h = nn.LayerNorm(epsilon=_LN_EPS, name="mlm_ln")(h)
        return _Bias(name="mlm_bias")(h @ words.T)


class _Bias(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + self.param("bias", nn.initializers.zeros, (x.shape[-1],))


def infer_transformer_config(params: dict, codebook_size: int) -> TransformerConfig:
    """The transformer's architecture from its parameter shapes."""
    try:
        emb = params["Embed_0"]
        vocab, hidden = np.shape(emb["word_embeddings"]["embedding"])
        positions = np.shape(emb["position_embeddings"]["embedding"])[0]
        layers = sorted(int(k.split("_")[1]) for k in params if k.startswith("TransformerLayer_"))
        first = params["TransformerLayer_0"]
        heads = np.shape(first["Attention_0"]["self_attention"]["key"]["kernel"])[1]
        inter = np.shape(first["Mlp_0"]["intermediate_output"]["kernel"])[1]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(
            f"not a MaskGIT transformer parameter tree (missing {e}); expected params with "
            "Embed_0, TransformerLayer_i and MlmLayer_0"
        ) from None
    if vocab <= codebook_size + 1:
        raise ValueError(
            f"transformer vocabulary {vocab} leaves no class tokens after the tokenizer's "
            f"{codebook_size} codes and [MASK]"
        )
    return TransformerConfig(
        int(vocab),
        int(hidden),
        len(layers),
        int(heads),
        int(inter),
        int(positions),
        int(codebook_size),
    )


def transformer_logits(config: TransformerConfig, params: dict, ids: Array) -> Array:
    """(B, L) ids → (B, L, vocab) logits of MaskGIT's transformer (deterministic)."""
    return cast(Array, BidirectionalTransformer(config).apply({"params": params}, ids))


def mask_schedule(ratio: Array, method: str = "cosine") -> Array:  # cosine|uniform|powN
    """MaskGIT's mask ratio for the share `ratio` of iterations done (cosine: cos(π/2·r))."""
    if method == "cosine":
        r = jnp.cos(math.pi / 2.0 * ratio)
    elif method == "uniform":
        r = 1.0 - ratio
    elif method.startswith("pow"):
        r = 1.0 - ratio ** float(method[3:])
    else:
        raise ValueError(f"mask schedule {method!r}; expected cosine, uniform or powN")
    return jnp.clip(r, 1e-6, 1.0)


def parallel_decode(
    logits_fn: Callable[[Array], Array],
    inputs: Array,
    rng: Array,
    num_iter: int = 12,
    choice_temperature: float = 4.5,
    start_iter: int = 0,
    mask_token_id: int = MASK_TOKEN_ID,
    schedule: str = "cosine",  # see mask_schedule
) -> Array:
    """MaskGIT's iterative decoding: (B, L) ids with [MASK] → (B, num_iter, L), the sequence after
    each iteration. `logits_fn(ids) -> (B, L, K)` scores the codebook entries only."""
    inputs = jnp.asarray(inputs, jnp.int32)
    unknown0 = jnp.sum(inputs == mask_token_id, axis=-1)
    final0 = jnp.tile(inputs[:, None], (1, num_iter, 1))

    def body(step, carry):
        seqs, rng, final = carry
        logits = logits_fn(seqs)
        rng, sample_rng = jax.random.split(rng, 2)
        sampled = jax.random.categorical(sample_rng, logits)
        unknown = seqs == mask_token_id
        sampled = jnp.where(unknown, sampled, seqs)
        ratio = 1.0 * (step + 1) / num_iter
        mask_ratio = mask_schedule(ratio, schedule)
        final = jax.lax.dynamic_update_slice(final, sampled[:, None], (0, step, 0))
        probs = jax.nn.softmax(logits, axis=-1)
        selected = jnp.take_along_axis(probs, sampled[..., None], -1)[..., 0]
        selected = jnp.where(unknown, selected, jnp.inf)
        mask_len = jnp.floor(unknown0 * mask_ratio)[:, None]
        mask_len = jnp.maximum(1, jnp.minimum(jnp.sum(unknown, -1, keepdims=True) - 1, mask_len))
        rng, choice_rng = jax.random.split(rng)
        t = choice_temperature * (1.0 - ratio)
        confidence = jnp.log(selected) + t * jax.random.gumbel(choice_rng, selected.shape)
        cut = jnp.take_along_axis(jnp.sort(confidence, -1), mask_len.astype(jnp.int32), -1)
        return jnp.where(confidence < cut, mask_token_id, sampled), rng, final

    _, _, final = jax.lax.fori_loop(start_iter, num_iter, body, (inputs, rng, final0))
    return final


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """MaskGIT sampling: iterations and the confidence-masking temperature (released: 4.5)."""

    num_iter: int = 12
    choice_temperature: float = 4.5

    def __post_init__(self):
        if self.num_iter < 1:
            raise ValueError(f"num_iter={self.num_iter}; expected at least 1 decoding step")


@dataclasses.dataclass(frozen=True, eq=False)
class MaskGITVQGM(VQGMBase):
    """Attributes: name, vqgan (the tokenizer), transformer_config, transformer_params,
    class_names (one per class id). Grid, codebook, names, encode and decode: `VQGMBase`."""

    name: str
    vqgan: MaskGITTokenizer
    transformer_config: TransformerConfig
    transformer_params: Any
    class_names: tuple[str, ...]

    def __post_init__(self):
        c, m = self.transformer_config, self.vqgan.grid_size
        if c.n_image_tokens != m * m:
            raise ValueError(
                f"the transformer has {c.max_position_embeddings} positions (class + "
                f"{c.n_image_tokens}) but the tokenizer grid is {m}x{m} at image_size "
                f"{self.vqgan.config.image_size}; set the image size to match"
            )
        if len(self.class_names) != c.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {c.num_classes} classes")

    @functools.cached_property
    def _decode_one(self):
        c = self.transformer_config
        logits_fn = lambda ids: transformer_logits(c, self.transformer_params, ids)[
            ..., : c.codebook_size
        ]

        def one(seq, key, num_iter, temperature, start_iter):
            out = parallel_decode(logits_fn, seq[None], key, num_iter, temperature, start_iter)
            return out[0, -1, 1:]

        return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None, None)), static_argnums=(2, 4))

    def _run(self, seqs: np.ndarray, rng: Array, sc: SampleConfig, start_iter: int) -> np.ndarray:
        keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(len(seqs)))
        b, (s, k) = sharding.split_over_local_devices(np.asarray(seqs), np.asarray(keys))
        out = self._decode_one(s, k, sc.num_iter, float(sc.choice_temperature), start_iter)
        m = self.grid_size
        return np.asarray(out)[:b].reshape(b, m, m)

    def sample_tokens(
        self, class_ids, rng: Array, sample_config: SampleConfig = SampleConfig(), dtype=None
    ) -> np.ndarray:
        """(B,) class ids → (B, m, m) token grids. Image i decodes with fold_in(rng, i), so a grid
        does not depend on the batch around it (MaskGIT's own decode draws for the whole batch:
        use `parallel_decode` for that)."""
        del dtype  # float32 only
        ids = self.check_classes(class_ids)
        c = self.transformer_config
        seqs = np.full((len(ids), 1 + c.n_image_tokens), MASK_TOKEN_ID, np.int32)
        seqs[:, 0] = ids + c.codebook_size
        return self._run(seqs, rng, sample_config, 0)

    def edit_tokens(
        self,
        base: np.ndarray,
        mask: np.ndarray,
        targets,
        rng: Array,
        sample_config: SampleConfig = SampleConfig(),
        start_iter: int = 2,
    ) -> np.ndarray:
        """MaskGIT's editing: the masked positions of each (m, m) grid re-masked and re-decoded
        for its target class, from iteration `start_iter` (the released demo: 2 of 12)."""
        base = np.asarray(base, np.int32)
        m = self.grid_size
        if base.ndim != 3 or base.shape[1:] != (m, m):
            raise ValueError(f"base token grids have shape {base.shape}; expected (B, {m}, {m})")
        self.vqgan.check_indices(base)
        t = self.check_classes(np.broadcast_to(np.asarray(targets), (len(base),)))
        flat = np.where(np.broadcast_to(np.asarray(mask, bool), base.shape), MASK_TOKEN_ID, base)
        seqs = np.concatenate(
            [t[:, None] + self.transformer_config.codebook_size, flat.reshape(len(base), -1)], 1
        ).astype(np.int32)
        return self._run(seqs, rng, sample_config, start_iter)

    def resample_region(
        self, tokens: Any, mask: Any, class_ids: Any, key: Array, sample_config: Any = None
    ) -> np.ndarray:
        """MaskGIT's own editing as the `ResamplesRegion` interface: `edit_tokens` with the
        released settings (12 iterations, temperature 4.5, from the 3rd)."""
        return self.edit_tokens(tokens, mask, class_ids, key, sample_config or SampleConfig())
