"""torch checkpoints read without torch, and without running code from the file.

`read_torch_file(path)` reads torch's zip serialization (`torch.save` ≥ 1.6, Lightning `.ckpt`)
with a restricted unpickler: tensors become numpy arrays (every size, stride and offset checked
against its storage first), any other class becomes an inert stand-in, and no callable named in
the file is ever called. `read_state_dict(path)` returns a flat {name: array} from a `.ckpt`
(its `state_dict`), a `.pt`/`.pth` or an `.npz`. Damaged, truncated or foreign files raise one
line naming the file. Caveat: the legacy (pre-1.6, non-zip) format is not read.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import ml_dtypes
import numpy as np

from cortex_jax.io.folders import _require_file

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
        return cast(Any, type(obj))(
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
