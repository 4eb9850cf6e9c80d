"""Loading and saving VQGAN weights in the formats people have.

`load_vqgan(source)` accepts:
  - a preset or packaged name: `"imagenet_f16_16384"` (fetched from its Hugging Face repo) or
    `"toy"` (the toy world's weights shipped inside the package);
  - a local folder in vqgan-jax format (`config.json` + `flax_model.msgpack`);
  - a Hugging Face repo id such as `"dalle-mini/vqgan_imagenet_f16_16384"` (a cache hit works
    offline; a miss offline raises one error naming the repo, the cache folder and the manual fix);
  - a taming-transformers checkpoint: a Lightning `.ckpt` (read without torch by a restricted
    unpickler that builds numpy arrays and runs no code from the file), a `.pt`/`.pth` state dict,
    or an `.npz` of the state dict. The architecture is inferred from the tensor shapes unless a
    config or preset is given.

`save_vqgan(vqgan, folder)` writes the vqgan-jax format atomically.

Caveat: torch's legacy (pre-1.6, non-zip) serialization is not read; re-save such a file with a
current torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import serialization

from cortex_jax import maskgit
from cortex_jax.cin import GPTConfig
from cortex_jax.cin import init_params as gpt_init_params
from cortex_jax.data import atomic_write_bytes, clean_stale_temps
from cortex_jax.iem import IEMConfig
from cortex_jax.vqgan import (
    PRESET_REPOS,
    PRESETS,
    VQGAN,
    VQGANConfig,
    flatten_paths,
    param_shapes,
)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "flax_model.msgpack"
_PACKAGE_DIR = Path(__file__).resolve().parent
# Models shipped inside the package, by name → folder in vqgan-jax format.
PACKAGED_VQGANS: dict[str, Path] = {"toy": _PACKAGE_DIR / "toy" / "weights" / "vqgan"}
_TAMING_PREFIXES = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


# ---------------------------------------------------------------------------------------------
# Parameter trees
# ---------------------------------------------------------------------------------------------


def unflatten_paths(flat: Mapping[str, Any]) -> dict:
    """{'a/b': x} → {'a': {'b': x}}."""
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


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


# ---------------------------------------------------------------------------------------------
# vqgan-jax folders
# ---------------------------------------------------------------------------------------------


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
    """Loads a vqgan-jax folder (config.json + flax_model.msgpack)."""
    raw, params = read_model_folder(folder, "VQGAN")
    try:
        config = VQGANConfig.from_dict(raw)
    except TypeError as e:
        raise ValueError(f"{Path(folder) / CONFIG_NAME} is not a vqgan-jax config: {e}") from None
    check_params(params, config, source=str(Path(folder) / WEIGHTS_NAME))
    return VQGAN(config, _as_float32_tree(params), dtype)


def write_model_folder(folder: str | os.PathLike, config: Mapping[str, Any], params) -> Path:
    """Writes config.json + flax_model.msgpack; each file appears whole or not at all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    flat = {k: np.asarray(v) for k, v in flatten_paths(params).items()}
    atomic_write_bytes(
        folder / WEIGHTS_NAME, serialization.msgpack_serialize(unflatten_paths(flat))
    )
    atomic_write_bytes(folder / CONFIG_NAME, (json.dumps(dict(config), indent=2) + "\n").encode())
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


def write_iem_folder(folder, config: IEMConfig, variables, class_names, vqgan: str) -> Path:
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


# ---------------------------------------------------------------------------------------------
# Hugging Face hub
# ---------------------------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_folder(repo_id: str, filenames: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> Path:
    """Local folder holding `filenames` of `repo_id`: from the cache, else downloaded.

    Raises FileNotFoundError with the manual fix when the files are neither cached nor reachable.
    """
    import huggingface_hub
    from huggingface_hub import constants

    cached = [huggingface_hub.try_to_load_from_cache(repo_id, f) for f in filenames]
    if all(isinstance(p, str) for p in cached):
        return Path(cached[0]).parent
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


# ---------------------------------------------------------------------------------------------
# torch / taming-transformers checkpoints, read without torch
# ---------------------------------------------------------------------------------------------

_TORCH_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_TORCH_SCALAR_DTYPES = {
    "float64": np.float64,
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "int64": np.int64,
    "int32": np.int32,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}


class _Opaque:
    """Stands in for any class in a checkpoint that is not a tensor (optimizer state, configs)."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _LazyTensor:
    """A tensor as the pickle describes it; built (and checked) once its name is known."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def build(self, name: str) -> np.ndarray:
        """The array, after checking that every element it reads lies inside its storage."""
        st = self.storage
        if not isinstance(st, _Storage):
            raise ValueError(f"tensor {name!r} refers to no storage (got {type(st).__name__})")
        ints = lambda v: (
            isinstance(v, (tuple, list))
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)
        )
        off, size, stride = self.offset, self.size, self.stride
        if not (isinstance(off, int) and off >= 0 and ints(size) and ints(stride)):
            raise ValueError(
                f"tensor {name!r} has offset {off!r}, size {size!r}, stride {stride!r}; expected "
                "non-negative integers, one stride per dimension"
            )
        if len(size) != len(stride):
            raise ValueError(f"tensor {name!r}: size {tuple(size)} but stride {tuple(stride)}")
        n = len(st.array)
        if 0 in size:
            return np.zeros(tuple(size), st.array.dtype)
        last = off + sum((d - 1) * s for d, s in zip(size, stride, strict=True))
        if last >= n:
            raise ValueError(
                f"tensor {name!r} (size {tuple(size)}, stride {tuple(stride)}, offset {off}) "
                f"reads element {last} of storage {st.key!r}, which holds {n}"
            )
        itemsize = st.array.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            st.array[off:], shape=tuple(size), strides=tuple(x * itemsize for x in stride)
        )
        return view.copy()


@dataclasses.dataclass(frozen=True)
class _Storage:
    key: str
    array: np.ndarray


def _rebuild_tensor(storage, offset, size, stride, *args, **kwargs):
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data, *args, **kwargs):
    return data


def _materialise(obj: Any, name: str) -> Any:
    """Builds every tensor in dicts, lists and tuples, naming each by its key path."""
    if isinstance(obj, _LazyTensor):
        return obj.build(name)
    if isinstance(obj, Mapping):
        return type(obj)(
            (k, _materialise(v, f"{name}.{k}" if name else str(k))) for k, v in obj.items()
        )
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialise(v, f"{name}[{i}]") for i, v in enumerate(obj))
    return obj


class _TorchUnpickler(pickle.Unpickler):
    """Builds numpy arrays from torch's zip pickle; every other class becomes an inert `_Opaque`."""

    def __init__(self, file, zf: zipfile.ZipFile, root: str):
        super().__init__(file)
        self._zf, self._root = zf, root
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _TORCH_DTYPES:
            return _StorageType(_TORCH_DTYPES[name])
        if module == "torch" and name in _TORCH_SCALAR_DTYPES:
            return _TORCH_SCALAR_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "torch.storage" and name == "UntypedStorage":
            return _StorageType(np.uint8)
        return _Opaque

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage":
            raise ValueError(f"unsupported persistent id {str(pid)[:60]!r}; expected a storage")
        _, storage_type, key, _location, _numel = pid[:5]
        if isinstance(storage_type, _StorageType):
            dtype = np.dtype(storage_type.dtype)
        elif isinstance(storage_type, type) and storage_type in _TORCH_SCALAR_DTYPES.values():
            dtype = np.dtype(storage_type)
        else:
            raise ValueError(f"storage {key!r} has an unknown type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            member = f"{self._root}/data/{key}"
            try:
                raw = self._zf.read(member)
            except KeyError:
                raise ValueError(f"storage {key!r} is referenced but {member} is missing") from None
            if len(raw) % dtype.itemsize:
                raise ValueError(
                    f"storage {key!r} holds {len(raw)} bytes, not a whole number of {dtype} items"
                )
            self._storages[key] = _Storage(key, np.frombuffer(raw, dtype=dtype))
        elif self._storages[key].array.dtype != dtype:
            raise ValueError(f"storage {key!r} is read as two dtypes")
        return self._storages[key]


def read_torch_file(path: str | os.PathLike) -> Any:
    """Reads a torch.save zip file (`.ckpt`, `.pt`) into python objects with numpy arrays.

    Nothing in the file is executed (classes other than tensors become inert stand-ins), and every
    tensor is checked against its storage before it is built: a file that is damaged, truncated
    or crafted to read outside its storages is refused with one line naming the tensor.
    """
    path = _require_file(Path(path), "checkpoint")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a torch zip checkpoint (legacy torch<1.6 format?); re-save it with "
            f"a current torch: torch.save(torch.load(p, map_location='cpu'), p)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not pkl:
                raise ValueError("it has no data.pkl; expected a torch.save checkpoint")
            root = pkl[0][: -len("/data.pkl")]
            byteorder = f"{root}/byteorder"
            if byteorder in zf.namelist() and zf.read(byteorder).strip() != b"little":
                raise ValueError("it was saved big-endian; only little-endian is supported")
            with zf.open(pkl[0]) as f:
                return _materialise(_TorchUnpickler(f, zf, root).load(), "")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except (
        pickle.UnpicklingError,
        EOFError,
        zipfile.BadZipFile,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        OverflowError,
        MemoryError,
        RecursionError,
        UnicodeError,
        zlib.error,
        struct.error,
        NotImplementedError,
        OSError,
    ) as e:
        raise ValueError(
            f"{path} is not a readable torch checkpoint ({type(e).__name__}: {str(e)[:80]})"
        ) from None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A taming state dict from `.ckpt` (Lightning, key 'state_dict'), `.pt`/`.pth` or `.npz`."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(_require_file(path, "state dict")) as z:
            return {k: z[k] for k in z.files}
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}; expected a state dict")
    return {str(k): np.asarray(v) for k, v in obj.items() if isinstance(v, np.ndarray)}


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


def read_taming_checkpoint(
    path: str | os.PathLike,
    config: VQGANConfig | None = None,
    dtype: Any = jnp.float32,
    resolution: int = 256,
) -> VQGAN:
    """A taming-transformers VQGAN checkpoint, converted to the vqgan-jax layout."""
    params = convert_taming_state_dict(read_state_dict(path))
    config = config or infer_taming_config(params, resolution)
    check_params(params, config, source=str(path))
    return VQGAN(config, _as_float32_tree(params), dtype)


# ---------------------------------------------------------------------------------------------
# One entry point
# ---------------------------------------------------------------------------------------------

_TAMING_SUFFIXES = (".ckpt", ".pt", ".pth", ".npz")


def load_vqgan(
    source: str | os.PathLike,
    *,
    dtype: Any = jnp.float32,
    config: VQGANConfig | str | None = None,
) -> VQGAN:
    """Loads a VQGAN from a name, folder, Hugging Face repo id or taming checkpoint.

    Args:
      source: `"toy"`, a preset name (see `vqgan.PRESETS`), a vqgan-jax folder, a Hugging Face
        repo id, a taming `.ckpt`/`.pt`/`.pth`/`.npz` file, or MaskGIT's tokenizer checkpoint
        (the file, or a folder holding tokenizer_*checkpoint; see cortex_jax.maskgit).
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
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file() and list(path.glob("tokenizer_*checkpoint")):
            return maskgit.load_tokenizer(path)  # a folder of MaskGIT's released files
        return read_vqgan_folder(path, dtype)
    if path.suffix in _TAMING_SUFFIXES:
        return read_taming_checkpoint(path, config, dtype)
    if maskgit.is_tokenizer_file(path):
        return maskgit.load_tokenizer(path)
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
):
    """taming's class-conditional Net2NetTransformer checkpoint (e.g. the ImageNet
    cin_transformer `last.ckpt`, or its run folder) → ClassConditionalVQGM: the GPT
    (`transformer.*`) and its first-stage VQGAN (`first_stage_model.*`) from the one file,
    read without torch.

    n_head is not stored in the tensors: pass it, or keep taming's run layout
    (`<run>/checkpoints/last.ckpt` + `<run>/configs/*-project.yaml`) so it is read from there.
    """
    from cortex_jax.cin import convert_taming_gpt_state_dict, infer_gpt_config
    from cortex_jax.vqgm import ClassConditionalVQGM

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
