"""Class-conditional autoregressive transformer over VQGAN tokens (taming's `cin_transformer`).

A minGPT over the sequence [class token, z_0, …, z_{N-1}] (raster order), ported to Flax so that
the real ImageNet checkpoint converts into it (`io.convert.convert_taming_gpt_state_dict`), and
used as the toy world's prior. Parameter names mirror the torch ones with `x.N` → `x_N`
(`blocks_3/mlp_0`).

Conditioning layout is a config field: taming's Labelator makes the class id itself the token id
(`class_offset=0`, classes share rows of the image vocabulary); the toy world gives classes their
own ids after the codebook (`class_offset=K`, `vocab_size=K + n_classes`). Sampling never emits an
id ≥ `image_vocab_size`.

Generation runs the whole token loop as one `lax.scan` with a key/value cache, batched; with
`temperature=0` it is greedy and equals the argmax of teacher-forced logits step by step."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cortex_jax.core.sharding import split_over_local_devices

Array = jax.Array


PRNGKey = jax.Array


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Attributes:
    vocab_size: rows of the token embedding and columns of the head.
    block_size: longest sequence (= number of image tokens N for cond_len 1).
    n_layer, n_head, n_embd: transformer size.
    image_vocab_size: image codes K; ids ≥ K are never sampled.
    class_offset: token id of class 0 (0 for taming's Labelator, K for the toy world).
    n_classes: number of classes (for input checks).
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    n_embd: int
    image_vocab_size: int
    class_offset: int = 0
    n_classes: int = 1000

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.class_offset + self.n_classes > self.vocab_size:
            raise ValueError(
                f"class ids {self.class_offset}..{self.class_offset + self.n_classes - 1} do not "
                f"fit vocab_size={self.vocab_size}"
            )
        if self.image_vocab_size > self.vocab_size:
            raise ValueError(
                f"image_vocab_size={self.image_vocab_size} exceeds vocab_size={self.vocab_size}"
            )

    @property
    def n_image_tokens(self) -> int:
        return self.block_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _dense(features: int, dtype, name: str, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name)


def _layer_norm(dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


class CausalSelfAttention(nn.Module):
    config: GPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config.n_embd
        self.key = _dense(c, self.dtype, "key")
        self.query = _dense(c, self.dtype, "query")
        self.value = _dense(c, self.dtype, "value")
        self.proj = _dense(c, self.dtype, "proj")

    def _heads(self, x: Array) -> Array:  # (B, T, C) → (B, H, T, hd), head h = channels h·hd:…
        b, t, c = x.shape
        h = self.config.n_head
        return x.reshape(b, t, h, c // h).transpose(0, 2, 1, 3)

    def _attend(self, q: Array, k: Array, v: Array, mask: Array) -> Array:
        att = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
        att = jnp.where(mask, att.astype(jnp.float32), -jnp.inf)
        att = jax.nn.softmax(att, axis=-1).astype(v.dtype)
        y = jnp.einsum("bhqk,bhkd->bhqd", att, v)
        b, h, t, d = y.shape
        return self.proj(y.transpose(0, 2, 1, 3).reshape(b, t, h * d))

    def __call__(self, x: Array) -> Array:
        t = x.shape[1]
        q, k, v = (self._heads(f(x)) for f in (self.query, self.key, self.value))
        return self._attend(q, k, v, jnp.tril(jnp.ones((t, t), bool)))

    def decode(self, x: Array, pos: Array, cache: tuple[Array, Array]):
        """One position: x (B, 1, C) at index `pos`; cache k, v (B, H, block_size, hd)."""
        q, k, v = (self._heads(f(x)) for f in (self.query, self.key, self.value))
        ck = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), pos, axis=2)
        cv = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), pos, axis=2)
        mask = (jnp.arange(ck.shape[2]) <= pos)[None, :]
        return self._attend(q, ck, cv, mask), (ck, cv)


class Block(nn.Module):
    """Pre-LN: x += attn(ln1(x)); x += mlp(ln2(x)) with exact-erf GELU."""

    config: GPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config.n_embd
        self.ln1 = _layer_norm(self.dtype, "ln1")
        self.ln2 = _layer_norm(self.dtype, "ln2")
        self.attn = CausalSelfAttention(self.config, self.dtype, name="attn")
        self.mlp_0 = _dense(4 * c, self.dtype, "mlp_0")
        self.mlp_2 = _dense(c, self.dtype, "mlp_2")

    def _mlp(self, x: Array) -> Array:
        return self.mlp_2(jax.nn.gelu(self.mlp_0(self.ln2(x)), approximate=False))

    def __call__(self, x: Array) -> Array:
        x = x + self.attn(self.ln1(x))
        return x + self._mlp(x)

    def decode(self, x: Array, pos: Array, cache):
        a, cache = self.attn.decode(self.ln1(x), pos, cache)
        x = x + a
        return x + self._mlp(x), cache


class GPT(nn.Module):
    """Token ids (B, T) → logits (B, T, vocab_size)."""

    config: GPTConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        self.tok_emb = nn.Embed(cfg.vocab_size, cfg.n_embd, name="tok_emb")
        self.pos_emb = self.param(
            "pos_emb", nn.initializers.zeros, (1, cfg.block_size, cfg.n_embd), jnp.float32
        )
        self.blocks = [Block(cfg, self.dtype, name=f"blocks_{i}") for i in range(cfg.n_layer)]
        self.ln_f = _layer_norm(self.dtype, "ln_f")
        self.head = _dense(cfg.vocab_size, self.dtype, "head", use_bias=False)

    def __call__(self, idx: Array) -> Array:
        t = idx.shape[1]
        x = (self.tok_emb(idx) + self.pos_emb[:, :t]).astype(self.dtype)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x)).astype(jnp.float32)

    def decode(self, token: Array, pos: Array, cache: list):
        """token (B,) at position pos → (logits (B, vocab), new cache)."""
        x = self.tok_emb(token[:, None]) + jax.lax.dynamic_slice_in_dim(self.pos_emb, pos, 1, 1)
        x = x.astype(self.dtype)
        new = []
        for blk, c in zip(self.blocks, cache, strict=True):
            x, c = blk.decode(x, pos, c)
            new.append(c)
        return self.head(self.ln_f(x))[:, 0].astype(jnp.float32), new


def init_params(config: GPTConfig, rng: PRNGKey) -> dict:
    return GPT(config).init(rng, jnp.zeros((1, config.block_size), jnp.int32))["params"]


def class_tokens(config: GPTConfig, class_ids: Any) -> Array:
    """Class ids → their token ids, refusing ids outside [0, n_classes)."""
    ids = np.asarray(class_ids) if not isinstance(class_ids, jax.core.Tracer) else None
    if ids is not None and ((ids < 0) | (ids >= config.n_classes)).any():
        bad = int(ids[(ids < 0) | (ids >= config.n_classes)][0])
        raise ValueError(f"class id {bad} is outside [0, {config.n_classes})")
    return jnp.asarray(class_ids, jnp.int32) + config.class_offset


def training_sequence(config: GPTConfig, class_ids: Array, image_tokens: Array) -> Array:
    """[c, z_0 … z_{N-2}]: the GPT input whose output i predicts z_i (taming's forward)."""
    c = class_tokens(config, class_ids)[:, None]
    return jnp.concatenate([c, jnp.asarray(image_tokens, jnp.int32)], axis=1)[:, :-1]


def logits(
    config: GPTConfig, params: Any, class_ids: Array, image_tokens: Array, dtype: Any = jnp.float32
) -> Array:
    """Teacher-forced logits (B, N, vocab): logits[:, i] is the distribution of z_i."""
    seq = training_sequence(config, class_ids, image_tokens)
    return cast(Array, GPT(config, dtype).apply({"params": params}, seq))


def infill_tokens(
    config: GPTConfig,
    params: Any,
    class_ids: Any,
    image_tokens: Any,
    exclude_original: bool = True,
    dtype: Any = jnp.float32,
) -> Array:
    """The prior's most likely token (B, N) at every position given the true prefix z_<i
    (teacher forced, one pass), among image codes only; with `exclude_original` the token
    already there is never chosen, so a replacement always changes the grid. The in-distribution
    "removal" of faithfulness curves."""
    tokens = jnp.asarray(image_tokens, jnp.int32)
    lg = logits(config, params, class_ids, tokens, dtype)[..., : config.image_vocab_size]
    if exclude_original:
        hit = jax.nn.one_hot(tokens, config.image_vocab_size, dtype=bool)
        lg = jnp.where(hit, -jnp.inf, lg)
    return jnp.argmax(lg, axis=-1).astype(jnp.int32)


def filter_logits(
    logits: Array, top_k: int | None = None, top_p: float = 1.0, image_vocab_size: int | None = None
) -> Array:
    """Masks ids ≥ image_vocab_size, then taming's top-k (ties at the k-th value kept), then
    nucleus top-p (HF's rule: keep the smallest prefix whose mass exceeds p)."""
    neg = jnp.asarray(-jnp.inf, logits.dtype)
    if image_vocab_size is not None and image_vocab_size < logits.shape[-1]:
        logits = jnp.where(jnp.arange(logits.shape[-1]) < image_vocab_size, logits, neg)
    if top_k and top_k < logits.shape[-1]:  # k ≥ vocabulary keeps everything
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
        remove = cum > top_p
        remove = jnp.concatenate([jnp.zeros_like(remove[..., :1]), remove[..., :-1]], axis=-1)
        inv = jnp.argsort(order, axis=-1)
        logits = jnp.where(jnp.take_along_axis(remove, inv, axis=-1), neg, logits)
    return logits


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """temperature 0 → greedy argmax; top_k None/0 → off; top_p 1 → off."""

    temperature: float = 1.0
    top_k: int | None = 250
    top_p: float = 1.0


def _sample_fn(config: GPTConfig, sc: SampleConfig, dtype):
    model = GPT(config, dtype)
    hd = config.n_embd // config.n_head
    n = config.n_image_tokens

    def run(params, class_ids: Array, rng: PRNGKey) -> tuple[Array, Array]:
        b = class_ids.shape[0]
        shape = (b, config.n_head, config.block_size, hd)
        cache = [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.n_layer)]
        tok0 = class_ids + config.class_offset

        def step(carry, i):
            tok, cache = carry
            lg, cache = model.apply({"params": params}, tok, i, cache, method=GPT.decode)
            filt = filter_logits(lg, None, 1.0, config.image_vocab_size)
            if sc.temperature > 0:
                filt = filter_logits(filt / sc.temperature, sc.top_k, sc.top_p)
                nxt = jax.random.categorical(jax.random.fold_in(rng, i), filt, axis=-1)
            else:
                nxt = jnp.argmax(filt, axis=-1)
            nxt = nxt.astype(jnp.int32)
            return (nxt, cache), (nxt, lg)

        _, (toks, lgs) = jax.lax.scan(step, (tok0, cache), jnp.arange(n))
        return toks.T, lgs.transpose(1, 0, 2)

    return jax.jit(run)


_SAMPLERS: dict[tuple, Any] = {}


def sample(
    config: GPTConfig,
    params: Any,
    class_ids: Any,
    rng: PRNGKey,
    sample_config: SampleConfig = SampleConfig(),
    dtype: Any = jnp.float32,
    return_logits: bool = False,
) -> Any:  # ids (B, N), or (ids, logits (B, N, vocab)) with return_logits
    """Image tokens (B, N) for each class id, with a KV cache in one jitted `lax.scan`, the batch
    split over the local devices.

    Deterministic for (rng, class_ids), whatever the number of devices. With return_logits also
    the raw next-token logits (B, N, vocab) at every step.
    """
    class_ids = jnp.asarray(class_ids, jnp.int32)
    class_tokens(config, class_ids)  # validates
    key = (config, sample_config, jnp.dtype(dtype).name)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = _sample_fn(config, sample_config, dtype)
    b, (ids,) = split_over_local_devices(class_ids)  # data parallel over this host's devices
    toks, lgs = _SAMPLERS[key](params, ids, rng)
    toks, lgs = toks[:b], lgs[:b]
    return (toks, lgs) if return_logits else toks
