"""The executor never reports an outcome it did not observe, and never places a client id twice.

Against a scripted venue (testkit/venue.py): the answers, the venue's clock and the breakers are
the test's, call by call, so each race is played out exactly.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bus.contract import Inbound
from bus.errors import RetryLater
from executors.config import ExecutorConfig
from executors.executor import Executor
from schemas.account import OrderUpdate
from schemas.commands import PlaceOrder
from testkit.events import place
from testkit.venue import T0, ScriptedBreakers, ScriptedVenue, order
from venues.errors import DuplicateOrder, OrderNotFound, Transient
from venues.protocol import OrderRequest

TTL = 30_000
DECIDED = T0  # the command's decision time (venue clock)
DEADLINE = DECIDED + TTL
MARGIN = ExecutorConfig().deadline_margin_ms


class Wall:
    """The executor's wall clock, in seconds, moved by the test."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def command(**kw: Any) -> PlaceOrder:
    kw.setdefault("ts", DECIDED)
    return place("cid1", price="100", amount="1", ttl_ms=TTL, **kw)


def executor(venue: ScriptedVenue, wall: Wall, breakers: ScriptedBreakers | None = None, **cfg: Any) -> Executor:
    async def throttle() -> None:
        return None

    async def no_sleep(_s: float) -> None:
        return None

    config = ExecutorConfig(retries=2, backoff_ms=10, backoff_max_ms=40, **cfg)
    return Executor(venue, breakers or ScriptedBreakers(), config, throttle, clock=wall, sleep=no_sleep)  # type: ignore[arg-type]


def inbound(cmd: PlaceOrder, stored_ms: int = DECIDED + 5, delivered: int = 1) -> Inbound[Any]:
    return Inbound(1, "cmd.sim.main.BTC-USDT-USDT.place", cmd, stored_ms * 1_000_000, delivered)


def landed(request_or_cmd: Any, status: str = "open") -> OrderUpdate:
    req = request_or_cmd
    if isinstance(req, PlaceOrder):
        req = OrderRequest(symbol=req.symbol, client_order_id=req.client_order_id, side=req.side, amount=req.amount, price=req.price)
    return order(req, status=status)


async def test_a_create_that_times_out_but_landed_is_found_and_never_placed_again() -> None:
    venue = ScriptedVenue().script("create_order", Transient, Transient, Transient)
    venue.script("fetch_order", OrderNotFound, OrderNotFound)  # not visible yet when asked before each resend
    wall = Wall(DECIDED + 10)
    with pytest.raises(RetryLater):  # unknown: never reported as a failure
        await executor(venue, wall).handle(inbound(command()))
    assert venue.count("create_order") == 3
    venue.script("fetch_order", landed(command()))  # it had landed after all
    out = await executor(venue, wall).handle(inbound(command(), delivered=2))
    assert [(o.client_order_id, o.status) for o in out] == [("cid1", "open")]
    assert venue.count("create_order") == 3  # asked, not placed again


async def test_every_create_carries_the_commands_deadline() -> None:
    venue = ScriptedVenue().script("create_order", lambda req: landed(req))
    await executor(venue, Wall(DECIDED + 10)).handle(inbound(command()))
    [(_, request)] = [c for c in venue.calls if c[0] == "create_order"]
    assert request.deadline_ms == DEADLINE


async def test_an_expired_place_asks_the_venue_before_refusing() -> None:
    venue = ScriptedVenue(now_ms=DEADLINE + MARGIN + 1).script("fetch_order", landed(command()))
    out = await executor(venue, Wall(DECIDED + 10)).handle(inbound(command()))  # decided 32 s ago by the venue's clock
    assert [(o.status, o.reason) for o in out] == [("open", None)]  # the earlier attempt's order, not a refusal
    assert venue.count("create_order") == 0


async def test_an_expired_place_is_refused_only_once_the_venues_clock_passed_its_deadline() -> None:
    venue = ScriptedVenue(now_ms=DECIDED + TTL + 1).default("fetch_order", OrderNotFound)
    wall = Wall(DECIDED + 10)
    with pytest.raises(RetryLater, match="has not passed its deadline"):  # not yet final: an attempt may still land
        await executor(venue, wall).handle(inbound(command(), delivered=2))
    venue.clock = DEADLINE + MARGIN + 1
    out = await executor(venue, wall).handle(inbound(command(), delivered=2))
    assert [(o.status, o.reason) for o in out] == [("rejected", "expired")]
    assert venue.count("create_order") == 0


async def test_a_place_that_lands_after_its_time_to_live_is_reported_as_the_venues_order() -> None:
    venue = ScriptedVenue(now_ms=DECIDED + TTL + 1).default("fetch_order", OrderNotFound)
    wall = Wall(DECIDED + TTL + 100)  # stored long ago: expired by the store time too
    with pytest.raises(RetryLater):
        await executor(venue, wall).handle(inbound(command(), delivered=2))
    venue.defaults["fetch_order"] = landed(command())  # the create in flight landed before the deadline
    venue.clock = DEADLINE + MARGIN + 1
    out = await executor(venue, wall).handle(inbound(command(), delivered=2))
    assert [o.status for o in out] == ["open"] and venue.count("create_order") == 0


async def test_the_store_time_check_alone_keeps_a_late_command_from_the_venue() -> None:
    venue = ScriptedVenue(now_ms=DECIDED + 1_000).default("fetch_order", OrderNotFound)  # the venue's clock says: fresh
    with pytest.raises(RetryLater):
        await executor(venue, Wall(DECIDED + TTL + 5_000)).handle(inbound(command()))  # stored 35 s ago
    assert venue.count("create_order") == 0


async def test_the_decision_time_check_alone_refuses_a_republished_command() -> None:
    venue = ScriptedVenue(now_ms=DEADLINE + MARGIN + 10).default("fetch_order", OrderNotFound)
    wall = Wall(DEADLINE + MARGIN + 10)
    out = await executor(venue, wall).handle(inbound(command(), stored_ms=wall.ms - 5))  # just stored, decided long ago
    assert [(o.status, o.reason) for o in out] == [("rejected", "expired")]
    assert "by the venue's clock" in (out[0].message or "") and venue.count("create_order") == 0


async def test_an_outcome_that_stays_unknown_is_published_as_unknown_with_its_evidence() -> None:
    venue = ScriptedVenue().default("fetch_order", Transient("venue down")).default("now_ms", Transient("venue down"))
    wall = Wall(DECIDED + 5 + TTL + ExecutorConfig().unknown_after_ms - 1)
    with pytest.raises(RetryLater):  # within the window: retried
        await executor(venue, wall).handle(inbound(command(), delivered=2))
    wall.ms += 2
    out = await executor(venue, wall).handle(inbound(command(), delivered=2))
    assert [(o.status, o.client_order_id) for o in out] == [("unknown", "cid1")]
    assert "venue down" in (out[0].message or "")


async def test_a_place_that_never_reached_the_venue_is_refused_when_it_cannot_be_sent_in_time() -> None:
    venue = ScriptedVenue().default("now_ms", Transient("venue down")).default("fetch_order", Transient("venue down"))
    wall = Wall(DECIDED + 5 + TTL + ExecutorConfig().unknown_after_ms + 1)
    out = await executor(venue, wall).handle(inbound(command()))
    assert [(o.status, o.reason) for o in out] == [("rejected", "venue_error")]  # certain: never sent


async def test_a_breaker_that_opens_between_retries_stops_the_retries_without_a_refusal() -> None:
    venue = ScriptedVenue().script("create_order", Transient, lambda req: landed(req))
    breakers = ScriptedBreakers()
    breakers.script.extend(["ok", "halted"])  # read before the first attempt, then before the retry
    with pytest.raises(RetryLater, match="halted"):
        await executor(venue, Wall(DECIDED + 10), breakers).handle(inbound(command()))
    assert venue.count("create_order") == 1


@pytest.mark.parametrize(
    ("breaker", "reduce_only", "allowed"),
    [("ok", False, True), ("reduce_only", True, True), ("reduce_only", False, False), ("halted", True, False), ("halted", False, False)],
)
async def test_breakers_let_through_exactly_what_their_state_allows(breaker: str, reduce_only: bool, allowed: bool) -> None:
    venue = ScriptedVenue().default("create_order", lambda req: landed(req))
    out = await executor(venue, Wall(DECIDED + 10), ScriptedBreakers(breaker)).handle(inbound(command(reduce_only=reduce_only)))
    assert venue.count("create_order") == (1 if allowed else 0)
    assert [o.status for o in out] == (["open"] if allowed else ["rejected"])


async def test_a_duplicate_client_id_reports_the_order_the_venue_holds() -> None:
    venue = ScriptedVenue().script("create_order", DuplicateOrder("taken")).script("fetch_order", landed(command(), "closed"))
    out = await executor(venue, Wall(DECIDED + 10)).handle(inbound(command()))
    assert [o.status for o in out] == ["closed"] and venue.count("create_order") == 1


def test_the_deadline_is_decision_time_plus_time_to_live() -> None:
    assert DEADLINE == command().ts + command().ttl_ms == DECIDED + Decimal(TTL)
