"""User paths: a local path or a Cloud Storage URL (`gs://bucket/key`), as an etils `epath.Path`.

`of(p)` is how a path a user gave (a flag, a config field) enters the library: it refuses, in one
line and before any work, a URL whose scheme we do not support (s3://, http://, …) and a URL
whose `//` a POSIX path join has already collapsed (`gs:/bucket`, what `pathlib.Path("gs://b")`
makes; a run given one used to write a local folder named `gs:`). epath reaches `gs://` through
gcsfs (or TensorFlow's gfile when TensorFlow is installed); `gcsfs` honours STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import importlib.util
import os
import re

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
