"""DalleBart (DALL·E-mini / mega) in JAX: text encoder + image-token decoder, with a KV cache.

A port of dalle-mini 0.1.5's model written as pure functions over its own parameter tree, so a
`config.json` + `flax_model.msgpack` pair loads unchanged, in either layout dalle-mini writes:
scanned (`layers/FlaxBart{Encoder,Decoder}Layers/…`, a leading layer axis) or per layer
(`layers/FlaxBart…Layer_{i}/…`, stacked here at load). Every option is read from config.json.

Every option dalle-mini 0.1.5 can run: `ln_type` layernorm | rmsnorm; `ln_positions`
normformer | preln | postln (= deepnet) | cogview | swinv2 | subln; `use_glu` on (GLU) and off
(FFN); `use_bias`; `force_ln_scale`; final LNs; `scale_embedding`; absolute and swin relative
positions; `use_head_scale`; `use_cosine_attention` (τ = tau_init); `sinkhorn_iters` (encoder
self-attention); `use_deepnet_scaling` (residual gains); tied or separate lm_head. `use_alibi`
is refused, as dalle-mini refuses it. Checked against outputs of the original code
(tests/data/dallebart_options). dalle-mini itself crashes when building postln/deepnet models
(its decoder never defines final_ln then); here they compute without a final LN, like its encoder.

Generation: the decoder runs one position at a time with cached keys/values in a jitted
`lax.scan`, super-conditioned with the empty prompt (logits = uncond + scale·(cond − uncond)),
top-k / top-p / temperature, and **ids ≥ the VQGAN codebook size are masked** (the original
samples them). Text ids come from transformers' BartTokenizerFast
(`io.sources.load_bart_tokenizer(folder)`, the files of the dalle-mini repo); dalle-mini's text
normalisation needs extra downloads and is not applied here: pass already normalised prompts
(lower case, plain ASCII) for the released models.

`DalleBartVQGM` holds the model, its text tokenizer and its VQGAN as one
`vqgm.PromptConditional`, sampled with `SampleConfig` (the `dallebart` family of
`cortex_jax.experiments.families`; `io.sources.load_dallebart_vqgm` reads one)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cortex_jax.core.sharding import split_over_local_devices
from cortex_jax.models.cin import filter_logits
from cortex_jax.models.vqgan import VQTokenizer

Array = jax.Array


_POSITIONS = ("normformer", "preln", "postln", "cogview", "swinv2", "subln")


@dataclasses.dataclass(frozen=True)
class DalleBartConfig:
    """The fields of dalle-mini's config.json that the forward pass reads."""

    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_ffn_dim: int
    decoder_ffn_dim: int
    encoder_vocab_size: int
    image_vocab_size: int
    image_length: int
    max_text_length: int
    decoder_start_token_id: int
    ln_type: str = "layernorm"
    ln_positions: str = "normformer"
    use_glu: bool = True
    use_bias: bool = False
    force_ln_scale: bool = False
    use_final_ln_encoder: bool = True
    use_final_ln_decoder: bool = True
    scale_embedding: bool = False
    use_absolute_position_embeddings: bool = True
    tie_word_embeddings: bool = False
    activation_function: str = "gelu"
    use_scan: bool = False
    use_head_scale: bool = False
    use_cosine_attention: bool = False
    tau_init: float = 0.05
    use_swin_position_embeddings: bool = False
    sinkhorn_iters: int = 1
    use_deepnet_scaling: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DalleBartConfig:
        d = dict(d)
        if d.get("use_alibi", False):
            raise ValueError("DalleBart option use_alibi=True is not supported (nor by dalle-mini)")
        if d.get("ln_positions") == "deepnet":  # dalle-mini's alias
            d["ln_positions"] = "postln"
        if d.get("ln_positions", "normformer") not in _POSITIONS:
            raise ValueError(
                f"DalleBart ln_positions={d['ln_positions']!r} is not supported; expected one of "
                f"{', '.join(_POSITIONS)}"
            )
        if d.get("ln_type", "layernorm") not in ("layernorm", "rmsnorm"):
            raise ValueError(f"DalleBart ln_type={d['ln_type']!r}; expected layernorm or rmsnorm")
        if d.get("activation_function", "gelu") not in ("gelu", "gelu_new", "relu", "swish"):
            raise ValueError(f"activation {d['activation_function']!r} is not supported")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    def res_gain(self, part: str) -> float:
        """DeepNet's residual scale α (1 without deepnet scaling)."""
        if not self.use_deepnet_scaling:
            return 1.0
        n, m = self.encoder_layers, self.decoder_layers
        return 0.81 * (n**4 * m) ** 0.0625 if part == "encoder" else (3 * m) ** 0.25


_ACT = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "swish": jax.nn.swish,
}


def _norm(cfg: DalleBartConfig, p: dict, x: Array) -> Array:
    x32 = x.astype(jnp.float32)
    if cfg.ln_type == "rmsnorm":
        y = x32 * jax.lax.rsqrt(jnp.mean(x32**2, -1, keepdims=True) + 1e-5)
    else:
        mean = jnp.mean(x32, -1, keepdims=True)
        var = jnp.maximum(jnp.mean(x32**2, -1, keepdims=True) - mean**2, 0.0)
        y = (x32 - mean) * jax.lax.rsqrt(var + 1e-5)
    if "scale" in p:
        y = y * p["scale"]
    if "bias" in p:
        y = y + p["bias"]
    return y.astype(x.dtype)


def _dense(p: dict, x: Array) -> Array:
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


class _Names:
    """flax's automatic names in creation order: LayerNorm_0, LayerNorm_1, … in one scope."""

    def __init__(self, cfg: DalleBartConfig, params: dict):
        self.kind = "RMSNorm" if cfg.ln_type == "rmsnorm" else "LayerNorm"
        self.params, self.i = params, 0

    def next(self) -> dict:
        name = f"{self.kind}_{self.i}"
        self.i += 1
        return self.params.get(name, {})


def _heads(x: Array, n: int) -> Array:
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n)


_PRE = {
    "encoder": ("normformer", "cogview", "preln", "subln"),
    "decoder": ("normformer", "cogview", "preln"),
}


_POST = ("normformer", "swinv2", "cogview")


@dataclasses.dataclass(frozen=True)
class _Attn:
    """How one attention module computes (beyond its parameters)."""

    cfg: DalleBartConfig
    heads: int
    self_attention: bool
    sinkhorn: bool  # encoder self-attention only, as dalle-mini

    def project(self, p: dict, q_in: Array, kv_in: Array):
        q = _heads(_dense(p["q_proj"], q_in), self.heads)
        k = _heads(_dense(p["k_proj"], kv_in), self.heads)
        v = _heads(_dense(p["v_proj"], kv_in), self.heads)
        return q, k, v

    def attend(self, p: dict, q: Array, k: Array, v: Array, mask: Array, q_pos: Array) -> Array:
        """mask broadcastable to (B, 1, Tq, Tk), True = attend; q_pos (Tq,) query positions."""
        cfg = self.cfg
        if cfg.use_cosine_attention:
            q = q / (jnp.linalg.norm(q, axis=-1, keepdims=True) + 1e-8)
            k = k / (jnp.linalg.norm(k, axis=-1, keepdims=True) + 1e-8)
            w = jnp.einsum("bqhd,bkhd->bhqk", q, k) / cfg.tau_init
        else:
            w = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        w = w.astype(jnp.float32)
        if cfg.use_swin_position_embeddings:
            rel = p["rel_bias"]["embedding"][q_pos]  # (Tq, Tk_max·H)
            rel = rel.reshape(len(q_pos), -1, self.heads).transpose(2, 0, 1)[None]
            w = w + rel[..., : k.shape[1]]
        w = jnp.where(mask, w, -jnp.inf)
        if self.sinkhorn and cfg.sinkhorn_iters > 1:
            for i in range(cfg.sinkhorn_iters):
                w = w - jax.nn.logsumexp(w, axis=-1 if i % 2 == 0 else -2, keepdims=True)
                w = jnp.where(mask, w, -jnp.inf)
            w = jnp.exp(w)
        else:
            w = jax.nn.softmax(w, axis=-1)
        y = jnp.einsum("bhqk,bkhd->bqhd", w.astype(v.dtype), v)
        if cfg.use_head_scale:
            y = y * p["head_scale"]
        b, t, h, d = y.shape
        y = y.reshape(b, t, h * d)
        if cfg.ln_positions == "subln" and self.self_attention:
            y = _norm(cfg, p["mid_layernorm"], y)
        return _dense(p["out_proj"], y)

    def __call__(self, p, q_in, kv_in, mask, q_pos):
        return self.attend(p, *self.project(p, q_in, kv_in), mask, q_pos)


def _ffn(cfg: DalleBartConfig, p: dict, x: Array) -> Array:
    pos = cfg.ln_positions
    g = p["GLU_0"] if cfg.use_glu else p["FFN_0"]
    names = _Names(cfg, g)
    if pos in ("normformer", "cogview", "preln", "subln"):
        x = _norm(cfg, names.next(), x)
    if cfg.use_glu:
        x = _ACT[cfg.activation_function](_dense(g["Dense_0"], x)) * _dense(g["Dense_1"], x)
    else:
        x = _ACT[cfg.activation_function](_dense(g["Dense_0"], x))
    if pos in ("normformer", "subln"):
        x = _norm(cfg, names.next(), x)
    x = _dense(g["Dense_2" if cfg.use_glu else "Dense_1"], x)
    if pos in ("swinv2", "cogview"):
        x = _norm(cfg, names.next(), x)
    return x


def _block(cfg: DalleBartConfig, part: str, names: _Names, h: Array, attend) -> Array:
    """One attention sub-block with dalle-mini's norm placement; `attend(x) -> y`."""
    res = h
    if cfg.ln_positions in _PRE[part]:
        h = _norm(cfg, names.next(), h)
    h = attend(h)
    if cfg.ln_positions in _POST:
        h = _norm(cfg, names.next(), h)
    h = res * cfg.res_gain(part) + h
    if cfg.ln_positions == "postln":
        h = _norm(cfg, names.next(), h)
    return h


def _ffn_block(cfg: DalleBartConfig, part: str, names: _Names, p: dict, h: Array, i: int, n: int):
    h = h * cfg.res_gain(part) + _ffn(cfg, p, h)
    # postln: a norm after every layer; swinv2: every 6 layers but the last (dalle-mini)
    if cfg.ln_positions == "postln" or (
        cfg.ln_positions == "swinv2" and (i + 1) % 6 == 0 and i != n - 1
    ):
        h = _norm(cfg, names.next(), h)
    return h


def _encoder_layer(cfg, p, h, mask, i):
    names = _Names(cfg, p)
    attn = _Attn(cfg, cfg.encoder_attention_heads, True, True)
    pos = jnp.arange(h.shape[1])
    h = _block(cfg, "encoder", names, h, lambda x: attn(p["FlaxBartAttention_0"], x, x, mask, pos))
    return _ffn_block(cfg, "encoder", names, p, h, i, cfg.encoder_layers)


def _embed(cfg, p, ids, positions):
    scale = math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
    h = p["embed_tokens"]["embedding"][ids] * scale
    if cfg.use_absolute_position_embeddings:
        h = h + p["embed_positions"]["embedding"][positions]
    return _norm(cfg, p["layernorm_embedding"], h)


def _final(cfg, p, h, use_final):
    if use_final and cfg.ln_positions != "postln":
        return _norm(cfg, p.get("final_ln", {}), h)
    return h


def encode(cfg: DalleBartConfig, params: dict, input_ids: Array, attention_mask: Array) -> Array:
    """Text ids (B, T) and mask → encoder states (B, T, d)."""
    p = params["model"]["encoder"]
    t = input_ids.shape[1]
    h = _embed(cfg, p, input_ids, jnp.arange(t))
    mask = attention_mask.astype(bool)[:, None, None, :]
    for i, lp in enumerate(p["layers"]):
        h = _encoder_layer(cfg, lp, h, mask, i)
    return _final(cfg, p, h, cfg.use_final_ln_encoder)


def _decoder_layer(cfg, p, h, self_attend, enc, enc_mask, q_pos, i):
    names = _Names(cfg, p)
    cross = _Attn(cfg, cfg.decoder_attention_heads, False, False)
    h = _block(cfg, "decoder", names, h, lambda x: self_attend(p["FlaxBartAttention_0"], x))
    h = _block(
        cfg, "decoder", names, h, lambda x: cross(p["FlaxBartAttention_1"], x, enc, enc_mask, q_pos)
    )
    return _ffn_block(cfg, "decoder", names, p, h, i, cfg.decoder_layers)


def _head(cfg, params, h):
    if cfg.tie_word_embeddings:
        return h @ params["model"]["decoder"]["embed_tokens"]["embedding"].T
    return _dense(params["lm_head"], h)


def decode_logits(
    cfg: DalleBartConfig, params: dict, decoder_input_ids: Array, enc: Array, attention_mask: Array
) -> Array:
    """Teacher-forced logits (B, L, image_vocab_size + 1), decoder inputs (B, L ≤ image_length)."""
    p = params["model"]["decoder"]
    length = decoder_input_ids.shape[1]
    pos = jnp.arange(length)
    h = _embed(cfg, p, decoder_input_ids, pos)
    enc_mask = attention_mask.astype(bool)[:, None, None, :]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    attn = _Attn(cfg, cfg.decoder_attention_heads, True, False)
    self_attend = lambda ap, x: attn(ap, x, x, causal, pos)
    for i, lp in enumerate(p["layers"]):
        h = _decoder_layer(cfg, lp, h, self_attend, enc, enc_mask, pos, i)
    return _head(cfg, params, _final(cfg, p, h, cfg.use_final_ln_decoder)).astype(jnp.float32)


def logits(
    cfg: DalleBartConfig,
    params: dict,
    input_ids: ArrayLike,
    attention_mask: ArrayLike,
    decoder_input_ids: ArrayLike,
) -> Array:
    """The model's forward pass, as dalle-mini's `model(...)` with train=False."""
    ids, mask = jnp.asarray(input_ids), jnp.asarray(attention_mask)
    enc = encode(cfg, params, ids, mask)
    return decode_logits(cfg, params, jnp.asarray(decoder_input_ids), enc, mask)


def superconditioned(cond: Array, uncond: Array, scale: float) -> Array:
    return uncond + scale * (cond - uncond)


def generate(
    cfg: DalleBartConfig,
    params: dict,
    input_ids: ArrayLike,
    attention_mask: ArrayLike,
    rng: Array,
    n_image_codes: int,
    condition_scale: float = 10.0,
    uncond_ids: ArrayLike | None = None,
    uncond_mask: ArrayLike | None = None,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float = 1.0,
    return_logits: bool = False,
    dtype: Any = jnp.float32,
) -> Any:  # ids (B, L), or (ids, logits) with return_logits
    """Image token ids (B, image_length) in [0, n_image_codes) for each prompt.

    Super-conditioning runs when condition_scale != 1 and uncond_ids (the empty prompt, e.g.
    [0, 2, 1, …]) are given. temperature 0 → greedy. The decoder sees [start, c_0 … c_{L−2}].
    The batch is split over the local devices (padded to a multiple of their number); `dtype`
    bfloat16 computes in bfloat16 with norms, softmax and logits in float32.
    """
    fn = _generate_fn(
        cfg,
        n_image_codes,
        float(condition_scale),
        uncond_ids is not None,
        float(temperature),
        top_k,
        float(top_p),
    )
    if jnp.dtype(dtype) != jnp.float32:
        params = jax.tree_util.tree_map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, params
        )
    rows = [input_ids, attention_mask] + (
        [uncond_ids, uncond_mask] if uncond_ids is not None else []
    )
    b, placed = split_over_local_devices(*rows)
    toks, lgs = fn(params, placed[0], placed[1], rng, *placed[2:])
    toks, lgs = toks[:b], lgs[:b]
    return (toks, lgs) if return_logits else toks


_GENERATORS: dict[tuple, Any] = {}


def _generate_fn(cfg, n_codes, scale, super_cond, temperature, top_k, top_p):
    key = (cfg, n_codes, scale, super_cond, temperature, top_k, top_p)
    if key in _GENERATORS:
        return _GENERATORS[key]
    length, heads = cfg.image_length, cfg.decoder_attention_heads

    def run(params, ids, mask, rng, uids=None, umask=None):
        b = ids.shape[0]
        if super_cond:
            ids, mask = jnp.concatenate([ids, uids]), jnp.concatenate([mask, umask])
        enc = encode(cfg, params, ids, mask)
        enc_mask = mask.astype(bool)[:, None, None, :]
        p = params["model"]["decoder"]
        n = enc.shape[0]
        hd = cfg.d_model // heads
        attn = _Attn(cfg, heads, True, False)
        cache = [jnp.zeros((2, n, length, heads, hd), enc.dtype) for _ in p["layers"]]

        def step(carry, t):
            tok, cache = carry
            pos = jnp.full((1,), t)
            h = _embed(cfg, p, tok[:, None], pos)
            visible = (jnp.arange(length) <= t)[None, None, None]
            new_cache = []
            for i, (lp, c) in enumerate(zip(p["layers"], cache, strict=True)):

                def self_attend(ap, x, c=c):
                    q, k, v = attn.project(ap, x, x)
                    k = jax.lax.dynamic_update_slice_in_dim(c[0], k, t, axis=1)
                    v = jax.lax.dynamic_update_slice_in_dim(c[1], v, t, axis=1)
                    new_cache.append(jnp.stack([k, v]))
                    return attn.attend(ap, q, k, v, visible, pos)

                h = _decoder_layer(cfg, lp, h, self_attend, enc, enc_mask, pos, i)
            lg = _head(cfg, params, _final(cfg, p, h, cfg.use_final_ln_decoder))[:, 0]
            lg = lg.astype(jnp.float32)
            raw = lg[:b]
            if super_cond:
                lg = superconditioned(lg[:b], lg[b:], scale)
            lg = filter_logits(lg, None, 1.0, n_codes)
            if temperature > 0:
                lg = filter_logits(lg / temperature, top_k, top_p)
                nxt = jax.random.categorical(jax.random.fold_in(rng, t), lg, axis=-1)
            else:
                nxt = jnp.argmax(lg, axis=-1)
            nxt = nxt.astype(jnp.int32)
            return (jnp.concatenate([nxt, nxt]) if super_cond else nxt, new_cache), (nxt, raw)

        start = jnp.full((n,), cfg.decoder_start_token_id, jnp.int32)
        _, (toks, raws) = jax.lax.scan(step, (start, cache), jnp.arange(length))
        return toks.T, raws.transpose(1, 0, 2)

    _GENERATORS[key] = jax.jit(run)
    return _GENERATORS[key]


def prompt_sampler(
    cfg: DalleBartConfig,
    params: dict,
    tokenize: Callable[[str], Sequence[int]],
    n_image_codes: int,
    condition_scale: float = 10.0,
    top_k: int | None = 50,
    batch: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    dtype: Any = jnp.float32,
) -> Callable[[str, int, int], np.ndarray]:
    """A `bias.Sampler` over text prompts: (prompt, n, seed) → token grids (n, m, m).

    tokenize(prompt) → list of BART ids with <s> … </s>; they are padded with 1 to
    max_text_length, and the empty prompt [0, 2] is the unconditional input. The n images are
    drawn `batch` at a time, batch b from PRNGKey(seed · 100003 + b · batch).
    """
    m = math.isqrt(cfg.image_length)
    if m * m != cfg.image_length:
        raise ValueError(f"image_length {cfg.image_length} is not a square grid")

    def ids_of(text):
        ids = list(tokenize(text))[: cfg.max_text_length]
        pad = cfg.max_text_length - len(ids)
        return np.array(ids + [1] * pad, np.int32), np.array([1] * len(ids) + [0] * pad, np.int32)

    def sample(prompt: str, n: int, seed: int) -> np.ndarray:
        ids, mask = ids_of(prompt)
        uids, umask = ids_of("")
        uids[:2], umask[:2] = [0, 2], 1
        out = []
        for start in range(0, n, batch):
            k = min(batch, n - start)
            rows = [np.repeat(a[None], k, 0) for a in (ids, mask, uids, umask)]
            rng = jax.random.PRNGKey(seed * 100_003 + start)
            toks = generate(
                cfg,
                params,
                rows[0],
                rows[1],
                rng,
                n_image_codes,
                condition_scale,
                rows[2],
                rows[3],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                dtype=dtype,
            )
            out.append(np.asarray(toks).reshape(k, m, m))
        return np.concatenate(out)

    return sample


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """DalleBart's sampler settings (dalle-mini's generation defaults; `prompt_sampler`'s).

    Attributes:
      condition_scale: super-conditioning scale (1: none).
      top_k: keep the k most likely image tokens (None: all).
      temperature: logit temperature (0: greedy).
      top_p: nucleus mass.
      batch: images a generate call draws; with the seed it fixes each image's randomness.
    """

    condition_scale: float = 10.0
    top_k: int | None = 50
    temperature: float = 1.0
    top_p: float = 1.0
    batch: int = 64


@dataclasses.dataclass(frozen=True, eq=False)
class DalleBartVQGM:
    """DalleBart with its text tokenizer and VQGAN: a `vqgm.PromptConditional` (and `Encodes`).

    Attributes:
      name: short name for reports and meta.json ("dallebart").
      config, params: the DalleBart (`DalleBartConfig`, its parameter tree).
      tokenize: prompt → BART ids with <s> … </s> (BartTokenizerFast's input_ids).
      vqgan: the tokenizer whose codes DalleBart draws (ids ≥ its codebook size are masked).
    """

    name: str
    config: DalleBartConfig
    params: dict
    tokenize: Callable[[str], Sequence[int]]
    vqgan: VQTokenizer

    @property
    def grid_size(self) -> int:
        """m, the side of the grids DalleBart samples (image_length = m²)."""
        return math.isqrt(self.config.image_length)

    @property
    def codebook(self) -> Array:
        """(K, d) codebook rows of the VQGAN."""
        return self.vqgan.codebook

    def sampler(
        self, sample_config: SampleConfig = SampleConfig(), dtype: Any = None
    ) -> Callable[[str, int, int], np.ndarray]:
        """(prompt, n, seed) → (n, m, m) grids with these settings (`prompt_sampler`)."""
        c = sample_config
        return prompt_sampler(
            self.config,
            self.params,
            self.tokenize,
            self.vqgan.config.n_embed,
            condition_scale=c.condition_scale,
            top_k=c.top_k,
            batch=c.batch,
            temperature=c.temperature,
            top_p=c.top_p,
            dtype=jnp.float32 if dtype is None else dtype,
        )

    def sample_prompt(
        self,
        prompt: str,
        n: int,
        seed: int,
        sample_config: SampleConfig = SampleConfig(),
        dtype: Any = None,
    ) -> np.ndarray:
        """n token grids (n, m, m) of `prompt` from the integer `seed`; `dtype` is the
        transformer's compute type (None: float32)."""
        return self.sampler(sample_config, dtype)(prompt, n, seed)

    def encode(self, pixels: Any) -> np.ndarray:
        """Pixels (B, H, W, 3) in [−1, 1] → the VQGAN's token grids (B, m', m')."""
        ids = np.asarray(self.vqgan.encode(pixels))
        m = self.vqgan.grid_size
        return ids.reshape(len(ids), m, m)

    def decode(self, tokens: Any) -> Array:
        """(B, m, m) tokens → pixels (B, H, W, 3) clipped to [−1, 1]."""
        return jnp.clip(self.vqgan.decode_code(tokens), -1.0, 1.0)
