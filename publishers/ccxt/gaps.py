"""Gaps: what a lost or silent stream missed, what to fetch over REST, and the markers that say so.

The decisions are pure (`CandleTrack`, `TradeTrack`, `AccountBook`, the marker builders): they
take what the stream delivered and what was published, and say what to publish and which range
to fetch. The fetches (`candle_rows`, `trades_between`) are thin pagers over ccxt's REST calls.

The protocol, per (feed, symbol) (docs/adr/0017-ccxt-publisher.md):
1. the stream fails (a closed connection, a silence past its limit, an error, a restart): a gap
   marker opens, `since` = the venue time of the last event seen, `until` = now by the venue's
   clock as far as we know it;
2. the stream delivers again: what it missed is fetched (closed candles from the last one
   published up to the first one streamed again; public trades from the last one seen up to the
   first one streamed; for an account, open orders, our fills, positions and balances) and what
   is new or changed is published, then what the stream said;
3. an end marker: same `since`, `until` = the venue time of the first event after the gap,
   `backfilled` = how many events were recovered.

Every event keeps its deterministic id, so an overlap stores nothing twice within JetStream's
duplicate window; the tracks also remember what was published, so a gap longer than that window
(MARKET keeps ids for 2 minutes) does not store a closed candle or a trade twice either.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from schemas import ids
from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.market import GapMarker

# The subject kind of each feed: a gap marker names the stream it interrupts that way.
STREAM = {
    "tickers": "ticker",
    "trades": "trade",
    "funding": "funding",
    "orders": "order",
    "fills": "fill",
    "positions": "position",
    "balances": "balance",
}


def stream_name(feed: str, interval: str = "1m") -> str:
    return f"candle{interval}" if feed == "candles" else STREAM[feed]


class VenueClock:
    """The venue's clock as far as its own timestamps tell: the local clock plus the lead (or lag)
    the latest event showed over it. An event is dated before the venue's now, so this runs behind
    the venue by about one message's travel, never ahead; a lead over a minute, or a lag over a
    month, is a bad timestamp and is not believed."""

    MAX_LEAD_MS = 60_000
    MAX_LAG_MS = 30 * 86_400_000

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.lead_ms = 0

    def local_ms(self) -> int:
        return int(self.clock() * 1000)

    def saw(self, ts: int) -> None:
        lead = ts - self.local_ms()
        if -self.MAX_LAG_MS < lead < self.MAX_LEAD_MS:
            self.lead_ms = lead

    def now_ms(self) -> int:
        return self.local_ms() + self.lead_ms


# ----------------------------------------------------------------------------- gap markers


@dataclass
class Gap:
    """An open gap of one (feed, symbol): published when it opened, closed by the next delivery."""

    stream: str  # the marker's stream name (`candle1m`, `trade`, `order`, ...)
    symbol: str
    account: str | None
    since: int  # venue time of the last event before it
    opened: int  # the open marker's `until`
    reason: str


def open_gap(stream: str, symbol: str, account: str | None, since: int, now: int, reason: str) -> Gap:
    return Gap(stream, symbol, account, since, max(since, now), reason)


def open_marker(venue: str, gap: Gap, ts_local: int) -> GapMarker:
    return GapMarker(
        id=ids.gap_id(venue, gap.symbol, gap.stream, gap.since, gap.opened),
        venue=venue,
        symbol=gap.symbol,
        account=gap.account,
        stream=gap.stream,
        since=gap.since,
        until=gap.opened,
        backfilled=0,
        reason=f"{gap.reason}; repairing",
        ts=gap.opened,
        ts_local=ts_local,
    )


def end_marker(venue: str, gap: Gap, first_after: int, backfilled: int, detail: str, ts_local: int) -> GapMarker:
    """The end of a gap. Its `until` is after the open marker's, so the two never share an id."""
    until = max(first_after, gap.opened + 1)
    return GapMarker(
        id=ids.gap_id(venue, gap.symbol, gap.stream, gap.since, until),
        venue=venue,
        symbol=gap.symbol,
        account=gap.account,
        stream=gap.stream,
        since=gap.since,
        until=until,
        backfilled=backfilled,
        reason=f"{gap.reason}; repaired: {detail}" if detail else f"{gap.reason}; repaired",
        ts=until,
        ts_local=ts_local,
    )


# ----------------------------------------------------------------------------- candles

Row = list[Any]  # ccxt's OHLCV row: [open_time, open, high, low, close, volume]


@dataclass(frozen=True)
class Step:
    """One thing to do, in order: publish a closed or a forming candle, or fetch [start, end)."""

    kind: Literal["closed", "partial", "fill"]
    row: Row | None = None
    start: int = 0
    end: int = 0


@dataclass
class CandleTrack:
    """One market's candles as streamed (watch_ohlcv) or polled.

    A candle is closed once a later one has been seen: that later row proves the venue's clock
    has passed the end of the earlier one, whatever the local clock says. The last row of the
    forming candle is kept; after any interruption it may be stale, so it is dropped (`resume`)
    and that minute is fetched over REST with the rest of the hole instead of being closed from
    what the stream last said. A closed candle's id is a function of its minute only
    (parse.candle: ts = open_time + interval - 1), and `last_closed` is never published again.
    """

    interval_ms: int
    last_closed: int | None = None  # open time of the last candle published closed
    history: int = 0  # with nothing published yet: this many closed candles before the first row
    max_fill: int = 10_080  # at most this many candles fetched for one hole
    current: Row | None = None

    def resume(self) -> None:
        self.current = None

    def take(self, rows: Iterable[Row]) -> list[Step]:
        steps: list[Step] = []
        step = self.interval_ms
        ordered = sorted((list(r) for r in rows), key=lambda r: int(r[0]))  # copies: ccxt updates its rows in place
        if self.current is None:
            # After a (re)start only the newest row is surely live: older ones may be what ccxt
            # cached before the gap and never handed over. The fill before it covers them.
            ordered = ordered[-1:]
        for row in ordered:
            t = int(row[0])
            if self.last_closed is not None and t <= self.last_closed:
                continue  # a closed minute again (an overlap, a late update): published already
            cur = self.current
            if cur is not None and t < int(cur[0]):
                continue  # older than the forming candle: a late update of a closed minute
            if cur is None:
                start = self.last_closed + step if self.last_closed is not None else t - self.history * step
                if start < t:
                    steps.append(Step("fill", start=max(start, t - self.max_fill * step), end=t))
            elif t > int(cur[0]):
                steps.append(Step("closed", row=cur))
                self.last_closed = int(cur[0])
                if t > int(cur[0]) + step:  # the stream skipped minutes without failing
                    steps.append(Step("fill", start=max(int(cur[0]) + step, t - self.max_fill * step), end=t))
            self.current = row
            steps.append(Step("partial", row=row))
        return steps

    def filled(self, rows: Iterable[Row], start: int, end: int) -> list[Row]:
        """The fetched rows of the hole [start, end), in order. They are all closed (`end` is the
        open time of a candle the venue already streams) and none was published: the hole begins
        after the last candle closed when it was found, and what `take` closed since lies at or
        after `end`."""
        by_time: dict[int, Row] = {}
        for row in rows:
            t = int(row[0])
            if start <= t < end:
                by_time[t] = list(row)
        out = [by_time[t] for t in sorted(by_time)]
        if out and (self.last_closed is None or int(out[-1][0]) > self.last_closed):
            self.last_closed = int(out[-1][0])
        return out

    def expected(self, start: int, end: int) -> int:
        return max(0, (end - start) // self.interval_ms)


# ----------------------------------------------------------------------------- public trades


@dataclass
class TradeTrack:
    """One market's public trades: the ids recently published (an overlap with a backfill, or a
    poll that returns the last page again, is not published twice) and the last trade's time."""

    last_ts: int | None = None
    keep: int = 20_000
    recent: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def key(self, trade: dict[str, Any]) -> str:
        return str(trade.get("id") or trade.get("timestamp"))

    def fresh(self, trades: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The trades not published yet, oldest first; they are remembered as published."""
        out = []
        for t in sorted(trades, key=lambda t: int(t.get("timestamp") or 0)):
            key = self.key(t)
            if key in self.recent:
                continue
            self.recent[key] = None
            if len(self.recent) > self.keep:
                self.recent.popitem(last=False)
            out.append(t)
            ts = t.get("timestamp")
            if isinstance(ts, int) and (self.last_ts is None or ts > self.last_ts):
                self.last_ts = ts
        return out

    def hole(self, trades: list[dict[str, Any]]) -> tuple[int, int] | None:
        """[since, until] to fetch before these trades, the first delivery after a gap."""
        stamps = [t["timestamp"] for t in trades if isinstance(t.get("timestamp"), int)]
        if self.last_ts is None or not stamps:
            return None
        first = min(stamps)
        return (self.last_ts, first) if first >= self.last_ts else None


# ----------------------------------------------------------------------------- one account


def _position_key(p: Position) -> tuple[Any, ...]:
    return (p.side, p.contracts, p.entry_price, p.leverage, p.margin_mode, p.liquidation_price)


def _balance_key(b: Balance) -> tuple[Decimal, Decimal, Decimal]:
    return (b.free, b.used, b.total)


@dataclass
class AccountBook:
    """What was published for one account, to publish only what changed.

    Ids alone would not do: ACCOUNT keeps them for 10 minutes, and a position or a balance without
    a venue timestamp is dated when it is fetched, so the same state fetched twice gets two ids.
    """

    orders: dict[str, tuple[str, Decimal]] = field(default_factory=dict)  # client id -> (status, filled)
    open_orders: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # client id -> (symbol, order id)
    client_ids: dict[str, str] = field(default_factory=dict)  # venue order id -> client id
    positions: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    balances: dict[str, tuple[Decimal, Decimal, Decimal]] = field(default_factory=dict)
    fills: OrderedDict[str, None] = field(default_factory=OrderedDict)
    last_fill_ts: dict[str, int] = field(default_factory=dict)  # symbol -> newest fill's time
    keep: int = 20_000

    def order_changed(self, o: OrderUpdate) -> bool:
        if o.order_id:
            self.client_ids[o.order_id] = o.client_order_id
            if len(self.client_ids) > self.keep:
                self.client_ids.pop(next(iter(self.client_ids)))
        state = (o.status, o.filled.normalize())
        before = self.orders.get(o.client_order_id)
        if before is not None and (before == state or _ORDER_RANK[before[0]] > _ORDER_RANK[state[0]] or before[1] > state[1]):
            return False  # the same, or older than what was published (a stream and a fetch crossing)
        self.orders[o.client_order_id] = state
        if len(self.orders) > self.keep:
            self.orders.pop(next(iter(self.orders)))
        if o.status == "open":
            self.open_orders[o.client_order_id] = (o.symbol, o.order_id)
        else:
            self.open_orders.pop(o.client_order_id, None)
        return True

    def vanished(self, symbol: str, listed: Iterable[str]) -> list[tuple[str, str | None]]:
        """Orders published open in `symbol` that the venue no longer lists as open: (client id,
        order id) to fetch, since how they ended is a change to publish."""
        still = set(listed)
        return [(cid, oid) for cid, (sym, oid) in self.open_orders.items() if sym == symbol and cid not in still]

    def fill_new(self, f: Fill) -> bool:
        if f.trade_id in self.fills:
            return False
        self.fills[f.trade_id] = None
        if len(self.fills) > self.keep:
            self.fills.popitem(last=False)
        if f.ts > self.last_fill_ts.get(f.symbol, 0):
            self.last_fill_ts[f.symbol] = f.ts
        return True

    def position_changed(self, p: Position) -> bool:
        key = _position_key(p)
        if self.positions.get(p.symbol) == key:
            return False
        self.positions[p.symbol] = key
        return True

    def balance_changed(self, b: Balance) -> bool:
        key = _balance_key(b)
        if self.balances.get(b.asset) == key:
            return False
        self.balances[b.asset] = key
        return True


# An order moves forward only: a fetch that crosses a newer stream event must not undo it.
_ORDER_RANK = {"open": 0, "unknown": 0, "closed": 1, "canceled": 1, "expired": 1, "rejected": 1}


# ----------------------------------------------------------------------------- REST pagers


def page_limit(exchange: Any, method: str, symbol: str, default: int = 200) -> int:
    """The venue's largest page for a REST method, from ccxt's `features` (its own table)."""
    try:
        market = exchange.market(symbol)
        kind = "swap" if market.get("swap") else "future" if market.get("future") else "spot"
        features = exchange.features[kind]
        if kind != "spot":
            features = features["linear" if market.get("linear") else "inverse"]
        limit = (features.get(method) or {}).get("limit")
        return int(limit) if limit else default
    except (KeyError, TypeError, AttributeError, ValueError):
        return default


async def candle_rows(exchange: Any, symbol: str, interval: str, interval_ms: int, start: int, end: int) -> list[Row]:
    """OHLCV rows with open times in [start, end), paged forward from `start`."""
    page = page_limit(exchange, "fetchOHLCV", symbol)
    rows: dict[int, Row] = {}
    cursor = start
    while cursor < end:
        want = min(page, (end - cursor) // interval_ms + 1)
        got: list[Row] = await exchange.fetch_ohlcv(symbol, interval, cursor, want)
        newest = cursor - 1
        for row in got:
            t = int(row[0])
            newest = max(newest, t)
            if start <= t < end:
                rows[t] = row
        if not got or newest < cursor or len(got) < want:
            break  # the venue has nothing further (or ignored `since`)
        cursor = newest + interval_ms
    return [rows[t] for t in sorted(rows)]


async def trades_between(exchange: Any, symbol: str, since: int, until: int, most: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Public trades with times in [since, until], paged forward by time (ids overlap at the
    page edges; `TradeTrack.fresh` drops what was seen)."""
    page = page_limit(exchange, "fetchTrades", symbol, 500)
    out: dict[str, dict[str, Any]] = {}
    cursor = since
    while len(out) < most:
        got: list[dict[str, Any]] = await exchange.fetch_trades(symbol, cursor, page, dict(params))
        newest = cursor
        added = 0
        for t in got:
            ts = t.get("timestamp")
            if not isinstance(ts, int) or ts < since or ts > until:
                continue
            key = str(t.get("id") or ts)
            if key not in out:
                out[key] = t
                added += 1
            newest = max(newest, ts)
        if not got or added == 0 or newest >= until or len(got) < page:
            break
        cursor = newest  # inclusive: trades sharing the last millisecond are not skipped
    return sorted(out.values(), key=lambda t: int(t["timestamp"]))[:most]
