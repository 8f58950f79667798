"""Incident playback: a past window of the streams played to one browser through the same
frame mapping as live, at a chosen speed, with pause and step.

The record comes from the bus (what the gateway follows, stored between `from` and `to`, plus a
lookback before `from` to build the first screen) or from a file written by `sqt replay export`.
Events are merged by the time the server stored them; the wait between two is their distance
divided by the speed, capped so a quiet hour does not stall the screen.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from nats.aio.client import Client as Nats

from bus import export
from gateway.feed import FOLLOWED, admit, decoders
from gateway.frames import Frame, Market, PlaybackData, encode
from gateway.hub import Client
from gateway.view import View
from schemas.subjects import matcher

MAX_WAIT = 2.0  # seconds of screen time at most between two events, whatever the speed


class Recorded(NamedTuple):
    ts_ns: int
    stream: str
    seq: int
    subject: str
    data: bytes


async def from_bus(nc: Nats, start: dt.datetime, end: dt.datetime, lookback: dt.timedelta) -> list[Recorded]:
    out: list[Recorded] = []
    for f in FOLLOWED:
        async for batch in export.window(nc, f.stream, start - lookback, end, f.subjects):
            out += [Recorded(m.ts_ns, f.stream, m.seq, m.subject, m.data) for m in batch]
    return sorted(out)


def from_lines(lines: Iterable[export.Line]) -> list[Recorded]:
    wanted = {f.stream: matcher(f.subjects) for f in FOLLOWED}
    out = [
        Recorded(line.ts_ns, line.stream, line.seq, line.subject, export.payload(line))
        for line in lines
        if line.stream in wanted and wanted[line.stream](line.subject)
    ]
    return sorted(out)


def from_file(path: Path) -> list[Recorded]:
    return from_lines(export.read_lines(path))


class Playback:
    def __init__(self, records: list[Recorded], start_ns: int, end_ns: int, speed: float) -> None:
        self.records, self.start_ns, self.end_ns = records, start_ns, end_ns
        self.speed = speed
        self.running = asyncio.Event()
        self.running.set()
        self._steps = 0
        self._step = asyncio.Event()
        self.at_ns = start_ns
        self.market: Market | None = None
        self.markets: list[Market] = []

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def step(self) -> None:
        """While paused: play the next frame of the market."""
        self._steps += 1
        self._step.set()

    def state(self, ended: bool = False) -> Frame:
        state = "ended" if ended else "playing" if self.running.is_set() else "paused"
        data = PlaybackData(
            state=state, at=self.at_ns // 1_000_000, start=self.start_ns // 1_000_000, end=self.end_ns // 1_000_000, speed=self.speed
        )
        return Frame(type="playback", data=data)

    def prepare(self, wanted: Market | None) -> Market | None:
        """Fold what was stored before the window; the market to play (the one asked for, else
        the one a strategy traded, else the first the window shows)."""
        self.view, self.decode = View(), decoders()
        self.during = [r for r in self.records if self.start_ns <= r.ts_ns <= self.end_ns]
        seen = View()
        for r in self.records:
            if r.ts_ns > self.end_ns:
                break
            event = admit(self.decode[r.stream], r.subject, r.data)
            if event is None:
                continue
            seen.apply(r.stream, r.seq, event)
            if r.ts_ns < self.start_ns:
                self.view.apply(r.stream, r.seq, event)
        if wanted is not None and wanted in seen.markets:
            self.market = wanted
        else:
            self.market = self.view.default_market() or seen.default_market()
        self.markets = sorted(seen.markets)
        return self.market

    async def play(self, client: Client) -> None:
        """The first screen as it was at the start, then every frame of the window in time."""
        view, decode, market = self.view, self.decode, self.market
        client.market = market
        if market is not None:
            for frame in view.first_screen(market):
                client.offer(frame.type, encode(frame))
        client.offer("playback", encode(self.state()))
        previous = self.start_ns
        for r in self.during:
            await self._wait(min((r.ts_ns - previous) / 1e9 / self.speed, MAX_WAIT))
            previous = self.at_ns = r.ts_ns
            event = admit(decode[r.stream], r.subject, r.data)
            routed = None if event is None else view.apply(r.stream, r.seq, event)
            if routed is None or market is None:
                continue
            if routed.market == market or (routed.market is None and routed.venue in (None, market.venue)):
                client.offer(routed.frame.type, encode(routed.frame))
                if self._steps:
                    self._steps -= 1
        client.offer("playback", encode(self.state(ended=True)))

    async def _wait(self, seconds: float) -> None:
        if self.running.is_set():
            if seconds > 0:
                await asyncio.sleep(seconds)
            return
        while not self.running.is_set() and not self._steps:  # paused: until resumed or stepped
            self._step.clear()
            waits = [asyncio.ensure_future(self.running.wait()), asyncio.ensure_future(self._step.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()


MAX_WINDOW = dt.timedelta(days=1)


class BadWindow(ValueError):
    pass


def window(query: dict[str, str]) -> tuple[dt.datetime, dt.datetime, float, Market | None]:
    """(from, to, speed, market) from `?from=&to=&speed=&venue=&symbol=`; times are epoch ms or
    ISO 8601 (UTC unless they say otherwise)."""
    start, end = _when(query, "from"), _when(query, "to", dt.datetime.now(dt.UTC))
    if end <= start:
        raise BadWindow("`to` must be after `from`")
    if end - start > MAX_WINDOW:
        raise BadWindow(f"a playback window may be at most {MAX_WINDOW} long")
    try:
        speed = float(query.get("speed", "10"))
    except ValueError:
        raise BadWindow("`speed` must be a number") from None
    if not 0.1 <= speed <= 1000:
        raise BadWindow("`speed` must be between 0.1 and 1000")
    venue, symbol = query.get("venue"), query.get("symbol")
    return start, end, speed, Market(venue, symbol) if venue and symbol else None


def _when(query: dict[str, str], name: str, default: dt.datetime | None = None) -> dt.datetime:
    raw = query.get(name)
    if raw is None:
        if default is None:
            raise BadWindow(f"`{name}` is required")
        return default
    try:
        if raw.isdigit():
            return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC)
        when = dt.datetime.fromisoformat(raw)
    except (ValueError, OverflowError, OSError):
        raise BadWindow(f"`{name}` must be epoch milliseconds or an ISO 8601 time, not {raw[:40]!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
