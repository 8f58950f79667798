"""A progress bar on stderr for long backtests: candles done, rate and ETA.

    progress = Progress(total=len(candles))
    for batch in batches:
        ...
        progress.update(len(batch))
    progress.close()

or ``with Progress(total) as progress: ...``; ``progress.set(done)`` takes a running count
instead (``run_grid_backtest(..., on_candle=progress.set)``). It draws only when the stream is
a terminal (a pipe, a file or CI's log get nothing, not even the final line), at most
``interval`` seconds apart, on one line rewritten with ``\\r``; ``close()`` draws the final
figures and ends the line. ``update`` is cheap enough to call once per candle: it adds, and
looks at the clock only about four times per ``interval`` at the rate it measures.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    s = int(seconds + 0.5)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _rate(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.1f}M"
    if per_s >= 1e4:
        return f"{per_s / 1e3:.0f}k"
    return f"{per_s:,.0f}"


class Progress:
    """Counts ``unit`` up to ``total`` and shows it on ``stream`` when that is a terminal."""

    def __init__(
        self,
        total: int,
        *,
        unit: str = "candles",
        stream: TextIO | None = None,
        interval: float = 0.2,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = max(0, int(total))
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.clock = clock
        self.done = 0
        self.closed = False
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.started = clock()
        self._last_draw = -float("inf")
        self._next_check = 0  # `done` at which to look at the clock again
        self._check_every = 1
        self._checked_at = self.started
        self._checked_done = 0

    def update(self, n: int = 1) -> None:
        """``n`` more done."""
        self.done += n
        if self.enabled and self.done >= self._next_check:
            now = self.clock()
            dt = now - self._checked_at
            if dt > 0:  # look at the clock about four times per interval at the current rate
                self._check_every = max(1, int((self.done - self._checked_done) / dt * self.interval / 4))
            self._checked_at, self._checked_done = now, self.done
            self._next_check = self.done + self._check_every
            if now - self._last_draw >= self.interval:
                self._draw(now)

    def set(self, done: int) -> None:
        """``done`` in all (for a callback that counts, such as the backtester's ``on_candle``)."""
        self.update(done - self.done)

    def line(self, now: float | None = None) -> str:
        """What the bar shows now (also what a test reads)."""
        now = self.clock() if now is None else now
        elapsed = max(0.0, now - self.started)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.closed:
            return f"{self.done:,} {self.unit} in {_clock(elapsed)} ({_rate(rate)} {self.unit}/s)"
        frac = min(1.0, self.done / self.total) if self.total else 0.0
        left = self.total - self.done
        eta = left / rate if rate > 0 and left >= 0 else None
        counts = f"{self.done:,}/{self.total:,} {self.unit}"
        tail = f" {frac * 100:5.1f}% {counts}  {_rate(rate)}/s  ETA {_clock(eta)}"
        width = shutil.get_terminal_size((80, 24)).columns
        bar_w = max(10, min(40, width - len(tail) - 3))
        filled = int(frac * bar_w)
        return "[" + "#" * filled + "." * (bar_w - filled) + "]" + tail

    def _draw(self, now: float) -> None:
        self._last_draw = now
        self.stream.write("\r" + self.line(now) + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """The final figures, and the end of the line. Twice is harmless."""
        if self.closed:
            return
        self.closed = True
        if self.enabled:
            self.stream.write("\r" + self.line() + "\x1b[K\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
