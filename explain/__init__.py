"""Thin `python -m explain.*` entry points: flags → config → cortex_jax call → files."""

import _thread
import os
import signal
import sys
import threading

# A SIGINT arrived since the entry point started (read by cortex_jax.core.errors.one_line_errors):
# a library that swallows a KeyboardInterrupt (a bare `except:` around an optional import) or
# turns it into another error mid-trace (JAX) cannot make the command run on, or fail, as if it
# had not been interrupted.
interrupted = False


def _end(line: str) -> None:
    """Ends the process with one line on stderr and a shell's status for SIGINT, as
    errors.one_line_errors does (and words it: the core layer cannot import the entry points).
    Written straight to the descriptor: called from the signal handler, sys.stderr may be
    mid-write (a reentrant call raises) or its reader gone, and nothing may raise from here."""
    try:
        os.write(2, f"\n{line}\n".encode())
    except OSError:
        pass
    os._exit(130)


def _working() -> bool:
    """The command's work has begun (cortex_jax.core.errors.one_line_errors was entered)."""
    return getattr(sys.modules.get("cortex_jax.core.errors"), "working", False)


def _end_while_starting() -> None:
    _end("interrupted while starting; nothing was written")  # errors.STARTING, not yet importable


def quiet_interrupts_at_startup() -> None:
    """Ctrl-C before a command's work begins (while JAX imports, say) ends in one line, not a
    traceback. Each command's work is inside `errors.one_line_errors`, which says what was saved;
    only an interrupt outside it reaches this hook. Standard library only: it runs first."""
    default = sys.excepthook

    def hook(kind, value, tb):
        chain = value  # an import interrupted inside a C extension re-raises it as ImportError
        while chain is not None and not isinstance(chain, KeyboardInterrupt):
            chain = chain.__cause__ or chain.__context__
        if chain is None:
            default(kind, value, tb)
        elif _working():  # after the work's `with errors.one_line_errors()` (printing results)
            _end(sys.modules["cortex_jax.core.errors"].KEPT)
        else:
            _end_while_starting()

    def unraisable(info):
        # Ctrl-C inside a callback (a gc hook of JAX's) would be printed and dropped here, and
        # the command would run on. Before the work: end as above. During it: deliver it to the
        # main thread again, after this hook returns, for errors.one_line_errors to save state.
        if not isinstance(info.exc_value, KeyboardInterrupt):
            default_unraisable(info)
        elif _working():
            threading.Timer(0.01, _thread.interrupt_main).start()
        else:
            hook(type(info.exc_value), info.exc_value, info.exc_traceback)

    def on_sigint(signum, frame):
        global interrupted
        interrupted = True
        if _working():
            raise KeyboardInterrupt  # for errors.one_line_errors, which says what was saved
        # Before the work nothing has been written, so end here. Raising instead would put a
        # KeyboardInterrupt into whatever is importing: inside jaxlib's native start-up (MLIR
        # registering its Python types) that aborted the interpreter with SIGABRT.
        _end_while_starting()

    default_unraisable = sys.unraisablehook
    sys.excepthook = hook
    sys.unraisablehook = unraisable
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not SIG_IGN (background)
        signal.signal(signal.SIGINT, on_sigint)


if sys.argv[:1] == ["-m"]:  # `python -m explain.…` (argv[0] is "-m" while it is located)
    quiet_interrupts_at_startup()
