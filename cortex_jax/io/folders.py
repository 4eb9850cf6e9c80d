"""Our model folders, the Hugging Face cache, and the folder formats we share with others.

A model folder is `config.json` + `flax_model.msgpack` (vqgan-jax's and dalle-mini's format,
written atomically): `read_model_folder` / `write_model_folder`, and on top of them the VQGAN
(`read_vqgan_folder`, `save_vqgan`), the cin GPT prior (`read_gpt_folder`), the IEM
(`read_iem_folder`, `write_iem_folder`: config + variables + the class names and VQGAN it was
trained for), the ResNet classifier (`save_classifier`) and DalleBart (`read_dallebart_folder`,
scanned or per-layer layout). `check_params` compares a parameter tree with the shapes a config
implies and names the first difference. `hub_folder(repo_id)` finds a repo's files in the
Hugging Face cache, downloading them when allowed, or raises one line with the manual fix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from cortex_jax.core.trees import flatten_paths, unflatten_paths
from cortex_jax.io.shards import atomic_write_bytes, atomic_write_json, clean_stale_temps
from cortex_jax.models.cin import GPTConfig
from cortex_jax.models.cin import init_params as gpt_init_params
from cortex_jax.models.classifier import ResNetConfig
from cortex_jax.models.dalle import DalleBartConfig
from cortex_jax.models.iem import IEMConfig
from cortex_jax.models.vqgan import VQGAN, VQGANConfig, param_shapes

CONFIG_NAME = "config.json"


WEIGHTS_NAME = "flax_model.msgpack"


def check_params(
    params: Mapping[str, Any], config: VQGANConfig | Mapping[str, Any], source: str = "checkpoint"
) -> None:
    """Raises ValueError naming the first parameter that is missing, extra or mis-shaped.

    `config` is a VQGANConfig or the expected tree itself (arrays or ShapeDtypeStructs).
    """
    tree = param_shapes(config) if isinstance(config, VQGANConfig) else config
    expected = flatten_paths(tree)
    found = flatten_paths(params)
    missing = sorted(set(expected) - set(found))
    if missing:
        first = missing[0]
        raise ValueError(
            f"{source} lacks parameter {first} (expected shape {tuple(expected[first].shape)})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    extra = sorted(set(found) - set(expected))
    if extra:
        raise ValueError(
            f"{source} has parameter {extra[0]} that the config does not define"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for path in sorted(expected):
        want, got = tuple(expected[path].shape), tuple(np.shape(found[path]))
        if want != got:
            raise ValueError(
                f"{source}: parameter {path} has shape {got} but the config expects {want}"
            )


def _as_float32_tree(params: Mapping[str, Any]) -> dict:
    return unflatten_paths(
        {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in flatten_paths(params).items()}
    )


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_model_folder(folder: str | os.PathLike, what: str = "model") -> tuple[dict, dict]:
    """(config dict, parameter tree) from a folder with config.json + flax_model.msgpack."""
    folder = Path(folder)
    cfg_path = _require_file(folder / CONFIG_NAME, f"{what} config")
    w_path = _require_file(folder / WEIGHTS_NAME, f"{what} weights")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from None
    try:
        params = serialization.msgpack_restore(w_path.read_bytes())
    except Exception as e:  # msgpack raises several unrelated types on corrupt input
        raise ValueError(f"{w_path} is not a readable flax msgpack file: {e}") from None
    if "params" in params and len(params) == 1:  # tolerate a {'params': ...} wrapper
        params = params["params"]
    return config, params


def read_vqgan_folder(folder: str | os.PathLike, dtype: Any = jnp.float32) -> VQGAN:
    """Loads a vqgan-jax folder (config.json + flax_model.msgpack); a folder `save_vqgan` wrote
    for a LlamaGen tokenizer (config with `"family": "llamagen"`) loads as that tokenizer."""
    raw, params = read_model_folder(folder, "VQGAN")
    if raw.get("family") == "llamagen":
        from cortex_jax.models import llamagen

        fields = {k: v for k, v in raw.items() if k != "family"}
        try:
            tcfg = llamagen.TokenizerConfig(**fields)
        except TypeError as e:
            raise ValueError(
                f"{Path(folder) / CONFIG_NAME} is not a LlamaGen config: {e}"
            ) from None
        shapes = llamagen.tokenizer_param_shapes(tcfg)
        check_params(params, shapes, source=str(Path(folder) / WEIGHTS_NAME))
        return llamagen.LlamaGenTokenizer(tcfg, _as_float32_tree(params))
    try:
        config = VQGANConfig.from_dict(raw)
    except TypeError as e:
        raise ValueError(f"{Path(folder) / CONFIG_NAME} is not a vqgan-jax config: {e}") from None
    check_params(params, config, source=str(Path(folder) / WEIGHTS_NAME))
    return VQGAN(config, _as_float32_tree(params), dtype)


def write_model_folder(
    folder: str | os.PathLike, config: Mapping[str, Any], params: Mapping[str, Any]
) -> Path:
    """Writes config.json + flax_model.msgpack; each file appears whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    flat = {k: np.asarray(v) for k, v in flatten_paths(params).items()}
    atomic_write_bytes(
        folder / WEIGHTS_NAME, serialization.msgpack_serialize(unflatten_paths(flat))
    )
    atomic_write_json(folder / CONFIG_NAME, dict(config))
    return folder


def save_vqgan(vqgan: VQGAN, folder: str | os.PathLike) -> Path:
    """Writes `folder/config.json` + `folder/flax_model.msgpack` (vqgan-jax format) atomically."""
    return write_model_folder(folder, vqgan.config.to_dict(), vqgan.params)


def read_gpt_folder(folder: str | os.PathLike) -> tuple[GPTConfig, dict]:
    """A cin-style GPT prior saved by `write_model_folder(folder, config.to_dict(), params)`."""
    raw, params = read_model_folder(folder, "GPT prior")
    try:
        config = GPTConfig(**raw)
    except TypeError as e:
        raise ValueError(f"{Path(folder) / CONFIG_NAME} is not a GPT config: {e}") from None
    expected = jax.eval_shape(lambda: gpt_init_params(config, jax.random.PRNGKey(0)))
    check_params(params, expected, source=str(Path(folder) / WEIGHTS_NAME))
    return config, _as_float32_tree(params)


def write_iem_folder(
    folder: str | os.PathLike,
    config: IEMConfig,
    variables: Mapping[str, Any],
    class_names: Sequence[str],
    vqgan: str,
) -> Path:
    """An IEM as config.json (architecture, class names, the VQGAN it reads) + msgpack."""
    meta = {"iem": config.to_dict(), "class_names": list(class_names), "vqgan": vqgan}
    return write_model_folder(folder, meta, variables)


def read_iem_folder(folder: str | os.PathLike) -> tuple[IEMConfig, dict, dict[str, Any]]:
    """(config, {'params', 'batch_stats'}, meta with class_names and vqgan) of an IEM folder."""
    raw, variables = read_model_folder(folder, "IEM")
    try:
        config = IEMConfig(**raw["iem"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{Path(folder) / CONFIG_NAME} is not an IEM config: {e}") from None
    return config, _as_float32_tree(variables), raw


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_folder(repo_id: str, filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> Path:
    """Local folder holding `filenames` of `repo_id`: from the cache, else downloaded.

    Raises FileNotFoundError with the manual fix when the files are neither cached nor reachable.
    """
    import huggingface_hub
    from huggingface_hub import constants

    cached = [huggingface_hub.try_to_load_from_cache(repo_id, f) for f in filenames]
    if all(isinstance(p, str) for p in cached):
        return Path(str(cached[0])).parent
    offline = constants.HF_HUB_OFFLINE
    cause = "HF_HUB_OFFLINE is set"
    if not offline:
        try:
            paths = [huggingface_hub.hf_hub_download(repo_id, f) for f in filenames]
            return Path(paths[0]).parent
        except Exception as e:  # network errors come in many types; all mean "not available"
            cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    cache = constants.HF_HUB_CACHE
    raise FileNotFoundError(
        f"{repo_id}: {', '.join(filenames)} not in the Hugging Face cache {cache} and could not be "
        f"downloaded ({cause}); download them elsewhere with "
        f"`huggingface-cli download {repo_id} {' '.join(filenames)}` and copy the cache folder "
        f"over, or place them in a local folder and pass its path instead of the repo id"
    )


def _layer_list(layers: dict, prefix: str) -> list[dict]:
    """Per-layer trees from either layout: '…Layers' (stacked on axis 0) or '…Layer_{i}'."""
    if f"{prefix}s" in layers:
        stacked = layers[f"{prefix}s"]
        n = jax.tree_util.tree_leaves(stacked)[0].shape[0]
        return [jax.tree_util.tree_map(lambda x, i=i: x[i], stacked) for i in range(n)]
    keys = sorted(
        (k for k in layers if re.fullmatch(f"{prefix}_\\d+", k)),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    return [layers[k] for k in keys]


def read_dallebart_folder(folder: str | os.PathLike) -> tuple[DalleBartConfig, dict]:
    """dalle-mini's config.json + flax_model.msgpack, scanned or per layer."""
    folder = Path(folder)
    cfg_path, w_path = folder / "config.json", folder / "flax_model.msgpack"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"DalleBart file not found: {p}")
    cfg = DalleBartConfig.from_dict(json.loads(cfg_path.read_text()))
    params = serialization.msgpack_restore(w_path.read_bytes())
    n = {"encoder": cfg.encoder_layers, "decoder": cfg.decoder_layers}
    for part, prefix in (("encoder", "FlaxBartEncoderLayer"), ("decoder", "FlaxBartDecoderLayer")):
        layers = _layer_list(params["model"][part]["layers"], prefix)
        if len(layers) != n[part]:
            raise ValueError(
                f"{w_path}: {part} has {len(layers)} layers but config.json says {n[part]}"
            )
        params["model"][part]["layers"] = layers
    emb = params["model"]["decoder"]["embed_tokens"]["embedding"]
    if emb.shape[0] != cfg.image_vocab_size + 1:
        raise ValueError(
            f"{w_path}: decoder embedding has {emb.shape[0]} rows; expected "
            f"image_vocab_size + 1 = {cfg.image_vocab_size + 1}"
        )
    return cfg, jax.tree_util.tree_map(jnp.asarray, params)


def save_classifier(
    folder: str | os.PathLike, config: ResNetConfig, variables: Mapping[str, Any]
) -> Path:
    """A folder (config.json + flax_model.msgpack) that `load_classifier` reads."""

    return write_model_folder(folder, config.to_dict(), jax.tree.map(np.asarray, variables))
