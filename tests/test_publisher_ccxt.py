"""The ccxt publisher against a local Binance USD-M: a WebSocket server speaking its market streams
(kline, aggTrade, 24hrTicker; its user data stream for the account) and an HTTP server answering
its REST paths, reached through ccxt's real clients (`rest_url` / `ws_url` point them here), with
a real nats-server. The venue's clock runs fast (a minute every 0.1 s, in the past, so nothing is
dated ahead of the bus) and every candle and trade is a function of its minute, so what the MARKET
stream holds can be checked against the truth: every closed minute exactly once, whatever the
connection did (dropped, silent) in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from nats.aio.client import Client

from bus.reader import read_stream
from bus.settings import BusSettings
from publishers.ccxt import metrics
from publishers.ccxt.config import PublisherConfig
from publishers.ccxt.gaps import AccountBook, CandleTrack, TradeTrack, end_marker, open_gap, open_marker
from publishers.ccxt.runner import run_publisher
from schemas import ids
from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.base import OrderStatus
from schemas.codec import decode
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from testkit.binance_stream import MIN, SYMBOL, VENUE, FakeBinance, minute_values, partial_values, tenths, thousandths, trades_of
from testkit.bus import eventually

# ----------------------------------------------------------------------------- harness


@pytest.fixture
async def venue() -> AsyncIterator[FakeBinance]:
    server = FakeBinance()
    await server.start()
    yield server
    await server.stop()


def config(**overrides: Any) -> PublisherConfig:
    base: dict[str, Any] = {
        "venue": VENUE,
        "symbols": [SYMBOL],
        "feeds": ["candles", "tickers", "trades", "funding"],
        "expected_ms": {"candles": 60, "tickers": 60, "trades": 60},
        "silence_multiple": 6,
        "poll_ms": {"funding": 200},
        "history_candles": 5,
        "reconnect_first_ms": 50,
        "reconnect_max_ms": 400,
    }
    return PublisherConfig(**(base | overrides))


@contextlib.asynccontextmanager
async def publishing(nc: Client, server: FakeBinance, cfg: PublisherConfig) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_publisher(BusSettings(nats_url=_url(nc)), server.venue_config(), cfg, stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def _url(nc: Client) -> str:
    assert nc.connected_url is not None
    return f"nats://{nc.connected_url.netloc}"


async def stored(nc: Client, stream: str = "MARKET") -> list[Any]:
    out = []
    async for batch in read_stream(nc, stream, url=_url(nc)):
        out += [decode(m.data) for m in batch]
    return out


def closed_candles(events: list[Any]) -> list[Candle]:
    return [e for e in events if isinstance(e, Candle) and e.closed]


async def until_minutes(server: FakeBinance, n: int) -> None:
    target = server.minute_now() + n
    await eventually(lambda: server.minute_now() >= target, timeout=30, what=f"{n} venue minutes")


def check_exactly_once(candles: list[Candle], server: FakeBinance) -> list[int]:
    """Every minute between the first and the last closed candle appears once, with its true values."""
    minutes = [(c.open_time - server.t0) // MIN for c in candles]
    counts = Counter(minutes)
    doubled = sorted(m for m, n in counts.items() if n > 1)
    assert not doubled, f"minutes published closed twice: {doubled}"
    missing = sorted(set(range(min(minutes), max(minutes) + 1)) - set(minutes))
    assert not missing, f"closed minutes missing: {missing}"
    for c in candles:
        i = (c.open_time - server.t0) // MIN
        o, h, lo, cl, v = minute_values(i)
        assert (c.open, c.high, c.low, c.close, c.volume) == (
            Decimal(tenths(o)),
            Decimal(tenths(h)),
            Decimal(tenths(lo)),
            Decimal(tenths(cl)),
            Decimal(thousandths(v)),
        ), f"minute {i}"
        assert c.ts == c.open_time + MIN - 1
        assert c.id == ids.candle_id(VENUE, SYMBOL, "1m", c.open_time, c.ts, True)
    return sorted(minutes)


def gap_pairs(events: list[Any], stream: str) -> list[tuple[GapMarker, GapMarker]]:
    """The gap markers of one stream as (opened, ended) pairs: every gap that opened has ended.

    A loaded machine may stall the loop past the watchdog's limit once more; that is a gap too,
    so the tests look for the one they caused rather than count them."""
    gaps = [e for e in events if isinstance(e, GapMarker) and e.stream == stream]
    assert gaps and len(gaps) % 2 == 0, gaps
    pairs = list(zip(gaps[::2], gaps[1::2]))
    for opened, ended in pairs:
        assert opened.since == ended.since and opened.until < ended.until, (opened, ended)
        assert opened.reason.endswith("repairing") and "repaired" in ended.reason
    return pairs


def check_trades_once(trades: list[Trade], server: FakeBinance) -> None:
    agg = [int(t.trade_id) for t in trades]
    doubled = sorted(a for a, n in Counter(agg).items() if n > 1)
    assert not doubled, f"trades published twice: {doubled}"
    missing = sorted(set(range(min(agg), max(agg) + 1)) - set(agg))
    assert not missing, f"trades missing: {missing}"


# ----------------------------------------------------------------------------- tests


@pytest.mark.e2e
async def test_streamed_candles_trades_tickers_and_polled_funding_reach_the_market_stream_as_our_events(
    bus: Client, venue: FakeBinance
) -> None:
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 8)
    events = await stored(bus)
    candles = closed_candles(events)
    minutes = check_exactly_once(candles, venue)
    # The first start fetches `history_candles` (5) closed candles back from when it asked (the
    # venue's clock runs a minute per 0.1 s, so a slow start on a busy machine asks later).
    asked = venue.first_klines_minute
    assert asked is not None and venue.first_minute - 5 <= minutes[0] <= asked - 5, (minutes[0], asked)
    assert len(minutes) >= 12
    forming = [e for e in events if isinstance(e, Candle) and not e.closed]
    assert forming and all(c.open_time <= c.ts < c.open_time + MIN for c in forming)

    trades = [e for e in events if isinstance(e, Trade)]
    check_trades_once(trades, venue)
    first = trades[0]
    i = (first.ts - venue.t0) // MIN
    truth = next(t for t in trades_of(i, venue.t0) if t["a"] == int(first.trade_id))
    assert (first.price, first.amount, first.ts) == (Decimal(truth["p"]), Decimal(truth["q"]), truth["T"])
    assert first.side == ("sell" if truth["m"] else "buy")
    assert first.id == ids.trade_id(VENUE, SYMBOL, first.trade_id)

    tickers = [e for e in events if isinstance(e, Ticker)]
    assert len(tickers) > 10, venue.requests
    assert all(t.id == ids.ticker_id(VENUE, SYMBOL, t.ts) for t in tickers)
    minute = (tickers[-1].ts - venue.t0) // MIN
    assert tickers[-1].last == Decimal(tenths(partial_values(minute, ((tickers[-1].ts - venue.t0) % MIN) // 15_000)[3]))

    funding = [e for e in events if isinstance(e, FundingRate)]
    assert funding and funding[0].funding_rate == Decimal("0.0001") and funding[0].interval == "4h"
    assert not [e for e in events if isinstance(e, GapMarker)], "a first start is not a gap"
    assert not [k for k in venue.requests if k.startswith("unknown")], venue.requests


@pytest.mark.e2e
async def test_a_dropped_connection_is_reconnected_marked_as_a_gap_and_backfilled_with_no_candle_missing_or_doubled(
    bus: Client, venue: FakeBinance
) -> None:
    before = metrics.RECONNECTS.labels(VENUE, "candles", "disconnect")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
        venue.refuse_until = time.monotonic() + 0.5  # five venue minutes without a stream
        klines_before = venue.requests["klines"]
        await venue.drop()
        await until_minutes(venue, 6)
        await eventually(lambda: venue.requests["klines"] > klines_before, what="the REST backfill")
        await until_minutes(venue, 4)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    pairs = gap_pairs(events, "candle1m")
    opened, ended = next((o, e) for o, e in pairs if "connection lost" in o.reason)
    assert opened.since < opened.until < ended.until and opened.backfilled == 0
    assert ended.backfilled >= 1 and "closed candles fetched" in ended.reason
    assert metrics.RECONNECTS.labels(VENUE, "candles", "disconnect")._value.get() > before


@pytest.mark.e2e
async def test_a_stream_that_goes_silent_without_closing_is_detected_reconnected_reported_and_backfilled(
    bus: Client, venue: FakeBinance
) -> None:
    before = metrics.RECONNECTS.labels(VENUE, "candles", "silence")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
        sockets = venue.requests["ws"]
        venue.silence()  # the sockets stay open and answer pings; nothing else arrives
        await eventually(lambda: venue.requests["ws"] > sockets, what="a reconnect after the silence")
        await until_minutes(venue, 5)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    opened, ended = next((o, e) for o, e in gap_pairs(events, "candle1m") if "silent for" in o.reason)
    assert opened.since < opened.until < ended.until and ended.backfilled >= 1
    assert metrics.RECONNECTS.labels(VENUE, "candles", "silence")._value.get() > before
    assert {e.stream for e in events if isinstance(e, GapMarker)} >= {"candle1m", "trade", "ticker"}


@pytest.mark.e2e
async def test_a_venue_message_that_fails_parsing_or_sanity_is_counted_and_not_published_and_the_loop_goes_on(
    bus: Client, venue: FakeBinance
) -> None:
    def refused(reason: str) -> float:
        return metrics.REJECTED.labels(VENUE, "trades", reason)._value.get()

    parse_before, sanity_before = refused("parse"), refused("sanity")
    tickers_before = metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get()
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 3)
        t = venue.now()
        bad = {"e": "aggTrade", "E": t, "s": "BTCUSDT", "f": 1, "l": 1, "T": t, "m": False, "q": "0.010"}
        await venue.inject("btcusdt@aggTrade", {**bad, "a": 7, "p": "0"})  # not a price: the schema refuses it
        await venue.inject("btcusdt@aggTrade", {**bad, "a": 8, "p": "999999999.0"})  # 16,000x the last: garbage
        await eventually(lambda: refused("parse") > parse_before and refused("sanity") > sanity_before, what="the refusals")

        async def garbage_ticker_refused() -> bool:
            # ccxt hands over the latest ticker only: one overtaken before the loop asks is never seen.
            await venue.inject("btcusdt@miniTicker", {**venue.mini_ticker(venue.now(), 1), "c": "-5"})
            return bool(metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get() > tickers_before)

        await eventually(garbage_ticker_refused, interval=0.05, what="the refused ticker")
        await until_minutes(venue, 3)
    events = await stored(bus)
    trades = [e for e in events if isinstance(e, Trade)]
    assert not [e for e in trades if e.trade_id in ("7", "8")]
    assert max(e.ts for e in trades) > t + 2 * MIN, "trades after the garbage were published"
    check_exactly_once(closed_candles(events), venue)
    assert metrics.REJECTED.labels(VENUE, "tickers", "parse")._value.get() > tickers_before
    assert not [e for e in events if isinstance(e, Ticker) and e.last < 0]


@pytest.mark.e2e
async def test_a_lost_user_data_stream_is_marked_and_the_account_is_refetched_publishing_only_what_changed_with_deterministic_ids(
    bus: Client, venue: FakeBinance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQT_BINANCEUSDM_API_KEY", "key")
    monkeypatch.setenv("SQT_BINANCEUSDM_SECRET", "secret")
    await venue.place(101, "grid1a", "59500.0", "0.010", push=False)
    cfg = config(account="main", feeds=["orders", "fills", "positions", "balances"], fills_lookback_ms=4 * 86_400_000)

    async def account_events() -> list[Any]:
        return await stored(bus, "ACCOUNT")

    async def has(predicate: Callable[[list[Any]], bool]) -> bool:
        return predicate(await account_events())

    def orders(events: list[Any], cid: str, status: str) -> list[OrderUpdate]:
        return [e for e in events if isinstance(e, OrderUpdate) and e.client_order_id == cid and e.status == status]

    async with publishing(bus, venue, cfg):
        # The start fetches the account once: the resting order, the position, the balance.
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1a", "open"))), what="the open order from the first fetch")
        await eventually(lambda: has(lambda ev: any(isinstance(e, Balance) for e in ev)), what="the balance")
        await eventually(lambda: venue.requests["ws"] >= 1, what="the user data stream")
        # Streamed: a new order, straight from ORDER_TRADE_UPDATE.
        await venue.place(102, "grid1b", "59000.0", "0.010", push=True)
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1b", "open"))), what="the streamed order")
        # The stream dies; while it is down the first order fills. Only REST can tell.
        fetched = venue.requests["openOrders"]
        venue.refuse_until = time.monotonic() + 0.3
        await venue.drop_private()
        venue.fill(101, trade_id=9001)
        await eventually(lambda: has(lambda ev: bool(orders(ev, "grid1a", "closed"))), what="the fill found by the re-fetch")
        await eventually(
            lambda: has(lambda ev: len([e for e in ev if isinstance(e, GapMarker) and "repaired" in e.reason]) >= 1),
            what="the end of the gap",
        )
        assert venue.requests["openOrders"] > fetched
    events = await account_events()
    closed = orders(events, "grid1a", "closed")
    assert len(closed) == 1 and closed[0].id == ids.order_event_id(VENUE, "main", "grid1a", "closed", Decimal("0.01"))
    assert closed[0].filled == Decimal("0.01") and closed[0].order_id == "101"
    fills = [e for e in events if isinstance(e, Fill)]
    assert len(fills) == 1 and fills[0].id == ids.fill_id(VENUE, "main", "9001") and fills[0].client_order_id == "grid1a"
    positions = [e for e in events if isinstance(e, Position)]
    assert [p.contracts for p in positions] == [Decimal("0.01"), Decimal("0.02")], "the position once per state"
    balances = [e for e in events if isinstance(e, Balance) and e.asset == "USDT"]
    assert [b.total for b in balances] == [Decimal("1000"), Decimal("999.988")]
    assert len(orders(events, "grid1a", "open")) == 1 and len(orders(events, "grid1b", "open")) == 1, "nothing published twice"
    gaps = [e for e in events if isinstance(e, GapMarker)]
    assert gaps and all(g.account == "main" and g.symbol == SYMBOL for g in gaps)
    ended = [g for g in gaps if "repaired" in g.reason]
    assert ended and max(g.backfilled for g in ended) >= 4  # the order's end, the fill, the position, the balance
    assert {g.stream for g in gaps} <= {"order", "fill", "position", "balance"}


# ----------------------------------------------------------------------------- the decisions alone


def test_a_candle_is_closed_by_a_later_row_and_a_hole_is_filled_from_rest_once() -> None:
    track = CandleTrack(MIN, last_closed=None, history=2)
    steps = track.take([[10 * MIN, 1, 2, 0.5, 1.5, 3]])
    assert [(s.kind, s.start, s.end) for s in steps] == [("fill", 8 * MIN, 10 * MIN), ("partial", 0, 0)]
    assert track.filled([[8 * MIN, 1, 1, 1, 1, 1], [9 * MIN, 1, 1, 1, 1, 1], [10 * MIN, 1, 1, 1, 1, 1]], 8 * MIN, 10 * MIN) == [
        [8 * MIN, 1, 1, 1, 1, 1],
        [9 * MIN, 1, 1, 1, 1, 1],
    ]
    assert [s.kind for s in track.take([[10 * MIN, 1, 2, 0.5, 1.6, 4], [11 * MIN, 2, 2, 2, 2, 1]])] == ["partial", "closed", "partial"]
    assert track.last_closed == 10 * MIN
    # A skipped minute on a live stream is a hole too; an old minute again is ignored.
    steps = track.take([[9 * MIN, 1, 1, 1, 1, 1], [13 * MIN, 1, 1, 1, 1, 1]])
    assert [(s.kind, s.start // MIN, s.end // MIN) for s in steps] == [("closed", 0, 0), ("fill", 12, 13), ("partial", 0, 0)]
    # After an interruption the forming candle is not closed from its stale row; only the newest
    # row of the first delivery is trusted, the rest is fetched.
    track.resume()
    steps = track.take([[13 * MIN, 9, 9, 9, 9, 9], [16 * MIN, 1, 1, 1, 1, 1]])
    assert [(s.kind, s.start // MIN, s.end // MIN) for s in steps] == [("fill", 12, 16), ("partial", 0, 0)]


def test_trades_seen_are_not_published_again_and_the_hole_runs_from_the_last_trade() -> None:
    track = TradeTrack()
    first = [{"id": "1", "timestamp": 100}, {"id": "2", "timestamp": 200}]
    assert track.fresh(first) == first and track.last_ts == 200
    assert track.fresh([{"id": "2", "timestamp": 200}, {"id": "3", "timestamp": 300}]) == [{"id": "3", "timestamp": 300}]
    assert track.hole([{"id": "9", "timestamp": 900}]) == (300, 900)


def test_the_account_book_publishes_changes_only_and_never_moves_an_order_back() -> None:
    book = AccountBook()

    def order(status: OrderStatus, filled: str) -> OrderUpdate:
        return OrderUpdate(
            id="x", venue=VENUE, account="main", symbol=SYMBOL, order_id="1", client_order_id="c", side="buy", order_type="limit",
            price=Decimal(1), amount=Decimal(1), filled=Decimal(filled), remaining=Decimal(0), status=status, ts=1, ts_local=1,
        )  # fmt: skip

    assert book.order_changed(order("open", "0"))
    assert not book.order_changed(order("open", "0.0"))
    assert book.order_changed(order("closed", "1"))
    assert not book.order_changed(order("open", "0")), "a fetch crossing a newer stream event"
    assert book.vanished(SYMBOL, []) == [] and book.client_ids["1"] == "c"


def test_gap_markers_open_and_end_with_ids_that_never_collide() -> None:
    gap = open_gap("candle1m", SYMBOL, None, since=1_000, now=900, reason="silent")
    opened = open_marker(VENUE, gap, ts_local=5)
    ended = end_marker(VENUE, gap, first_after=1_000, backfilled=3, detail="3 of 3 closed candles fetched", ts_local=6)
    assert (opened.since, opened.until, ended.until) == (1_000, 1_000, 1_001)
    assert opened.id != ended.id and ended.backfilled == 3 and ended.reason.startswith("silent; repaired")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"symbols": []}, "`symbols`"),
        ({"symbols": ["BTCUSDT"]}, "`symbols[0]`"),
        ({"feeds": ["candles", "book"]}, "`feeds[1]`"),
        ({"expected_ms": {"candle": 5}}, "`expected_ms.candle`"),
        ({"poll_ms": {"funding": 0}}, "`poll_ms.funding`"),
        ({"silence_multiple": 1}, "`silence_multiple`"),
        ({"candle_interval": "2m"}, "`candle_interval`"),
        ({"account": "Main"}, "account"),
    ],
)
def test_a_bad_config_names_its_key(overrides: dict[str, Any], key: str) -> None:
    import msgspec

    with pytest.raises(msgspec.ValidationError, match=key.replace("[", r"\[").replace("]", r"\]")):
        msgspec.convert({"symbols": [SYMBOL]} | overrides, PublisherConfig)


@pytest.mark.e2e
async def test_a_restarted_publisher_resumes_from_what_the_stream_holds_with_a_gap_and_no_candle_twice(
    bus: Client, venue: FakeBinance
) -> None:
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 3)
    await until_minutes(venue, 4)  # the publisher is down for four venue minutes
    async with publishing(bus, venue, config()):
        await until_minutes(venue, 4)
    events = await stored(bus)
    check_exactly_once(closed_candles(events), venue)
    check_trades_once([e for e in events if isinstance(e, Trade)], venue)
    opened, ended = gap_pairs(events, "candle1m")[0]
    assert opened.reason.startswith("publisher restarted") and ended.backfilled >= 3
    assert gap_pairs(events, "trade")[0][1].backfilled >= 6
