"""User paths: a local path or a Cloud Storage URL (`gs://bucket/key`), as an etils `epath.Path`.

`of(p)` is how a path a user gave (a flag, a config field) enters the library: it refuses, in one
line and before any work, a URL whose scheme we do not support (s3://, http://, …) and a URL
whose `//` a POSIX path join has already collapsed (`gs:/bucket`, what `pathlib.Path("gs://b")`
makes; a run given one used to write a local folder named `gs:`). epath reaches `gs://` through
gcsfs (or TensorFlow's gfile when TensorFlow is installed); `gcsfs` honours STORAGE_EMULATOR_HOST.
`relative(target, start)` is how a file names another one beside it (the same name locally and on
a bucket).
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
from pathlib import Path

from etils import epath

SUPPORTED_SCHEMES = ("gs",)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):/")  # two letters at least: not a drive letter


def scheme(p: str | os.PathLike) -> str | None:
    """'gs' for gs://bucket/key, None for a local path (also for an unsupported URL)."""
    m = _URL.match(os.fspath(p))
    return m.group(1).lower() if m else None


def is_remote(p: str | os.PathLike) -> bool:
    """Whether `p` names an object store (gs://) rather than the local file system."""
    return scheme(p) is not None


def of(p: str | os.PathLike, what: str = "path") -> epath.Path:
    """`p` as an epath.Path (local or gs://), or a one-line ValueError naming `what` and `p`."""
    text = os.fspath(p)
    s = scheme(text)
    if s is not None:
        if s not in SUPPORTED_SCHEMES:
            raise ValueError(
                f"{what} {text}: {s}:// is not supported; give a local path or a gs:// URL"
            )
        if not text.startswith(f"{s}://"):
            raise ValueError(
                f"{what} {text}: a {s}:// URL that lost a '/' (joined as a local path?); "
                f"write it as {s}://{text[len(s) + 2 :].lstrip('/')}"
            )
        if importlib.util.find_spec("gcsfs") is None and not _has_tensorflow():
            raise ValueError(f"{what} {text}: gs:// paths need gcsfs; pip install gcsfs")
    return epath.Path(text)


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def relative(target: str | os.PathLike, start: str | os.PathLike) -> str:
    """`target` as seen from the folder `start`, for a file that names another one: a relative
    POSIX path when both are local, or both on the same bucket, so that the name is the same
    wherever the tree lives (a local run, a bucket, a copy); `target` in full otherwise."""
    t, s = os.fspath(target), os.fspath(start)
    if is_remote(t) or is_remote(s):
        t_bucket, _, t_key = t.partition("://")[2].partition("/")
        s_bucket, _, s_key = s.partition("://")[2].partition("/")
        if scheme(t) != scheme(s) or t_bucket != s_bucket:
            return t
        return posixpath.relpath("/" + t_key, "/" + s_key)
    return Path(os.path.relpath(os.path.abspath(t), os.path.abspath(s))).as_posix()
