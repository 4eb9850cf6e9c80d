"""Foreign parameter trees into ours: pure functions of arrays, no files.

taming-transformers' VQGAN (`convert_taming_state_dict`, `infer_taming_config`) and cin GPT
(`convert_taming_gpt_state_dict`, `infer_gpt_config`), and torchvision's ResNets
(`convert_torchvision_state_dict`, `infer_resnet_config`): state dicts of numpy arrays (torch
layout, NCHW / OI) → Flax trees (NHWC / IO), with the architecture inferred from the shapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from cortex_jax.core.trees import flatten_paths, unflatten_paths
from cortex_jax.models import llamagen
from cortex_jax.models.cin import GPTConfig
from cortex_jax.models.classifier import ResNetConfig
from cortex_jax.models.vqgan import VQGANConfig

_TAMING_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


def convert_taming_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """taming `VQModel.state_dict()` → vqgan-jax parameter tree.

    `x.N` → `x_N`; 4-D conv `weight` → `kernel` transposed (2, 3, 1, 0); GroupNorm `weight` →
    `scale`; `quantize.embedding.weight` → `quantize/embedding/embedding`. Keys outside the
    autoencoder (the discriminator and LPIPS under `loss.`) are dropped.
    """
    flat: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if not key.startswith(_TAMING_PREFIXES):
            continue
        parts = key.split(".")
        leaf = parts.pop()
        names: list[str] = []
        for p in parts:
            if p.isdigit() and names:
                names[-1] = f"{names[-1]}_{p}"
            else:
                names.append(p)
        value = np.asarray(value)
        if names == ["quantize", "embedding"] and leaf == "weight":
            names, leaf = ["quantize", "embedding"], "embedding"
        elif leaf == "weight" and value.ndim == 4:
            leaf, value = "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight" and value.ndim == 1:
            leaf = "scale"
        elif leaf != "bias":
            raise ValueError(f"unexpected taming parameter {key} with shape {value.shape}")
        flat["/".join([*names, leaf])] = value
    if not flat:
        raise ValueError(
            "state dict has no taming VQGAN keys (encoder./decoder./quantize./quant_conv./"
            "post_quant_conv.); expected a taming-transformers VQModel checkpoint"
        )
    return unflatten_paths(flat)


def infer_taming_config(params: Mapping[str, Any], resolution: int = 256) -> VQGANConfig:
    """Reads the architecture off converted parameter shapes (resolution is not stored)."""
    flat = flatten_paths(params)
    try:
        ch = flat["encoder/conv_in/kernel"].shape[-1]
        levels = sorted(
            {int(m.group(1)) for k in flat if (m := re.match(r"encoder/down_(\d+)/", k))}
        )
        ch_mult = tuple(
            flat[f"encoder/down_{i}/block_0/conv1/kernel"].shape[-1] // ch for i in levels
        )
        num_res_blocks = len(
            {m.group(1) for k in flat if (m := re.match(r"encoder/down_0/block_(\d+)/", k))}
        )
        attn = tuple(
            resolution // 2**i for i in levels if f"encoder/down_{i}/attn_0/q/kernel" in flat
        )
        z_out = flat["encoder/conv_out/kernel"].shape[-1]
        z_channels = flat["post_quant_conv/kernel"].shape[-1]
        n_embed, embed_dim = flat["quantize/embedding/embedding"].shape
        in_channels = flat["encoder/conv_in/kernel"].shape[2]
        out_ch = flat["decoder/conv_out/kernel"].shape[-1]
    except KeyError as e:
        raise ValueError(f"cannot infer the VQGAN architecture: parameter {e} is missing") from None
    return VQGANConfig(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=attn,
        z_channels=z_channels,
        embed_dim=embed_dim,
        n_embed=n_embed,
        resolution=resolution,
        in_channels=in_channels,
        out_ch=out_ch,
        double_z=z_out == 2 * z_channels,
    )


def infer_resnet_config(
    state_dict: Mapping[str, np.ndarray], image_size: int = 224
) -> ResNetConfig:
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


def convert_taming_gpt_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Net2NetTransformer / minGPT state dict (prefix `transformer.` optional) → GPT params.

    Linear (out, in) → Dense kernel (in, out); LayerNorm weight → scale; the causal-mask buffers
    are checked to be lower-triangular and dropped.
    """
    from cortex_jax.core.trees import unflatten_paths

    flat: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        k = key.removeprefix("transformer.")
        if key.startswith(("first_stage_model.", "cond_stage_model.")):
            continue
        value = np.asarray(value)
        if k.endswith("attn.mask"):
            t = value.shape[-1]
            if not np.array_equal(value.reshape(t, t) != 0, np.tril(np.ones((t, t), bool))):
                raise ValueError(f"{key} is not a causal mask; n_unmasked > 0 is not supported")
            continue
        k = re.sub(r"\.(\d+)", r"_\1", k)
        parts = k.split(".")
        leaf = parts.pop()
        if k == "pos_emb":
            flat["pos_emb"] = value
        elif parts == ["tok_emb"] and leaf == "weight":
            flat["tok_emb/embedding"] = value
        elif leaf == "weight" and value.ndim == 2:
            flat["/".join([*parts, "kernel"])] = value.T
        elif leaf == "weight" and value.ndim == 1:
            flat["/".join([*parts, "scale"])] = value
        elif leaf == "bias":
            flat["/".join([*parts, "bias"])] = value
        else:
            raise ValueError(f"unexpected minGPT parameter {key} with shape {value.shape}")
    return unflatten_paths(flat)


def infer_gpt_config(params: Mapping[str, Any], n_head: int, **kwargs) -> GPTConfig:
    """Reads vocab, width, depth and block size off the tensors; n_head is not stored."""
    vocab, n_embd = np.shape(params["tok_emb"]["embedding"])
    block = np.shape(params["pos_emb"])[1]
    n_layer = sum(1 for k in params if k.startswith("blocks_"))
    kwargs.setdefault("image_vocab_size", vocab)
    return GPTConfig(vocab, block, n_layer, n_head, n_embd, **kwargs)


def convert_llamagen_vq_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """LlamaGen `VQModel.state_dict()` → the tree of `models.llamagen.TokenizerModule`.

    The names are taming's rules (`x.N` → `x_N`, conv kernels (2, 3, 1, 0), GroupNorm weight →
    scale); the `quantize.codebook_used` usage buffer is dropped (it only matters in training).
    """
    return convert_taming_state_dict(
        {k: v for k, v in state_dict.items() if k != "quantize.codebook_used"}
    )


def infer_llamagen_tokenizer_config(
    params: Mapping[str, Any], image_size: int = 256
) -> llamagen.TokenizerConfig:
    """LlamaGen tokenizer's `TokenizerConfig` from converted parameter shapes (the image size is
    not stored)."""
    flat = flatten_paths(params)

    def levels(part: str) -> list[int]:
        pat = re.compile(rf"{part}/conv_blocks_(\d+)/")
        return sorted({int(m.group(1)) for k in flat if (m := pat.match(k))})

    try:
        ch = flat["encoder/conv_in/kernel"].shape[-1]
        width = lambda part, i: flat[f"{part}/conv_blocks_{i}/res_0/conv1/kernel"].shape[-1]  # noqa: E731
        enc = tuple(int(width("encoder", i) // ch) for i in levels("encoder"))
        dec = tuple(int(width("decoder", i) // ch) for i in reversed(levels("decoder")))
        nrb = len({k.split("/")[2] for k in flat if k.startswith("encoder/conv_blocks_0/res_")})
        z_channels = flat["post_quant_conv/kernel"].shape[-1]
        k, d = flat["quantize/embedding/embedding"].shape
    except KeyError as e:
        raise ValueError(
            f"cannot read a LlamaGen tokenizer: parameter {e} is missing; expected the state dict "
            "of LlamaGen's VQModel (encoder.conv_blocks.*, quantize.embedding.weight, …)"
        ) from None
    if not enc:
        raise ValueError("the LlamaGen tokenizer state dict has no encoder.conv_blocks.* levels")
    return llamagen.TokenizerConfig(
        codebook_size=int(k),
        codebook_embed_dim=int(d),
        ch=int(ch),
        encoder_ch_mult=enc,
        decoder_ch_mult=dec,
        z_channels=int(z_channels),
        num_res_blocks=nrb,
        image_size=image_size,
    )


_LLAMAGEN_GPT_LEAVES = {
    "attention.wqkv.weight": ("wqkv", True),
    "attention.wo.weight": ("wo", True),
    "feed_forward.w1.weight": ("w1", True),
    "feed_forward.w2.weight": ("w2", True),
    "feed_forward.w3.weight": ("w3", True),
    "attention_norm.weight": ("attention_norm", False),
    "ffn_norm.weight": ("ffn_norm", False),
}
_LLAMAGEN_GPT_TOP = {
    "cls_embedding.embedding_table.weight": ("cls_embedding", False),
    "tok_embeddings.weight": ("tok_embeddings", False),
    "norm.weight": ("norm", False),
    "output.weight": ("output", True),
}


def convert_llamagen_gpt_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict:
    """LlamaGen c2i `Transformer.state_dict()` → the tree of `models.llamagen` (Linear weights
    (out, in) → kernels (in, out), float32). Keys LlamaGen's own loader would not use
    (`freqs_cis`, KV-cache buffers: it loads with strict=False) are ignored; a text-to-image
    checkpoint is refused."""
    if any(k.startswith("cls_embedding.cap_proj") for k in state_dict):
        raise ValueError(
            "this is a LlamaGen text-to-image (t2i) GPT (cls_embedding.cap_proj.*); expected a "
            "class-conditional c2i checkpoint"
        )
    tree: dict[str, Any] = {}
    for key, value in state_dict.items():
        m = re.fullmatch(r"layers\.(\d+)\.(.+)", key)
        if key in _LLAMAGEN_GPT_TOP:
            name, linear = _LLAMAGEN_GPT_TOP[key]
            where = tree
        elif m and m.group(2) in _LLAMAGEN_GPT_LEAVES:
            name, linear = _LLAMAGEN_GPT_LEAVES[m.group(2)]
            where = tree.setdefault(f"layers_{m.group(1)}", {})
        else:
            continue
        v = np.asarray(value, np.float32)
        if linear and v.ndim != 2:
            raise ValueError(f"{key} has shape {v.shape}; expected a 2-D Linear weight")
        where[name] = v.T if linear else v
    return tree


def check_llamagen_gpt_state_dict(
    state_dict: Mapping[str, np.ndarray], config: llamagen.GPTConfig, source: str
) -> None:
    """One-line ValueError naming the first LlamaGen GPT tensor that is missing or mis-shaped
    for `config`, in the file's own names and (out, in) layout."""
    want = llamagen.gpt_param_shapes(config)
    expected: dict[str, tuple[int, ...]] = {}
    for key, (name, linear) in _LLAMAGEN_GPT_TOP.items():
        expected[key] = tuple(want[name].shape[::-1] if linear else want[name].shape)
    for i in range(config.n_layer):
        for leaf, (name, linear) in _LLAMAGEN_GPT_LEAVES.items():
            shape = want[f"layers_{i}"][name].shape
            expected[f"layers.{i}.{leaf}"] = tuple(shape[::-1] if linear else shape)
    for key, shape in expected.items():
        if key not in state_dict:
            raise ValueError(f"{source} lacks {key} (expected shape {shape})")
        got = tuple(np.shape(state_dict[key]))
        if got != shape:
            raise ValueError(f"{source}: {key} has shape {got}; expected {shape}")
    extra = sorted(
        {int(m.group(1)) for k in state_dict if (m := re.match(r"layers\.(\d+)\.", k))}
        - set(range(config.n_layer))
    )
    if extra:
        raise ValueError(f"{source} has layers.{extra[0]}.* beyond the {config.n_layer} layers")


def infer_llamagen_gpt_config(
    params: Mapping[str, Any], options: Mapping[str, Any]
) -> llamagen.GPTConfig:
    """LlamaGen GPT `GPTConfig` from converted shapes plus `options` (ModelArgs fields; n_head
    from them or from the preset of the same dim and depth, block_size from them)."""
    try:
        vocab, dim = np.shape(params["tok_embeddings"])
        rows = np.shape(params["cls_embedding"])[0]
        qkv = np.shape(params["layers_0"]["wqkv"])[1]
        hidden = np.shape(params["layers_0"]["w1"])[1]
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"not a LlamaGen c2i GPT state dict (missing {e}); expected tok_embeddings.weight, "
            "cls_embedding.embedding_table.weight and layers.N.*"
        ) from None
    n_layer = sum(1 for k in params if re.fullmatch(r"layers_\d+", k))
    fields = {f.name for f in dataclasses.fields(llamagen.GPTConfig)}
    opts = {k: v for k, v in options.items() if k in fields}
    if "n_head" not in opts:
        match = [
            p for p in llamagen.GPT_PRESETS.values() if (p["dim"], p["n_layer"]) == (dim, n_layer)
        ]
        if not match:
            raise ValueError(
                f"the GPT has dim {dim} and {n_layer} layers, which match no preset "
                f"{sorted(llamagen.GPT_PRESETS)}; pass its n_head in the config"
            )
        opts["n_head"] = match[0]["n_head"]
    head_dim = dim // int(opts["n_head"])
    opts.setdefault("n_kv_head", int((qkv - dim) // 2 // head_dim) if qkv != 3 * dim else None)
    opts.setdefault("num_classes", int(rows) - 1)
    for name, found in (("dim", dim), ("n_layer", n_layer), ("vocab_size", vocab)):
        if opts.setdefault(name, int(found)) != found:
            raise ValueError(f"config says {name}={opts[name]} but the checkpoint has {found}")
    cfg = llamagen.GPTConfig(**opts)
    if cfg.ffn_hidden != hidden:
        raise ValueError(
            f"feed-forward width {hidden} in the checkpoint, but multiple_of={cfg.multiple_of} "
            f"and ffn_dim_multiplier={cfg.ffn_dim_multiplier} give {cfg.ffn_hidden}; set them "
            "in the config"
        )
    return cfg
