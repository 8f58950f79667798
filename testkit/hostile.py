"""Hostile inputs for every consumer: what any NATS client could publish on the subjects it reads.

Each consumer declares its inputs here as a `Target`: the subjects it consumes, an example
valid message for each (the generator breaks it in every way it knows), how to start the real
consumer against a real nats-server, and one valid input whose outputs prove it still works.
tests/test_hostile_inputs.py runs every target: generated bad payloads, then a valid input,
and it asserts the valid input's outputs appear, the durable consumer's ack floor passes the
bad ones, the DLQ holds them with their reasons, and no session was rebuilt because of them.

A new consumer joins the suite by adding its `Target` to `TARGETS`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import assume
from hypothesis import strategies as st
from msgspec.structs import replace
from nats.aio.client import Client

from bus import streams
from bus.connection import connect
from bus.consumer import Consumer
from bus.publisher import Publisher
from bus.settings import BusSettings
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.runner import build_executor
from monitors.funding.testing import funding_inputs, funding_semantic, funding_start, funding_valid
from monitors.risk.config import RiskConfig, Watched
from monitors.risk.runner import build_risk, market_rules
from schemas import ids, subjects
from schemas.account import Balance, Liquidation, OrderUpdate, Position
from schemas.codec import encode
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import GapMarker, Ticker
from schemas.ops import BreakerChange, Clock, ControlAction, ControlCommand, RiskAlert, VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.lattice import client_order_id, client_prefix
from strategies.grid.runner import build_grid
from testkit.bus import eventually, start_server
from testkit.cores import SumCore, sum_spec
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig
from venues.sim.journal import Cancel, Fund, Place, Print, Quote, Tick, journal_subject
from venues.sim.service import SimService

SYMBOL = "BTC/USDT:USDT"
TOKEN = subjects.symbol_token(SYMBOL)
T0 = 1_700_000_000_000
GRID = GridConfig(instance="hostile", mode="neutral", levels=2, spacing=Decimal("0.001"), notional=Decimal(200), max_open_orders=8)

# Values that break a field: wrong types, non-numbers, numbers out of any sane range.
POISON: tuple[Any, ...] = (
    None,
    "",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1",
    -1,
    10**30,
    "x" * 300,
    [],
    {},
    True,
    "BTCUSDT",
    "other",
    "*",
    ">",
    "ETH/USDT:USDT",
    "not a number",
)


@dataclass
class Stack:
    """A running consumer and what a target needs to drive it."""

    nc: Client
    consumer: Consumer
    publisher: Publisher
    stream: str  # the stream its durable consumer reads
    venue: SimVenue | None = None
    counter: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    inputs: Callable[[], list[tuple[str, Any]]]  # (subject, example valid message) per consumed subject
    start: Callable[[Client, AsyncExitStack, asyncio.Event], Awaitable[Stack]]
    valid: Callable[[Stack], Awaitable[None]]  # publish one valid input and wait for its outputs
    # Payloads the consumer admits but its core must refuse (market data sanity, ...).
    semantic: Callable[[], list[tuple[str, bytes]]] = lambda: []


# ----------------------------------------------------------------------------- generation


ROUTING = frozenset({"venue", "account", "symbol", "asset", "component", "instance", "target_component", "target_instance"})


def mutations(subject: str, example: Any) -> st.SearchStrategy[bytes]:
    """Payloads built from a valid example that no consumer may act on.

    Bad by construction, judged without the code under test: junk that is not the message,
    a field that the message's own schema refuses, a routing field that contradicts the
    subject, a time far in the future. (A poison that happens to be valid for its field is
    discarded, so what is published is known to be bad.)"""
    doc = msgspec.to_builtins(example)
    keys = sorted(k for k in doc if k != "type")
    schema = msgspec.json.Decoder(type(example))

    def schema_refuses(payload: bytes) -> bool:
        try:
            schema.decode(payload)
        except msgspec.DecodeError:
            return True
        return False

    try:
        subjects.subject_of(example)
        routed = True
    except subjects.SubjectError:  # a type the grammar does not route (a venue's journal entry)
        routed = False

    def misrouted(payload: bytes) -> bool:
        """The body names another subject than the one it is sent on. A field that is not part of
        the message's subject (a finding's account, any field of an unrouted journal entry) can
        change without the message being bad."""
        if not routed:
            return False
        try:
            return bool(subjects.subject_of(schema.decode(payload)) != subject)
        except (msgspec.DecodeError, subjects.SubjectError, ValueError):
            return True

    raw_junk = st.one_of(
        st.binary(min_size=0, max_size=200),
        st.sampled_from([b"", b"{", b"null", b"[]", b'"ticker"', b"1e400", b"\xff\xfe", b'{"type":"nope"}']),
        st.binary(min_size=50_000, max_size=200_000),  # big, not near the limit (that is its own test)
    )

    @st.composite
    def one_field(draw: st.DrawFn) -> bytes:
        key = draw(st.sampled_from(keys))
        value = draw(st.sampled_from(POISON))
        payload = msgspec.json.encode(dict(doc, **{key: value}))
        assume((key in ROUTING and value != doc[key] and misrouted(payload)) or schema_refuses(payload))
        return payload

    @st.composite
    def missing_field(draw: st.DrawFn) -> bytes:
        key = draw(st.sampled_from(keys))
        payload = msgspec.json.encode({k: v for k, v in doc.items() if k != key})
        assume(schema_refuses(payload))  # a field with a default may be left out
        return payload

    @st.composite
    def from_the_future(draw: st.DrawFn) -> bytes:
        assume("ts" in doc)
        ahead = draw(st.integers(60_000, 10**10))  # far beyond any clock skew
        return msgspec.json.encode(dict(doc, ts=int(time.time() * 1000) + ahead))

    return st.one_of(raw_junk, one_field(), missing_field(), from_the_future())


# ----------------------------------------------------------------------------- shared pieces


async def sim_stack(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> tuple[SimService, SimVenue]:
    # Its clock starts now: market data it prints is as fresh as what a client could publish.
    sim = SimService(nc, SimConfig(clock="lockstep", start_time_ms=int(time.time() * 1000) - 1_000, history_minutes=5))
    task = asyncio.create_task(sim.run(stop))
    stack.push_async_callback(_finish, task)
    await eventually(lambda: sim.service is not None, timeout=30, what="the simulated exchange")
    venue = SimVenue(nc)
    await venue.step(1)
    return sim, venue


async def _finish(task: asyncio.Task[Any]) -> None:
    await asyncio.wait_for(task, 30)


async def run_consumer(consumer: Consumer, stack: AsyncExitStack, stop: asyncio.Event) -> None:
    task = asyncio.create_task(consumer.run(stop))
    stack.push_async_callback(_finish, task)
    await asyncio.wait_for(consumer.caught_up.wait(), 30)


async def publisher(nc: Client, stack: AsyncExitStack) -> Publisher:
    pub = await Publisher(nc).start()
    stack.push_async_callback(pub.close)
    return pub


async def last_seq(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.last_seq)


async def settled_past(s: Stack, seq: int) -> None:
    """The consumer dealt with every input up to `seq` of its stream."""
    await eventually(lambda: s.consumer.seq >= seq, timeout=20, what=f"{s.consumer.spec.name} past seq {seq}")


# ----------------------------------------------------------------------------- the executor


def executor_inputs() -> list[tuple[str, Any]]:
    place = PlaceOrder(
        id="p",
        venue="sim",
        account="main",
        symbol=SYMBOL,
        client_order_id="ok1",
        side="buy",
        price=Decimal(1000),
        amount=Decimal("0.01"),
        origin="hostile/test",
        ts=T0,
    )
    cancel = CancelOrder(id="c", venue="sim", account="main", symbol=SYMBOL, client_order_id="ok1", origin="hostile/test", ts=T0)
    cancel_all = CancelAll(id="a", venue="sim", account="main", symbol=SYMBOL, origin="hostile/test", ts=T0)
    return [
        (subjects.cmd("sim", "main", SYMBOL, "place"), place),
        (subjects.cmd("sim", "main", SYMBOL, "cancel"), cancel),
        (subjects.cmd("sim", "main", SYMBOL, "cancel_all"), cancel_all),
    ]


async def executor_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    _sim, venue = await sim_stack(nc, stack, stop)
    breakers = await BreakerView(nc).start()
    stack.push_async_callback(breakers.stop)
    runtime = build_executor(nc, ExecutorConfig(), venue, breakers)
    await run_consumer(runtime, stack, stop)
    return Stack(nc, runtime, await publisher(nc, stack), "COMMAND", venue)


async def executor_valid(s: Stack) -> None:
    assert s.venue is not None
    s.counter += 1
    cid = f"valid{s.counter}"
    price = (await s.venue.fetch_ohlcv(SYMBOL, limit=1))[-1].close
    now = await s.venue.now_ms(fresh=True)
    cmd = PlaceOrder(
        id=ids.place_id("sim", "main", cid),
        venue="sim",
        account="main",
        symbol=SYMBOL,
        client_order_id=cid,
        side="buy",
        price=(price * Decimal("0.9")).quantize(Decimal("0.1")),
        amount=Decimal("0.001"),
        origin="hostile/test",
        ts=now,
    )
    ack = await s.publisher.publish(cmd)
    await settled_past(s, ack.seq)
    order = await s.venue.fetch_order(SYMBOL, client_order_id=cid)  # it reached the venue
    assert order.status == "open", order


# ----------------------------------------------------------------------------- the grid


def grid_inputs() -> list[tuple[str, Any]]:
    prefix = client_prefix(GRID.instance)
    ticker = Ticker(id="t", venue="sim", symbol=SYMBOL, bid=Decimal(100), ask=Decimal("100.2"), last=Decimal("100.1"), ts=T0, ts_local=T0)
    order = OrderUpdate(
        id="o",
        venue="sim",
        account="main",
        symbol=SYMBOL,
        order_id="1",
        client_order_id=client_order_id(prefix, "open", -1, 1),
        side="buy",
        price=Decimal(100),
        amount=Decimal(1),
        remaining=Decimal(1),
        status="open",
        ts=T0,
        ts_local=T0,
    )
    control = ControlCommand(id="k", target_component="grid", target_instance=GRID.instance, action="pause", operator="op", ts=T0)
    breaker = BreakerChange(id="b", instance="r1", scope="global", state="ok", previous="ok", reason="r", ts=T0)
    snapshot = VenueSnapshot(id="s", component="grid", instance=GRID.instance, venue="sim", account="main", symbol=SYMBOL, ts=T0)
    liquidation = Liquidation(
        id="l", venue="sim", account="main", symbol=SYMBOL, side="long", contracts=Decimal(1), price=Decimal(100), ts=T0, ts_local=T0
    )
    return [
        (subjects.md("sim", SYMBOL, "ticker"), ticker),
        (subjects.acct("sim", "main", SYMBOL, "order"), order),
        (subjects.acct("sim", "main", SYMBOL, "liquidation"), liquidation),
        (subjects.control("grid", GRID.instance), control),
        (subjects.ops("risk", "r1", "breaker"), breaker),
        (subjects.ops("grid", GRID.instance, "snapshot"), snapshot),
    ]


def grid_semantic() -> list[tuple[str, bytes]]:
    """Tickers that decode but are garbage: below a tick, absurdly far, a crossed book."""
    now = int(time.time() * 1000)
    subject = subjects.md("sim", SYMBOL, "ticker")

    def ticker(last: str, bid: str | None = None, ask: str | None = None) -> bytes:
        return encode(
            Ticker(
                id=f"bad{last}{bid}{ask}",
                venue="sim",
                symbol=SYMBOL,
                last=Decimal(last),
                bid=Decimal(bid) if bid else None,
                ask=Decimal(ask) if ask else None,
                ts=now,
                ts_local=now,
            )
        )

    return [(subject, ticker("0.01")), (subject, ticker("1e14")), (subject, ticker("100", "101", "99")), (subject, ticker("1e30"))]


async def grid_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    _sim, venue = await sim_stack(nc, stack, stop)
    runtime = await build_grid(nc, venue, GRID, stop)
    assert runtime is not None
    await run_consumer(runtime, stack, stop)
    await venue.step(1)  # a price: the grid starts trading
    await eventually(lambda: runtime.state.status == "running", timeout=20, what="the grid running")
    return Stack(nc, runtime, await publisher(nc, stack), runtime.spec.stream, venue)


async def grid_valid(s: Stack) -> None:
    s.counter += 1
    action: ControlAction = "pause" if s.counter % 2 else "resume"
    now = int(time.time() * 1000)
    await s.publisher.publish(
        ControlCommand(
            id=f"valid{s.counter}", target_component="grid", target_instance=GRID.instance, action=action, operator="test", ts=now - 30_000
        )
    )
    state = s.consumer.state  # type: ignore[attr-defined]
    await eventually(lambda: s.consumer.state.paused == (action == "pause"), timeout=20, what=f"the grid to {action}")  # type: ignore[attr-defined]
    del state


# ----------------------------------------------------------------------------- the funding arbitrage


def _arb() -> Any:
    from strategies.arbitrage.config import ArbConfig, ArbLeg

    legs = [ArbLeg(venue="sim", symbol="BTC/USDT"), ArbLeg(venue="sim", symbol=SYMBOL)]
    return ArbConfig(instance="hostile-arb", pair="btc", legs=legs, amount=Decimal("0.01"))


def arbitrage_inputs() -> list[tuple[str, Any]]:
    from schemas.account import BorrowInterest, FundingPayment
    from schemas.ops import FundingSpread, SpreadLeg
    from strategies.arbitrage import legs as arb_legs

    arb = _arb()
    spot, perp = ("sim", "BTC/USDT"), ("sim", SYMBOL)
    cid = arb_legs.client_order_id(client_prefix(arb.instance), T0, 1, "sell", 3)
    spread = FundingSpread(
        id="sp",
        monitor="main",
        pair="btc",
        symbol=SYMBOL,
        state="ok",
        long=SpreadLeg(venue=spot[0], symbol=spot[1], kind="spot"),
        short=SpreadLeg(venue=perp[0], symbol=perp[1], kind="swap", funding_rate=Decimal("0.0001"), interval_ms=28_800_000),
        spread=Decimal("0.0001"),
        apr=Decimal("0.1095"),
        net_apr=Decimal("0.05"),
        ts=T0,
    )
    order = OrderUpdate(
        id="o", venue="sim", account="main", symbol=SYMBOL, order_id="1", client_order_id=cid, side="sell", price=Decimal(100),
        amount=Decimal(1), remaining=Decimal(1), status="open", ts=T0, ts_local=T0,
    )  # fmt: skip
    spot_order = replace(
        order, symbol="BTC/USDT", side="buy", client_order_id=arb_legs.client_order_id(client_prefix(arb.instance), T0, 0, "buy", 4)
    )
    payment = FundingPayment(
        id="f", venue="sim", account="main", symbol=SYMBOL, asset="USDT", amount=Decimal("0.5"), funding_rate=Decimal("0.0001"),
        contracts=Decimal(-1), funding_time=T0, ts=T0, ts_local=T0,
    )  # fmt: skip
    interest = BorrowInterest(
        id="i", venue="sim", account="main", asset="BTC", amount_borrowed=Decimal(1), interest=Decimal("0.0001"),
        interest_rate=Decimal("0.0001"), ts=T0, ts_local=T0,
    )  # fmt: skip
    ticker = Ticker(id="t", venue="sim", symbol=SYMBOL, bid=Decimal(100), ask=Decimal("100.2"), last=Decimal("100.1"), ts=T0, ts_local=T0)
    control = ControlCommand(id="k", target_component="arbitrage", target_instance=arb.instance, action="pause", operator="op", ts=T0)
    breaker = BreakerChange(id="b", instance="r1", scope="global", state="ok", previous="ok", reason="r", ts=T0)
    clock = Clock(id="c", component="arbitrage", instance=arb.instance, ts=T0)
    return [
        (subjects.funding_spread(SYMBOL), spread),
        (subjects.md("sim", SYMBOL, "ticker"), ticker),
        (subjects.md("sim", "BTC/USDT", "ticker"), replace(ticker, symbol="BTC/USDT")),
        (subjects.acct("sim", "main", SYMBOL, "order"), order),
        (subjects.acct("sim", "main", "BTC/USDT", "order"), spot_order),
        (subjects.acct("sim", "main", SYMBOL, "funding"), payment),
        (subjects.acct("sim", "main", "BTC/USDT", "funding"), replace(payment, symbol="BTC/USDT")),
        (subjects.balance("sim", "main", "BTC", "interest"), interest),
        (subjects.control("arbitrage", arb.instance), control),
        (subjects.control("arbitrage"), replace(control, target_instance="all")),
        (subjects.ops("risk", "r1", "breaker"), breaker),
        (subjects.ops("arbitrage", arb.instance, "clock"), clock),
    ]


async def arbitrage_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    from strategies.arbitrage.runner import build_arbitrage

    _sim, venue = await sim_stack(nc, stack, stop)
    runtime = await build_arbitrage(nc, [venue, venue], _arb(), stop)
    assert runtime is not None
    await run_consumer(runtime, stack, stop)
    return Stack(nc, runtime, await publisher(nc, stack), runtime.spec.stream, venue)


async def arbitrage_valid(s: Stack) -> None:
    s.counter += 1
    action: ControlAction = "pause" if s.counter % 2 else "resume"
    now = int(time.time() * 1000)
    await s.publisher.publish(
        ControlCommand(
            id=f"valid{s.counter}",
            target_component="arbitrage",
            target_instance="hostile-arb",
            action=action,
            operator="t",
            ts=now - 30_000,
        )
    )
    await eventually(lambda: s.consumer.state.paused == (action == "pause"), timeout=20, what=f"the arbitrage to {action}")  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the simulated exchange


def sim_inputs() -> list[tuple[str, Any]]:
    req = OrderRequest(symbol=SYMBOL, client_order_id="j1", side="buy", amount=Decimal("0.01"), price=Decimal(1000))
    entries: list[Any] = [
        Tick(step=10**6, ts=T0, prints=[Print(SYMBOL, Decimal(60000), Decimal(1))]),
        Quote(step=10**6),
        Place(account="main", order=req),
        Cancel(account="main", symbol=SYMBOL, client_order_id="j1"),
        Fund(account="main", asset="USDT", amount=Decimal(1)),
    ]
    return [(journal_subject("sim", e), e) for e in entries]


async def sim_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    sim, venue = await sim_stack(nc, stack, stop)
    return Stack(nc, sim.runtime, await publisher(nc, stack), sim.journal.name, venue)


async def sim_valid(s: Stack) -> None:
    assert s.venue is not None
    before = await s.venue.time()
    after = await s.venue.step(1)
    assert after.step == before.step + 1 and after.ts > before.ts


# ----------------------------------------------------------------------------- the paper venue's feed


def paper_inputs() -> list[tuple[str, Any]]:
    from testkit import paper

    now = int(time.time() * 1000)
    gap = GapMarker(
        id="g",
        venue=paper.SOURCE,
        symbol=paper.SYMBOL,
        stream="trade",
        since=now - 5_000,
        until=now,
        reason="reconnected",
        ts=now,
        ts_local=now,
    )
    return [
        (subjects.md(paper.SOURCE, paper.SYMBOL, "trade"), paper.feed_trade(1, "60000", now)),
        (subjects.md(paper.SOURCE, paper.SYMBOL, "gap"), gap),
    ]


def paper_semantic() -> list[tuple[str, bytes]]:
    """Trades the feed admits but the paper venue must not print: below a tick, ten times the
    price, an hour behind its clock."""
    from testkit import paper

    now = int(time.time() * 1000)
    subject = subjects.md(paper.SOURCE, paper.SYMBOL, "trade")
    return [
        (subject, encode(paper.feed_trade(90, "0.01", now))),
        (subject, encode(paper.feed_trade(91, "600000", now))),
        (subject, encode(paper.feed_trade(92, "60000", now - 3_600_000))),
    ]


async def paper_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    """The paper venue over binanceusdm's feed; the consumer under test is its feed.

    The suite takes the last message of the consumer's stream as its last input and waits for
    the consumer (and its ack floor) to pass it. The paper venue stores its own market data
    (`md.paper.>`, three messages per print) in MARKET, the very stream its feed reads, after
    every trade it prints: the feed's filter never delivers those, so neither its position nor
    its ack floor could reach the stream's end. Here the paper venue's market data is kept in a
    stream of its own and MARKET holds only the feed's input (`md.binanceusdm.>`); the feed reads
    MARKET, filtered to its markets, as in production."""
    from dataclasses import replace as with_fields

    from bus.streams import StreamSpec, apply_stream
    from testkit import paper

    js = nc.jetstream()
    await apply_stream(js, with_fields(streams.MARKET, subjects=(subjects.everything("md", paper.SOURCE),)))
    own = StreamSpec("PAPER_MD", (subjects.everything("md", paper.VENUE),), "the paper venue's market data", streams.DAY, streams.MINUTE)
    await apply_stream(js, own)
    pub = await publisher(nc, stack)
    await pub.publish(paper.feed_trade(0, "60000", int(time.time() * 1000) - 1_000))  # a real price first
    sim = SimService(nc, paper.paper_config())
    task = asyncio.create_task(sim.run(stop))
    stack.push_async_callback(_finish, task)
    await eventually(lambda: sim.feed is not None and sim.feed.caught_up.is_set(), timeout=30, what="the paper venue's feed")
    assert sim.feed is not None
    return Stack(nc, sim.feed, pub, streams.MARKET.name, extra={"sim": sim, "own": own.name})


async def paper_valid(s: Stack) -> None:
    """A gap marker of the feed, then a trade: the marker is republished as the paper venue's own
    (once the prints before it are applied) and the trade is printed."""
    from testkit import paper

    s.counter += 1
    sim: SimService = s.extra["sim"]
    now = int(time.time() * 1000)
    since, until = now - 2_000 - s.counter, now - 1_000  # a new gap each time (its id says when)
    gap = GapMarker(
        id=ids.gap_id(paper.SOURCE, paper.SYMBOL, "trade", since, until),
        venue=paper.SOURCE,
        symbol=paper.SYMBOL,
        stream="trade",
        since=since,
        until=until,
        reason="reconnected",
        ts=until,
        ts_local=until,
    )
    await s.publisher.publish(gap)
    price = Decimal(60000) + s.counter
    ack = await s.publisher.publish(paper.feed_trade(1000 + s.counter, price, now))
    await settled_past(s, ack.seq)
    await eventually(lambda: sim.state.markets[paper.SYMBOL].last == price, timeout=20, what="the valid trade printed")
    mine = ids.gap_id(paper.VENUE, paper.SYMBOL, "trade", since, until)
    forwarded = await paper.stored(s.nc, s.extra["own"], subjects.md(paper.VENUE, paper.SYMBOL, "gap"))
    assert [g.id for g in forwarded if isinstance(g, GapMarker) and g.id == mine] == [mine], forwarded


# ----------------------------------------------------------------------------- the runtime's test core


def sum_inputs() -> list[tuple[str, Any]]:
    ticker = Ticker(id="t", venue="sim", symbol="BTC/USDT", last=Decimal(100), ts=T0, ts_local=T0)
    return [(subjects.md("sim", "BTC/USDT", "ticker"), ticker)]


async def sum_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    from bus.runtime import ConsumerRuntime

    runtime = ConsumerRuntime(nc, sum_spec(), SumCore())
    await run_consumer(runtime, stack, stop)
    return Stack(nc, runtime, await publisher(nc, stack), "MARKET")


async def sum_valid(s: Stack) -> None:
    s.counter += 1
    before = s.consumer.state.count  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    ack = await s.publisher.publish(Ticker(id=f"v{s.counter}", venue="sim", symbol="BTC/USDT", last=Decimal(100), ts=now, ts_local=now))
    await settled_past(s, ack.seq)
    assert s.consumer.state.count == before + 1  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- the risk monitor

RISK = RiskConfig(instance="h", watch=[Watched(venue="sim", account="main", symbols=[SYMBOL])])


def risk_inputs() -> list[tuple[str, Any]]:
    grid = dict(grid_inputs())
    ticker, order = grid[subjects.md("sim", SYMBOL, "ticker")], grid[subjects.acct("sim", "main", SYMBOL, "order")]
    position = Position(id="p", venue="sim", account="main", symbol=SYMBOL, side="long", contracts=Decimal(1), mark_price=Decimal(100),
                        liquidation_price=Decimal(50), ts=T0, ts_local=T0)  # fmt: skip
    balance = Balance(
        id="b", venue="sim", account="main", asset="USDT", free=Decimal(1), used=Decimal(0), total=Decimal(1), ts=T0, ts_local=T0
    )
    place = dict(executor_inputs())[subjects.cmd("sim", "main", SYMBOL, "place")]
    clock = Clock(id="c", component="risk", instance=RISK.instance, ts=T0)
    control = ControlCommand(
        id="k", target_component="risk", target_instance=RISK.instance, action="halt", scope="venue.x", operator="op", ts=T0
    )
    alert = RiskAlert(id="a", component="reconciler", instance="r", severity="warning", kind="position_drift", message="m", venue="sim",
                      symbol=SYMBOL, ts=T0)  # fmt: skip
    return [
        (subjects.md("sim", SYMBOL, "ticker"), ticker),
        (subjects.acct("sim", "main", SYMBOL, "order"), order),
        (subjects.acct("sim", "main", SYMBOL, "position"), position),
        (subjects.balance("sim", "main", "USDT"), balance),
        (subjects.cmd("sim", "main", SYMBOL, "place"), place),
        (subjects.ops("risk", RISK.instance, "clock"), clock),
        (subjects.control("risk", RISK.instance), control),
        (subjects.control("risk"), replace(control, target_instance="all")),
        (subjects.ops("reconciler", "r", "alert"), alert),
    ]


async def risk_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    _sim, venue = await sim_stack(nc, stack, stop)
    markets = await market_rules(nc, RISK, BusSettings(nats_url=""), stop)
    assert markets is not None
    runtime = await build_risk(nc, RISK, markets)
    await run_consumer(runtime, stack, stop)
    await venue.step(1)  # a real price first, as a live feed gives it
    await eventually(lambda: runtime.state.markets, timeout=20, what="the risk monitor to see a price")
    return Stack(nc, runtime, await publisher(nc, stack), runtime.spec.stream, venue)


async def risk_valid(s: Stack) -> None:
    """An operator halts a scope, then resets it: the change is decided and written to the bucket."""
    s.counter += 1
    action: ControlAction = "halt" if s.counter % 2 else "reset"
    now = int(time.time() * 1000)
    await s.publisher.publish(
        ControlCommand(
            id=f"valid{s.counter}",
            target_component="risk",
            target_instance=RISK.instance,
            action=action,
            scope="venue.sim",
            operator="test",
            ts=now,
        )  # fmt: skip
    )
    want = "halted" if action == "halt" else "ok"
    kv = await s.nc.jetstream().key_value(streams.BREAKERS.name)

    async def stored() -> bool:
        try:
            entry = await kv.get("venue.sim")
        except Exception:  # noqa: BLE001 - not written yet
            return False
        return msgspec.json.decode(entry.value or b"{}").get("state") == want

    await eventually(stored, timeout=20, what=f"the risk monitor to write venue.sim {want}")


# ----------------------------------------------------------------------------- the reconciler


def reconciler_inputs() -> list[tuple[str, Any]]:
    from schemas.account import Fill, Position
    from schemas.market import GapMarker

    order = dict(grid_inputs())[subjects.acct("sim", "main", SYMBOL, "order")]
    fill = Fill(id="f", venue="sim", account="main", symbol=SYMBOL, trade_id="t", order_id="1", client_order_id="c1", side="buy",
                price=Decimal(100), amount=Decimal(1), liquidity="maker", ts=T0, ts_local=T0)  # fmt: skip
    position = Position(id="p", venue="sim", account="main", symbol=SYMBOL, side="long", contracts=Decimal(1), ts=T0, ts_local=T0)
    gap = GapMarker(id="g", venue="sim", symbol=SYMBOL, account="main", stream="order", since=T0, until=T0, reason="r", ts=T0, ts_local=T0)
    return [
        (subjects.acct("sim", "main", SYMBOL, "order"), order),
        (subjects.acct("sim", "main", SYMBOL, "fill"), fill),
        (subjects.acct("sim", "main", SYMBOL, "position"), position),
        (subjects.acct("sim", "main", SYMBOL, "gap"), gap),
    ]


def reconciler_gap_inputs() -> list[tuple[str, Any]]:
    from schemas.market import GapMarker

    gap = GapMarker(id="g", venue="sim", symbol=SYMBOL, stream="ticker", since=T0, until=T0, reason="r", ts=T0, ts_local=T0)
    return [(subjects.md("sim", SYMBOL, "gap"), gap)]


async def reconciler_parts(nc: Client, stack: AsyncExitStack) -> Any:
    from monitors.reconciler.config import ReconcilerConfig
    from monitors.reconciler.runner import build_reconciler

    # The record and the gap watch are the consumers; the passes never run here (no venue calls).
    return build_reconciler(nc, ReconcilerConfig(), SimVenue(nc), await publisher(nc, stack))


async def reconciler_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    parts = await reconciler_parts(nc, stack)
    await run_consumer(parts.record, stack, stop)
    return Stack(nc, parts.record, await publisher(nc, stack), "ACCOUNT")


async def reconciler_valid(s: Stack) -> None:
    s.counter += 1
    now = int(time.time() * 1000)
    order = dict(grid_inputs())[subjects.acct("sim", "main", SYMBOL, "order")]
    ack = await s.publisher.publish(msgspec.structs.replace(order, id=f"valid{s.counter}", client_order_id=f"valid{s.counter}", ts=now))
    await settled_past(s, ack.seq)
    assert f"valid{s.counter}" in s.consumer.state.orders  # type: ignore[attr-defined]


async def reconciler_gaps_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    parts = await reconciler_parts(nc, stack)
    await run_consumer(parts.gaps, stack, stop)
    return Stack(nc, parts.gaps, await publisher(nc, stack), "MARKET", extra={"parts": parts})


async def reconciler_gaps_valid(s: Stack) -> None:
    s.counter += 1
    now = int(time.time() * 1000)
    [(_, gap)] = reconciler_gap_inputs()
    ack = await s.publisher.publish(
        msgspec.structs.replace(gap, id=f"valid{s.counter}", since=now - 1_000, until=now, ts=now, ts_local=now)
    )
    await settled_past(s, ack.seq)
    assert s.extra["parts"].gaps.handler.seen == s.counter  # every valid marker reached the watch, and only those


# ----------------------------------------------------------------------------- the alerts monitor


def alerts_inputs() -> list[tuple[str, Any]]:
    """Every subject it reads but `dlq.>`: a dead letter is any bytes, and every one alerts (there
    is no bad dead letter; refusing one would dead-letter it again, forever)."""
    from monitors.alerts import testing as t

    events = [
        t.risk_alert("h", ts=T0),
        t.breaker("h", ts=T0),
        t.finding("h", ts=T0),
        t.gap("h", ts=T0),
        t.gap("h", "main", T0),
        t.order("h", ts=T0),
    ]
    return [(subjects.subject_of(e), e) for e in events]


async def alerts_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    from monitors.alerts.testing import running_monitor

    monitor, hook = await running_monitor(nc, stack, stop)
    return Stack(nc, monitor.consumer, await publisher(nc, stack), monitor.consumer.spec.stream, extra={"hook": hook})


async def alerts_valid(s: Stack) -> None:
    """A risk alert reaches the (recording) Slack webhook and Telegram."""
    from monitors.alerts.testing import risk_alert

    s.counter += 1
    marker = f"valid{s.counter}x"
    await s.publisher.publish(risk_alert(marker, kind=f"valid-{s.counter}"))
    hook = s.extra["hook"]
    await eventually(lambda: hook.count("slack", marker) == 1 and hook.count("telegram", marker) == 1, timeout=20, what="the alert sent")


TARGETS: tuple[Target, ...] = (
    Target("executor", executor_inputs, executor_start, executor_valid),
    Target("grid", grid_inputs, grid_start, grid_valid, grid_semantic),
    Target("arbitrage", arbitrage_inputs, arbitrage_start, arbitrage_valid),
    Target("funding", funding_inputs, funding_start, funding_valid, funding_semantic),
    Target("sim", sim_inputs, sim_start, sim_valid),
    Target("paper-feed", paper_inputs, paper_start, paper_valid, paper_semantic),
    Target("runtime", sum_inputs, sum_start, sum_valid),
    Target("alerts", alerts_inputs, alerts_start, alerts_valid),
    Target("risk", risk_inputs, risk_start, risk_valid, grid_semantic),
    Target("reconciler", reconciler_inputs, reconciler_start, reconciler_valid),
    Target("reconciler-gaps", reconciler_gap_inputs, reconciler_gaps_start, reconciler_gaps_valid),
)


async def start(target: Target, workdir: Path, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    """A nats-server, the streams, and the target's consumer running against them."""
    server = start_server(workdir)
    stack.callback(server.stop)
    nc = await connect(server.url, name=f"hostile-{target.name}", attempts=5, role="admin")
    stack.push_async_callback(nc.close)
    await streams.apply(nc.jetstream())
    return await target.start(nc, stack, stop)
