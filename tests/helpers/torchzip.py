"""Writes torch.save-format zip checkpoints by hand (no torch), for tests that need files torch
would never write: tensors whose size, stride or offset exceed their storage, missing storages,
broken pickles. The pickle is assembled opcode by opcode (protocol 2), as torch lays it out:
{name: torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, False,
OrderedDict())}."""

import struct
import zipfile
from pathlib import Path

import numpy as np

_STORAGE = {np.float32: "FloatStorage", np.int64: "LongStorage", np.float16: "HalfStorage"}


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _ints(values) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"  # MARK … TUPLE


def tensor_pickle(tensors: dict) -> bytes:
    """tensors: name → (storage key, dtype, offset, size, stride, numel)."""
    out = [b"\x80\x02}"]  # PROTO 2, EMPTY_DICT
    for name, (key, dtype, offset, size, stride, numel) in tensors.items():
        out.append(_str(name))
        out.append(b"ctorch._utils\n_rebuild_tensor_v2\n")
        out.append(b"(")  # the arguments
        storage = f"torch\n{_STORAGE[dtype]}\n".encode()
        out.append(b"(" + _str("storage") + b"c" + storage + _str(key) + _str("cpu") + _int(numel))
        out.append(b"tQ")  # TUPLE, BINPERSID
        out.append(_int(offset) + _ints(size) + _ints(stride) + b"\x89")  # … requires_grad False
        out.append(b"ccollections\nOrderedDict\n)R")  # OrderedDict()
        out.append(b"tR")  # TUPLE, REDUCE
        out.append(b"s")  # SETITEM
    out.append(b".")
    return b"".join(out)


def write(path: Path, tensors: dict, storages: dict, pickle_bytes: bytes | None = None) -> Path:
    """A torch-style zip: archive/data.pkl, archive/data/<key> for each storage array."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle_bytes or tensor_pickle(tensors))
        zf.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", np.ascontiguousarray(arr).tobytes())
        zf.writestr("archive/version", "3\n")
    return path
