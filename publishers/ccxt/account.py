"""One account's private streams: orders, fills, positions and balances, streamed through
`watch_orders`, `watch_my_trades`, `watch_positions`, `watch_balance` (or polled over REST where
the venue cannot stream them), and re-fetched over REST after every (re)subscription.

A private stream speaks only when the account changes, so a reconnect cannot wait for its first
message to repair: once the stream is subscribed again, open orders, our fills since the last one
published, positions and balances are fetched, and what changed is published. The four feeds
share one connection at most venues and fail together: one re-fetch serves them all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import ccxt

from publishers.ccxt import metrics
from publishers.ccxt.feeds import BAD_MESSAGE, Context, Delivered, Feed
from publishers.ccxt.gaps import AccountBook
from schemas.account import Balance, Fill, OrderUpdate, Position
from venues.ccxt import parse
from venues.ccxt.venue import fetch_order_params

log = logging.getLogger("publisher.ccxt")


FILLS_PAGE = 100  # the smallest page the venues we support give (OKX 100, Binance 500 ...)
FILLS_PAGES_MAX = 50


async def fetch_fills_since(exchange: Any, symbol: Any, since: int) -> list[Any]:
    """Our executions from `since`, paged forward until a short page: one page dropped the rest
    of a busy gap (Binance gives the oldest 500, and the cursor then moved past them). Fills of the
    same millisecond are met again on the next page and kept once, by trade id."""
    out: dict[str, Any] = {}
    cursor = since
    for _ in range(FILLS_PAGES_MAX):
        got = await exchange.fetch_my_trades(symbol, cursor, FILLS_PAGE)
        fresh = [t for t in got if str(t.get("id")) not in out]
        for t in fresh:
            out[str(t.get("id"))] = t
        if len(got) < FILLS_PAGE or not fresh:
            break
        cursor = max(int(t.get("timestamp") or cursor) for t in got)
    return sorted(out.values(), key=lambda t: (t.get("timestamp") or 0, str(t.get("id"))))


class AccountSync:
    """The REST re-fetch of one account, shared by its private feeds (one at a time; a feed that
    failed before the last re-fetch started is served by it)."""

    def __init__(self, ctx: Context, account: str, book: AccountBook, client_id: Callable[[str], str | None]) -> None:
        self.ctx = ctx
        self.account = account
        self.book = book
        self.client_id = client_id
        self.lock = asyncio.Lock()
        self.started = 0.0  # monotonic start of the last re-fetch that finished
        self.result = Delivered()

    async def resync(self, failed_at: float) -> Delivered:
        async with self.lock:
            if self.started > failed_at:
                return self.result  # a re-fetch that began after this feed failed already ran
            started = time.monotonic()
            counts = [await self.orders(s) for s in self.ctx.cfg.symbols]
            counts += [await self.fills(s) for s in self.ctx.cfg.symbols]
            counts += [await self.positions(), await self.balances()]
            n = sum(counts)
            self.started, self.result = started, Delivered(backfilled=n, detail=f"{n} changes after re-fetching the account")
            metrics.BACKFILLED.labels(self.ctx.venue, "account").inc(n)
            return self.result

    # --------------------------------------------------------------- one call each

    async def orders(self, symbol: str) -> int:
        ex = self.ctx.exchange
        raws = await ex.fetch_open_orders(symbol)
        events = [e for e in (self.order(o) for o in raws) if e is not None]
        listed = {e.client_order_id for e in events}
        out = [e for e in events if self.book.order_changed(e)]
        for cid, order_id in self.book.vanished(symbol, listed):
            # Published open, no longer listed: how it ended is the change (filled, canceled ...).
            try:
                raw = await ex.fetch_order(order_id, symbol, fetch_order_params(ex.id)) if order_id else None
            except ccxt.OrderNotFound:
                log.warning("%s: order %s vanished and cannot be fetched; the reconciler settles it", self.ctx.venue, cid)
                raw = None
            event = self.order(raw) if raw else None
            if event is not None and self.book.order_changed(event):
                out.append(event)
        await self.ctx.out.put(out)
        return len(out)

    async def fills(self, symbol: str) -> int:
        since = self.book.last_fill_ts.get(symbol)
        if since is None:
            since = self.ctx.clock.now_ms() - self.ctx.cfg.fills_lookback_ms
        raws = await fetch_fills_since(self.ctx.exchange, symbol, since)
        out = await self.fill_events(raws)
        await self.ctx.out.put(out)
        return len(out)

    async def positions(self) -> int:
        ex = self.ctx.exchange
        if not ex.has.get("fetchPositions") or ex.id == "binance":  # spot holds balances, not positions
            return 0
        raws = await ex.fetch_positions(list(self.ctx.cfg.symbols))
        out = [p for p in self.position_events(raws) if self.book.position_changed(p)]
        await self.ctx.out.put(out)
        return len(out)

    async def balances(self) -> int:
        raw = await self.ctx.exchange.fetch_balance()
        out = [b for b in self.balance_events(raw) if self.book.balance_changed(b)]
        await self.ctx.out.put(out)
        return len(out)

    # --------------------------------------------------------------- venue structure -> events

    def order(self, raw: Any) -> OrderUpdate | None:
        try:
            event = parse.order(self.ctx.venue, self.account, raw, self.ctx.local_ms(), self.client_id)
        except BAD_MESSAGE as exc:
            self.ctx.refuse("orders", "parse", f"order {_field(raw, 'id')!r}: {exc}")
            return None
        return event if event.symbol in self.ctx.markets or not self.ctx.markets else None

    async def fill_events(self, raws: Any) -> list[Fill]:
        out = []
        for raw in raws or []:
            order_id = str(_field(raw, "order") or "")
            cid = self.book.client_ids.get(order_id) if order_id else None
            if cid is None and order_id:
                cid = await self._client_id_of(order_id, _field(raw, "symbol"))
            try:
                event = parse.fill(self.ctx.venue, self.account, raw, cid or order_id, self.ctx.local_ms())
            except BAD_MESSAGE as exc:
                self.ctx.refuse("fills", "parse", f"fill {_field(raw, 'id')!r}: {exc}")
                continue
            if event.symbol in self.ctx.cfg.symbols and self.book.fill_new(event):
                out.append(event)
        return out

    async def _client_id_of(self, order_id: str, symbol: Any) -> str | None:
        """ccxt's trade has no client id: the order is fetched once to learn it (and published if
        it is news). A fetch that fails for the network fails the delivery, which is retried."""
        try:
            raw = await self.ctx.exchange.fetch_order(order_id, symbol, fetch_order_params(self.ctx.exchange.id))
        except ccxt.OrderNotFound:
            return None
        event = self.order(raw)
        if event is None:
            return None
        if self.book.order_changed(event):
            await self.ctx.out.put([event])
        return event.client_order_id

    def position_events(self, raws: Any) -> list[Position]:
        out, local = [], self.ctx.local_ms()
        for raw in raws or []:
            if _field(raw, "symbol") not in self.ctx.cfg.symbols:
                continue
            try:
                out.append(parse.position(self.ctx.venue, self.account, raw, local))
            except BAD_MESSAGE as exc:
                self.ctx.refuse("positions", "parse", f"position of {_field(raw, 'symbol')!r}: {exc}")
        return out

    def balance_events(self, raw: Any) -> list[Balance]:
        try:
            return parse.balances(self.ctx.venue, self.account, raw, self.ctx.local_ms())
        except BAD_MESSAGE as exc:
            self.ctx.refuse("balances", "parse", f"balance: {exc}")
            return []


def _field(raw: Any, name: str) -> Any:
    return raw.get(name) if isinstance(raw, dict) else None


class PrivateFeed(Feed):
    """A private feed: repaired by the shared re-fetch as soon as it is subscribed again."""

    market_data = False
    repair_on_subscribe = True

    def __init__(self, ctx: Context, symbol: str | None, sync: AccountSync) -> None:
        super().__init__(ctx, symbol)
        self.sync = sync
        self.book = sync.book
        self.failed_at = 0.0
        self.polled = not ctx.streams(self.feed)

    def interrupted(self) -> None:
        self.failed_at = time.monotonic()

    async def repair(self) -> Delivered:
        done = await self.sync.resync(self.failed_at)
        if self.last_ts is None:
            self.last_ts = self.ctx.clock.now_ms()  # subscribed from now: a later failure is a gap from here
        return done

    async def publish(self, events: list[Any]) -> Delivered:
        for e in events:
            self.seen(e.ts)
        await self.ctx.out.put(events)
        return Delivered(first_ts=events[0].ts if events else None)


class OrdersFeed(PrivateFeed):
    feed = "orders"

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_orders(self.symbol)

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_open_orders(self.symbol)

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        if self.polled:
            assert self.symbol is not None
            n = await self.sync.orders(self.symbol)  # the poll is a snapshot; what vanished is fetched
            return Delivered(backfilled=n if resumed else 0)
        events = [e for e in (self.sync.order(o) for o in raw or []) if e is not None and e.symbol == self.symbol]
        return await self.publish([e for e in events if self.book.order_changed(e)])


class FillsFeed(PrivateFeed):
    feed = "fills"

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_my_trades(self.symbol)

    async def poll(self) -> Any:
        assert self.symbol is not None
        since = self.book.last_fill_ts.get(self.symbol, self.ctx.clock.now_ms() - self.ctx.cfg.fills_lookback_ms)
        return await fetch_fills_since(self.ctx.exchange, self.symbol, since)

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        return await self.publish(await self.sync.fill_events(raw))


class PositionsFeed(PrivateFeed):
    feed = "positions"

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_positions(list(self.ctx.cfg.symbols))

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_positions(list(self.ctx.cfg.symbols))

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        return await self.publish([p for p in self.sync.position_events(raw) if self.book.position_changed(p)])


class BalancesFeed(PrivateFeed):
    feed = "balances"

    async def watch(self) -> Any:
        return await self.ctx.exchange.watch_balance()

    async def poll(self) -> Any:
        return await self.ctx.exchange.fetch_balance()

    async def handle(self, raw: Any, resumed: bool) -> Delivered:
        return await self.publish([b for b in self.sync.balance_events(raw) if self.book.balance_changed(b)])
