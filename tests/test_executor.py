"""The order executor: against the simulated exchange over a real bus, and with a scripted venue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from bus.contract import Inbound
from bus.embedded import EmbeddedServer
from bus.errors import RetryLater
from bus.publisher import Publisher
from bus.reader import read_stream
from cli.config import Config, NatsSettings
from executors import metrics
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.executor import Executor
from executors.runner import run_executor
from schemas import ids
from schemas.account import OrderUpdate
from schemas.codec import decode, encode
from schemas.commands import CancelOrder, PlaceOrder
from schemas.ops import BreakerChange
from testkit.bus import eventually
from testkit.venue import ScriptedVenue
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig
from venues.sim.service import SimService

SYMBOL = "BTC/USDT:USDT"


@pytest.fixture
async def stack(bus: Client, nats_server: EmbeddedServer) -> AsyncIterator[SimVenue]:
    """The simulated exchange (lockstep) and the executor, both running in this process."""
    config = Config(
        nats=NatsSettings(url=nats_server.url), sim=SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5)
    )
    stop = asyncio.Event()
    sim = SimService(bus, config.sim)
    tasks = [asyncio.create_task(sim.run(stop)), asyncio.create_task(run_executor(config.bus(), config.executor, stop))]
    venue = SimVenue(bus)
    await eventually(lambda: sim.service is not None, what="the exchange")
    await venue.step(1)
    yield venue
    stop.set()
    await asyncio.gather(*tasks)


async def price(venue: SimVenue) -> Decimal:
    return (await venue.fetch_ohlcv(SYMBOL, limit=1))[-1].close


def place(cid: str, px: Decimal, amount: str = "0.01", **kw: Any) -> PlaceOrder:
    return PlaceOrder(
        id=kw.pop("id", ids.place_id("sim", "main", cid)),
        venue="sim",
        account="main",
        symbol=kw.pop("symbol", SYMBOL),
        client_order_id=cid,
        side=kw.pop("side", "buy"),
        price=px,
        amount=Decimal(amount),
        origin="test/exec",
        ts=kw.pop("ts", 1_700_000_000_500),
        **kw,
    )


async def order_events(bus: Client, cid: str) -> list[OrderUpdate]:
    out: list[OrderUpdate] = []
    if (await bus.jetstream().stream_info("ACCOUNT")).state.messages == 0:
        return out
    async for batch in read_stream(bus, "ACCOUNT", subjects=("acct.sim.main.*.order",)):
        out += [e for e in (decode(m.data) for m in batch) if e.client_order_id == cid]
    return out


async def outcome(bus: Client, cid: str, status: str) -> OrderUpdate:
    found: list[OrderUpdate] = []

    async def seen() -> bool:
        found[:] = [e for e in await order_events(bus, cid) if e.status == status]
        return bool(found)

    await eventually(seen, timeout=15, what=f"{cid} {status}")
    return found[0]


async def test_a_place_reaches_the_venue_once_and_is_reported_once(bus: Client, stack: SimVenue) -> None:
    pub = await Publisher(bus).start()
    px = await price(stack) - 50
    await pub.publish(place("exec1", px))
    accepted = await outcome(bus, "exec1", "open")
    assert accepted.order_id and accepted.price == px
    assert len([e for e in await order_events(bus, "exec1") if e.status == "open"]) == 1  # executor + venue: one fact
    # The same order asked again under another command id (a replay beyond the dedupe window):
    duplicates = metrics.COMMANDS.labels("place", "duplicate")._value.get()
    await pub.publish(place("exec1", px, id="place:replayed:exec1"))
    await eventually(lambda: metrics.COMMANDS.labels("place", "duplicate")._value.get() == duplicates + 1, what="duplicate handling")
    assert len(await stack.fetch_open_orders(SYMBOL)) == 1


async def test_bad_commands_are_refused_with_a_reason_and_never_reach_the_venue(bus: Client, stack: SimVenue) -> None:
    pub = await Publisher(bus).start()
    px = await price(stack) - 50
    await pub.publish(place("offtick1", px + Decimal("0.05")))
    await pub.publish(place("unknown1", Decimal(1), symbol="DOGE/USDT:USDT"))
    raw = json.loads(encode(place("negative1", px)))
    raw["amount"] = "-1"  # the schema refuses it: dead-lettered, and still answered
    await bus.jetstream().publish("cmd.sim.main.BTC-USDT-USDT.place", json.dumps(raw).encode(), headers={"Nats-Msg-Id": "bad1"})
    raw = json.loads(encode(place("missing1", px)))
    del raw["amount"]
    await bus.jetstream().publish("cmd.sim.main.BTC-USDT-USDT.place", json.dumps(raw).encode(), headers={"Nats-Msg-Id": "bad2"})
    await bus.jetstream().publish("cmd.sim.main.BTC-USDT-USDT.place", b"\x00garbage", headers={"Nats-Msg-Id": "bad3"})
    await pub.publish(place("good1", px))  # the executor is still there after all that

    assert (await outcome(bus, "offtick1", "rejected")).reason == "off_tick"
    assert (await outcome(bus, "unknown1", "rejected")).reason == "unknown_symbol"
    negative = await outcome(bus, "negative1", "rejected")
    assert negative.reason == "invalid" and "amount" in (negative.message or "")
    missing = await outcome(bus, "missing1", "rejected")
    assert missing.reason == "invalid" and "amount" in (missing.message or "")
    await outcome(bus, "good1", "open")
    assert [o.client_order_id for o in await stack.fetch_open_orders(SYMBOL)] == ["good1"]
    dead = []
    async for batch in read_stream(bus, "DLQ"):
        dead += batch
    assert len(dead) == 3 and all(m.header("Sqt-Consumer") == "executor-sim-main" for m in dead)


async def test_an_open_breaker_refuses_new_exposure_but_not_cancels_or_reductions(bus: Client, stack: SimVenue) -> None:
    pub = await Publisher(bus).start()
    px = await price(stack) - 50
    await pub.publish(place("before1", px))
    await outcome(bus, "before1", "open")
    kv = await bus.jetstream().key_value("breakers")
    change = BreakerChange(id="b1", instance="test", scope="venue.sim", state="reduce_only", previous="ok", reason="exposure", ts=1)
    await kv.put("venue.sim", encode(change))  # the executor's cache hears of the write at once
    await pub.publish(place("during1", px - 1))
    rejected = await outcome(bus, "during1", "rejected")
    assert rejected.reason == "breaker_open" and "venue.sim is reduce_only" in (rejected.message or "")
    await pub.publish(
        CancelOrder(id="cancel:before1", venue="sim", account="main", symbol=SYMBOL, client_order_id="before1", origin="test", ts=1)
    )
    await outcome(bus, "before1", "canceled")
    await kv.put("venue.sim", encode(msgspec.structs.replace(change, state="halted")))
    await pub.publish(place("reduce1", px, reduce_only=True))
    assert (await outcome(bus, "reduce1", "rejected")).reason == "breaker_open"  # halted: nothing at all


async def test_a_command_older_than_its_time_to_live_is_refused_as_expired(bus: Client, stack: SimVenue) -> None:
    pub = await Publisher(bus).start()
    px = await price(stack) - 50
    now = await stack.now_ms()
    await pub.publish(place("stale1", px, ts=now - 60_000, ttl_ms=30_000))  # decided a minute ago
    expired = await outcome(bus, "stale1", "rejected")
    assert expired.reason == "expired" and "time-to-live 30000" in (expired.message or "")
    assert await stack.fetch_open_orders(SYMBOL) == []


# ----------------------------------------------------------------------------- scripted venue


class NoBreakers(BreakerView):
    def __init__(self) -> None:
        pass

    async def state_for(self, venue: str, symbol: str, account: str | None = None):
        return "ok", ""


def accepted(cid: str) -> OrderUpdate:
    return OrderUpdate(
        id=f"o:{cid}",
        venue="sim",
        account="main",
        symbol=SYMBOL,
        order_id="9",
        client_order_id=cid,
        side="buy",
        price=Decimal(100),
        amount=Decimal(1),
        remaining=Decimal(1),
        status="open",
        ts=1,
        ts_local=1,
    )


def scripted(*create_answers: Any) -> ScriptedVenue:
    venue = ScriptedVenue().script("create_order", *create_answers)
    return venue.default("fetch_order", accepted("s1"))


def executor(venue: ScriptedVenue, throttled: list[int] | None = None, retries: int = 3) -> Executor:
    async def throttle() -> None:
        if throttled is not None:
            throttled.append(1)

    async def no_sleep(_s: float) -> None:
        return None

    config = ExecutorConfig(retries=retries, backoff_ms=10, backoff_max_ms=40)
    return Executor(venue, NoBreakers(), config, throttle, clock=lambda: 1_700_000_000.5, sleep=no_sleep)


def inbound(cmd: PlaceOrder) -> Inbound[Any]:
    return Inbound(1, "cmd", cmd, 1_700_000_000_400 * 1_000_000)


async def test_transient_errors_are_retried_and_each_attempt_is_rate_limited() -> None:
    venue = scripted(Transient("timeout"), Transient("timeout"), accepted("s1"))
    venue.script("fetch_order", OrderNotFound("no"), OrderNotFound("no"))  # asked before each resend: not there
    throttled: list[int] = []
    before = metrics.RETRIES.labels("place", "venue_error")._value.get()
    out = await executor(venue, throttled).handle(inbound(place("s1", Decimal(100), amount="1")))
    assert [o.status for o in out] == ["open"] and venue.count("create_order") == 3 and len(throttled) == 3
    assert venue.count("fetch_order") == 2
    assert metrics.RETRIES.labels("place", "venue_error")._value.get() == before + 2


async def test_an_outcome_that_stays_unknown_is_retried_later_not_reported_as_failed() -> None:
    venue = scripted(*[Transient("timeout")] * 3).script("fetch_order", OrderNotFound("no"), OrderNotFound("no"))
    with pytest.raises(RetryLater, match="after 3 attempts"):
        await executor(venue, retries=2).handle(inbound(place("s1", Decimal(100), amount="1")))


async def test_a_create_whose_answer_was_lost_is_looked_up_before_any_resend_and_never_placed_twice() -> None:
    """Binance holds a client id only while its order rests: a filled order's id is free again,
    so a resend would be a second order. The executor asks first."""
    venue = scripted(Transient("timeout"), accepted("s1"))  # the first attempt landed (and its answer was lost)
    before = metrics.COMMANDS.labels("place", "duplicate")._value.get()
    out = await executor(venue).handle(inbound(place("s1", Decimal(100), amount="1")))
    assert venue.count("create_order") == 1 and venue.count("fetch_order") == 1
    assert [o.order_id for o in out] == ["9"]
    assert metrics.COMMANDS.labels("place", "duplicate")._value.get() == before + 1  # the outcome: it existed


async def test_permanent_refusals_are_not_retried() -> None:
    venue = scripted(OrderRejected("no money", "insufficient_balance"))
    out = await executor(venue).handle(inbound(place("s1", Decimal(100), amount="1")))
    assert venue.count("create_order") == 1 and [(o.status, o.reason) for o in out] == [("rejected", "insufficient_balance")]


async def test_a_duplicate_client_id_reports_the_existing_order_and_places_nothing() -> None:
    venue = scripted(DuplicateOrder("exists", existing=accepted("s1")))
    out = await executor(venue).handle(inbound(place("s1", Decimal(100), amount="1")))
    assert venue.count("create_order") == 1 and [o.order_id for o in out] == ["9"]


async def test_a_lost_consumer_resumes_from_the_executors_own_checkpoint(bus: Client, nats_server: EmbeddedServer) -> None:
    """The ack floor lives on the consumer, which every session recreates; should it be gone
    (a crash between delete and create), the executor's checkpoint still knows where it was."""
    config = Config(
        nats=NatsSettings(url=nats_server.url), sim=SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5)
    )
    stop = asyncio.Event()
    sim = SimService(bus, config.sim)
    sim_task = asyncio.create_task(sim.run(stop))
    venue = SimVenue(bus)
    await eventually(lambda: sim.service is not None, what="the exchange")
    await venue.step(1)
    px = await price(venue) - 50
    pub = await Publisher(bus).start()
    for i in range(3):
        await pub.publish(place(f"ck{i}", px - i))
    exec_stop = asyncio.Event()
    executor_task = asyncio.create_task(run_executor(config.bus(), config.executor, exec_stop))
    await outcome(bus, "ck2", "open")
    exec_stop.set()
    await executor_task
    await bus.jetstream().delete_consumer("COMMAND", "executor-sim-main")  # the position on the server is gone
    handled = metrics.COMMANDS.labels("place", "duplicate")._value.get()
    await pub.publish(place("ck3", px - 3))
    exec_stop = asyncio.Event()
    executor_task = asyncio.create_task(run_executor(config.bus(), config.executor, exec_stop))
    await outcome(bus, "ck3", "open")
    exec_stop.set()
    await executor_task
    assert metrics.COMMANDS.labels("place", "duplicate")._value.get() == handled  # nothing handled twice
    stop.set()
    await sim_task
