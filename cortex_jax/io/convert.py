"""Foreign parameter trees into ours: pure functions of arrays, no files.

taming-transformers' VQGAN (`convert_taming_state_dict`, `infer_taming_config`) and cin GPT
(`convert_taming_gpt_state_dict`, `infer_gpt_config`), and torchvision's ResNets
(`convert_torchvision_state_dict`, `infer_resnet_config`): state dicts of numpy arrays (torch
layout, NCHW / OI) → Flax trees (NHWC / IO), with the architecture inferred from the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from cortex_jax.core.trees import flatten_paths, unflatten_paths
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
