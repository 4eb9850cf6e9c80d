"""DalleBart (DALL·E-mini / mega) in JAX: text encoder + image-token decoder, with a KV cache.

A port of dalle-mini 0.1.5's model written as pure functions over its own parameter tree, so a
`config.json` + `flax_model.msgpack` pair loads unchanged, in either layout dalle-mini writes:
scanned (`layers/FlaxBart{Encoder,Decoder}Layers/…`, a leading layer axis) or per layer
(`layers/FlaxBart…Layer_{i}/…`, stacked here at load). Every option is read from config.json.

Supported: `ln_type` layernorm | rmsnorm; `ln_positions` normformer | preln | postln | cogview;
`use_glu` on (GLU) and off (plain FFN); `use_bias`; `force_ln_scale`; final LNs on/off;
`scale_embedding`; absolute positions on/off; tied or separate lm_head; `use_subln_init` (init
only). Options that change the computation in ways not ported yet (`use_cosine_attention`,
`use_head_scale`, swin/alibi positions, `sinkhorn_iters` > 1, deepnet scaling, `swinv2`/`subln`
positions) raise a ValueError naming them, rather than computing something else silently.

Generation: the decoder runs one position at a time with cached keys/values in a jitted
`lax.scan`, super-conditioned with the empty prompt (logits = uncond + scale·(cond − uncond)),
top-k / top-p / temperature, and **ids ≥ the VQGAN codebook size are masked** (the original
samples them). Text ids come from transformers' BartTokenizerFast (`load_tokenizer(folder)`,
the files of the dalle-mini repo); dalle-mini's text normalisation needs extra downloads and is
not applied here: pass already normalised prompts (lower case, plain ASCII) for the released
models.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from cortex_jax.cin import filter_logits

Array = jax.Array

_UNSUPPORTED = {
    "use_cosine_attention": True,
    "use_head_scale": True,
    "use_swin_position_embeddings": True,
    "use_alibi": True,
    "use_deepnet_scaling": True,
}
_POSITIONS = ("normformer", "preln", "postln", "cogview")


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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DalleBartConfig:
        for key, bad in _UNSUPPORTED.items():
            if d.get(key, False) == bad:
                raise ValueError(f"DalleBart option {key}={bad} is not supported by this port")
        if d.get("sinkhorn_iters", 1) != 1:
            raise ValueError(
                f"DalleBart option sinkhorn_iters={d['sinkhorn_iters']} is not supported"
            )
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


_ACT = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "swish": jax.nn.swish,
}


# ---------------------------------------------------------------------------------------------
# Building blocks over parameter dicts
# ---------------------------------------------------------------------------------------------


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


def _attend(p: dict, q_in: Array, kv_in: Array, mask: Array, n_heads: int) -> Array:
    """mask broadcastable to (B, 1, Tq, Tk), True = attend."""
    q = _heads(_dense(p["q_proj"], q_in), n_heads)
    k = _heads(_dense(p["k_proj"], kv_in), n_heads)
    v = _heads(_dense(p["v_proj"], kv_in), n_heads)
    return _attend_qkv(p, q, k, v, mask)


def _attend_qkv(p: dict, q: Array, k: Array, v: Array, mask: Array) -> Array:
    w = jnp.einsum("bqhd,bkhd->bhqk", q / math.sqrt(q.shape[-1]), k).astype(jnp.float32)
    w = jax.nn.softmax(jnp.where(mask, w, -jnp.inf), axis=-1).astype(v.dtype)
    y = jnp.einsum("bhqk,bkhd->bqhd", w, v)
    b, t, h, d = y.shape
    return _dense(p["out_proj"], y.reshape(b, t, h * d))


def _ffn(cfg: DalleBartConfig, p: dict, x: Array) -> Array:
    pos = cfg.ln_positions
    if cfg.use_glu:
        g = p["GLU_0"]
        names = _Names(cfg, g)
        if pos in ("normformer", "cogview", "preln"):
            x = _norm(cfg, names.next(), x)
        x = _ACT[cfg.activation_function](_dense(g["Dense_0"], x)) * _dense(g["Dense_1"], x)
        if pos == "normformer":
            x = _norm(cfg, names.next(), x)
        x = _dense(g["Dense_2"], x)
    else:
        g = p["FFN_0"]
        names = _Names(cfg, g)
        if pos in ("normformer", "cogview", "preln"):
            x = _norm(cfg, names.next(), x)
        x = _ACT[cfg.activation_function](_dense(g["Dense_0"], x))
        if pos == "normformer":
            x = _norm(cfg, names.next(), x)
        x = _dense(g["Dense_1"], x)
    if pos == "cogview":
        x = _norm(cfg, names.next(), x)
    return x


def _block(cfg: DalleBartConfig, names: _Names, h: Array, attend) -> Array:
    """One attention sub-block with dalle-mini's norm placement; `attend(x) -> y`."""
    res = h
    if cfg.ln_positions in ("normformer", "cogview", "preln"):
        h = _norm(cfg, names.next(), h)
    h = attend(h)
    if cfg.ln_positions in ("normformer", "cogview"):
        h = _norm(cfg, names.next(), h)
    h = res + h
    if cfg.ln_positions == "postln":
        h = _norm(cfg, names.next(), h)
    return h


def _encoder_layer(cfg, p, h, mask):
    names = _Names(cfg, p)
    h = _block(cfg, names, h, lambda x: _attend(p["FlaxBartAttention_0"], x, x, mask,
                                                 cfg.encoder_attention_heads))  # fmt: skip
    h = h + _ffn(cfg, p, h)
    if cfg.ln_positions == "postln":
        h = _norm(cfg, names.next(), h)
    return h


def _embed(cfg, p, ids, positions):
    h = p["embed_tokens"]["embedding"][ids] * (
        math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
    )
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
    layers = p["layers"]["FlaxBartEncoderLayers"]
    h, _ = jax.lax.scan(lambda h, lp: (_encoder_layer(cfg, lp, h, mask), None), h, layers)
    return _final(cfg, p, h, cfg.use_final_ln_encoder)


def _decoder_layer(cfg, p, h, self_attend, enc, enc_mask):
    names = _Names(cfg, p)
    h = _block(cfg, names, h, lambda x: self_attend(p["FlaxBartAttention_0"], x))
    h = _block(cfg, names, h, lambda x: _attend(p["FlaxBartAttention_1"], x, enc, enc_mask,
                                                 cfg.decoder_attention_heads))  # fmt: skip
    h = h + _ffn(cfg, p, h)
    if cfg.ln_positions == "postln":
        h = _norm(cfg, names.next(), h)
    return h


def _head(cfg, params, h):
    if cfg.tie_word_embeddings:
        return h @ params["model"]["decoder"]["embed_tokens"]["embedding"].T
    return _dense(params["lm_head"], h)


def decode_logits(cfg: DalleBartConfig, params: dict, decoder_input_ids: Array, enc: Array,
                  attention_mask: Array) -> Array:  # fmt: skip
    """Teacher-forced logits (B, L, image_vocab_size + 1), decoder inputs (B, L ≤ image_length)."""
    p = params["model"]["decoder"]
    length = decoder_input_ids.shape[1]
    h = _embed(cfg, p, decoder_input_ids, jnp.arange(length))
    enc_mask = attention_mask.astype(bool)[:, None, None, :]
    causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
    heads = cfg.decoder_attention_heads
    self_attend = lambda ap, x: _attend(ap, x, x, causal, heads)
    layers = p["layers"]["FlaxBartDecoderLayers"]
    h, _ = jax.lax.scan(
        lambda h, lp: (_decoder_layer(cfg, lp, h, self_attend, enc, enc_mask), None), h, layers
    )
    return _head(cfg, params, _final(cfg, p, h, cfg.use_final_ln_decoder)).astype(jnp.float32)


def logits(cfg, params, input_ids, attention_mask, decoder_input_ids) -> Array:
    """The model's forward pass, as dalle-mini's `model(...)` with train=False."""
    enc = encode(cfg, params, input_ids, attention_mask)
    return decode_logits(cfg, params, decoder_input_ids, enc, attention_mask)


def superconditioned(cond: Array, uncond: Array, scale: float) -> Array:
    return uncond + scale * (cond - uncond)


# ---------------------------------------------------------------------------------------------
# Generation with a KV cache
# ---------------------------------------------------------------------------------------------


def generate(
    cfg: DalleBartConfig,
    params: dict,
    input_ids: Array,
    attention_mask: Array,
    rng: Array,
    n_image_codes: int,
    condition_scale: float = 10.0,
    uncond_ids: Array | None = None,
    uncond_mask: Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = 50,
    top_p: float = 1.0,
    return_logits: bool = False,
):
    """Image token ids (B, image_length) in [0, n_image_codes) for each prompt.

    Super-conditioning runs when condition_scale != 1 and uncond_ids (the empty prompt, e.g.
    [0, 2, 1, …]) are given. temperature 0 → greedy. The decoder sees [start, c_0 … c_{L−2}].
    """
    fn = _generate_fn(cfg, n_image_codes, float(condition_scale), uncond_ids is not None,
                      float(temperature), top_k, float(top_p))  # fmt: skip
    args = (params, jnp.asarray(input_ids), jnp.asarray(attention_mask), rng)
    if uncond_ids is not None:
        args += (jnp.asarray(uncond_ids), jnp.asarray(uncond_mask))
    toks, lgs = fn(*args)
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
        layers = p["layers"]["FlaxBartDecoderLayers"]
        n = enc.shape[0]
        hd = cfg.d_model // heads
        cache = jnp.zeros((cfg.decoder_layers, 2, n, length, heads, hd), enc.dtype)

        def step(carry, t):
            tok, cache = carry
            h = _embed(cfg, p, tok[:, None], jnp.full((1,), t))

            def layer(h, xs):
                lp, c = xs

                def self_attend(ap, x):
                    k = jax.lax.dynamic_update_slice_in_dim(
                        c[0], _heads(_dense(ap["k_proj"], x), heads), t, axis=1)  # fmt: skip
                    v = jax.lax.dynamic_update_slice_in_dim(
                        c[1], _heads(_dense(ap["v_proj"], x), heads), t, axis=1)  # fmt: skip
                    new_c.append(jnp.stack([k, v]))
                    q = _heads(_dense(ap["q_proj"], x), heads)
                    return _attend_qkv(ap, q, k, v, (jnp.arange(length) <= t)[None, None, None])

                new_c: list = []
                h = _decoder_layer(cfg, lp, h, self_attend, enc, enc_mask)
                return h, new_c[0]

            h, cache = jax.lax.scan(layer, h, (layers, cache))
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
            return (jnp.concatenate([nxt, nxt]) if super_cond else nxt, cache), (nxt, raw)

        start = jnp.full((n,), cfg.decoder_start_token_id, jnp.int32)
        _, (toks, raws) = jax.lax.scan(step, (start, cache), jnp.arange(length))
        return toks.T, raws.transpose(1, 0, 2)

    _GENERATORS[key] = jax.jit(run)
    return _GENERATORS[key]


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _stack_layers(layers: dict, prefix: str) -> dict:
    """{'…Layer_0': tree, '…Layer_1': tree} → {'…Layers': stacked tree}. A postln model's last
    layer lacks its final LN scale; ones are filled in, which is what it computes."""
    from cortex_jax.checkpoints import unflatten_paths
    from cortex_jax.vqgan import flatten_paths

    keys = sorted((k for k in layers if re.fullmatch(f"{prefix}_\\d+", k)),
                  key=lambda k: int(k.rsplit("_", 1)[1]))  # fmt: skip
    flat = [flatten_paths(layers[k]) for k in keys]
    paths = sorted({path for f in flat for path in f})
    stacked = {}
    for path in paths:
        like = np.asarray(next(f[path] for f in flat if path in f))
        stacked[path] = np.stack([np.asarray(f.get(path, np.ones_like(like))) for f in flat])
    return {f"{prefix}s": unflatten_paths(stacked)}


def read_dallebart_folder(folder: str | os.PathLike) -> tuple[DalleBartConfig, dict]:
    """dalle-mini's config.json + flax_model.msgpack, scanned or per layer."""
    folder = Path(folder)
    cfg_path, w_path = folder / "config.json", folder / "flax_model.msgpack"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"DalleBart file not found: {p}")
    cfg = DalleBartConfig.from_dict(json.loads(cfg_path.read_text()))
    params = serialization.msgpack_restore(w_path.read_bytes())
    for part, prefix in (("encoder", "FlaxBartEncoderLayer"), ("decoder", "FlaxBartDecoderLayer")):
        layers = params["model"][part]["layers"]
        if f"{prefix}s" not in layers:
            params["model"][part]["layers"] = _stack_layers(layers, prefix)
    n = {"encoder": cfg.encoder_layers, "decoder": cfg.decoder_layers}
    for part, prefix in (
        ("encoder", "FlaxBartEncoderLayers"),
        ("decoder", "FlaxBartDecoderLayers"),
    ):
        got = jax.tree_util.tree_leaves(params["model"][part]["layers"][prefix])[0].shape[0]
        if got != n[part]:
            raise ValueError(f"{w_path}: {part} has {got} layers but config.json says {n[part]}")
    emb = params["model"]["decoder"]["embed_tokens"]["embedding"]
    if emb.shape[0] != cfg.image_vocab_size + 1:
        raise ValueError(f"{w_path}: decoder embedding has {emb.shape[0]} rows; expected "
                         f"image_vocab_size + 1 = {cfg.image_vocab_size + 1}")  # fmt: skip
    return cfg, jax.tree_util.tree_map(jnp.asarray, params)


def load_dallebart(source: str | os.PathLike) -> tuple[DalleBartConfig, dict]:
    """A local folder, or a Hugging Face repo id (dalle-mini/dalle-mini, dalle-mini/dalle-mega)."""
    path = Path(source)
    if path.is_dir():
        return read_dallebart_folder(path)
    from cortex_jax.checkpoints import hub_folder

    return read_dallebart_folder(hub_folder(str(source)))


def load_tokenizer(folder: str | os.PathLike):
    """BartTokenizerFast from a folder holding the dalle-mini repo's tokenizer files."""
    from transformers import BartTokenizerFast

    return BartTokenizerFast.from_pretrained(str(folder))


def prompt_sampler(
    cfg: DalleBartConfig,
    params: dict,
    tokenize,
    n_image_codes: int,
    condition_scale: float = 10.0,
    top_k: int | None = 50,
    batch: int = 64,
):
    """A `bias.Sampler` over text prompts: (prompt, n, seed) → token grids (n, m, m).

    tokenize(prompt) → list of BART ids with <s> … </s>; they are padded with 1 to
    max_text_length, and the empty prompt [0, 2] is the unconditional input.
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
            toks = generate(cfg, params, rows[0], rows[1], rng, n_image_codes, condition_scale,
                            rows[2], rows[3], top_k=top_k)  # fmt: skip
            out.append(np.asarray(toks).reshape(k, m, m))
        return np.concatenate(out)

    return sample
