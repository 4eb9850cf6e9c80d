"""Progress of a long stage: a tqdm bar on a terminal, throughput and ETA lines in a log.

A run on a pod or under a batch system writes its stderr to a file, where a tqdm bar is a
stream of carriage returns. `Progress` draws the bar only when its stream is a terminal;
otherwise it writes one line every `every` seconds,

    [progress] TIS (train split): 5120/10000 img (51.2%), 38.4 img/s, ETA 2m07s

and, when the stage closes, the stage's totals (what bench/scale.py reads back):

    [progress] TIS (train split): done, 10000 img in 260.3 s, 38.4 img/s

Only process 0 of a multi-process run reports (`enabled`).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

PREFIX = "[progress]"


def duration(seconds: float) -> str:
    """'2h03m', '2m07s', '41s'."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


class Progress:
    """`update_to(done, total)` as work finishes; `close()` (or use as a context manager) at the
    end of the stage. `start`: when the stage began (default: now), for its totals.

    Attributes: desc, unit, total, done, start, and `base`: units done before this run began (a
    resumed run's step), which the rate leaves out.
    """

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "img",
        every: float = 60.0,
        stream: IO[str] | None = None,
        enabled: bool = True,
        start: float | None = None,
    ):
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.start = time.monotonic() if start is None else start
        self.done = self.base = 0
        self._last_line = self.start
        self._closed = False
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, desc=desc, unit=unit, file=self.stream) if tty else None

    def update_to(self, done: int, total: int | None = None, **postfix: Any) -> None:
        """`done` units of `total` are finished; `postfix` (e.g. loss) goes on the bar and line."""
        if total is not None:
            self.total = total
        self.done = done
        if self._bar is not None:
            self._bar.total = self.total
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(done - self._bar.n)
            return
        now = time.monotonic()
        if self.enabled and now - self._last_line >= self.every:
            self._last_line = now
            self._line(self.status(now, postfix))

    def rate(self, now: float | None = None) -> float:
        """Units a second since the stage began."""
        elapsed = (time.monotonic() if now is None else now) - self.start
        return (self.done - self.base) / elapsed if elapsed > 0 else 0.0

    def status(self, now: float | None = None, postfix: dict[str, Any] | None = None) -> str:
        """'5120/10000 img (51.2%), 38.4 img/s, ETA 2m07s' (and `postfix` as k=v)."""
        now = time.monotonic() if now is None else now
        rate = self.rate(now)
        text = f"{self.done}"
        if self.total:
            text += f"/{self.total} {self.unit} ({100 * self.done / self.total:.1f}%)"
        else:
            text += f" {self.unit}"
        text += f", {rate:.3g} {self.unit}/s"
        if self.total and rate > 0:
            text += f", ETA {duration((self.total - self.done) / rate)}"
        for k, v in (postfix or {}).items():
            text += f", {k}={v}"
        return text

    def close(self) -> None:
        """Ends the stage: the bar closes, or the totals line is written."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
            return
        if self.enabled:
            now = time.monotonic()
            self._line(
                f"done, {self.done - self.base} {self.unit} in {now - self.start:.3f} s, "
                f"{self.rate(now):.3g} {self.unit}/s"
            )

    def _line(self, text: str) -> None:
        print(f"{PREFIX} {self.desc}: {text}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
