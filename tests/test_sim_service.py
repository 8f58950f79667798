"""The simulated exchange as a service: the Venue API over NATS, its events, and kill -9 survival."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.embedded import EmbeddedServer
from bus.errors import PublishTimeout
from bus.reader import read_stream
from schemas.codec import decode
from testkit.bus import eventually
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.protocol import OrderRequest
from venues.sim import api
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig
from venues.sim.service import SimService

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "BTC/USDT:USDT"
LOCKSTEP = dict(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=30, seed=5)


@pytest.fixture
async def exchange(bus: Client) -> AsyncIterator[SimService]:
    service = SimService(bus, SimConfig(**LOCKSTEP))  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    await eventually(lambda: service.service is not None, what="the simulated exchange to register")
    yield service
    stop.set()
    await task


@pytest.fixture
def sim(bus: Client, exchange: SimService) -> SimVenue:
    return SimVenue(bus)


def limit(cid: str, price: Decimal, side: str = "buy", amount: str = "0.01", **kw: object) -> OrderRequest:
    return OrderRequest(symbol=SYMBOL, client_order_id=cid, side=side, amount=Decimal(amount), price=price, **kw)  # type: ignore[arg-type]


async def last_price(venue: SimVenue) -> Decimal:
    candles = await venue.fetch_ohlcv(SYMBOL, limit=1)
    return candles[-1].close


async def account_events(bus: Client) -> list:
    out = []
    async for batch in read_stream(bus, "ACCOUNT"):
        out += [decode(m.data) for m in batch]
    return out


async def test_place_fill_and_events_are_stored_before_the_reply(sim: SimVenue, bus: Client) -> None:
    await sim.step(1)
    markets = await sim.markets()
    assert markets[SYMBOL].tick_size == Decimal("0.1")
    price = (await last_price(sim)) - 30
    order = await sim.create_order(limit("buy1", price, post_only=True))
    assert order.status == "open" and order.order_id
    events = await account_events(bus)  # already there: the reply waited for the store
    assert [e.status for e in events if getattr(e, "client_order_id", None) == "buy1"] == ["open"]
    for _ in range(60):
        await sim.step(10)
        current = await sim.fetch_order(SYMBOL, client_order_id="buy1")
        if current.status == "closed":
            break
    assert current.status == "closed" and current.filled == Decimal("0.01") and current.average == price
    kinds = [type(e).__name__ for e in await account_events(bus)]
    assert {"OrderUpdate", "Fill", "Position", "Balance"} <= set(kinds)
    position = (await sim.fetch_positions([SYMBOL]))[0]
    assert position.side == "long" and position.contracts == Decimal("0.01") and position.entry_price == price


async def test_a_repeated_client_id_returns_the_existing_order_never_a_second(sim: SimVenue) -> None:
    await sim.step(1)
    price = (await last_price(sim)) - 500
    first = await sim.create_order(limit("dup1", price))
    with pytest.raises(DuplicateOrder) as dup:
        await sim.create_order(limit("dup1", price - 100))
    assert dup.value.existing is not None and dup.value.existing.order_id == first.order_id
    assert len(await sim.fetch_open_orders(SYMBOL)) == 1


async def test_concurrent_requests_with_one_client_id_make_one_order(sim: SimVenue) -> None:
    await sim.step(1)
    price = (await last_price(sim)) - 500
    results = await asyncio.gather(*(sim.create_order(limit("race1", price)) for _ in range(5)), return_exceptions=True)
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, DuplicateOrder) for r in results if isinstance(r, BaseException))
    assert len(await sim.fetch_open_orders(SYMBOL)) == 1


async def test_rejections_carry_their_category(sim: SimVenue) -> None:
    await sim.step(1)
    last = await last_price(sim)
    cases = [
        (limit("r1", last + 100, post_only=True), "post_only_would_take"),
        (limit("r2", Decimal("60000.05")), "off_tick"),
        (limit("r3", last - 100, amount="0.0001"), "below_min"),
        (limit("r4", last - 100, amount="1000"), "insufficient_balance"),
        (OrderRequest(symbol="DOGE/USDT", client_order_id="r5", side="buy", amount=Decimal(1), price=Decimal(1)), "unknown_symbol"),
    ]
    for request, reason in cases:
        with pytest.raises(OrderRejected) as err:
            await sim.create_order(request)
        assert err.value.reason == reason, request


async def test_cancel_and_not_found(sim: SimVenue) -> None:
    await sim.step(1)
    price = (await last_price(sim)) - 500
    await sim.create_order(limit("c1", price))
    canceled = await sim.cancel_order(SYMBOL, client_order_id="c1")
    assert canceled.status == "canceled" and await sim.fetch_open_orders(SYMBOL) == []
    with pytest.raises(OrderNotFound):
        await sim.fetch_order(SYMBOL, client_order_id="never")
    await sim.create_order(limit("c2", price))
    await sim.create_order(limit("c3", price - 10))
    assert {o.status for o in await sim.cancel_all_orders(SYMBOL)} == {"canceled"}


async def test_the_exchange_answers_nothing_while_it_rebuilds_from_its_journal(exchange: SimService, sim: SimVenue) -> None:
    exchange.runtime.caught_up.clear()  # as after a broken session, before the engine caught up again
    with pytest.raises(Transient, match="recovering"):
        await sim.fetch_open_orders(SYMBOL)
    exchange.runtime.caught_up.set()
    assert await sim.fetch_open_orders(SYMBOL) == []


async def test_a_journal_the_bus_does_not_acknowledge_is_a_transient_answer_without_a_traceback(
    exchange: SimService, sim: SimVenue, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A nats-server restarting while a create is journaled: retryable, never a refusal, one line."""
    price = await last_price(sim)

    async def unacknowledged(entry: object) -> tuple[int, bool]:
        raise PublishTimeout("no ack within 5.0s")

    monkeypatch.setattr(exchange, "append", unacknowledged)
    with pytest.raises(Transient, match="journal is unreachable"):
        await sim.create_order(limit("t-outage", price - 100))
    assert "journal is unreachable" in caplog.text and "Traceback" not in caplog.text


async def test_an_absent_exchange_is_a_transient_error(bus: Client) -> None:
    with pytest.raises(Transient, match="not running"):
        await SimVenue(bus, venue="nowhere").fetch_open_orders()


async def test_a_create_that_reaches_the_exchange_after_its_deadline_is_rejected_as_expired(sim: SimVenue) -> None:
    await sim.step(1)
    price = (await last_price(sim)) - 500
    now = (await sim.time()).ts
    with pytest.raises(OrderRejected) as late:
        await sim.create_order(limit("late1", price, deadline_ms=now - 1))
    assert late.value.reason == "expired" and "deadline" in str(late.value)
    with pytest.raises(DuplicateOrder) as retry:  # the id is taken: a retry hears the outcome
        await sim.create_order(limit("late1", price, deadline_ms=now + 60_000))
    assert retry.value.existing is not None and retry.value.existing.status == "rejected"
    order = await sim.create_order(limit("intime1", price, deadline_ms=now + 60_000))
    assert order.status == "open"


async def test_a_handler_that_fails_is_a_transient_error_never_a_rejection(
    exchange: SimService, sim: SimVenue, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("a bug in the exchange")

    monkeypatch.setattr(exchange.engine, "open_orders", broken)
    with pytest.raises(Transient, match="handler failed"):
        await sim.fetch_open_orders(SYMBOL)
    monkeypatch.undo()
    assert await sim.fetch_open_orders(SYMBOL) == []


@pytest.mark.parametrize("code", ["500", "502", "503", "504"])
async def test_the_client_treats_every_server_error_code_as_transient(bus: Client, code: str) -> None:
    async def failing(msg: Msg) -> None:
        await bus.publish(msg.reply, b"", headers={"Nats-Service-Error-Code": code, "Nats-Service-Error": "venue_error: down"})

    await bus.subscribe(api.api_subject("flaky", "fetch_order"), cb=failing)
    with pytest.raises(Transient):
        await SimVenue(bus, venue="flaky").fetch_order(SYMBOL, client_order_id="x")


async def test_a_value_no_order_can_carry_is_a_rejection_not_an_outage(sim: SimVenue) -> None:
    await sim.step(1)
    for request in (limit("nan1", Decimal("NaN")), limit("neg1", Decimal(100), amount="-1")):
        with pytest.raises(OrderRejected) as err:
            await sim.create_order(request)
        assert err.value.reason == "invalid" and not isinstance(err.value, Transient)
    with pytest.raises(OrderNotFound):  # refused before the journal: the id was never taken
        await sim.fetch_order(SYMBOL, client_order_id="nan1")


async def test_a_withdrawal_beyond_the_free_balance_is_refused(sim: SimVenue) -> None:
    await sim.step(1)
    with pytest.raises(OrderRejected) as err:
        await sim.fund("USDT", Decimal("-1000000000"))
    assert err.value.reason == "insufficient_balance"
    usdt = next(b for b in await sim.fetch_balance() if b.asset == "USDT")
    assert usdt.total == Decimal(100_000)


def _sim_process(server: EmbeddedServer, config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "--config", str(config), "run", "sim"],
        cwd=ROOT,
        env={**os.environ, "NATS_URL": server.url},
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )


async def _ready(venue: SimVenue) -> None:
    async def answers() -> bool:
        try:
            await venue.fetch_open_orders()
            return True
        except Transient:
            return False

    await eventually(answers, timeout=20, what="the simulated exchange to answer")


@pytest.mark.e2e
async def test_the_exchange_keeps_orders_balances_and_price_path_across_kill_9(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    config = tmp_path / "sim.toml"
    config.write_text("[sim]\nclock = 'lockstep'\nstart_time_ms = 1700000000000\nhistory_minutes = 30\nseed = 11\n")
    proc = _sim_process(nats_server, config, tmp_path / "sim.log")
    venue = SimVenue(bus)
    try:
        await _ready(venue)
        await venue.step(50)
        price = await last_price(venue)
        resting = await venue.create_order(limit("keep1", price - 200))
        await venue.create_order(
            OrderRequest(symbol=SYMBOL, client_order_id="mkt1", side="buy", order_type="market", amount=Decimal("0.02"))
        )
        await venue.step(7)
        before = (
            await venue.fetch_open_orders(),
            await venue.fetch_positions(),
            await venue.fetch_balance(),
            await venue.now_ms(),
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = _sim_process(nats_server, config, tmp_path / "sim.log")
        await _ready(venue)
        after = (
            await venue.fetch_open_orders(),
            await venue.fetch_positions(),
            await venue.fetch_balance(),
            await venue.now_ms(),
        )
        assert after == before
        with pytest.raises(DuplicateOrder) as dup:  # the id is still taken after the restart
            await venue.create_order(limit("keep1", price - 300))
        assert dup.value.existing is not None and dup.value.existing.order_id == resting.order_id
        await venue.step(200)
        path_after_restart = [c.close for c in await venue.fetch_ohlcv(SYMBOL, limit=3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)

    # A fresh exchange with the same seed, never killed, walks the very same prices.
    js = bus.jetstream()
    await js.delete_stream("VENUE_SIM")
    await js.purge_stream("MARKET")
    await js.purge_stream("ACCOUNT")
    await checkpoints.delete(bus, "venue-sim")
    proc = _sim_process(nats_server, config, tmp_path / "sim2.log")
    try:
        await _ready(venue)
        await venue.step(50)
        await venue.create_order(limit("keep1", price - 200))
        await venue.create_order(
            OrderRequest(symbol=SYMBOL, client_order_id="mkt1", side="buy", order_type="market", amount=Decimal("0.02"))
        )
        await venue.step(207)
        assert [c.close for c in await venue.fetch_ohlcv(SYMBOL, limit=3)] == path_after_restart
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
