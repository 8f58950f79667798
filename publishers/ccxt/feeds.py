"""The feeds of one market: candles, tickers, public trades and funding rates, each a ccxt
`watch_*` (or a REST poll where the venue cannot stream it) turned into our events.

A feed reads what ccxt delivered, checks it (parse.* for structure, schemas/sanity.py for prices)
and hands the events to the outbox; after a gap, the first delivery also fetches what was missed
(publishers/ccxt/gaps.py). A venue message it cannot read, or whose price is not believable, is
counted and logged and never published. The loop around a feed is publishers/ccxt/loop.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import ccxt

from publishers.ccxt import metrics
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.gaps import CandleTrack, TradeTrack, VenueClock, candle_rows, trades_between
from publishers.ccxt.outbox import Outbox
from schemas.market import Candle, FundingRate, Market, Trade
from schemas.sanity import PriceBand, check_price, check_ticker
from venues.ccxt import parse

log = logging.getLogger("publisher.ccxt")

# ccxt method a feed streams with, and the `has` key that says the venue streams it.
WATCH = {
    "candles": "watchOHLCV",
    "tickers": "watchTicker",
    "trades": "watchTrades",
    "funding": "watchFundingRate",
    "orders": "watchOrders",
    "fills": "watchMyTrades",
    "positions": "watchPositions",
    "balances": "watchBalance",
}
# Binance streams raw trades by default but its REST trades are aggregated ones, with other ids: a
# backfill overlapping the stream would publish the same trades twice. Both sides use aggTrade.
WATCH_TRADES_PARAMS: dict[str, dict[str, Any]] = {"binanceusdm": {"name": "aggTrade"}, "binance": {"name": "aggTrade"}}
# What a venue message that is not a structure we can read raises in parse.* and the schemas.
BAD_MESSAGE = (parse.ParseError, ValueError, KeyError, TypeError, InvalidOperation, AttributeError)


# ----------------------------------------------------------------------------- shared state


@dataclass
class Context:
    """What every loop of one publisher shares."""

    venue: str
    exchange: Any
    cfg: PublisherConfig
    out: Outbox
    clock: VenueClock
    markets: dict[str, Market]
    band: PriceBand = field(default_factory=PriceBand)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    prices: dict[str, tuple[Decimal, int]] = field(default_factory=dict)  # symbol -> last believable price, its time

    def local_ms(self) -> int:
        return self.clock.local_ms()

    def refuse(self, feed: str, reason: str, detail: str) -> None:
        metrics.REJECTED.labels(self.venue, feed, reason).inc()
        log.warning("%s %s: message refused (%s): %s", self.venue, feed, reason, detail[:300])

    def believable(self, symbol: str, name: str, price: Decimal, ts: int, *, history: bool = False) -> str | None:
        """Why a price is garbage (None when it is not); a believable live price becomes the last."""
        market = self.markets.get(symbol)
        if market is None:
            return None
        last = None if history else self.prices.get(symbol)
        problem = check_price(name, price, market, last[0] if last else None, last[1] if last else 0, ts, self.band)
        if problem is None and not history:
            self.prices[symbol] = (price, ts)
        return problem

    def streams(self, feed: str) -> bool:
        """Whether `feed` is streamed (else polled over REST)."""
        return bool(self.exchange.has.get(WATCH[feed])) and feed not in self.cfg.poll


@dataclass
class Delivered:
    """What one delivery became: how many events were recovered over REST (after a gap), how
    the repair went, and the venue time of the first live event (the gap's end)."""

    backfilled: int = 0
    detail: str = ""
    first_ts: int | None = None


class Feed:
    """One feed of one market (or, for account-wide feeds, of the account)."""

    feed = ""
    market_data = True
    repair_on_subscribe = False  # private feeds: repair as soon as the stream is back, not on its first message

    def __init__(self, ctx: Context, symbol: str | None) -> None:
        self.ctx = ctx
        self.symbol = symbol
        self.last_ts: int | None = None  # venue time of the last event delivered

    @property
    def label(self) -> str:
        return self.symbol or "*"

    async def watch(self) -> Any:
        raise NotImplementedError

    async def poll(self) -> Any:
        raise NotImplementedError

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        raise NotImplementedError

    async def repair(self) -> Delivered:
        """Private feeds: the re-fetch after (re)subscribing."""
        return Delivered()

    def interrupted(self) -> None:
        """The stream failed: what it said last may be stale."""

    def seen(self, ts: int, *, live: bool = True) -> None:
        if live:  # a backfilled event is old news: it says nothing about the venue's clock now
            self.ctx.clock.saw(ts)
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts


# ----------------------------------------------------------------------------- public feeds


class CandleFeed(Feed):
    feed = "candles"

    def __init__(self, ctx: Context, symbol: str, track: CandleTrack) -> None:
        super().__init__(ctx, symbol)
        self.track = track
        self.sym = symbol

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_ohlcv(self.sym, self.ctx.cfg.candle_interval)

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_ohlcv(self.sym, self.ctx.cfg.candle_interval, None, 3)

    def interrupted(self) -> None:
        self.track.resume()

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        ctx, cfg = self.ctx, self.ctx.cfg
        if resumed:
            self.track.resume()
        done = Delivered()
        for step in self.track.take(raw or []):
            if step.kind == "fill":
                rows = await candle_rows(ctx.exchange, self.sym, cfg.candle_interval, cfg.interval_ms, step.start, step.end)
                fetched = self.track.filled(rows, step.start, step.end)
                events = [c for c in (self._candle(r, closed=True, history=True) for r in fetched) if c is not None]
                await ctx.out.put(events)
                done.backfilled += len(events)
                expected = self.track.expected(step.start, step.end)
                done.detail = f"{len(events)} of {expected} closed candles fetched"
                metrics.BACKFILLED.labels(ctx.venue, self.feed).inc(len(events))
            else:
                assert step.row is not None
                event = self._candle(step.row, closed=step.kind == "closed")
                if event is not None:
                    await ctx.out.put([event])
                    if done.first_ts is None and not event.closed:
                        done.first_ts = event.ts
        return done

    def _candle(self, row: Any, *, closed: bool, history: bool = False) -> Candle | None:
        ctx, cfg = self.ctx, self.ctx.cfg
        try:
            open_time = int(row[0])
            end = open_time + cfg.interval_ms
            # Closed: dated by its minute alone (one id per minute). Forming: by the venue's clock,
            # kept inside its minute so it never reads as closed before a later candle proves it.
            now = end if closed else min(ctx.clock.now_ms(), end - 1)
            event = parse.candle(ctx.venue, self.sym, row, cfg.candle_interval, now, ctx.local_ms())
        except BAD_MESSAGE as exc:
            ctx.refuse(self.feed, "parse", f"{self.sym} candle {row!r}: {exc}")
            return None
        for name in ("low", "high"):
            problem = ctx.believable(self.sym, name, getattr(event, name), event.ts, history=history)
            if problem:
                ctx.refuse(self.feed, "sanity", problem)
                return None
        self.seen(event.ts, live=not history)
        return event


class TickerFeed(Feed):
    feed = "tickers"

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_ticker(self.symbol)

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_ticker(self.symbol)

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        ctx = self.ctx
        try:
            event = parse.ticker(ctx.venue, raw, ctx.local_ms())
            if event.symbol != self.symbol:
                raise ValueError(f"a ticker of {event.symbol!r} on the feed of {self.symbol!r}")
        except BAD_MESSAGE as exc:
            ctx.refuse(self.feed, "parse", f"{self.symbol} ticker: {exc}")
            return Delivered()
        market = ctx.markets.get(event.symbol)
        if market is not None:
            last = ctx.prices.get(event.symbol)
            problem = check_ticker(event, market, last[0] if last else None, last[1] if last else 0, ctx.band)
            if problem:
                ctx.refuse(self.feed, "sanity", problem)
                return Delivered()
            ctx.prices[event.symbol] = (event.last, event.ts)
        self.seen(event.ts)
        await ctx.out.put([event])
        return Delivered(first_ts=event.ts)


class TradeFeed(Feed):
    feed = "trades"

    def __init__(self, ctx: Context, symbol: str, track: TradeTrack) -> None:
        super().__init__(ctx, symbol)
        self.track = track
        self.sym = symbol
        self.last_ts = track.last_ts
        self.params = WATCH_TRADES_PARAMS.get(ctx.exchange.id, {})

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_trades(self.sym, None, None, dict(self.params))

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_trades(self.sym, self.track.last_ts)

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        ctx = self.ctx
        trades = [t for t in (raw or []) if isinstance(t, dict)]
        done = Delivered()
        hole = self.track.hole(trades) if resumed else None
        if hole is not None:
            fetched = await trades_between(ctx.exchange, self.sym, hole[0], hole[1], ctx.cfg.backfill_max_trades, {})
            events = self._trades(self.track.fresh(fetched), history=True)
            await ctx.out.put(events)
            done.backfilled = len(events)
            done.detail = f"{len(events)} trades fetched"
            metrics.BACKFILLED.labels(ctx.venue, self.feed).inc(len(events))
        events = self._trades(self.track.fresh(trades))
        await ctx.out.put(events)
        if events:
            done.first_ts = events[0].ts
        return done

    def _trades(self, raws: list[dict[str, Any]], *, history: bool = False) -> list[Trade]:
        ctx, out = self.ctx, []
        local = ctx.local_ms()
        for raw in raws:
            try:
                event = parse.trade(ctx.venue, raw, local)
                if event.symbol != self.sym:
                    raise ValueError(f"a trade of {event.symbol!r} on the feed of {self.sym!r}")
            except BAD_MESSAGE as exc:
                ctx.refuse(self.feed, "parse", f"{self.sym} trade {raw.get('id')!r}: {exc}")
                continue
            problem = ctx.believable(self.sym, "price", event.price, event.ts, history=history)
            if problem:
                ctx.refuse(self.feed, "sanity", problem)
                continue
            self.seen(event.ts, live=not history)
            out.append(event)
        return out


class FundingFeed(Feed):
    feed = "funding"

    def __init__(self, ctx: Context, symbol: str) -> None:
        super().__init__(ctx, symbol)
        self.sym = symbol
        self.interval: str | None = None
        self.asked = False

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_funding_rate(self.sym)

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_funding_rate(self.sym)

    async def _interval(self) -> str | None:
        """The venue's real funding interval, asked once where ccxt can (Binance keeps it apart)."""
        if not self.asked and self.ctx.exchange.has.get("fetchFundingInterval"):
            self.asked = True
            try:
                got = await self.ctx.exchange.fetch_funding_interval(self.sym)
                self.interval = (got or {}).get("interval")
            except ccxt.BaseError as exc:
                log.info("%s: funding interval of %s unknown (%s)", self.ctx.venue, self.sym, exc)
        return self.interval

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        ctx = self.ctx
        interval = None if (raw or {}).get("interval") else await self._interval()
        try:
            event: FundingRate = parse.funding_rate(ctx.venue, raw, ctx.local_ms(), interval)
            if event.symbol != self.sym:
                raise ValueError(f"a funding rate of {event.symbol!r} on the feed of {self.sym!r}")
        except BAD_MESSAGE as exc:
            ctx.refuse(self.feed, "parse", f"{self.sym} funding: {exc}")
            return Delivered()
        self.seen(event.ts)
        await ctx.out.put([event])
        return Delivered(first_ts=event.ts)
