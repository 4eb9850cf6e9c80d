"""A local Cloud Storage emulator (the `gcp-storage-emulator` package, pure Python, in memory) on
127.0.0.1 at a free port, for tests of gs:// paths; gcsfs reaches it through STORAGE_EMULATOR_HOST.

`emulator()` is a context manager yielding a fresh `gs://bucket/<unique>` prefix; it sets the
environment that this process and the subprocesses it starts need (the emulator's address for
gcsfs and for tensorstore, which orbax writes checkpoints with; anonymous credentials, no probe
of a metadata server, no gRPC zonal-bucket probe) and restores it after. Without the package it
skips with a message; CI installs it with the `test` extra.
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


def _quiet(request, client_address) -> None:
    """The emulator's HTTP server's error hook: a peer that hung up (tensorstore and gcsfs close
    kept-alive connections) is no error; anything else is printed as before."""
    import sys
    import traceback

    if not isinstance(sys.exc_info()[1], ConnectionError):
        traceback.print_exc()


def _with_generation_header(server_mod) -> None:
    """The emulator's media downloads without the `x-goog-generation` header Cloud Storage sends
    and tensorstore (orbax's checkpoint writer) reads: it then fails on "Malformed
    StorageGeneration". Adds the header, once per process."""
    from gcp_storage_emulator.handlers import objects

    if getattr(objects.download, "_with_generation", False):
        return
    plain = objects.download

    def download(request, response, storage, *args, **kwargs):
        plain(request, response, storage, *args, **kwargs)
        if response.status.value == 200 or response.status.value == 206:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

    download._with_generation = True  # type: ignore[attr-defined]
    objects.download = download  # the JSON API's ?alt=media path calls it by this name
    for _, handlers in server_mod.HANDLERS:  # the download routes hold the function itself
        for method, handler in handlers.items():
            if handler is plain:
                handlers[method] = download


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

    _with_generation_header(server_mod)
    port = _free_port()
    server = server_mod.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    server._api._httpd.handle_error = _quiet  # clients that close a connection early: no trace
    url = f"http://127.0.0.1:{port}"
    env = {
        **ENV,
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore's endpoint …
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",  # … and a token instead of credentials
    }
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
