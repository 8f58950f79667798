"""One small loop per (feed, symbol): deliveries in, events out, a silence watchdog, and the gap
protocol of publishers/ccxt/gaps.py around every failure.

A loop suppresses only what it expects: ccxt's network errors (the connection failed: reconnect),
its exchange errors (the venue refused: back off and try again) and our silence (kill the quiet
connection, reconnect). A venue message we cannot read, or whose price is not believable, is
counted and logged by the feed and never published. Anything else is a bug: it is logged with its
traceback, counted as an error, and the loop goes on after a backoff (a publisher that stops
publishing is worse than one that logs).

Users of ccxt report websocket streams that stop without an error (the socket stays open, the
keep-alive pings are answered, nothing arrives); ccxt's own keep-alive cannot see that. So a
stream quiet for `silence_multiple` times its expected interval is treated as dead: every ccxt
client connection that carries it is failed on purpose (`client.on_error`), which rejects the
pending `watch_*` with a NetworkError exactly like a real disconnect, and the next call dials again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import ccxt

from bus.errors import PublishError
from publishers.ccxt import metrics
from publishers.ccxt.feeds import Delivered, Feed
from publishers.ccxt.gaps import Gap, end_marker, open_gap, open_marker, stream_name
from venues.ccxt.errors import from_ccxt
from venues.errors import RateLimited, Transient

log = logging.getLogger("publisher.ccxt")


class Silence(Exception):
    """A stream said nothing for longer than its limit."""


class Stopped(Exception):
    """The publisher is stopping."""


# Words ccxt's message hashes use for each feed, across our venues ('ohlcv::BTC/USDT:USDT::1m',
# 'candles:1m:BTC/USDT', 'trade:BTC/USDT', 'ticker:BTC/USDT', ...).
HASH_WORDS = {"candles": ("ohlcv", "candle", "kline"), "trades": ("trade",), "tickers": ("ticker",), "funding": ("funding",)}


_URL = re.compile(r"((?:https?|wss?)://[^/\s'\"]+)[^\s'\"]*")


def scrub_urls(text: str) -> str:
    """Error text with every URL cut to its host: paths and queries can carry a listen key or a
    signature, and this text is logged and published in gap markers."""
    return _URL.sub(r"\1/...", text)


def kill_streams(exchange: Any, feed: str, symbol: str | None, quiet_since_ms: int, why: str) -> int:
    """Fail the ccxt client connections that carry a quiet stream, through ccxt's own error path
    (`client.on_error`): the pending watches raise NetworkError and the client is forgotten, so the
    next watch dials a new connection and subscribes again. Which ones, in order of preference:
    those with a pending watch that received nothing since `quiet_since_ms` (the whole connection
    is dead); else those whose pending watch names this feed and symbol (one subscription stalled
    on a live connection); else those naming the symbol; else every one with a pending watch."""
    live = [c for c in list(getattr(exchange, "clients", {}).values()) if getattr(c, "connection", None) is not None]
    pending = [c for c in live if c.futures]

    def names(c: Any, words: tuple[str, ...]) -> bool:
        return any(symbol is not None and symbol in str(h) and (not words or any(w in str(h).lower() for w in words)) for h in c.futures)

    chosen = (
        [c for c in pending if (c.last_message_at or 0) < quiet_since_ms]
        or [c for c in pending if names(c, HASH_WORDS.get(feed, ()))]
        or [c for c in pending if names(c, ())]
        or pending
    )
    for client in chosen:
        client.on_error(ccxt.NetworkError(why))
    return len(chosen)


def connected(exchange: Any) -> bool:
    """Whether some ccxt websocket connection is open and awaited (a private stream subscribed)."""
    for c in list(getattr(exchange, "clients", {}).values()):
        conn = getattr(c, "connection", None)
        if conn is not None and not conn.closed and c.futures:
            return True
    return False


class FeedLoop:
    """Runs one feed: deliveries in, events out, and the gap protocol around every failure."""

    def __init__(self, feed: Feed, *, symbols: list[str], account: str | None = None, started_gap: str | None = None) -> None:
        self.f = feed
        self.ctx = feed.ctx
        self.feed = feed.feed
        self.symbol = feed.label
        self.market_data = feed.market_data
        self.account = account
        self.symbols = [feed.symbol] if feed.symbol else symbols  # whose gap markers a failure publishes
        self.stream = stream_name(feed.feed, self.ctx.cfg.candle_interval)
        self.streaming = self.ctx.streams(feed.feed)
        self.silence_s = self.ctx.cfg.silence_ms(feed.feed) / 1000 if self.streaming else 0.0
        self.poll_s = self.ctx.cfg.poll_every_ms(feed.feed) / 1000
        self.gaps: list[Gap] = []
        self.resumed = True  # the first delivery starts a session (a repair or a first fill)
        self.needs_repair = feed.repair_on_subscribe
        self.last_message = 0.0  # wall time, for the staleness metrics
        self._quiet_from = 0.0  # monotonic: when the current silence began
        self._task: asyncio.Future[Any] | None = None
        self._next_poll = 0.0
        self._messages = metrics.MESSAGES.labels(self.ctx.venue, self.feed)
        self._handle_seconds = metrics.HANDLE_SECONDS.labels(self.ctx.venue, self.feed)
        self.delivered = 0
        metrics.track(self, self.ctx.venue)
        if started_gap and feed.last_ts is not None:
            self._open(started_gap)  # published when the loop starts

    # Observed (metrics)
    def last_message_at(self) -> float:
        return self.last_message

    def up(self) -> bool:
        return not self.gaps and self.delivered > 0

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.ctx.cfg
        backoff = cfg.reconnect_first_ms / 1000
        if self.gaps:
            await self.ctx.out.put([open_marker(self.ctx.venue, g, self.ctx.local_ms()) for g in self.gaps])
        try:
            while not stop.is_set():
                try:
                    if self.needs_repair and self.streaming:
                        await self._repair_after_subscribe(stop)
                    raw = await (self._watch(stop) if self.streaming else self._poll(stop))
                    await self._deliver(raw)
                    backoff = cfg.reconnect_first_ms / 1000
                    continue
                except Stopped:
                    return
                except Silence as exc:
                    reason, why = "silence", str(exc)
                except ccxt.BaseError as exc:
                    # ccxt's class alone misleads (a venue's "server busy" arrives as ExchangeError):
                    # venues/ccxt/errors.py reads the venue's own code first.
                    error = from_ccxt(exc, self.ctx.exchange.id)
                    if isinstance(error, RateLimited):
                        asked = error.retry_after if error.retry_after is not None else cfg.reconnect_max_ms / 1000
                        metrics.RATE_LIMITED.labels(self.ctx.venue).inc()
                        metrics.RATE_LIMIT_WAIT.labels(self.ctx.venue).inc(asked)
                        reason, why, backoff = "error", f"rate limited: {error}", max(backoff, asked)
                    elif isinstance(exc, ccxt.NetworkError):
                        reason, why = "disconnect", f"connection lost: {type(exc).__name__}: {exc}"
                    elif isinstance(error, Transient):
                        reason, why = "error", f"venue busy: {error}"
                    else:  # refused for good (a key, a symbol, a method): say so loudly, retry slowly
                        reason, why, backoff = "error", f"venue refused: {error}", cfg.reconnect_max_ms / 1000
                        log.error("%s %s %s: %s (retrying every %.0f s)", self.ctx.venue, self.feed, self.symbol, why, backoff)
                except PublishError as exc:
                    reason, why = "error", f"bus refused: {exc}"
                except Exception as exc:  # a bug, or a venue answer nothing expected: never the end of the loop
                    log.exception("%s %s %s: unexpected failure", self.ctx.venue, self.feed, self.symbol)
                    reason, why = "error", f"unexpected {type(exc).__name__}: {exc}"
                await self._failed(reason, why)
                if await _sleep_or_stop(stop, backoff):
                    return
                backoff = min(backoff * 2, cfg.reconnect_max_ms / 1000)
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def _failed(self, reason: str, why: str) -> None:
        why = scrub_urls(why)  # a private stream's URL carries its listen key (Binance: /ws/<key>)
        metrics.RECONNECTS.labels(self.ctx.venue, self.feed, reason).inc()
        log.warning("%s %s %s: %s; reconnecting", self.ctx.venue, self.feed, self.symbol, why)
        self.f.interrupted()
        self.resumed = True
        self.needs_repair = self.f.repair_on_subscribe
        self._quiet_from = 0.0  # the silence of the next connection counts from its start
        if self._task is not None and self._task.done():
            self._task = None
        if not self.gaps and self.f.last_ts is not None:
            self._open(why)
            await self.ctx.out.put([open_marker(self.ctx.venue, g, self.ctx.local_ms()) for g in self.gaps])

    def _open(self, why: str) -> None:
        since = self.f.last_ts or 0
        now = self.ctx.clock.now_ms()
        self.gaps = [open_gap(self.stream, s, self.account, since, now, why) for s in self.symbols]
        metrics.GAPS.labels(self.ctx.venue, self.feed).inc()

    async def _close(self, done: Delivered) -> None:
        if not self.gaps:
            return
        until = done.first_ts if done.first_ts is not None else self.ctx.clock.now_ms()
        local = self.ctx.local_ms()
        markers = [end_marker(self.ctx.venue, g, until, done.backfilled, done.detail, local) for g in self.gaps]
        await self.ctx.out.put(markers)
        metrics.GAP_SECONDS.labels(self.ctx.venue, self.feed).observe(max(0, markers[0].until - markers[0].since) / 1000)
        log.info(
            "%s %s %s: gap of %.1f s closed (%s)",
            self.ctx.venue,
            self.feed,
            self.symbol,
            (markers[0].until - markers[0].since) / 1000,
            done.detail or "nothing to fetch",
        )
        self.gaps = []

    async def _deliver(self, raw: Any) -> None:
        self.last_message = time.time()
        self._quiet_from = asyncio.get_running_loop().time()
        self._messages.inc()
        resumed, self.resumed = self.resumed, False
        started = time.perf_counter()
        try:
            done = await self.f.handle(raw, resumed)
        except BaseException:
            self.resumed = True  # the repair did not finish: the next delivery tries again
            raise
        if not resumed:
            self._handle_seconds.observe(time.perf_counter() - started)
        self.delivered += 1
        await self._close(done)

    async def _repair_after_subscribe(self, stop: asyncio.Event) -> None:
        """Private streams speak only when the account changes: after (re)subscribing, the state
        is fetched over REST at once (anything later arrives on the stream)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.f.watch())
            self._quiet_from = asyncio.get_running_loop().time()
        deadline = time.monotonic() + 5.0
        while not self._task.done() and not connected(self.ctx.exchange) and time.monotonic() < deadline:
            if await _sleep_or_stop(stop, 0.02):
                raise Stopped
        if self._task.done() and (self._task.cancelled() or self._task.exception() is not None):
            return  # the failure is raised by the watch itself
        done = await self.f.repair()
        self.needs_repair = False
        self.resumed = False
        self.delivered += 1
        await self._close(done)

    async def _watch(self, stop: asyncio.Event) -> Any:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.ensure_future(self.f.watch())
            if not self._quiet_from:
                self._quiet_from = loop.time()
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while True:
                timeout = None
                if self.silence_s:
                    timeout = max(0.0, self._quiet_from + self.silence_s - loop.time())
                done, _ = await asyncio.wait({self._task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if self._task in done:
                    task, self._task = self._task, None
                    if task.cancelled():  # ccxt cancels what waits on a connection it closes
                        raise ccxt.NetworkError("the watch was cancelled (its connection closed)")
                    return task.result()
                if stopper in done:
                    raise Stopped
                if self.silence_s and loop.time() - self._quiet_from >= self.silence_s:
                    await self._silenced(loop.time() - self._quiet_from)
        finally:
            stopper.cancel()

    async def _silenced(self, quiet: float) -> None:
        why = f"silent for {quiet:.1f} s (limit {self.silence_s:.1f} s)"
        quiet_since = int((time.time() - quiet) * 1000)
        kill_streams(self.ctx.exchange, self.feed, self.f.symbol, quiet_since, f"{self.feed} {self.symbol} {why}")
        task, self._task = self._task, None
        self._quiet_from = asyncio.get_running_loop().time()
        if task is not None:
            # The failed connection rejects the watch; one that does not is abandoned.
            try:
                await asyncio.wait_for(asyncio.shield(task), 2.0)
            except (ccxt.BaseError, asyncio.TimeoutError, asyncio.CancelledError):
                pass
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        raise Silence(why)

    async def _poll(self, stop: asyncio.Event) -> Any:
        loop = asyncio.get_running_loop()
        wait = self._next_poll - loop.time()
        if wait > 0 and await _sleep_or_stop(stop, wait):
            raise Stopped
        self._next_poll = loop.time() + self.poll_s
        return await self.f.poll()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, or return True at once when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return stop.is_set()
