"""Foreign parameter trees into ours: pure functions of arrays, no files.

taming-transformers' VQGAN (`convert_taming_state_dict`, `infer_taming_config`) and cin GPT
(`convert_taming_gpt_state_dict`, `infer_gpt_config`), and torchvision's ResNets
(`convert_torchvision_state_dict`, `infer_resnet_config`), and the CORTEX authors' IEMs
(`convert_authors_iem`, `infer_authors_iem_config`, and back: `authors_iem_state_dict`): state
dicts of numpy arrays (torch layout, NCHW / OI) → Flax trees (NHWC / IO), with the architecture
inferred from the shapes.
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
from cortex_jax.models.iem import IEMConfig
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


# --- The authors' IEMs (YangTianze009/CORTEX, VQGAN_explanation/model.py) -------------------
# One table per network maps each of their state-dict tensors to our parameter (or batch
# statistic) with a layout change and its inverse, so both directions read the same table.

_AUTHORS_NETS = {"ce": "ClassificationNet1", "re": "ClassificationNet3", "te": "ClassificationNet4"}
_AUTHORS_MARKERS = {"ce": "conv1_1.weight", "re": "layer1.0.conv1.weight", "te": "proj.0.weight"}

_Fn = Any  # np.ndarray -> np.ndarray
_ID: tuple[_Fn, _Fn] = (lambda a: a, lambda a: a)
_LINEAR: tuple[_Fn, _Fn] = (lambda a: a.T, lambda a: a.T)  # (out, in) ↔ (in, out)
_CONV: tuple[_Fn, _Fn] = (  # OIHW ↔ HWIO
    lambda a: a.transpose(2, 3, 1, 0),
    lambda a: a.transpose(3, 2, 0, 1),
)


@dataclasses.dataclass(frozen=True)
class _Entry:
    torch: str  # their state-dict key
    ours: str  # 'params/…' or 'batch_stats/…'
    fwd: _Fn  # their array → ours
    inv: _Fn  # ours → theirs
    part: tuple[int, int] | None = None  # (i, n): our leaf is the i-th of n row blocks


def _bn_entries(theirs: str, ours: str) -> list[_Entry]:
    return [
        _Entry(f"{theirs}.weight", f"params/{ours}/scale", *_ID),
        _Entry(f"{theirs}.bias", f"params/{ours}/bias", *_ID),
        _Entry(f"{theirs}.running_mean", f"batch_stats/{ours}/mean", *_ID),
        _Entry(f"{theirs}.running_var", f"batch_stats/{ours}/var", *_ID),
    ]


def _linear_entries(theirs: str, ours: str, ln: bool = False) -> list[_Entry]:
    weight = f"params/{ours}/scale" if ln else f"params/{ours}/kernel"
    return [
        _Entry(f"{theirs}.weight", weight, *(_ID if ln else _LINEAR)),
        _Entry(f"{theirs}.bias", f"params/{ours}/bias", *_ID),
    ]


def _authors_table(cfg: IEMConfig, grid_size: int) -> list[_Entry]:
    t: list[_Entry] = []
    if cfg.arch == "ce":
        for s in range(2):
            for i in range(cfg.layers):
                t += [
                    _Entry(f"conv{s + 1}_{i + 1}.weight", f"params/conv{s}_{i}/kernel", *_CONV),
                    _Entry(f"conv{s + 1}_{i + 1}.bias", f"params/conv{s}_{i}/bias", *_ID),
                ]
                t += _bn_entries(f"bn{s + 1}_{i + 1}", f"bn{s}_{i}")
        # They flatten (C, H, W) after the second max-pool, we flatten (H, W, C).
        c, side = cfg.width, grid_size // 4

        def fc1_fwd(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1, c, side, side).transpose(2, 3, 1, 0).reshape(-1, a.shape[0])

        def fc1_inv(a: np.ndarray) -> np.ndarray:
            return a.reshape(side, side, c, -1).transpose(3, 2, 0, 1).reshape(a.shape[1], -1)

        t += [
            _Entry("fc1.weight", "params/fc1/kernel", fc1_fwd, fc1_inv),
            _Entry("fc1.bias", "params/fc1/bias", *_ID),
        ]
        t += _bn_entries("bn_fc1", "bn_fc1") + _linear_entries("fc2", "fc2")
        t += _bn_entries("bn_fc2", "bn_fc2") + _linear_entries("fc3", "out")
    elif cfg.arch == "re":
        for s in range(2):
            for j in range(cfg.layers):
                theirs, ours = f"layer{s + 1}.{j}", f"stage{s}_{j}"
                t += [
                    _Entry(f"{theirs}.conv1.weight", f"params/{ours}/conv1/kernel", *_CONV),
                    _Entry(f"{theirs}.conv2.weight", f"params/{ours}/conv2/kernel", *_CONV),
                ]
                t += _bn_entries(f"{theirs}.bn1", f"{ours}/bn1")
                t += _bn_entries(f"{theirs}.bn2", f"{ours}/bn2")
                if j == 0:  # stride 2: the 1×1 conv + BN shortcut
                    t.append(
                        _Entry(
                            f"{theirs}.shortcut.0.weight",
                            f"params/{ours}/conv_short/kernel",
                            *_CONV,
                        )
                    )
                    t += _bn_entries(f"{theirs}.shortcut.1", f"{ours}/bn_short")
                t += _linear_entries(f"{theirs}.se.fc1", f"{ours}/se_fc1")
                t += _linear_entries(f"{theirs}.se.fc2", f"{ours}/se_fc2")
        t += _linear_entries("fc1", "fc1") + _bn_entries("bn_fc1", "bn_fc1")
        t += _linear_entries("fc2", "out")
    else:
        w, h = cfg.width, cfg.heads
        qkv_fwd = lambda a: a.T.reshape(w, h, w // h)
        qkv_inv = lambda a: a.reshape(w, w).T
        t += _linear_entries("proj.0", "embed") + _linear_entries("proj.1", "embed_ln", ln=True)
        t += [
            _Entry("cls_token", "params/cls", *_ID),
            _Entry("pos_embed", "params/pos", *_ID),
        ]
        for i in range(cfg.layers):
            theirs, ours = f"encoder.{i}", f"layer{i}"
            t += _linear_entries(f"{theirs}.norm1", f"{ours}/ln1", ln=True)
            for k, name in enumerate(("query", "key", "value")):
                t += [
                    _Entry(
                        f"{theirs}.self_attn.in_proj_weight",
                        f"params/{ours}/attn/{name}/kernel",
                        qkv_fwd,
                        qkv_inv,
                        (k, 3),
                    ),
                    _Entry(
                        f"{theirs}.self_attn.in_proj_bias",
                        f"params/{ours}/attn/{name}/bias",
                        lambda a: a.reshape(h, w // h),
                        lambda a: a.reshape(w),
                        (k, 3),
                    ),
                ]
            t += [
                _Entry(
                    f"{theirs}.self_attn.out_proj.weight",
                    f"params/{ours}/attn/out/kernel",
                    lambda a: a.T.reshape(h, w // h, w),
                    lambda a: a.reshape(w, w).T,
                ),
                _Entry(f"{theirs}.self_attn.out_proj.bias", f"params/{ours}/attn/out/bias", *_ID),
            ]
            t += _bn_entries(f"{theirs}.bn_attn", f"{ours}/bn_attn")
            t += _linear_entries(f"{theirs}.norm2", f"{ours}/ln2", ln=True)
            t += _linear_entries(f"{theirs}.mlp.0", f"{ours}/mlp1")
            t += _linear_entries(f"{theirs}.mlp.3", f"{ours}/mlp2")
            t += _bn_entries(f"{theirs}.bn_mlp", f"{ours}/bn_mlp")
        t += _linear_entries("final_norm", "ln_f", ln=True)
        t += _linear_entries("pre_classifier.0", "fc1")
        t += _linear_entries("pre_classifier.1", "head_ln", ln=True)
        t += _linear_entries("fc", "out")
    return t


def _strip_wrappers(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops DataParallel's `module.` prefix and BatchNorm's `num_batches_tracked` counters."""
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return {k: np.asarray(v) for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def authors_iem_arch(state_dict: Mapping[str, np.ndarray]) -> str:
    """'ce' / 're' / 'te': which of the authors' networks (Net1 / Net3 / Net4) a state dict
    holds, from its keys; ValueError when it is none of them."""
    sd = _strip_wrappers(state_dict)
    found = [arch for arch, key in _AUTHORS_MARKERS.items() if key in sd]
    if len(found) != 1:
        raise ValueError(
            f"state dict (first keys {sorted(sd)[:3]}) is not one of the authors' IEMs; expected "
            "a ClassificationNet1 (conv1_1.*), Net3 (layer1.0.*) or Net4 (proj.0.*) state dict"
        )
    return found[0]


def _shape(sd: Mapping[str, np.ndarray], key: str, ndim: int) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"state dict lacks {key}")
    shape = tuple(np.shape(sd[key]))
    if len(shape) != ndim:
        raise ValueError(f"state dict's {key} has shape {shape}; expected {ndim} dimensions")
    return shape


def infer_authors_iem_config(
    state_dict: Mapping[str, np.ndarray], heads: int = 8
) -> tuple[IEMConfig, int, int]:
    """(IEMConfig, grid size m, embedding dim d) of an authors' state dict, read off its shapes.
    TE's head count cannot be read from shapes (the in-projection is fused): `heads` (Net4: 8)."""
    sd = _strip_wrappers(state_dict)
    arch = authors_iem_arch(sd)
    count = lambda pattern: len({m.group(1) for k in sd if (m := re.match(pattern, k))})
    if arch == "ce":
        width, d = _shape(sd, "conv1_1.weight", 4)[:2]
        hidden, flat = _shape(sd, "fc1.weight", 2)
        side = int(round((flat / width) ** 0.5))
        if side * side * width != flat:
            raise ValueError(f"fc1.weight takes {flat} inputs, not width {width} × a square grid")
        n_classes = _shape(sd, "fc3.weight", 2)[0]
        cfg = IEMConfig(
            "ce", n_classes, width=width, depth=count(r"conv1_(\d+)\.weight"), hidden=hidden
        )
        return cfg, 4 * side, d
    if arch == "re":
        width, d = _shape(sd, "layer1.0.conv1.weight", 4)[:2]
        se_hidden = _shape(sd, "layer1.0.se.fc1.weight", 2)[0]
        hidden = _shape(sd, "fc1.weight", 2)[0]
        n_classes = _shape(sd, "fc2.weight", 2)[0]
        cfg = IEMConfig(
            "re",
            n_classes,
            width=width,
            depth=count(r"layer1\.(\d+)\.conv1\.weight"),
            hidden=hidden,
            se_hidden=se_hidden,
        )
        return cfg, 16, d  # any grid divisible by 4 works (global pooling); Net3 reads 16×16
    width, d = _shape(sd, "proj.0.weight", 2)
    tokens = _shape(sd, "pos_embed", 3)[1] - 1
    side = int(round(tokens**0.5))
    if side * side != tokens:
        raise ValueError(f"pos_embed has {tokens + 1} positions; expected 1 + m·m")
    cfg = IEMConfig(
        "te",
        _shape(sd, "fc.weight", 2)[0],
        width=width,
        depth=count(r"encoder\.(\d+)\.norm1\.weight"),
        hidden=_shape(sd, "pre_classifier.0.weight", 2)[0],
        heads=heads,
        mlp=_shape(sd, "encoder.0.mlp.0.weight", 2)[0],
    )
    return cfg, side, d


def convert_authors_iem(
    state_dict: Mapping[str, np.ndarray], config: IEMConfig, grid_size: int
) -> dict[str, dict]:
    """The authors' Net1 / Net3 / Net4 state dict → our {'params', 'batch_stats'} for `config`.

    Conv weights OIHW → HWIO, linear (out, in) → (in, out), CE's `fc1` rows from their (C, H, W)
    flatten order to our (H, W, C), TE's fused `in_proj_weight` split into query/key/value,
    BatchNorm running statistics into `batch_stats`. A key that is missing, left over or of
    another shape raises one line naming it."""
    sd = _strip_wrappers(state_dict)
    table = _authors_table(config, grid_size)
    missing = sorted({e.torch for e in table} - set(sd))
    if missing:
        raise ValueError(
            f"state dict lacks {missing[0]}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + f"; expected the authors' {_AUTHORS_NETS[config.arch]} for {config}"
        )
    extra = sorted(set(sd) - {e.torch for e in table})
    if extra:
        raise ValueError(
            f"state dict has {extra[0]}, which the authors' {_AUTHORS_NETS[config.arch]} "
            f"of this size does not have" + (f" (and {len(extra) - 1} more)" if extra[1:] else "")
        )
    flat: dict[str, np.ndarray] = {}
    for e in table:
        a = sd[e.torch].astype(np.float32)
        if e.part is not None:
            i, n = e.part
            if a.shape[0] % n:
                raise ValueError(f"{e.torch} has {a.shape[0]} rows; expected a multiple of {n}")
            a = np.split(a, n)[i]
        try:
            flat[e.ours] = np.ascontiguousarray(e.fwd(a))
        except ValueError:
            raise ValueError(
                f"{e.torch} has shape {sd[e.torch].shape}, which does not fit {config}"
            ) from None
    return unflatten_paths(flat)


def authors_iem_state_dict(
    config: IEMConfig, variables: Mapping[str, Any], grid_size: int
) -> dict[str, np.ndarray]:
    """Our {'params', 'batch_stats'} → the authors' state-dict keys and layouts (the inverse of
    `convert_authors_iem`; no `num_batches_tracked`)."""
    flat = flatten_paths(variables)
    out: dict[str, np.ndarray] = {}
    parts: dict[str, dict[int, np.ndarray]] = {}
    for e in _authors_table(config, grid_size):
        a = e.inv(np.asarray(flat[e.ours], np.float32))
        if e.part is None:
            out[e.torch] = np.ascontiguousarray(a)
        else:
            parts.setdefault(e.torch, {})[e.part[0]] = a
    for key, blocks in parts.items():
        out[key] = np.concatenate([blocks[i] for i in sorted(blocks)])
    return out


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
