"""Every `load_*`: a model from wherever people keep it.

- `load_vqgan(source)`: `"toy"` (shipped in the package), a preset (`"imagenet_f16_16384"`,
  from its Hugging Face repo), a vqgan-jax folder, a repo id (a cache hit works offline; a miss
  offline raises one line naming the repo, the cache folder and the manual fix), a
  taming-transformers checkpoint (Lightning `.ckpt` read without torch, `.pt`/`.pth` state
  dict, `.npz`; the architecture inferred from the shapes unless given), MaskGIT's tokenizer
  checkpoint (file or folder) or LlamaGen's tokenizer `.pt`.
- `load_cin_vqgm(checkpoint, class_names)`: taming's class-conditional Net2NetTransformer (GPT +
  first-stage VQGAN from one file).
- `load_maskgit_tokenizer`, `load_maskgit`: MaskGIT's msgpack checkpoints, read without
  TensorFlow, the architecture inferred from the shapes (image size from the file name or a
  config.json beside it).
- `load_llamagen(gpt_checkpoint, vq_checkpoint)`, `load_llamagen_tokenizer`: LlamaGen's c2i GPT
  and VQ tokenizer `.pt` files (`{"model": …}` or bare state dicts), read without torch, the
  architecture from the shapes plus an optional preset / ModelArgs config.
- `load_dallebart(source)` and `load_bart_tokenizer(folder)`: DalleBart and its text tokenizer;
  `load_dallebart_vqgm(source, tokenizer, vqgan)` both with the VQGAN, as one model.
- `load_classifier(source)`: a torchvision ResNet `.pth` or our classifier folder.
- `load_iem(source, arch)`: an IEM folder written by train.iem, or the CORTEX authors' trained
  Net1 / Net3 / Net4 `.pth` state dict (converted; their architecture read off the shapes).

A folder of ours (config.json + flax_model.msgpack: a VQGAN, an IEM, a classifier) may be a gs://
URL (`core.paths`); another file on a bucket is refused in one line (`_remote_folder`).

Caveat: torch's legacy (pre-1.6, non-zip) serialization is not read; re-save such a file with a
current torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import serialization

from cortex_jax.core import imagenet, paths, trees
from cortex_jax.io import folders, torch_pickle
from cortex_jax.io.convert import (
    authors_iem_arch,
    check_llamagen_gpt_state_dict,
    convert_authors_iem,
    convert_llamagen_gpt_state_dict,
    convert_llamagen_vq_state_dict,
    convert_taming_state_dict,
    convert_torchvision_state_dict,
    infer_authors_iem_config,
    infer_llamagen_gpt_config,
    infer_llamagen_tokenizer_config,
    infer_resnet_config,
    infer_taming_config,
)
from cortex_jax.io.folders import (
    _REPO_ID,
    CONFIG_NAME,
    WEIGHTS_NAME,
    _as_float32_tree,
    check_params,
    hub_folder,
    read_dallebart_folder,
    read_vqgan_folder,
)
from cortex_jax.io.torch_pickle import read_state_dict
from cortex_jax.models.classifier import ResNetConfig, init_variables, probabilities_fn
from cortex_jax.models.dalle import DalleBartConfig, DalleBartVQGM
from cortex_jax.models.iem import ARCHITECTURES, IEMConfig
from cortex_jax.models.iem import init_variables as init_iem_variables
from cortex_jax.models.llamagen import (
    GPT_PRESETS,
    LlamaGenTokenizer,
    LlamaGenVQGM,
    tokenizer_param_shapes,
)
from cortex_jax.models.maskgit import (
    MaskGITTokenizer,
    MaskGITVQGM,
    infer_tokenizer_config,
    infer_transformer_config,
)
from cortex_jax.models.vqgan import PRESET_REPOS, PRESETS, VQGAN, VQGANConfig, VQTokenizer
from cortex_jax.models.vqgm import ClassConditionalVQGM

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # cortex_jax/


# Models shipped inside the package, by name → folder in vqgan-jax format.
PACKAGED_VQGANS: dict[str, Path] = {"toy": _PACKAGE_DIR / "toy" / "weights" / "vqgan"}


def read_taming_checkpoint(
    path: str | os.PathLike,
    config: VQGANConfig | None = None,
    dtype: Any = jnp.float32,
    resolution: int = 256,
) -> VQGAN:
    """A taming-transformers VQGAN checkpoint, converted to the vqgan-jax layout."""
    return _taming_vqgan(read_state_dict(path), str(path), config, dtype, resolution)


def _taming_vqgan(
    state_dict: dict, source: str, config: VQGANConfig | None, dtype: Any, resolution: int = 256
) -> VQGAN:
    params = convert_taming_state_dict(state_dict)
    config = config or infer_taming_config(params, resolution)
    check_params(params, config, source=source)
    return VQGAN(config, _as_float32_tree(params), dtype)


_TAMING_SUFFIXES = (".ckpt", ".pt", ".pth", ".npz")


def _remote_folder(source: str, what: str) -> epath.Path:
    """A gs:// `source` as the folder of ours it must be (other formats are read from local
    files), or a one-line error."""
    root = paths.of(source, what)
    if not (root / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"{what} {source}: on a bucket only a folder with {CONFIG_NAME} + {WEIGHTS_NAME} is "
            "read; copy other checkpoint files to a local path"
        )
    return root


def load_vqgan(
    source: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    config: VQGANConfig | str | None = None,
) -> VQTokenizer:
    """Loads a VQGAN from a name, folder, Hugging Face repo id or taming checkpoint.

    Args:
      source: `"toy"`, a preset name (see `vqgan.PRESETS`), a vqgan-jax folder, a Hugging Face
        repo id, a taming `.ckpt`/`.pt`/`.pth`/`.npz` file, MaskGIT's tokenizer checkpoint
        (the file, or a folder holding tokenizer_*checkpoint; see cortex_jax.models.maskgit), or
        LlamaGen's tokenizer `.pt` (vq_ds16_c2i.pt; image size 256, see load_llamagen_tokenizer).
      dtype: compute dtype, jnp.float32 (default) or jnp.bfloat16.
      config: for taming checkpoints, the architecture (a VQGANConfig or preset name); inferred
        from the tensor shapes when omitted.
    """
    if isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"unknown VQGAN preset {config!r}; expected one of {sorted(PRESETS)}")
        config = PRESETS[config]
    name = str(source)
    if name in PACKAGED_VQGANS:
        folder = PACKAGED_VQGANS[name]
        if not (folder / WEIGHTS_NAME).is_file():
            raise FileNotFoundError(
                f"packaged VQGAN {name!r} is missing from {folder}; rebuild it with "
                f"`python -m train.toy` or reinstall cortex-jax"
            )
        return read_vqgan_folder(folder, dtype)
    if name in PRESETS:
        if name not in PRESET_REPOS:
            raise ValueError(
                f"preset {name!r} has no known weights location; pass a folder or checkpoint "
                f"with config={name!r}"
            )
        name = PRESET_REPOS[name]
    if paths.is_remote(name):
        return read_vqgan_folder(_remote_folder(name, "VQGAN source"), dtype)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file() and list(path.glob("tokenizer_*checkpoint")):
            return load_maskgit_tokenizer(path)  # a folder of MaskGIT's released files
        return read_vqgan_folder(path, dtype)
    if path.suffix in (".pt", ".pth") and path.is_file():
        sd = unwrap_llamagen_checkpoint(torch_pickle.read_torch_file(path), path)
        if is_llamagen_tokenizer(sd):  # LlamaGen's vq_ds16_c2i.pt and the like
            return llamagen_tokenizer(sd, str(path))
        return _taming_vqgan(sd, str(path), config, dtype)
    if path.suffix in _TAMING_SUFFIXES:
        return read_taming_checkpoint(path, config, dtype)
    if is_maskgit_tokenizer_file(path):
        return load_maskgit_tokenizer(path)
    if path.exists():
        raise ValueError(
            f"{path} is neither a vqgan-jax folder, a taming checkpoint "
            f"({', '.join(_TAMING_SUFFIXES)}) nor a MaskGIT tokenizer checkpoint"
        )
    if _REPO_ID.match(name) and not name.startswith((".", "/", "~")):
        return read_vqgan_folder(hub_folder(name), dtype)
    raise FileNotFoundError(
        f"VQGAN source {name!r} not found: expected 'toy', a preset {sorted(PRESETS)}, an existing "
        f"folder with {CONFIG_NAME} + {WEIGHTS_NAME}, a Hugging Face repo id (owner/name), or a "
        f"taming checkpoint file"
    )


def _n_head_from_project_yaml(ckpt: Path) -> int | None:
    """n_head from the run's configs/*-project.yaml next to checkpoints/ (taming's layout)."""
    for yaml in sorted(ckpt.parent.parent.glob("configs/*project.yaml")):
        m = re.search(r"transformer_config:.*?n_head:\s*(\d+)", yaml.read_text(), re.S)
        if m:
            return int(m.group(1))
    return None


def load_cin_vqgm(
    checkpoint: str | os.PathLike,
    class_names: list[str],
    n_head: int | None = None,
    dtype: Any = jnp.float32,
) -> ClassConditionalVQGM:
    """taming's class-conditional Net2NetTransformer checkpoint (e.g. the ImageNet
    cin_transformer `last.ckpt`, or its run folder) → ClassConditionalVQGM: the GPT
    (`transformer.*`) and its first-stage VQGAN (`first_stage_model.*`) from the one file,
    read without torch.

    n_head is not stored in the tensors: pass it, or keep taming's run layout
    (`<run>/checkpoints/last.ckpt` + `<run>/configs/*-project.yaml`) so it is read from there.
    """
    from cortex_jax.io.convert import convert_taming_gpt_state_dict, infer_gpt_config

    path = Path(checkpoint)
    if path.is_dir():  # a taming run folder: <run>/checkpoints/last.ckpt
        found = [p for p in (path / "checkpoints" / "last.ckpt", path / "last.ckpt") if p.is_file()]
        if not found:
            raise FileNotFoundError(
                f"no checkpoints/last.ckpt in the run folder {path}; expected taming's layout "
                f"<run>/checkpoints/last.ckpt + <run>/configs/*-project.yaml"
            )
        path = found[0]
    sd = read_state_dict(path)
    gpt_sd = {k: v for k, v in sd.items() if k.startswith("transformer.")}
    vq_sd = {
        k.removeprefix("first_stage_model."): v
        for k, v in sd.items()
        if k.startswith("first_stage_model.")
    }
    if not gpt_sd or not vq_sd:
        raise ValueError(
            f"{path} lacks {'transformer.*' if not gpt_sd else 'first_stage_model.*'} weights; "
            f"expected a taming Net2NetTransformer (cin_transformer) checkpoint"
        )
    n_head = n_head or _n_head_from_project_yaml(path)
    if n_head is None:
        raise ValueError(
            f"the number of attention heads is not stored in {path.name}; pass n_head (the "
            f"released ImageNet cin_transformer: read transformer_config.params.n_head from its "
            f"configs/*-project.yaml)"
        )
    gparams = convert_taming_gpt_state_dict(gpt_sd)
    gcfg = infer_gpt_config(gparams, n_head=n_head, n_classes=len(class_names))
    vparams = convert_taming_state_dict(vq_sd)
    m = math.isqrt(gcfg.block_size)
    probe = infer_taming_config(vparams, resolution=256)
    # the nominal resolution makes the VQGAN's grid match the prior's block (m × m tokens)
    vcfg = infer_taming_config(vparams, resolution=m * probe.downsample_factor)
    check_params(vparams, vcfg, source=str(path))
    vq = VQGAN(vcfg, _as_float32_tree(vparams), dtype)
    return ClassConditionalVQGM("imagenet", vq, gcfg, _as_float32_tree(gparams), tuple(class_names))


def read_maskgit_params(path: str | Path, what: str) -> dict:
    """The params tree of a MaskGIT checkpoint file (msgpack of {"params": …})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MaskGIT {what} checkpoint not found: {path}")
    try:
        state = serialization.msgpack_restore(path.read_bytes())
    except Exception as e:  # msgpack raises many types on foreign bytes
        raise ValueError(
            f"{path} is not a MaskGIT checkpoint (msgpack of {{'params': ...}}): {type(e).__name__}"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("params"), dict):
        raise ValueError(f"{path} holds no 'params' tree; expected a MaskGIT checkpoint")
    return state["params"]


def is_maskgit_tokenizer_file(path: str | Path) -> bool:
    """Whether `path` is a MaskGIT tokenizer checkpoint (sniffed without reading it all)."""
    path = Path(path)
    if not path.is_file() or path.suffix in (".json", ".ckpt", ".pt", ".pth", ".npz"):
        return False
    with path.open("rb") as f:
        head = f.read(64)  # msgpack: {"params": {"decoder" | "encoder" | "quantizer": …
    return head[1:8] == b"\xa6params" and any(k in head for k in (b"coder", b"quantizer"))


def _sidecar_options(path: Path) -> dict[str, Any]:
    """Image size and activation from a MaskGIT config.json beside the file, or the `…256…` of
    the released names (tokenizer_imagenet256_checkpoint)."""
    opts: dict[str, Any] = {}
    m = re.search(r"(\d+)_checkpoint$", path.name)
    if m:
        opts["image_size"] = int(m.group(1))
    cfg = path.parent / "config.json"
    if cfg.is_file():
        try:
            raw = json.loads(cfg.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raw = {}
        if isinstance(raw, dict) and isinstance(raw.get("vqvae"), dict):
            if "image_size" in raw:
                opts["image_size"] = int(raw["image_size"])
            if raw["vqvae"].get("activation_fn") in ("swish", "relu"):
                opts["activation"] = raw["vqvae"]["activation_fn"]
    return opts


def find_maskgit_checkpoint(folder: Path, kind: Literal["tokenizer", "maskgit"]) -> Path:
    """The tokenizer or transformer checkpoint file in a folder of released MaskGIT files."""
    hits = sorted(p for p in folder.glob(f"{kind}_*checkpoint") if p.is_file())
    hits += [p for p in [folder / f"{kind}_checkpoint"] if p.is_file() and p not in hits]
    if not hits:
        raise FileNotFoundError(
            f"no MaskGIT {kind} checkpoint in {folder}; expected e.g. "
            f"{kind}_imagenet256_checkpoint (docs/maskgit.md says where to get it)"
        )
    return hits[0]


def load_maskgit_tokenizer(path: str | Path, **overrides: Any) -> MaskGITTokenizer:
    """MaskGIT's tokenizer from its checkpoint file or a folder holding it; `overrides` set
    TokenizerConfig fields the weights do not show (image_size, activation)."""
    path = Path(path)
    if path.is_dir():
        path = find_maskgit_checkpoint(path, "tokenizer")
    params = read_maskgit_params(path, "tokenizer")
    config = infer_tokenizer_config(params, **(_sidecar_options(path) | overrides))
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    return MaskGITTokenizer(config, params)


def load_maskgit(
    folder: str | Path,
    class_names: Sequence[str] | None = None,
    tokenizer: str | Path | None = None,
    transformer: str | Path | None = None,
    **overrides: Any,
) -> MaskGITVQGM:
    """The tokenizer + transformer from a folder holding MaskGIT's checkpoint files (or the two
    paths). Class names default to ImageNet's for 1000 classes, class0… otherwise."""
    folder = Path(folder)
    tok = load_maskgit_tokenizer(
        tokenizer or find_maskgit_checkpoint(folder, "tokenizer"), **overrides
    )
    tparams = read_maskgit_params(
        transformer or find_maskgit_checkpoint(folder, "maskgit"), "transformer"
    )
    tcfg = infer_transformer_config(tparams, tok.config.codebook_size)
    if class_names is None:
        if tcfg.num_classes == 1000:
            class_names = [c.name for c in imagenet.classes()]
        else:
            class_names = [f"class{i}" for i in range(tcfg.num_classes)]
    tparams = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), tparams)
    return MaskGITVQGM("maskgit", tok, tcfg, tparams, tuple(class_names))


_LLAMAGEN_WRAPPERS = ("model", "module", "state_dict")  # as sample_c2i.py tries them


def unwrap_llamagen_checkpoint(obj: Any, path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The state dict inside a loaded LlamaGen file: under "model" (DDP releases, the VQ),
    "module" (DeepSpeed) or "state_dict", else the file itself (FSDP releases: XXL, 3B)."""
    if isinstance(obj, Mapping):
        for key in _LLAMAGEN_WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}; expected a state dict")
    sd = {str(k): np.asarray(v) for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not sd:
        raise ValueError(
            f"{path} holds no tensors under {', '.join(_LLAMAGEN_WRAPPERS)} or at the top level; "
            "expected a LlamaGen checkpoint"
        )
    return sd


def is_llamagen_tokenizer(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state dict is LlamaGen's VQModel (its `conv_blocks` naming)."""
    return any(k.startswith("encoder.conv_blocks.") for k in state_dict)


def llamagen_tokenizer(
    state_dict: Mapping[str, np.ndarray], source: str, image_size: int = 256
) -> LlamaGenTokenizer:
    """LlamaGenTokenizer from its state dict, the architecture read from the shapes and every
    tensor checked against it (one line naming the first bad one)."""
    params = convert_llamagen_vq_state_dict(state_dict)
    config = infer_llamagen_tokenizer_config(params, image_size)
    check_params(params, tokenizer_param_shapes(config), source=source)
    return LlamaGenTokenizer(config, _as_float32_tree(params))


def load_llamagen_tokenizer(path: str | os.PathLike, image_size: int = 256) -> LlamaGenTokenizer:
    """LlamaGen's tokenizer (vq_ds16_c2i.pt, vq_ds8_c2i.pt, …) read without torch; `image_size`
    (not stored in the file) sets the token grid: 256 → 16×16 for the ds16 tokenizer."""
    sd = unwrap_llamagen_checkpoint(torch_pickle.read_torch_file(path), path)
    if not is_llamagen_tokenizer(sd):
        raise ValueError(
            f"{path} is not a LlamaGen tokenizer (no encoder.conv_blocks.* tensors); expected "
            "e.g. vq_ds16_c2i.pt"
        )
    return llamagen_tokenizer(sd, str(path), image_size)


def llamagen_gpt_options(config: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """LlamaGen ModelArgs fields from a preset name (GPT-B, GPT-L, GPT-XL, GPT-XXL, GPT-3B,
    GPT-XXXL), a mapping, or a JSON file holding them (top level, under "model_args", or
    under "gpt" → "model_args" as in the fixtures' config.json); {} for None."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        opts = dict(config)
    elif str(config) in GPT_PRESETS:
        return dict(GPT_PRESETS[str(config)])
    else:
        path = Path(config)
        if not path.is_file():
            raise ValueError(
                f"GPT config {str(config)!r} is neither a preset {sorted(GPT_PRESETS)} nor a "
                "JSON file"
            )
        try:
            opts = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not JSON; expected LlamaGen ModelArgs") from None
        if not isinstance(opts, dict):
            raise ValueError(f"{path} holds a {type(opts).__name__}; expected a JSON object")
        opts = opts.get("gpt", opts)
        opts = opts.get("model_args", opts)
    if opts.get("model_type", "c2i") != "c2i":
        raise ValueError(f"model_type {opts['model_type']!r}; only class-conditional c2i is ported")
    return opts


def load_llamagen(
    gpt_checkpoint: str | os.PathLike,
    vq_checkpoint: str | os.PathLike,
    *,
    config: str | os.PathLike | Mapping[str, Any] | None = None,
    image_size: int | None = None,
    class_names: Sequence[str] | None = None,
    dtype: Any = jnp.float32,
) -> LlamaGenVQGM:
    """LlamaGen's class-conditional model from its GPT (c2i_B_256.pt, …, c2i_3B_384.pt) and
    tokenizer (vq_ds16_c2i.pt) files, read without torch.

    The GPT's width, depth, vocabulary, classes and feed-forward width come from the tensor
    shapes; the head count from `config` (a preset name, ModelArgs mapping or JSON file) or the
    preset of the same width and depth. The image size (hence the token grid and block_size) is
    `image_size`, else the config's block_size, else the `_256`/`_384` of the file name, else
    256. Class names default to ImageNet's for 1000 classes. `dtype=jnp.bfloat16` runs the GPT
    as LlamaGen's `--precision bf16` (weights and activations bf16, RMSNorm/RoPE in float32).
    """
    opts = llamagen_gpt_options(config)
    gsd = unwrap_llamagen_checkpoint(torch_pickle.read_torch_file(gpt_checkpoint), gpt_checkpoint)
    if is_llamagen_tokenizer(gsd):
        raise ValueError(
            f"{gpt_checkpoint} is the tokenizer; pass the GPT (e.g. c2i_L_256.pt) first and the "
            "tokenizer second"
        )
    vq = load_llamagen_tokenizer(vq_checkpoint)
    f = vq.config.downsample_factor
    if image_size is None:
        named = re.search(r"_(\d+)\.pth?$", Path(gpt_checkpoint).name)
        if "block_size" in opts:
            image_size = math.isqrt(int(opts["block_size"])) * f
        elif named:
            image_size = int(named.group(1))
        else:
            image_size = 256
    if image_size % f:
        raise ValueError(f"image_size {image_size} is not a multiple of the tokenizer's {f}")
    opts["block_size"] = (image_size // f) ** 2
    vq = dataclasses.replace(vq, config=dataclasses.replace(vq.config, image_size=image_size))
    gparams = convert_llamagen_gpt_state_dict(gsd)
    gcfg = infer_llamagen_gpt_config(gparams, opts)
    check_llamagen_gpt_state_dict(gsd, gcfg, str(gpt_checkpoint))
    if class_names is None:
        if gcfg.num_classes == 1000:
            from cortex_jax.core import imagenet

            class_names = [c.name for c in imagenet.classes()]
        else:
            class_names = [f"class{i}" for i in range(gcfg.num_classes)]
    return LlamaGenVQGM("llamagen", vq, gcfg, gparams, tuple(class_names), dtype)


def load_dallebart(source: str | os.PathLike) -> tuple[DalleBartConfig, dict]:
    """A local folder, or a Hugging Face repo id (dalle-mini/dalle-mini, dalle-mini/dalle-mega)."""
    path = Path(source)
    if path.is_dir():
        return read_dallebart_folder(path)
    from cortex_jax.io.folders import hub_folder

    return read_dallebart_folder(hub_folder(str(source)))


def load_bart_tokenizer(folder: str | os.PathLike) -> Any:
    """BartTokenizerFast from a folder holding the dalle-mini repo's tokenizer files."""
    from transformers import BartTokenizerFast

    return BartTokenizerFast.from_pretrained(str(folder))


def load_dallebart_vqgm(
    dallebart: str | os.PathLike,
    tokenizer: str | os.PathLike,
    vqgan: str | os.PathLike = "imagenet_f16_16384",
) -> DalleBartVQGM:
    """DalleBart (folder or repo id, `load_dallebart`), its BART tokenizer files
    (`load_bart_tokenizer`) and the VQGAN whose codes it draws (any `load_vqgan` source) as one
    `DalleBartVQGM`, read in that order."""
    cfg, params = load_dallebart(dallebart)
    tok = load_bart_tokenizer(tokenizer)
    vq = load_vqgan(vqgan)
    check_dallebart_vqgan(cfg, vq.config, f"{dallebart} with {vqgan}")
    return DalleBartVQGM("dallebart", cfg, params, lambda t: tok(t)["input_ids"], vq)


def check_dallebart_vqgan(cfg: DalleBartConfig, vq: VQGANConfig, what: str) -> None:
    """One line if DalleBart `cfg` cannot draw the codes of the VQGAN with config `vq`: its image
    vocabulary must be the VQGAN's codebook (a smaller one never draws the last rows, a larger one
    draws ids the sampler masks out). The grid is not checked: the VQGAN is convolutional and
    decodes DalleBart's √image_length grid at any nominal resolution (the tiny fixtures pair a
    4×4 DalleBart with a VQGAN of nominal grid 16)."""
    if cfg.image_vocab_size != vq.n_embed:
        raise ValueError(
            f"{what}: DalleBart's image_vocab_size={cfg.image_vocab_size} is not the VQGAN's "
            f"codebook size n_embed={vq.n_embed}; give the VQGAN it was trained with"
        )


def _check_classifier(config: ResNetConfig, variables, source) -> None:
    from cortex_jax.io.folders import check_params

    want = jax.eval_shape(lambda: init_variables(config))
    for col in ("params", "batch_stats"):
        check_params(variables.get(col, {}), want[col], f"{source} ({col})")


def load_classifier(
    source: str | os.PathLike, image_size: int = 224
) -> tuple[ResNetConfig, dict, Callable[[np.ndarray], np.ndarray]]:
    """(config, variables, probabilities) from a torchvision `.pth`/`.pt` state dict, a folder
    written by `save_classifier`, or 'random:ARCH[:n_classes[:width]]'."""

    s = str(source)
    if s.startswith("random:"):
        parts = s.split(":")[1:]
        kw = {"image_size": image_size}
        if len(parts) > 1:
            kw["n_classes"] = int(parts[1])
        if len(parts) > 2:
            kw["width"] = int(parts[2])
        config = ResNetConfig.named(parts[0], **kw)
        variables = trees.random_init(lambda: init_variables(config))
        return config, variables, probabilities_fn(config, variables)
    path = Path(s)
    if paths.is_remote(s):
        cfg_dict, variables = folders.read_model_folder(_remote_folder(s, "classifier"))
        config = ResNetConfig.from_dict(cfg_dict)
    elif path.is_dir():
        cfg_dict, variables = folders.read_model_folder(path, "classifier")
        config = ResNetConfig.from_dict(cfg_dict)
    elif path.is_file():
        sd = torch_pickle.read_state_dict(path)
        config = infer_resnet_config(sd, image_size)
        variables = convert_torchvision_state_dict(sd)
    else:
        raise FileNotFoundError(
            f"classifier not found: {s!r}; expected a torchvision ResNet state dict (e.g. "
            "resnet50-0676ba61.pth from download.pytorch.org/models), a folder written by "
            "save_classifier, or random:resnet18"
        )
    _check_classifier(config, variables, s)
    variables = jax.tree.map(jnp.asarray, variables)
    return config, variables, probabilities_fn(config, variables)


_IEM_FILE_SUFFIXES = (".pth", ".pt", ".ckpt", ".npz")


def load_iem(
    source: str | os.PathLike,
    arch: Literal["ce", "re", "te"] | None = None,
    heads: int = 8,
) -> tuple[IEMConfig, dict, dict[str, Any]]:
    """(config, {'params', 'batch_stats'}, meta) of an IEM: a folder written by train.iem, or the
    CORTEX authors' trained IEM, a `.pth` state dict of their ClassificationNet1 / 3 / 4 (CE / RE
    / TE), read by the restricted torch reader (nothing in the file runs) and converted
    (`io.convert.convert_authors_iem`). The architecture is read off the file; `arch`, when given,
    must agree. `heads` is TE's head count, which shapes cannot show (Net4: 8). meta holds
    `class_names` (ImageNet's for 1000 classes, else class0, class1, …) and the `vqgan` it reads."""
    if arch is not None and arch not in ARCHITECTURES:
        raise ValueError(f"unknown IEM architecture {arch!r}; expected one of ce, re, te")
    remote = paths.is_remote(source)
    path = _remote_folder(os.fspath(source), "IEM") if remote else Path(source)
    if remote or path.is_dir():
        config, variables, meta = folders.read_iem_folder(path)
        if arch is not None and config.arch != arch:
            raise ValueError(f"{path} holds a {config.arch.upper()} IEM, not {arch.upper()}")
        return config, variables, meta
    if not path.is_file():
        raise FileNotFoundError(
            f"IEM not found: {str(source)!r}; expected a folder written by train.iem or the "
            f"authors' state dict ({', '.join(_IEM_FILE_SUFFIXES)})"
        )
    sd = read_state_dict(path)
    try:
        found = authors_iem_arch(sd)
        if arch is not None and found != arch:
            raise ValueError(
                f"it holds the authors' {found.upper()}, not {arch.upper()} (--iem {arch})"
            )
        config, grid, dim = infer_authors_iem_config(sd, heads=heads)
        variables = convert_authors_iem(sd, config, grid)
        expected = jax.eval_shape(
            lambda: init_iem_variables(config, jax.random.PRNGKey(0), grid, dim)
        )
        for col in ("params", "batch_stats"):
            check_params(variables[col], expected[col], f"{path} ({col})")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    names = (
        [c.name for c in imagenet.classes()]
        if config.n_classes == len(imagenet.classes())
        else [f"class{i}" for i in range(config.n_classes)]
    )
    vqgan = "imagenet_f16_16384" if (grid, dim) == (16, 256) else None
    meta = {"iem": config.to_dict(), "class_names": names, "vqgan": vqgan, "source": str(path)}
    return config, jax.tree.map(jnp.asarray, variables), meta
