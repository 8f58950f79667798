"""A place, step by step, exactly: the request the venue gets, each refusal's reason and message,
each outcome counted under its own name, and the edges of every time limit."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from bus.contract import Inbound
from bus.errors import RetryLater
from executors import metrics
from executors.config import ExecutorConfig
from executors.executor import Executor
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from testkit.events import place
from testkit.grid import MARKET
from testkit.venue import T0, ScriptedBreakers, ScriptedVenue, order
from venues.errors import DuplicateOrder, OrderNotFound, OrderRejected, Transient
from venues.protocol import OrderRequest

TTL = 30_000
MARGIN = ExecutorConfig().deadline_margin_ms
WINDOW = ExecutorConfig().unknown_after_ms
STORED = T0 + 5


class Wall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def executor(venue: ScriptedVenue, wall: Wall | None = None, breakers: ScriptedBreakers | None = None, **cfg: Any) -> Executor:
    async def throttle() -> None:
        venue.calls.append(("throttle", None))

    async def no_sleep(_s: float) -> None:
        return None

    config = ExecutorConfig(**({"retries": 1, "backoff_ms": 10, "backoff_max_ms": 40} | cfg))
    view: Any = breakers or ScriptedBreakers()  # the executor's breaker view, scripted
    return Executor(venue, view, config, throttle, clock=wall or Wall(T0 + 10), sleep=no_sleep, jitter=lambda: 0.5)


def command(**kw: Any) -> PlaceOrder:
    fields: dict[str, Any] = {"ts": T0, "price": "100.1", "amount": "0.5"} | kw
    return place("cid1", ttl_ms=TTL, **fields)


async def handle(x: Executor, cmd: PlaceOrder, stored_ms: int = STORED, delivered: int = 1) -> list[Any]:
    return list(await x.handle(Inbound(1, "cmd", cmd, stored_ms * 1_000_000, delivered)))


def outcomes(outcome: str) -> float:
    return float(metrics.COMMANDS.labels("place", outcome)._value.get())


def failures(verb: str, reason: str) -> float:
    return float(metrics.FAILURES.labels(verb, reason)._value.get())


def landed(cmd: PlaceOrder, status: str = "open") -> Any:
    return order(
        OrderRequest(symbol=cmd.symbol, client_order_id=cmd.client_order_id, side=cmd.side, amount=cmd.amount, price=cmd.price), status
    )


async def test_the_venue_gets_the_command_as_a_request_with_its_deadline_through_the_limiter() -> None:
    cmd = command(side="sell", post_only=True, reduce_only=True, time_in_force="GTC")
    venue = ScriptedVenue().script("create_order", lambda req: landed(cmd))
    breakers = ScriptedBreakers()
    before = outcomes("placed")
    out = await handle(executor(venue, breakers=breakers), cmd)
    [request] = [r for m, r in venue.calls if m == "create_order"]
    assert request == OrderRequest(
        symbol="BTC/USDT:USDT",
        client_order_id="cid1",
        side="sell",
        order_type="limit",
        amount=D("0.5"),
        price=D("100.1"),
        post_only=True,
        reduce_only=True,
        use_margin=False,
        time_in_force="GTC",
        deadline_ms=T0 + TTL,
    )
    assert [m for m, _ in venue.calls].index("throttle") < [m for m, _ in venue.calls].index("create_order")
    assert breakers.asked == [("sim", "BTC/USDT:USDT", "main")]  # the account's scope too (account.<venue>.<account>)
    assert [o.client_order_id for o in out] == ["cid1"] and outcomes("placed") == before + 1


async def test_a_command_the_market_rules_refuse_never_reaches_the_venue() -> None:
    venue = ScriptedVenue()
    before, counted = outcomes("off_tick"), failures("place", "off_tick")
    [refusal] = await handle(executor(venue), command(price="100.15"))
    assert (refusal.status, refusal.reason) == ("rejected", "off_tick") and "tick size 0.1" in (refusal.message or "")
    assert venue.count("create_order") == 0 and outcomes("off_tick") == before + 1 and failures("place", "off_tick") == counted + 1


async def test_an_unknown_symbol_is_refused_as_such() -> None:
    [refusal] = await handle(executor(ScriptedVenue(markets={})), command())
    assert refusal.reason == "unknown_symbol"


@pytest.mark.parametrize(("breaker", "scope"), [("halted", "global"), ("reduce_only", "venue.sim")])
async def test_a_breaker_refusal_names_the_breaker_and_is_counted(breaker: str, scope: str) -> None:
    venue = ScriptedVenue()
    before = outcomes("breaker_open")
    [refusal] = await handle(executor(venue, breakers=ScriptedBreakers(breaker, scope)), command())
    assert (refusal.reason, refusal.message) == ("breaker_open", f"risk breaker {scope} is {breaker}")
    assert outcomes("breaker_open") == before + 1


async def test_a_venue_refusal_is_reported_with_the_venues_words() -> None:
    venue = ScriptedVenue().script("create_order", OrderRejected("margin is short", "insufficient_balance"))
    before = outcomes("insufficient_balance")
    [refusal] = await handle(executor(venue), command())
    assert (refusal.reason, refusal.message) == ("insufficient_balance", "margin is short")
    assert outcomes("insufficient_balance") == before + 1


async def test_a_duplicate_without_the_order_is_looked_up_and_reported_as_a_duplicate() -> None:
    cmd = command()
    venue = ScriptedVenue().script("create_order", DuplicateOrder("taken")).script("fetch_order", landed(cmd, "closed"))
    before = outcomes("duplicate")
    assert [o.status for o in await handle(executor(venue), cmd)] == ["closed"]
    assert ("fetch_order", ("BTC/USDT:USDT", "cid1", None)) in venue.calls and outcomes("duplicate") == before + 1


async def test_a_duplicate_the_venue_cannot_find_is_not_settled() -> None:
    venue = ScriptedVenue().script("create_order", DuplicateOrder("taken")).script("fetch_order", OrderNotFound)
    with pytest.raises(RetryLater, match="cid1: the venue says it exists but does not find it"):
        await handle(executor(venue), command())


async def test_a_redelivered_command_found_at_the_venue_is_reported_as_a_duplicate() -> None:
    cmd = command()
    venue = ScriptedVenue().script("fetch_order", landed(cmd))
    before = outcomes("duplicate")
    assert [o.status for o in await handle(executor(venue), cmd, delivered=2)] == ["open"]
    assert venue.calls == [("fetch_order", ("BTC/USDT:USDT", "cid1", None))] and outcomes("duplicate") == before + 1


async def test_a_redelivered_command_not_at_the_venue_is_placed() -> None:
    cmd = command()
    venue = ScriptedVenue().script("fetch_order", OrderNotFound).script("create_order", lambda req: landed(cmd))
    assert [o.status for o in await handle(executor(venue), cmd, delivered=2)] == ["open"] and venue.count("create_order") == 1


# ----------------------------------------------------------------------------- time limits, at their edges


async def test_a_command_stored_exactly_its_time_to_live_ago_is_still_placed() -> None:
    cmd = command()
    venue = ScriptedVenue().script("create_order", lambda req: landed(cmd))
    await handle(executor(venue, Wall(STORED + TTL)), cmd)
    assert venue.count("create_order") == 1


async def test_one_millisecond_later_it_is_late_and_the_venue_is_asked_first() -> None:
    cmd = command()
    venue = ScriptedVenue(now_ms=T0 + TTL + MARGIN + 1).script("fetch_order", OrderNotFound)
    before = outcomes("expired")
    [refusal] = await handle(executor(venue, Wall(STORED + TTL + 1)), cmd)
    assert refusal.reason == "expired"
    assert refusal.message == f"reached the executor {TTL + 1} ms after it was stored (time-to-live {TTL} ms)"
    assert ("now_ms", True) in venue.calls and venue.count("create_order") == 0 and outcomes("expired") == before + 1


async def test_a_decision_exactly_its_time_to_live_old_by_the_venues_clock_is_still_placed() -> None:
    cmd = command()
    venue = ScriptedVenue(now_ms=T0 + TTL).script("create_order", lambda req: landed(cmd))
    await handle(executor(venue), cmd)
    assert venue.count("create_order") == 1


async def test_a_decision_older_than_that_is_late_with_its_age_in_the_reason() -> None:
    venue = ScriptedVenue(now_ms=T0 + TTL + MARGIN + 5).default("fetch_order", OrderNotFound)
    [refusal] = await handle(executor(venue), command())
    assert refusal.message == f"decided {TTL + MARGIN + 5} ms ago by the venue's clock (time-to-live {TTL} ms)"


async def test_not_found_is_final_only_after_the_deadline_and_its_margin() -> None:
    cmd = command()
    venue = ScriptedVenue().default("fetch_order", OrderNotFound)
    venue.defaults["now_ms"] = lambda fresh: T0 + TTL + MARGIN if fresh else T0 + TTL + 1
    with pytest.raises(RetryLater, match=f"venue's clock {T0 + TTL + MARGIN} has not passed its deadline {T0 + TTL}"):
        await handle(executor(venue), cmd)
    venue.defaults["now_ms"] = lambda fresh: T0 + TTL + MARGIN + 1
    assert [o.reason for o in await handle(executor(venue), cmd)] == ["expired"]


async def test_an_unknown_outcome_waits_exactly_its_window_then_is_published_and_counted() -> None:
    cmd = command()
    venue = ScriptedVenue().default("fetch_order", Transient("down")).default("now_ms", Transient("down"))
    with pytest.raises(RetryLater):
        await handle(executor(venue, Wall(STORED + TTL + WINDOW)), cmd, delivered=2)
    before, counted = outcomes("unknown"), failures("place", "unknown")
    [unknown] = await handle(executor(venue, Wall(STORED + TTL + WINDOW + 1)), cmd, delivered=2)
    assert (unknown.status, unknown.reason) == ("unknown", "venue_error")
    assert unknown.message == f"outcome unknown after {TTL + WINDOW + 1} ms: place: down (after 2 attempts)"
    assert outcomes("unknown") == before + 1 and failures("place", "unknown") == counted + 1


async def test_a_command_never_sent_is_refused_for_the_venue_error_once_its_window_is_over() -> None:
    venue = ScriptedVenue().default("fetch_order", Transient("down")).default("now_ms", Transient("down"))
    before = outcomes("venue_error")
    [refusal] = await handle(executor(venue, Wall(STORED + TTL + WINDOW + 1)), command())
    assert (refusal.status, refusal.reason) == ("rejected", "venue_error")
    assert refusal.message == f"not sent in {TTL + WINDOW + 1} ms: place: down (after 2 attempts)"
    assert outcomes("venue_error") == before + 1


async def test_without_a_store_time_nothing_is_judged_by_it() -> None:
    cmd = command()
    venue = ScriptedVenue().default("create_order", Transient("down")).default("fetch_order", OrderNotFound)
    with pytest.raises(RetryLater):  # not "unknown": the wait is measured from a store time it has not got
        await executor(venue, Wall(T0 + 10**9)).handle(Inbound(1, "cmd", cmd, 0, 2))


async def test_every_venue_call_of_a_place_retries_under_the_place_verb() -> None:
    cmd = command()
    venue = ScriptedVenue().script("markets", Transient("busy"), {MARKET.symbol: MARKET}).script("create_order", lambda req: landed(cmd))
    before = float(metrics.RETRIES.labels("place", "venue_error")._value.get())
    await handle(executor(venue), cmd)
    assert float(metrics.RETRIES.labels("place", "venue_error")._value.get()) == before + 1


async def test_retries_wait_half_to_one_and_a_half_times_a_delay_that_doubles_up_to_its_cap() -> None:
    sleeps: list[float] = []

    async def sleep(s: float) -> None:
        sleeps.append(s)

    async def throttle() -> None:
        return None

    cmd = command()
    venue = ScriptedVenue().script("create_order", *[Transient("busy")] * 4, lambda req: landed(cmd))
    venue.script("fetch_order", *[OrderNotFound("no")] * 4)
    config = ExecutorConfig(retries=4, backoff_ms=10, backoff_max_ms=40)
    x = Executor(venue, ScriptedBreakers(), config, throttle, clock=Wall(T0 + 10), sleep=sleep, jitter=lambda: 0.25)  # type: ignore[arg-type]
    await handle(x, cmd)
    assert sleeps == pytest.approx([0.0075, 0.015, 0.03, 0.03], rel=1e-12)


def test_one_markets_commands_share_a_key_and_cancel_all_runs_alone() -> None:
    x = executor(ScriptedVenue())
    key = x.key(Inbound(1, "cmd", command()))
    assert key == "sim/main/BTC/USDT:USDT"
    cancel = CancelOrder(id="c", venue="sim", account="main", symbol=key.split("/", 2)[2], client_order_id="x", origin="t", ts=T0)
    everything = CancelAll(id="a", venue="sim", account="main", symbol=cancel.symbol, origin="t", ts=T0)
    assert x.key(Inbound(2, "cmd", cancel)) == key == x.key(Inbound(3, "cmd", everything))
    # Cancel-all runs alone (the handler runtime waits for everything before and after it).
    assert [x.exclusive(Inbound(1, "cmd", c)) for c in (command(), cancel, everything)] == [False, False, True]


async def test_a_market_order_on_margin_reaches_the_venue_as_one() -> None:
    spot = MARKET.__class__(
        symbol="BTC/USDT",
        kind="spot",
        base="BTC",
        quote="USDT",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.001"),
        min_notional=D(5),
    )
    cmd = place("m1", price=None, amount="0.5", symbol="BTC/USDT", order_type="market", use_margin=True, side="sell", ts=T0)
    venue = ScriptedVenue(markets={"BTC/USDT": spot}).script("create_order", lambda req: landed(cmd))
    await handle(executor(venue), cmd)
    [request] = [r for m, r in venue.calls if m == "create_order"]
    assert (request.order_type, request.use_margin, request.price) == ("market", True, None)


async def test_the_time_checks_retry_under_the_place_verb_and_a_late_duplicate_is_counted() -> None:
    cmd = command()
    venue = ScriptedVenue().script("now_ms", Transient("busy"), T0 + TTL + 1).script("fetch_order", landed(cmd))
    retried, duplicates = float(metrics.RETRIES.labels("place", "venue_error")._value.get()), outcomes("duplicate")
    assert [o.status for o in await handle(executor(venue), cmd)] == ["open"]  # late by the venue's clock: found, not refused
    assert float(metrics.RETRIES.labels("place", "venue_error")._value.get()) == retried + 1
    assert outcomes("duplicate") == duplicates + 1
    venue = ScriptedVenue().script("fetch_order", OrderNotFound).script("now_ms", T0 + TTL + 1, Transient("busy"), T0 + TTL + MARGIN + 1)
    retried = float(metrics.RETRIES.labels("place", "venue_error")._value.get())
    assert [o.reason for o in await handle(executor(venue), cmd)] == ["expired"]
    assert float(metrics.RETRIES.labels("place", "venue_error")._value.get()) == retried + 1
