"""Paper trading: the simulated exchange priced by a real venue's public trades (docs/adr/0016).

Unit level, on a real nats-server with the exchange in this process: a replayed feed drives its
prints and fills, hostile feed messages move nothing and land in the DLQ, gaps and silences
are said, and a trade journaled just before a crash is not printed again. As real processes: a
paper venue killed -9 mid-feed fills exactly like one that ran throughout, and the paper venue,
the executor and the default grid run over a few minutes of replayed trades.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bus.contract import Inbound, InputRejected, StoredMsg
from bus.embedded import EmbeddedServer
from bus.publisher import Publisher
from bus.reader import read_stream
from cli.config import ConfigError, default_grids, load
from executors.config import ExecutorConfig
from executors.runner import executor_spec
from schemas import ids, subjects
from schemas.account import Fill, OrderUpdate
from schemas.codec import encode
from schemas.commands import PlaceOrder
from schemas.market import GapMarker, Ticker, Trade
from strategies.grid.lattice import client_prefix
from testkit.bus import eventually
from testkit.paper import (
    MINUTE_MS,
    SOURCE,
    SYMBOL,
    VENUE,
    dead_letters,
    feed_trade,
    fills,
    minute_ago,
    paper_config,
    price_path,
    prints,
    replay,
    stored,
    toml,
)
from testkit.processes import Components
from venues.errors import Transient
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig
from venues.sim.engine import SimEngine
from venues.sim.journal import MAX_QUANTITY, Print, Quote, Tick, journal_subject
from venues.sim.paper import PaperPrints
from venues.sim.service import SimService

D = Decimal


# ----------------------------------------------------------------------------- settings and the judge


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "paper_venue"),  # required
        ({"paper_venue": "Binance USD-M"}, "paper_venue"),
        ({"paper_venue": "*"}, "paper_venue"),
        ({"paper_venue": "paper"}, "paper_venue"),  # its own name: it would read its own prints
        ({"paper_venue": SOURCE, "clock": "lockstep"}, "clock"),
        ({"paper_venue": SOURCE, "paper_gap_ms": 0}, "paper_gap_ms"),
    ],
)
def test_a_bad_paper_setting_names_its_key(tmp_path: Path, settings: dict[str, Any], key: str) -> None:
    raw = {"venue": VENUE, "prices": "paper"} | settings
    with pytest.raises(msgspec.ValidationError, match=f"`{key}`"):
        msgspec.convert(raw, SimConfig, strict=False)
    path = tmp_path / "sqt.toml"
    path.write_text("[sim]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in raw.items()))
    with pytest.raises(ConfigError, match=f"config key sim.{key} "):
        load(path, environ={})


def test_a_trade_a_little_late_prints_at_the_clock_and_an_old_one_is_refused() -> None:
    judge = PaperPrints(paper_config())
    t0 = 1_700_000_000_000
    assert judge.judge(7, feed_trade(1, "60000.04", t0)) == Tick(step=7, ts=t0, prints=[Print(SYMBOL, D("60000.0"), D("0.2"))])
    late = judge.judge(8, feed_trade(2, "60001", t0 - 1_500))  # another market's websocket was ahead
    assert isinstance(late, Tick) and late.ts == t0
    with pytest.raises(InputRejected, match="before the paper venue's clock"):
        judge.judge(9, feed_trade(3, "60002", t0 - 2_001))
    assert (judge.clock, judge.last[SYMBOL]) == (t0, (D("60001"), t0))  # a refusal changes nothing


def test_a_trade_that_would_take_its_minutes_volume_beyond_the_journals_bound_is_refused() -> None:
    """The engine adds each print to the minute's bar, bounded like any volume (MAX_QUANTITY):
    the judge refuses a trade past it (the engine would refuse its tick, and every later one of
    the minute, while the feed took them as printed). A new minute starts from nothing, and a
    restarted judge starts from the engine's forming bar."""
    judge = PaperPrints(paper_config())
    t0 = 1_700_000_040_000  # a minute boundary
    judge.judge(1, feed_trade(1, "60000", t0))
    with pytest.raises(InputRejected, match="volume of BTC/USDT:USDT's minute beyond"):
        judge.judge(2, feed_trade(2, "60001", t0 + 100, MAX_QUANTITY))  # 0.2 + 1e15
    assert (judge.clock, judge.last[SYMBOL], judge.volume[SYMBOL]) == (t0, (D(60000), t0), (t0, D("0.2")))  # unchanged
    judge.judge(3, feed_trade(3, "60002", t0 + 200, MAX_QUANTITY - D("0.2")))  # exactly the bound
    with pytest.raises(InputRejected, match="beyond"):
        judge.judge(4, feed_trade(4, "60003", t0 + 300, "0.001"))
    fresh = judge.judge(5, feed_trade(5, "60004", t0 + MINUTE_MS, MAX_QUANTITY))  # a new minute
    assert isinstance(fresh, Tick) and fresh.prints[0].volume == MAX_QUANTITY

    engine = SimEngine(paper_config())
    state = engine.initial_state()
    for n, trade in enumerate([feed_trade(1, "60000", t0), feed_trade(2, "60001", t0 + 100, MAX_QUANTITY - 1)], start=1):
        tick = PaperPrints(paper_config()).judge(n, trade)
        assert isinstance(tick, Tick)
        state, _ = engine.step(state, Inbound(n, "", tick))
    restarted = PaperPrints(paper_config())
    restarted.reset(state)
    with pytest.raises(InputRejected, match="beyond"):
        restarted.judge(3, feed_trade(3, "60002", t0 + 200, "1.3"))  # 1e15 - 0.8 + 1.3


async def running(bus: Client, config: SimConfig) -> tuple[SimService, asyncio.Event, asyncio.Task[None]]:
    service = SimService(bus, config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await eventually(lambda: service.feed is not None and service.feed.live_feed is not None, timeout=20, what="the paper feed to go live")
    return service, stop, task


@pytest.fixture
async def paper(bus: Client) -> AsyncIterator[SimService]:
    service, stop, task = await running(bus, paper_config())
    yield service
    stop.set()
    await task


@pytest.fixture
async def publisher(bus: Client) -> AsyncIterator[Publisher]:
    pub = await Publisher(bus).start()
    yield pub
    await pub.close()


async def settled(service: SimService, seq: int) -> None:
    """The feed consumer is past MARKET seq `seq` and the engine applied what it journaled."""
    assert service.feed is not None
    feed = service.feed
    await eventually(lambda: feed.seq >= seq, what=f"the paper feed to pass MARKET seq {seq}")
    last = (await service.nc.jetstream().stream_info(service.journal.name)).state.last_seq
    await service.wait_applied(last)


async def test_each_real_trade_is_one_print_at_its_price_and_time(paper: SimService, publisher: Publisher, bus: Client) -> None:
    t0 = minute_ago(10)
    feed = [feed_trade(1, "60000", t0), feed_trade(2, "60010.5", t0 + 300, "0.7"), feed_trade(3, "59990", t0 + 900, "0.05")]
    for trade in feed:
        ack = await publisher.publish(trade)
    await settled(paper, ack.seq)
    printed = await prints(bus)
    assert [(t.price, t.amount, t.ts) for t in printed] == [(t.price, t.amount, t.ts) for t in feed]
    ms = paper.state.markets[SYMBOL]
    assert (ms.last, ms.bid, ms.ask, paper.state.ts) == (D("59990"), D("59989.9"), D("59990.1"), t0 + 900)
    tickers = [t for t in await stored(bus, "MARKET", f"md.{VENUE}.>") if isinstance(t, Ticker)]
    assert [t.last for t in tickers] == [D("60000"), D("60010.5"), D("59990")]
    assert await dead_letters(bus) == []


def gap(since: int, until: int | None = None, **kw: Any) -> GapMarker:
    """The feed's gap marker: its publisher lost the stream between `since` and `until`."""
    until = since + 5_000 if until is None else until
    stream = kw.pop("stream", "trade")
    return GapMarker(
        id=ids.gap_id(SOURCE, SYMBOL, stream, since, until),
        venue=SOURCE,
        symbol=SYMBOL,
        stream=stream,
        since=since,
        until=until,
        reason=kw.pop("reason", "websocket reconnected"),
        ts=until,
        ts_local=until,
        **kw,
    )


async def test_a_fresh_paper_venue_reads_the_feed_from_now_on_by_default(bus: Client, publisher: Publisher) -> None:
    t0 = minute_ago(10)
    await publisher.publish(feed_trade(1, "50000", t0))  # stored before the paper venue began
    service, stop, task = await running(bus, paper_config(paper_from="now"))
    try:
        await settled(service, (await publisher.publish(feed_trade(2, "60000", t0 + 100))).seq)
    finally:
        stop.set()
        await task
    assert [t.price for t in await prints(bus)] == [D("60000")]


def buy(cid: str, price: str, amount: str = "0.01") -> OrderRequest:
    return OrderRequest(symbol=SYMBOL, client_order_id=cid, side="buy", amount=D(amount), price=D(price), post_only=True)


async def test_a_resting_buy_fills_only_when_a_real_trade_prints_at_or_below_it(
    paper: SimService, publisher: Publisher, bus: Client
) -> None:
    t0 = minute_ago(10)
    await settled(paper, (await publisher.publish(feed_trade(1, "60000", t0))).seq)
    venue = SimVenue(bus, VENUE)
    order = await venue.create_order(buy("b1", "59990"))
    assert order.status == "open"
    sell = OrderRequest(symbol=SYMBOL, client_order_id="s1", side="sell", amount=D("0.01"), price=D("60020"), post_only=True)
    assert (await venue.create_order(sell)).status == "open"
    above = [feed_trade(2, "60005", t0 + 100), feed_trade(3, "59995", t0 + 200), feed_trade(4, "59990.1", t0 + 300)]
    for trade in above:
        ack = await publisher.publish(trade)
    await settled(paper, ack.seq)
    assert await fills(bus) == []  # 59990.1 is above the buy: nothing traded at its price
    # At its price: half the trade's amount (fill_ratio 0.5) is the buy's; then a trade below it
    # fills the rest, at the order's own price (a maker fill), not the trade's.
    for trade in [feed_trade(5, "59990", t0 + 400, "0.01"), feed_trade(6, "59980", t0 + 500, "1"), feed_trade(7, "60020", t0 + 600, "3")]:
        ack = await publisher.publish(trade)
    await settled(paper, ack.seq)
    got = [(f.client_order_id, f.side, f.price, f.amount, f.liquidity, f.ts) for f in await fills(bus)]
    assert got == [
        ("b1", "buy", D("59990"), D("0.005"), "maker", t0 + 400),
        ("b1", "buy", D("59990"), D("0.005"), "maker", t0 + 500),
        ("s1", "sell", D("60020"), D("0.01"), "maker", t0 + 600),
    ]
    assert (await venue.fetch_order(SYMBOL, client_order_id="b1")).status == "closed"
    assert await dead_letters(bus) == []


async def test_hostile_feed_messages_move_no_price_and_go_to_the_dlq_with_their_reason(
    paper: SimService, publisher: Publisher, bus: Client
) -> None:
    t0 = minute_ago(10)
    subject = f"md.{SOURCE}.BTC-USDT-USDT.trade"
    await settled(paper, (await publisher.publish(feed_trade(1, "60000", t0))).seq)
    good = msgspec.to_builtins(feed_trade(2, "60001", t0 + 100))
    ticker = Ticker(id="t", venue=SOURCE, symbol=SYMBOL, last=D(60001), bid=D(60000), ask=D(60002), ts=t0 + 100, ts_local=t0 + 100)
    hostile: list[tuple[str, bytes, str]] = [
        (subject, encode(ticker), "undecodable"),  # another type on the trade subject
        (subject, b"\xff{not json", "undecodable"),
        (subject, msgspec.json.encode(good | {"price": "-1"}), "undecodable"),
        (subject, msgspec.json.encode(good | {"price": "NaN"}), "undecodable"),
        (subject, msgspec.json.encode(good | {"price": "Infinity"}), "undecodable"),
        (subject, msgspec.json.encode(good | {"amount": "0"}), "undecodable"),
        (subject, msgspec.json.encode(good | {"venue": "okx"}), "the subject is the authority"),  # another venue
        (subject, msgspec.json.encode(good | {"symbol": "ETH/USDT:USDT"}), "the subject is the authority"),  # another market
        (subject, msgspec.json.encode(good | {"symbol": "BTCUSDT"}), "does not name a valid subject"),
        (subject, msgspec.json.encode(good | {"price": "600000"}), "away from the last price"),  # ten times the price
        (subject, msgspec.json.encode(good | {"price": "0.01"}), "below one tick"),
        (subject, msgspec.json.encode(good | {"ts": t0 - 3_600_000}), "before the paper venue's clock"),  # an hour old
        (subject, msgspec.json.encode(good | {"ts": int(time.time() * 1000) + 3_600_000}), "after it was stored"),  # from the future
        (f"md.{SOURCE}.BTC-USDT-USDT.gap", encode(gap(t0, account="main")), "the subject is the authority"),
        (f"md.{SOURCE}.BTC-USDT-USDT.gap", encode(gap(t0, stream="Trade Stream!")), "stream"),
    ]
    # Not the paper venue's input at all (a market it does not list, another venue): not read,
    # so neither printed nor dead-lettered.
    ignored = [
        (f"md.{SOURCE}.DOGE-USDT-USDT.trade", encode(feed_trade(3, "0.1", t0 + 100, symbol="DOGE/USDT:USDT"))),
        ("md.okx.BTC-USDT-USDT.trade", encode(feed_trade(4, "1", t0 + 100, venue="okx"))),
    ]
    seqs = []
    for subj, payload, _ in hostile:
        seqs.append((await (await publisher.send(subj, payload))).seq)
    for subj, payload in ignored:
        await (await publisher.send(subj, payload))
    ack = await publisher.publish(feed_trade(5, "60002", t0 + 200))  # the feed goes on
    await settled(paper, ack.seq)

    assert [t.price for t in await prints(bus)] == [D("60000"), D("60002")]
    assert paper.state.markets[SYMBOL].last == D("60002")
    dlq = await dead_letters(bus)
    assert [(s, q) for s, q, _ in dlq] == [(subj, seq) for (subj, _, _), seq in zip(hostile, seqs)]
    for (_, _, why), (_, _, reason) in zip(hostile, dlq):
        assert why in reason, reason
    assert paper.feed is not None and paper.feed.stats.sessions == 1  # none of it broke the session


async def test_a_trade_the_engine_could_not_count_is_refused_by_the_feed_and_the_minute_goes_on(
    paper: SimService, publisher: Publisher, bus: Client
) -> None:
    """A trade whose amount takes its minute's volume past the journal's bound is the feed's to
    refuse, into the DLQ with its reason: journaled, the engine would refuse its tick (and each
    later one of that minute) while the feed took them as printed. Only MARKET's trades are
    dead-lettered, never a journal entry, and the feed's prices stay the engine's."""
    t0 = minute_ago(10)
    feed = [
        feed_trade(1, "60000", t0),
        feed_trade(2, "60001", t0 + 100, MAX_QUANTITY),  # refused: 0.2 + 1e15
        feed_trade(3, "60002", t0 + 200, MAX_QUANTITY - D("0.4")),  # prints
        feed_trade(4, "60003", t0 + 300),  # prints: the minute's volume is exactly the bound
        feed_trade(5, "60004", t0 + 400),  # refused: the minute is full
        feed_trade(6, "60005", t0 + MINUTE_MS),  # a new minute
    ]
    seqs = [(await publisher.publish(trade)).seq for trade in feed]
    await settled(paper, seqs[-1])
    assert [t.price for t in await prints(bus)] == [D("60000"), D("60002"), D("60003"), D("60005")]
    subject = subjects.md(SOURCE, SYMBOL, "trade")
    dlq = await dead_letters(bus)
    assert [(s, q) for s, q, _ in dlq] == [(subject, seqs[1]), (subject, seqs[4])], dlq
    assert all("minute beyond" in reason for _, _, reason in dlq), dlq
    assert paper.feed is not None and paper.feed.prints.last[SYMBOL] == (D("60005"), t0 + MINUTE_MS)
    assert paper.state.markets[SYMBOL].last == D("60005")


async def test_a_trade_the_judge_chokes_on_is_dead_lettered_and_the_feed_goes_on(
    paper: SimService, publisher: Publisher, bus: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever judging an input raises, the input is dead-lettered with it: raised out of the
    batch, it would end the session and be delivered again to the next one, for good."""
    assert paper.feed is not None
    judge = paper.feed.prints
    real = judge.judge

    def choking(seq: int, event: Any) -> Any:
        if isinstance(event, Trade) and event.price == D("60001"):
            raise decimal.InvalidOperation([decimal.InvalidOperation])
        return real(seq, event)

    monkeypatch.setattr(judge, "judge", choking)
    t0 = minute_ago(10)
    seqs = [(await publisher.publish(feed_trade(n, p, t0 + n))).seq for n, p in enumerate(["60000", "60001", "60002"], start=1)]
    await settled(paper, seqs[-1])
    assert [t.price for t in await prints(bus)] == [D("60000"), D("60002")]
    [(_, seq, reason)] = await dead_letters(bus)
    assert seq == seqs[1] and "InvalidOperation" in reason, reason
    assert paper.feed.stats.sessions == 1


async def test_a_gap_of_the_feed_is_forwarded_and_a_silence_gets_the_paper_venues_own_marker(
    paper: SimService, publisher: Publisher, bus: Client
) -> None:
    t0 = minute_ago(10)
    for event in [
        feed_trade(1, "60000", t0),
        gap(t0, t0 + 4_000),  # the publisher lost its stream for 4 s
        feed_trade(2, "60100", t0 + 4_000),  # within paper_gap_ms (10 s): the paper venue saw no silence of its own
        feed_trade(3, "60050", t0 + 24_000),  # 20 s without a trade: a silence
    ]:
        ack = await publisher.publish(event)
    await settled(paper, ack.seq)
    md = [e for e in await stored(bus, "MARKET", f"md.{VENUE}.>") if isinstance(e, (Trade, GapMarker))]
    kinds = [(type(e).__name__, e.price if isinstance(e, Trade) else (e.since, e.until)) for e in md]
    assert kinds == [
        ("Trade", D("60000")),
        ("GapMarker", (t0, t0 + 4_000)),
        ("Trade", D("60100")),
        ("GapMarker", (t0 + 4_000, t0 + 24_000)),
        ("Trade", D("60050")),
    ]
    forwarded, silence = (e for e in md if isinstance(e, GapMarker))
    assert (forwarded.venue, forwarded.stream, forwarded.reason) == (VENUE, "trade", f"{SOURCE} feed: websocket reconnected")
    assert forwarded.id == ids.gap_id(VENUE, SYMBOL, "trade", t0, t0 + 4_000)
    assert silence.reason == f"no trade on the {SOURCE} feed for more than 10000 ms"
    assert paper.state.ts == t0 + 24_000  # the clock is the feed's: it stood still through the silence
    assert await dead_letters(bus) == []


@pytest.mark.e2e
async def test_a_paper_venue_killed_mid_feed_continues_without_printing_a_trade_twice(
    tmp_path: Path, nats_server: EmbeddedServer, bus: Client, publisher: Publisher
) -> None:
    """Two paper venues over one feed with the same resting orders: one runs here throughout,
    the other is `sqt run sim`, killed -9 mid-feed and started again. Both print every trade
    once, in order, and fill the same orders at the same prices and times."""
    steady, stop, task = await running(bus, paper_config("steady"))
    procs = Components(tmp_path)
    toml(procs.config, nats_server.url, paper_config())
    procs.start("sim")
    crashed, calm = SimVenue(bus, VENUE), SimVenue(bus, "steady")
    try:
        feed = price_path(minute_ago(15), minutes=2, every_ms=100)
        await publisher.publish(feed[0])
        for venue in (crashed, calm):
            await eventually(lambda v=venue: at(v, feed[0].ts), timeout=30, what=f"{venue.name} to print the first trade")
            for i, offset in enumerate([-150, -100, -50, 50, 100, 150]):
                price = feed[0].price + offset
                order = OrderRequest(
                    symbol=SYMBOL, client_order_id=f"o{i}", side="buy" if offset < 0 else "sell", amount=D("0.01"), price=price
                )
                await venue.create_order(order)
        replaying = asyncio.create_task(replay(publisher, feed[1:], speed=20))  # 2 minutes in 6 s
        await eventually(lambda: at(crashed, feed[len(feed) // 3].ts), timeout=30, what="the paper venue to be a third through")
        reached = (await crashed.time()).ts
        procs.kill("sim")
        assert reached < feed[-1].ts  # killed mid-feed
        procs.start("sim")
        await replaying
        for venue in (crashed, calm):
            await eventually(lambda v=venue: at(v, feed[-1].ts), timeout=30, what=f"{venue.name} to print the last trade")
        positions = await crashed.fetch_positions([SYMBOL]), await calm.fetch_positions([SYMBOL])
    finally:
        procs.stop()
        stop.set()
        await task

    for name in (VENUE, "steady"):
        assert [(t.price, t.amount, t.ts) for t in await prints(bus, name)] == [(t.price, t.amount, t.ts) for t in feed]
    ticks = [msgspec.json.decode(m.data, type=Tick) async for m in stream(bus, f"VENUE_{VENUE.upper()}", f"venue.{VENUE}.journal.tick")]
    trade_seqs = [m.seq async for m in stream(bus, "MARKET", f"md.{SOURCE}.>")]
    assert [t.step for t in ticks] == trade_seqs  # one tick per trade, its MARKET sequence
    mine, theirs = await fills(bus, VENUE), await fills(bus, "steady")
    assert mine and [fill_facts(f) for f in mine] == [fill_facts(f) for f in theirs]
    mine_now, theirs_now = ([msgspec.structs.replace(p, id="", venue="") for p in side] for side in positions)
    assert mine_now and mine_now == theirs_now
    assert await dead_letters(bus) == []


async def at(venue: SimVenue, ts: int) -> bool:
    """The venue's clock has reached `ts` (False while it is down or recovering)."""
    try:
        return (await venue.time()).ts >= ts
    except Transient:
        return False


async def stream(bus: Client, name: str, pattern: str) -> AsyncIterator[StoredMsg]:
    async for batch in read_stream(bus, name, subjects=(pattern,)):
        for m in batch:
            yield m


def fill_facts(f: Fill) -> tuple[object, ...]:
    return (f.client_order_id, f.order_id, f.trade_id, f.side, f.price, f.amount, f.fee_cost, f.liquidity, f.ts)


async def test_a_trade_journaled_before_a_crash_is_not_printed_again_after_it(bus: Client, publisher: Publisher) -> None:
    """The crash window: a trade's tick reached the journal but the trade was never acked. The
    restarted feed resumes after the last trade the engine printed, not at its ack floor (the
    tick here carries no dedupe id, as if journaled longer ago than the journal's window)."""
    t0 = minute_ago(10)
    first, stop, task = await running(bus, paper_config())
    one = await publisher.publish(feed_trade(1, "60000", t0))
    await settled(first, one.seq)
    stop.set()
    await task
    second = await publisher.publish(feed_trade(2, "60010", t0 + 100))
    third = await publisher.publish(feed_trade(3, "60020", t0 + 200))
    tick = Tick(step=second.seq, ts=t0 + 100, prints=[Print(SYMBOL, D("60010"), D("0.2"))])
    for entry in (tick, Quote(step=second.seq)):
        await (await publisher.send(journal_subject(VENUE, entry), msgspec.json.encode(entry)))

    again, stop, task = await running(bus, paper_config())
    try:
        await settled(again, third.seq)
    finally:
        stop.set()
        await task
    ticks = [msgspec.json.decode(m.data, type=Tick) async for m in stream(bus, f"VENUE_{VENUE.upper()}", f"venue.{VENUE}.journal.tick")]
    assert [t.step for t in ticks] == [one.seq, second.seq, third.seq]
    assert [t.price for t in await prints(bus)] == [D("60000"), D("60010"), D("60020")]


# ----------------------------------------------------------------------------- end to end

MINUTES, SPEED = 3, 6  # three minutes of trades (event time) in thirty seconds


@pytest.mark.e2e
async def test_paper_mode_runs_the_default_grid_on_replayed_trades_and_its_fills_follow_them(
    tmp_path: Path, nats_server: EmbeddedServer, bus: Client, publisher: Publisher
) -> None:
    """`sqt run sim` in paper mode, the executor and the default grid (`sqt up`'s, on the paper
    venue), each a real process, over three minutes of a deterministic trade path
    (`testkit.paper.price_path`, 0.25% waves on 60,000) published as binanceusdm's feed at six
    times its pace. Event times end about now, as a recording replayed at speed would; its first
    minute closes after five seconds, so the grid finds a closed candle at once.

    The engine's rule, checked for every fill: a resting order fills as maker at its own price
    on the first trade after it rested that reached it (a buy: a trade at or below it); a taker
    fills at once against the book the last trade left, one tick (the spread) beyond it."""
    grid = msgspec.structs.replace(default_grids()[0], venue=VENUE, metrics_port=0)
    procs = Components(tmp_path, instance=grid.instance)
    toml(procs.config, nats_server.url, paper_config(), ("executor", ExecutorConfig(venue=VENUE, risk_heartbeat_ms=0)), ("grids", grid))
    duration = MINUTES * MINUTE_MS
    start = int(time.time() * 1000) - duration + duration // SPEED - 60_000
    start -= start % MINUTE_MS + 5_000  # five seconds before a minute boundary
    feed = price_path(start, MINUTES, every_ms=200)
    procs.start("sim", "executor", "grid")
    paper = SimVenue(bus, VENUE)
    try:
        await eventually(lambda: answers(paper), timeout=30, what="the paper venue to answer")
        await replay(publisher, feed, SPEED)
        await eventually(lambda: at(paper, feed[-1].ts), timeout=20, what="the paper venue to print the last trade")
        executor = executor_spec(ExecutorConfig(venue=VENUE)).name
        await eventually(lambda: drained(bus, executor), timeout=20, what="the executor to handle every command")
        for component, proc in procs.procs.items():
            assert proc.poll() is None, f"{component} exited with {proc.returncode}"
    finally:
        procs.stop()

    for component in procs.procs:
        log = (tmp_path / f"{component}.log").read_text()
        assert "Traceback" not in log and " ERROR " not in log, f"{component}.log:\n{log[-3000:]}"
    assert await dead_letters(bus) == []
    printed = await prints(bus)
    assert [(t.price, t.amount, t.ts) for t in printed] == [(t.price, t.amount, t.ts) for t in feed]
    places = [c for c in await stored(bus, "COMMAND", subjects.cmd(VENUE, "main", SYMBOL, "place")) if isinstance(c, PlaceOrder)]
    assert len(places) >= 2 * grid.levels, "the grid placed its orders"
    done = await fills(bus)
    assert {f.side for f in done} == {"buy", "sell"}, f"fills on both sides: {done}"
    opened = {o.client_order_id: o.ts for o in reversed(await orders(bus)) if o.status == "open"}  # the first "open" of each
    limits = {c.client_order_id: c.price for c in places}
    tick = D("0.1")
    seen: set[str] = set()
    for f in done:
        assert f.client_order_id.startswith(client_prefix(grid.instance)), f
        if f.liquidity == "maker":
            assert f.price == limits[f.client_order_id], f
            reached = [t for t in feed if t.ts > opened[f.client_order_id] and reaches(t, f)]
            assert reached, f"{f}: no trade reached its price after it rested"
            if f.client_order_id not in seen:
                assert f.ts == reached[0].ts, f"{f}: not filled by the first trade that reached it ({reached[0]})"
            else:
                assert f.ts in {t.ts for t in reached}, f
        else:
            last = [t for t in feed if t.ts <= f.ts][-1]
            assert f.ts == last.ts and f.price == (last.price + tick if f.side == "buy" else last.price - tick), f
        seen.add(f.client_order_id)


def reaches(trade: Trade, fill: Fill) -> bool:
    return trade.price <= fill.price if fill.side == "buy" else trade.price >= fill.price


async def answers(venue: SimVenue) -> bool:
    try:
        await venue.time()
    except Transient:
        return False
    return True


async def drained(bus: Client, consumer: str) -> bool:
    info = await bus.jetstream().consumer_info("COMMAND", consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def orders(bus: Client) -> list[OrderUpdate]:
    return [o for o in await stored(bus, "ACCOUNT", subjects.acct(VENUE, "main", SYMBOL, "order")) if isinstance(o, OrderUpdate)]
