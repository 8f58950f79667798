"""`sqt run publisher`: one real venue's market data (and optionally one account) onto the bus.

One process per (venue, account): a lease (`publisher-<instance>`, ADR 0010) keeps a second one
out, since two publishers of one venue would each repair the other's gaps. The NATS connection,
the publisher, the lease and the ccxt exchange are owned by an AsyncExitStack and closed in the
reverse order; the feed loops (publishers/ccxt/loop.py) run until `stop`.

On start every feed looks up the last event of its subject in the stream: a market published
before (a restart) resumes from there, with a gap marker and a backfill; a market never published
fetches `history_candles` closed candles once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import AsyncExitStack
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus.connection import connect
from bus.http import address, maybe_serve
from bus.lease import Lease
from bus.publisher import Publisher
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from publishers.ccxt import metrics
from publishers.ccxt.account import AccountSync, BalancesFeed, FillsFeed, OrdersFeed, PositionsFeed
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.feeds import CandleFeed, Context, Feed, FundingFeed, TickerFeed, TradeFeed
from publishers.ccxt.gaps import AccountBook, CandleTrack, TradeTrack, VenueClock
from publishers.ccxt.loop import FeedLoop
from publishers.ccxt.outbox import Outbox
from schemas import subjects
from schemas.account import Fill
from schemas.codec import DecodeError, decode
from schemas.market import Candle, Market
from venues.ccxt import parse
from venues.ccxt.config import CcxtVenueConfig
from venues.ccxt.errors import from_ccxt
from venues.ccxt.exchange import build
from venues.errors import Transient

log = logging.getLogger("publisher.ccxt")

RESTARTED = "publisher restarted"


def measure_rate_limit(exchange: Any, venue: str) -> None:
    """Count the time ccxt's own rate limiter holds our REST calls (it spaces them by the venue's
    weights before they leave)."""
    inner = exchange.throttle
    wait = metrics.RATE_LIMIT_WAIT.labels(venue)

    async def throttle(cost: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return await inner(cost)
        finally:
            waited = time.perf_counter() - started
            if waited > 0.001:
                wait.inc(waited)

    exchange.throttle = throttle


def client_id_rule(exchange_id: str) -> Any:
    """The venue's client id rule (venues/ccxt/ids.py), or the id as the venue says it."""
    try:
        from venues.ccxt.ids import rule
    except ImportError:  # not in this checkout yet: the venue's text is kept as it is
        return lambda text: text
    ids = rule(exchange_id)

    def from_venue(text: str) -> str | None:
        try:
            return ids.from_venue(text)
        except ValueError:
            return None

    return from_venue


async def last_stored(js: JetStreamContext, stream: str, subject: str) -> Any:
    """The last event stored on one subject, decoded (None: none, or unreadable)."""
    try:
        msg = await js.get_last_msg(stream, subject)
    except NotFoundError:
        return None
    try:
        return decode(msg.data or b"")
    except DecodeError:
        log.warning("the last event on %s does not decode; starting that feed afresh", subject)
        return None


async def resume_points(js: JetStreamContext, cfg: PublisherConfig, symbol: str) -> dict[str, Any]:
    """feed -> the last event this venue's feed published for `symbol` (absent: never)."""
    v = cfg.venue
    wanted = {
        "candles": ("MARKET", subjects.md(v, symbol, f"candle{cfg.candle_interval}")),
        "tickers": ("MARKET", subjects.md(v, symbol, "ticker")),
        "trades": ("MARKET", subjects.md(v, symbol, "trade")),
        "funding": ("MARKET", subjects.md(v, symbol, "funding")),
    }
    if cfg.account is not None:
        wanted["fills"] = ("ACCOUNT", subjects.acct(v, cfg.account, symbol, "fill"))
    found = {}
    for feed, (stream, subject) in wanted.items():
        event = await last_stored(js, stream, subject)
        if event is not None:
            found[feed] = event
    return found


def build_loops(ctx: Context, resume: dict[str, dict[str, Any]], client_id: Any) -> list[FeedLoop]:
    """One loop per enabled (feed, symbol); private feeds share one account book and re-fetch."""
    cfg = ctx.cfg
    loops: list[FeedLoop] = []
    for symbol in cfg.symbols:
        stored = resume.get(symbol, {})
        for feed_name in cfg.enabled():
            feed: Feed
            if feed_name == "candles":
                last = stored.get("candles")
                last_closed = None
                if isinstance(last, Candle):
                    # A forming candle stored last: the one before it was closed before it began.
                    last_closed = last.open_time if last.closed else last.open_time - cfg.interval_ms
                track = CandleTrack(
                    cfg.interval_ms, last_closed=last_closed, history=cfg.history_candles, max_fill=cfg.backfill_max_candles
                )
                feed = CandleFeed(ctx, symbol, track)
            elif feed_name == "tickers":
                feed = TickerFeed(ctx, symbol)
            elif feed_name == "trades":
                last = stored.get("trades")
                trades = TradeTrack(last_ts=getattr(last, "ts", None))
                if last is not None:
                    trades.recent[last.trade_id] = None
                feed = TradeFeed(ctx, symbol, trades)
            elif feed_name == "funding":
                if not contract(ctx.exchange, symbol):
                    continue  # a spot market pays no funding
                feed = FundingFeed(ctx, symbol)
            else:
                continue
            last = stored.get(feed_name)
            if last is not None:
                feed.last_ts = last.ts
            loops.append(FeedLoop(feed, symbols=list(cfg.symbols), started_gap=RESTARTED))
    if cfg.account is not None:
        book = AccountBook()
        for symbol in cfg.symbols:
            fill = resume.get(symbol, {}).get("fills")
            if isinstance(fill, Fill):
                book.last_fill_ts[symbol] = fill.ts
                book.fills[fill.trade_id] = None
        sync = AccountSync(ctx, cfg.account, book, client_id)
        enabled = cfg.enabled()
        for symbol in cfg.symbols:
            if "orders" in enabled:
                loops.append(FeedLoop(OrdersFeed(ctx, symbol, sync), symbols=list(cfg.symbols), account=cfg.account))
            if "fills" in enabled:
                loops.append(FeedLoop(FillsFeed(ctx, symbol, sync), symbols=list(cfg.symbols), account=cfg.account))
        if "positions" in enabled and any(contract(ctx.exchange, s) for s in cfg.symbols):  # spot holds balances only
            loops.append(FeedLoop(PositionsFeed(ctx, None, sync), symbols=list(cfg.symbols), account=cfg.account))
        if "balances" in enabled:
            loops.append(FeedLoop(BalancesFeed(ctx, None, sync), symbols=list(cfg.symbols), account=cfg.account))
    return loops


def contract(exchange: Any, symbol: str) -> bool:
    return bool((exchange.markets or {}).get(symbol, {}).get("contract"))


def our_markets(exchange: Any, cfg: PublisherConfig) -> dict[str, Market]:
    """Our trading rules for every configured symbol (for the price sanity checks); a symbol the
    venue does not list stops the publisher at start, naming it."""
    missing = [s for s in cfg.symbols if s not in (exchange.markets or {})]
    if missing:
        raise ValueError(f"`symbols`: {', '.join(missing)} not listed by {cfg.venue}")
    rules = parse.markets(exchange)
    return {s: rules[s] for s in cfg.symbols if s in rules}


async def markets_loaded(exchange: Any, venue: str, stop: asyncio.Event) -> bool:
    """The venue's markets, asked until it answers (a venue down at start is waited for, said in
    the log, not a crash); False if stopped first. A refusal that retrying cannot fix raises."""
    delay = 1.0
    while True:
        try:
            await exchange.load_markets()
            return True
        except Exception as exc:
            error = from_ccxt(exc, exchange.id)
            if not isinstance(error, Transient):
                raise error from exc
            log.warning("%s: its markets cannot be loaded yet (%s); retrying in %.0f s", venue, error, delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        if stop.is_set():
            return False
        delay = min(delay * 2, 60.0)


async def run_publisher(settings: BusSettings, venue_cfg: CcxtVenueConfig, cfg: PublisherConfig, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as owned:
        nc = await connect(settings.nats_url, name=f"sqt-publisher-{cfg.name}", role="exchange")
        owned.push_async_callback(nc.close)
        js = nc.jetstream()
        await prepare(nc, settings.streams())
        lease = Lease(nc, f"publisher-{cfg.name}")
        await lease.acquire()
        owned.push_async_callback(lease.release)
        publisher = await Publisher(nc).start()
        owned.push_async_callback(publisher.close)
        out = Outbox(publisher, cfg.venue)
        out.start()
        owned.push_async_callback(out.close)
        exchange = build(cfg.venue, cfg.account, venue_cfg, streaming=True)
        owned.push_async_callback(exchange.close)
        measure_rate_limit(exchange, cfg.venue)
        if not await markets_loaded(exchange, cfg.venue, stop):
            return
        ctx = Context(cfg.venue, exchange, cfg, out, VenueClock(), our_markets(exchange, cfg))
        resume = {symbol: await resume_points(js, cfg, symbol) for symbol in cfg.symbols}
        loops = build_loops(ctx, resume, client_id_rule(exchange.id))
        started = time.time()

        def status() -> dict[str, Any]:
            now = time.time()
            return {
                "component": "publisher",
                "instance": cfg.name,
                "venue": cfg.venue,
                "account": cfg.account,
                "symbols": cfg.symbols,
                "feeds": [
                    {
                        "feed": lp.feed,
                        "symbol": lp.symbol,
                        "mode": "watch" if lp.streaming else "poll",
                        "up": lp.up(),
                        "deliveries": lp.delivered,
                        "silence_s": round(now - lp.last_message, 1) if lp.last_message else None,
                        "gap_since": lp.gaps[0].since if lp.gaps else None,
                    }
                    for lp in loops
                ],
                "unacked": len(out.pending),
                "lost": out.failed,
                "uptime_s": round(now - started, 1),
            }

        def health() -> dict[str, Any]:
            """Unhealthy while a feed has been down (in a gap, or never delivered) for a minute."""
            if time.time() - started < 60:
                return {"ok": True}
            down = [f"{lp.feed} {lp.symbol}" for lp in loops if not lp.up() and time.time() - (lp.last_message or started) > 60]
            return {"ok": not down, "reason": f"feeds down for over a minute: {', '.join(down)}" if down else None}

        http = await maybe_serve(cfg.metrics_port, metrics.REGISTRY, status, health=health)
        if http is not None:
            owned.push_async_callback(http.cleanup)
        what = f"publisher of {cfg.venue}" + (f" and account {cfg.account}" if cfg.account else "") + ": venue -> bus"
        service = await register(nc, "publisher", cfg.name, what, status, http=address(http))
        owned.push_async_callback(service.stop)
        log.info(
            "publishing %s %s: %s",
            cfg.venue,
            ", ".join(cfg.symbols),
            ", ".join(sorted({f"{lp.feed} ({'watch' if lp.streaming else 'poll'})" for lp in loops})),
        )
        await run_loops(loops, stop, lease)


async def run_loops(loops: list[FeedLoop], stop: asyncio.Event, lease: Lease | None = None) -> None:
    """Run every loop until `stop` (or the lease is lost: another process publishes now)."""
    tasks = [asyncio.create_task(lp.run(stop), name=f"publisher-{lp.feed}-{lp.symbol}") for lp in loops]
    waiters = [asyncio.ensure_future(stop.wait())]
    if lease is not None:
        waiters.append(asyncio.ensure_future(lease.lost.wait()))
    try:
        await asyncio.wait([*tasks, *waiters], return_when=asyncio.FIRST_COMPLETED)
        if lease is not None and lease.lost.is_set():
            log.error("lease %s lost: another publisher took over; stopping", lease.name)
    finally:
        stop.set()
        for w in waiters:
            w.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
