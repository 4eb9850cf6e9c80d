"""The error boundary of the entry points: every mistake a user can make ends in one line.

`one_line_errors()` wraps a CLI's work: a bad value (ValueError), a file problem (OSError: missing,
unreadable, unwritable, not an image, a folder where a file was expected), or a decompression
bomb becomes `error: <what was wrong>` on stderr and exit status 1, never a traceback; Ctrl-C
becomes one `interrupted; …` line (what was saved, from `Interrupted`) and exit status 130.
Anything else is a bug and keeps its traceback. `writable_folder` checks an output folder before the
computation, so a run never spends an hour and then fails to write.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from PIL import Image

from cortex_jax.core import paths

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, Image.DecompressionBombError)


def describe(e: BaseException) -> str:
    """One line for a user error: the message, with the file an OSError names."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        text = f"{e.strerror}: {e.filename}"
    else:
        text = str(e) or type(e).__name__
    return " ".join(text.split())


INTERRUPTED_STATUS = 130  # a shell's status for a process ended by SIGINT


working = False  # True once a command's work runs inside one_line_errors


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, caught by a long loop that saved its state first; its message says where."""


@contextlib.contextmanager
def stop_requests(enabled: bool = True) -> Iterator[Callable[[], str | None]]:
    """Inside the block, Ctrl-C (SIGINT) and SIGTERM (what a preempted cloud VM gets) only ask
    a loop to stop: the yielded function returns the signal's name once one arrived, else None,
    and the loop saves its state and ends at its next step boundary, so a signal never lands
    inside a checkpoint write. A second signal interrupts at once (KeyboardInterrupt). A signal
    the process ignores (SIG_IGN, e.g. SIGINT of a job started in the background) stays ignored.
    Outside the main thread, or when not `enabled` (a multi-process run: every process must stop
    at the same step, which one process's signal cannot promise; there JAX's preemption service
    holds SIGTERM, see `sharding.preemption_agreed`), nothing changes."""
    received: list[str] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum: int, frame: object) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signal.Signals(signum).name)

    signals = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) != signal.SIG_IGN]
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in old.items():
            if h is not None:  # None: a handler set from C, which Python cannot put back
                signal.signal(s, h)


def _interrupted(e: BaseException | None = None) -> bool:
    """A Ctrl-C is behind `e` (in its cause/context chain), or the entry point's SIGINT handler
    saw one (explain/__init__.py): a library may have swallowed it (a bare `except:` around an
    optional import) or turned it into another error (JAX, interrupted while tracing)."""
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return bool(getattr(sys.modules.get("explain"), "interrupted", False))


# What a Ctrl-C ends a command with, during its work and before it (explain/__init__.py's hook,
# standard library only, repeats STARTING: it runs before this module can be imported).
KEPT = "interrupted; the files written so far are kept, and the same command can be rerun"
STARTING = "interrupted while starting; nothing was written"


def _exit_interrupted(text: str = "") -> NoReturn:
    """One `interrupted; …` line on stderr (`text`, else KEPT) and status 130."""
    text = text or KEPT
    sys.stderr.write(f"\n{text}\n")
    sys.exit(INTERRUPTED_STATUS)


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turns a user error inside the block into `error: …` and exit status 1, and Ctrl-C into
    one `interrupted; …` line and exit status 130 (also when a library swallowed it or turned it
    into another error: see `_interrupted`). A Ctrl-C that arrived while the command was
    starting, and was swallowed then, ends it here before any work."""
    global working
    if _interrupted():
        _exit_interrupted(STARTING)
    working = True  # read by the entry points' interrupt hook (explain/__init__.py)
    try:
        yield
    except KeyboardInterrupt as e:
        _exit_interrupted(describe(e) if isinstance(e, Interrupted) else "")
    except Exception as e:
        if _interrupted(e):
            _exit_interrupted()
        if isinstance(e, USER_ERRORS):
            sys.exit(f"error: {describe(e)}")
        raise


def writable_folder(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Creates `path` if needed and checks that a file can be written in it; raises one-line
    errors naming `flag` otherwise. A URL is refused in one line: another scheme than gs://, or
    gs:// (the commands that call this write local folders)."""
    if paths.is_remote(path):
        paths.of(path, flag)
        raise ValueError(
            f"{flag} {os.fspath(path)}: this command writes local folders only; give a local "
            "path (or copy the folder to the bucket afterwards)"
        )
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file; expected a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path} is not writable ({e.strerror or e})") from None
    return path
