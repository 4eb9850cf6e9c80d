"""A local Cloud Storage emulator (the `gcp-storage-emulator` package, pure Python, in memory) on
127.0.0.1 at a free port, for tests of gs:// paths; gcsfs reaches it through STORAGE_EMULATOR_HOST.

`emulator()` is a context manager yielding a fresh `gs://bucket/<unique>` prefix; it sets the
environment that this process and the subprocesses it starts need (the emulator's address,
anonymous credentials, no probe of a metadata server, no gRPC zonal-bucket probe) and restores
it after. Without the package it skips with a message; CI installs it with the `test` extra.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid

import pytest

BUCKET = "bucket"
# Read by gcsfs when it is imported: its zonal-bucket check speaks gRPC, which the emulator does
# not, and would wait 60 s per file system. Set before any test imports gcsfs.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

ENV = {
    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    "FSSPEC_GCS_TOKEN": "anon",  # fsspec's per-protocol default, read by subprocesses
    "NO_GCE_CHECK": "true",  # google-auth must not probe for a metadata server
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def emulator():
    server_mod = pytest.importorskip(
        "gcp_storage_emulator.server",
        reason="gcp-storage-emulator is not installed (pip install -e '.[test]'); gs:// tests skip",
    )
    pytest.importorskip("gcsfs", reason="gcsfs is not installed (pip install -e '.[test]')")
    import fsspec

    port = _free_port()
    server = server_mod.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    env = {**ENV, "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}"}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_conf = fsspec.config.conf.get("gcs")
    os.environ.update(env)
    fsspec.config.conf["gcs"] = {**(saved_conf or {}), "token": "anon"}
    try:
        yield f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"
    finally:
        server.stop()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if saved_conf is None:
            fsspec.config.conf.pop("gcs", None)
        else:
            fsspec.config.conf["gcs"] = saved_conf
