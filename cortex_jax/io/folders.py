"""Our model folders, the Hugging Face cache, and the folder formats we share with others.

A model folder is `config.json` + `flax_model.msgpack` (vqgan-jax's and dalle-mini's format,
written atomically): `read_model_folder` / `write_model_folder`, and on top of them the VQGAN
(`read_vqgan_folder`, `save_vqgan`), the cin GPT prior (`read_gpt_folder`), the IEM
(`read_iem_folder`, `write_iem_folder`: config + variables + the class names and VQGAN it was
trained for), the ResNet classifier (`save_classifier`) and DalleBart (`read_dallebart_folder`,
scanned or per-layer layout). `check_params` compares a parameter tree with the shapes a config
implies and names the first difference. `hub_folder(repo_id)` finds a repo's files in the
Hugging Face cache, downloading them when allowed, or raises one line with the manual fix.

Output folders: every command that takes `--out` (or `--workdir`) writes into it only through
`claim_output` / `finish_output`, which keep a manifest (OWNER_NAME) of the files that command
wrote there. A folder holding a file the command did not write, or another command's output, is
refused in one line before any work; a command only ever deletes or overwrites its own files.
A command whose writers go through epath (train.iem's workdir, the atlas) passes `remote_ok` and
may be given a gs:// folder: the manifest then lists the objects under that prefix and dates them
by the store's clock; the others refuse a URL in one line.
A single output file (explain.edit's PNG) carries a hidden sidecar with its owner and checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import serialization

from cortex_jax.core import paths
from cortex_jax.core.errors import writable_folder
from cortex_jax.core.trees import flatten_paths, unflatten_paths
from cortex_jax.io import shards
from cortex_jax.io.shards import atomic_write_bytes, atomic_write_json, clean_stale_temps
from cortex_jax.models.cin import GPTConfig
from cortex_jax.models.cin import init_params as gpt_init_params
from cortex_jax.models.classifier import ResNetConfig
from cortex_jax.models.dalle import DalleBartConfig
from cortex_jax.models.iem import IEMConfig
from cortex_jax.models.vqgan import VQGAN, VQGANConfig, VQTokenizer, param_shapes

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


def _require_file(path: Any, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_model_folder(folder: str | os.PathLike, what: str = "model") -> tuple[dict, dict]:
    """(config dict, parameter tree) from a folder with config.json + flax_model.msgpack (local,
    or gs://)."""
    root = paths.of(folder)
    cfg_path = _require_file(root / CONFIG_NAME, f"{what} config")
    w_path = _require_file(root / WEIGHTS_NAME, f"{what} weights")
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


def read_vqgan_folder(folder: str | os.PathLike, dtype: Any = jnp.float32) -> VQTokenizer:
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
                f"{paths.of(folder) / CONFIG_NAME} is not a LlamaGen config: {e}"
            ) from None
        shapes = llamagen.tokenizer_param_shapes(tcfg)
        check_params(params, shapes, source=str(paths.of(folder) / WEIGHTS_NAME))
        return llamagen.LlamaGenTokenizer(tcfg, _as_float32_tree(params))
    try:
        config = VQGANConfig.from_dict(raw)
    except TypeError as e:
        raise ValueError(
            f"{paths.of(folder) / CONFIG_NAME} is not a vqgan-jax config: {e}"
        ) from None
    check_params(params, config, source=str(paths.of(folder) / WEIGHTS_NAME))
    return VQGAN(config, _as_float32_tree(params), dtype)


def write_model_folder(
    folder: str | os.PathLike, config: Mapping[str, Any], params: Mapping[str, Any]
) -> Path:
    """Writes config.json + flax_model.msgpack (local, or gs://); each file appears whole or not
    at all."""
    root = paths.of(folder)
    if not paths.is_remote(root):
        root.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(root)
    flat = {k: np.asarray(v) for k, v in flatten_paths(params).items()}
    atomic_write_bytes(root / WEIGHTS_NAME, serialization.msgpack_serialize(unflatten_paths(flat)))
    atomic_write_json(root / CONFIG_NAME, dict(config))
    return root


def save_vqgan(vqgan: VQTokenizer, folder: str | os.PathLike) -> Path:
    """Writes `folder/config.json` + `folder/flax_model.msgpack` (vqgan-jax format) atomically."""
    return write_model_folder(folder, vqgan.config.to_dict(), vqgan.params)


def read_gpt_folder(folder: str | os.PathLike) -> tuple[GPTConfig, dict]:
    """A cin-style GPT prior saved by `write_model_folder(folder, config.to_dict(), params)`."""
    raw, params = read_model_folder(folder, "GPT prior")
    try:
        config = GPTConfig(**raw)
    except TypeError as e:
        raise ValueError(f"{paths.of(folder) / CONFIG_NAME} is not a GPT config: {e}") from None
    expected = jax.eval_shape(lambda: gpt_init_params(config, jax.random.PRNGKey(0)))
    check_params(params, expected, source=str(paths.of(folder) / WEIGHTS_NAME))
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
        raise ValueError(f"{paths.of(folder) / CONFIG_NAME} is not an IEM config: {e}") from None
    return config, _as_float32_tree(variables), raw


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_cli() -> str:
    """The download command the installed huggingface_hub ships: `hf download` (1.0 and later) or
    `huggingface-cli download` (older releases)."""
    from importlib import metadata

    try:
        scripts = {e.name for e in metadata.distribution("huggingface_hub").entry_points}
    except metadata.PackageNotFoundError:
        scripts = set()
    return "huggingface-cli download" if "hf" not in scripts and scripts else "hf download"


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout` seconds: a short probe,
    so an offline machine fails at once instead of after the client's retries."""
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_folder(repo_id: str, filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> Path:
    """Local folder holding `filenames` of `repo_id`: from the cache, else downloaded.

    Raises FileNotFoundError with the manual fix when the files are neither cached nor reachable;
    offline (HF_HUB_OFFLINE, or the hub's host not answering a 3 s probe) it fails at once.
    """
    import huggingface_hub
    from huggingface_hub import constants

    cached = [huggingface_hub.try_to_load_from_cache(repo_id, f) for f in filenames]
    if all(isinstance(p, str) for p in cached):
        return Path(str(cached[0])).parent
    if constants.HF_HUB_OFFLINE:
        cause = "HF_HUB_OFFLINE is set"
    elif not hub_reachable(constants.ENDPOINT):
        cause = f"{constants.ENDPOINT} is not reachable from here"
    else:
        try:
            paths = [huggingface_hub.hf_hub_download(repo_id, f) for f in filenames]
            return Path(paths[0]).parent
        except Exception as e:  # network errors come in many types; all mean "not available"
            cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    cache = constants.HF_HUB_CACHE
    raise FileNotFoundError(
        f"{repo_id}: {', '.join(filenames)} not in the Hugging Face cache {cache} and could not be "
        f"downloaded ({cause}); download them on a connected machine with "
        f"`{hub_cli()} {repo_id} {' '.join(filenames)}` and copy its cache folder over, or place "
        f"them in a local folder and pass its path instead of the repo id"
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


OWNER_NAME = ".cortex-jax-owner.json"


def _read_owner(folder: epath.Path) -> dict[str, Any] | None:
    path = folder / OWNER_NAME
    if not path.is_file():
        return None
    try:
        owner = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        owner = None
    if not isinstance(owner, dict) or not isinstance(owner.get("files"), list):
        raise ValueError(f"{path} is damaged; move the folder aside and rerun")
    return owner


_DESKTOP_FILES = {".DS_Store", "Thumbs.db", "desktop.ini"}  # a file browser's, never deleted


def _present(folder: epath.Path) -> list[str]:
    """Every file under `folder` (relative, sorted); the manifest, our temp files and the files a
    desktop's file browser leaves aside."""
    out = []
    for name in shards.list_files(folder):
        base = name.rsplit("/", 1)[-1]
        temp = base.startswith(".") and base.endswith(".tmp") and "~" in base
        if base != OWNER_NAME and base not in _DESKTOP_FILES and not temp:
            out.append(name)
    return out


def _owned(folder: epath.Path, owner: dict[str, Any], present: list[str]) -> set[str]:
    """The files of `present` that the manifest's command wrote: those it lists, and, after a run
    that was interrupted before `finish_output`, those written since that run claimed the folder
    (on a bucket, by the store's clock: since the manifest object was written)."""
    owned = set(owner["files"]) & set(present)
    if not owner.get("complete", True):
        since = float(owner.get("started", 0.0))
        if paths.is_remote(folder):
            since = shards.modified(folder / OWNER_NAME)
        owned |= {f for f in present if shards.modified(folder / f) >= since}
    return owned


def _local_only(path: str | os.PathLike, command: str, flag: str) -> None:
    # The commands whose writers still take local paths only: a URL is refused before any work
    # (it used to become a local folder named `gs:`).
    if paths.is_remote(path):
        paths.of(path, flag)  # another scheme than gs:// is refused as such
        raise ValueError(
            f"{flag} {os.fspath(path)}: {command} writes local folders only; give a local path"
        )


def check_output(
    path: str | os.PathLike, command: str, flag: str = "--out", remote_ok: bool = False
) -> epath.Path:
    """Raises a one-line ValueError unless `path` is absent, an empty folder, or a folder holding
    only files that `command` wrote there. Creates and writes nothing: call it before any work.
    `remote_ok`: `path` may be a gs:// URL (the command writes there through epath); otherwise a
    URL is refused in one line."""
    if not remote_ok:
        _local_only(path, command, flag)
    root = paths.of(path, flag)
    if root.exists() and not root.is_dir():
        raise ValueError(f"{flag} {root} is a file; expected a folder to write into")
    if not root.exists():
        return root
    present = _present(root)
    owner = _read_owner(root)
    if owner is None:
        if present:
            raise ValueError(
                f"{flag} {root} already holds files {command} did not write ({present[0]}"
                + (f" and {len(present) - 1} more" if len(present) > 1 else "")
                + "); it never deletes or overwrites them: choose a new or empty folder"
            )
        return root
    if owner.get("command") != command:
        raise ValueError(
            f"{flag} {root} holds the output of {owner.get('command')}; choose another folder "
            f"for {command}"
        )
    foreign = sorted(set(present) - _owned(root, owner, present))
    if foreign:
        raise ValueError(
            f"{flag} {root} holds {foreign[0]}, which {command} did not write; move it away or "
            "choose another folder"
        )
    return root


def claim_output(
    path: str | os.PathLike,
    command: str,
    flag: str = "--out",
    rebuild: bool = False,
    remote_ok: bool = False,
) -> epath.Path:
    """Checks `path` (`check_output`), creates it and marks it as `command`'s, with a run in
    progress. `rebuild`: first delete the files `command` wrote there earlier (and only those).
    `remote_ok`: as for `check_output`."""
    root = check_output(path, command, flag, remote_ok)
    remote = paths.is_remote(root)
    if not remote:  # a bucket has no folders to create; its writes are checked as they happen
        writable_folder(root, flag)
    owner = _read_owner(root)
    present = _present(root)
    owned = _owned(root, owner, present) if owner else set()
    if rebuild:
        for name in sorted(owned):
            (root / name).unlink(missing_ok=True)
            d = (root / name).parent
            while not remote and d != root and d.is_dir() and not any(d.iterdir()):
                d.rmdir()  # folders it emptied
                d = d.parent
        owned = set()
    mark = {"command": command, "files": sorted(owned), "complete": False, "started": time.time()}
    atomic_write_json(root / OWNER_NAME, mark)
    return root


def finish_output(path: str | os.PathLike, command: str) -> None:
    """Records every file now under `path` as written by `command` (call it when the run ends)."""
    root = paths.of(path)
    atomic_write_json(
        root / OWNER_NAME, {"command": command, "files": _present(root), "complete": True}
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.cortex-jax.json")


def sha256_of(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, or of a folder's files (relative names and bytes, in name
    order); local or gs://."""
    root = paths.of(path)
    digest = hashlib.sha256()
    if root.is_dir():
        names = [n for n in shards.list_files(root) if (root / n).is_file()]
        files = [(n, root / n) for n in sorted(names, key=lambda n: n.split("/"))]
    else:
        files = [("", root)]
    for name, f in files:
        if name:
            digest.update(name.encode())
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_output_file(path: str | os.PathLike, command: str, flag: str = "--out") -> Path:
    """Raises a one-line ValueError if `path` exists and is not the file `command` wrote there
    (its sidecar names the command and the file's checksum). Creates nothing."""
    _local_only(path, command, flag)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; expected the file to write")
    if path.exists() or path.is_symlink():
        side = _sidecar(path)
        try:
            mark = json.loads(side.read_text())
            ours = mark["command"] == command and mark["sha256"] == _sha256(path)
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise ValueError(
                f"{flag} {path} already exists and {command} did not write it; it never "
                "overwrites it: choose another file name"
            )
    return path


def finish_output_file(path: str | os.PathLike, command: str) -> None:
    """Records `path` (just written) as `command`'s, so a rerun may overwrite it."""
    path = Path(path)
    atomic_write_json(_sidecar(path), {"command": command, "sha256": _sha256(path)})
