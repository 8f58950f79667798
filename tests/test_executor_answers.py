"""What the executor says, exactly: refusals, unknowns, answers to bad commands, cancels, and the
retry schedule. Against a scripted venue, no bus."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest

from bus.contract import Inbound
from bus.errors import RetryLater
from executors import metrics
from executors.answers import invalid_command, order_event
from executors.config import ExecutorConfig
from executors.executor import Executor
from schemas import ids
from schemas.account import OrderUpdate
from schemas.commands import CancelAll, CancelOrder
from testkit.events import place
from testkit.venue import T0, ScriptedBreakers, ScriptedVenue, order
from venues.errors import OrderNotFound, Transient
from venues.protocol import OrderRequest

SUBJECT = "cmd.sim.main.BTC-USDT-USDT.place"
NOW = T0 + 1_000


def executor(venue: ScriptedVenue, sleeps: list[float] | None = None, **cfg: Any) -> Executor:
    async def throttle() -> None:
        return None

    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    config = ExecutorConfig(**({"retries": 2, "backoff_ms": 10, "backoff_max_ms": 40} | cfg))
    return Executor(venue, ScriptedBreakers(), config, throttle, clock=lambda: NOW / 1000, sleep=sleep)  # type: ignore[arg-type]


def count(counter: Any, *labels: str) -> float:
    return float(counter.labels(*labels)._value.get())


# ----------------------------------------------------------------------------- refusals and unknowns


def test_a_refusal_is_the_commands_order_with_the_reason_at_the_decision_time() -> None:
    cmd = place("r1", price="100.5", amount="0.02", side="sell", ts=T0, post_only=True, reduce_only=True)
    event = order_event(cmd, "rejected", "off_tick", "x" * 600, NOW / 1000)
    assert event == OrderUpdate(
        id=ids.order_event_id("sim", "main", "r1", "rejected", D(0)),
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        client_order_id="r1",
        side="sell",
        order_type="limit",
        price=D("100.5"),
        amount=D("0.02"),
        remaining=D("0.02"),
        status="rejected",
        post_only=True,
        reduce_only=True,
        reason="off_tick",
        message="x" * 500,
        ts=T0,
        ts_local=NOW,
    )
    assert order_event(cmd, "unknown", "venue_error", "m", NOW / 1000).id == ids.order_event_id("sim", "main", "r1", "unknown", D(0))


# ----------------------------------------------------------------------------- answers to bad commands


def bad(**fields: Any) -> bytes:
    import json

    body = {"type": "place_order", "client_order_id": "bad1", "side": "buy", "amount": "-1", "price": "100", "ts": T0, "symbol": "BTCUSDT"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_bad_place_is_answered_on_its_subjects_market_with_what_it_said() -> None:
    answer = invalid_command(SUBJECT, bad(amount="2", price="101"), "undecodable input: because", NOW)
    assert answer == OrderUpdate(
        id=ids.order_event_id("sim", "main", "bad1", "rejected", D(0)),
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",  # the subject's, not the body's "BTCUSDT"
        client_order_id="bad1",
        side="buy",
        price=D(101),
        amount=D(2),
        remaining=D(2),
        status="rejected",
        reason="invalid",
        message="undecodable input: because",
        ts=T0,
        ts_local=NOW,
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("amount", "-1", D(0)),  # a size it cannot have is reported as none
        ("amount", True, D(0)),
        ("amount", [1], D(0)),
        ("amount", "1e15", D(0)),
        ("amount", "NaN", D(0)),
        ("amount", "nope", D(0)),
        ("amount", 3, D(3)),
        ("amount", 0.5, D("0.5")),
        ("amount", "0", D(0)),
        ("amount", "999999999999999", D("999999999999999")),
    ],
)
def test_an_answers_size_is_what_the_body_said_when_it_is_a_size(field: str, value: Any, expected: D) -> None:
    answer = invalid_command(SUBJECT, bad(**{field: value}), "r", NOW)
    assert answer is not None and answer.amount == answer.remaining == expected


@pytest.mark.parametrize(("value", "expected"), [("100", D(100)), ("0", None), ("-5", None), ("abc", None), (None, None), ("1", D(1))])
def test_an_answers_price_is_the_bodys_only_when_positive(value: Any, expected: D | None) -> None:
    answer = invalid_command(SUBJECT, bad(price=value), "r", NOW)
    assert answer is not None and answer.price == expected


@pytest.mark.parametrize(("value", "expected"), [(T0, T0), (0, 0), (-1, 0), (10**14 - 1, 10**14 - 1), (10**14, 0), (1.5, 0), ("1", 0)])
def test_an_answers_time_is_the_bodys_decision_time_when_it_is_one(value: Any, expected: int) -> None:
    answer = invalid_command(SUBJECT, bad(ts=value), "r", NOW)
    assert answer is not None and answer.ts == expected


@pytest.mark.parametrize(
    ("subject", "payload"),
    [
        ("cmd.sim.main.BTC-USDT-USDT.cancel", bad()),  # only a place is answered with an order event
        ("md.sim.BTC-USDT-USDT.ticker", bad()),
        ("cmd.sim.main", bad()),
        ("cmd.sim.main.BTC.place", bad()),  # not a symbol token
        (SUBJECT, b"{not json"),
        (SUBJECT, b"\xff"),
        (SUBJECT, b"[1, 2]"),
        (SUBJECT, bad(client_order_id=...)),
        (SUBJECT, bad(client_order_id=7)),
        (SUBJECT, bad(client_order_id="has space")),
        (SUBJECT, bad(client_order_id="x" * 33)),
        (SUBJECT, bad(side="BUY")),
        (SUBJECT, bad(side=...)),
    ],
)
def test_no_answer_when_the_bad_command_does_not_say_which_order_it_was(subject: str, payload: bytes) -> None:
    assert invalid_command(subject, payload, "r", NOW) is None


def test_both_sides_are_answered() -> None:
    assert [invalid_command(SUBJECT, bad(side=s), "r", NOW).side for s in ("buy", "sell")] == ["buy", "sell"]


def test_the_executor_answers_through_invalid_command_and_counts_it() -> None:
    x = executor(ScriptedVenue())
    before = count(metrics.FAILURES, "invalid", "invalid")
    [answer] = x.on_invalid(7, SUBJECT, bad(), "undecodable input: no")
    assert answer.client_order_id == "bad1" and answer.message == "undecodable input: no" and answer.ts_local == NOW
    assert x.on_invalid(8, SUBJECT, b"junk", "undecodable") == []
    assert count(metrics.FAILURES, "invalid", "invalid") == before + 2


# ----------------------------------------------------------------------------- cancels


def cancel(cid: str = "c1") -> CancelOrder:
    return CancelOrder(
        id=f"cancel:{cid}", venue="sim", account="main", symbol="BTC/USDT:USDT", client_order_id=cid, order_id="9", origin="t", ts=T0
    )


def a_order(cid: str, status: str) -> OrderUpdate:
    return order(OrderRequest(symbol="BTC/USDT:USDT", client_order_id=cid, side="buy", amount=D(1), price=D(100)), status=status)


async def handle(x: Executor, cmd: Any, stored_ms: int = NOW) -> Any:
    return await x.handle(Inbound(1, "cmd", cmd, stored_ms * 1_000_000))


async def test_a_cancel_reports_the_venues_answer_with_its_outcome() -> None:
    venue = ScriptedVenue().script("cancel_order", a_order("c1", "canceled"))
    before = count(metrics.COMMANDS, "cancel", "canceled")
    assert [o.status for o in await handle(executor(venue), cancel())] == ["canceled"]
    assert venue.calls == [("cancel_order", ("BTC/USDT:USDT", "c1", "9"))]
    assert count(metrics.COMMANDS, "cancel", "canceled") == before + 1


async def test_a_cancel_of_an_order_that_just_filled_reports_the_fill() -> None:
    venue = ScriptedVenue().script("cancel_order", a_order("c1", "closed"))
    before = count(metrics.COMMANDS, "cancel", "closed")
    assert [o.status for o in await handle(executor(venue), cancel())] == ["closed"]
    assert count(metrics.COMMANDS, "cancel", "closed") == before + 1


async def test_a_cancel_answered_not_found_reports_what_a_fetch_finds() -> None:
    venue = ScriptedVenue().script("cancel_order", OrderNotFound).script("fetch_order", a_order("c1", "closed"))
    assert [o.status for o in await handle(executor(venue), cancel())] == ["closed"]
    assert venue.calls[1] == ("fetch_order", ("BTC/USDT:USDT", "c1", "9"))


async def test_a_cancel_of_an_order_the_venue_never_had_reports_nothing() -> None:
    venue = ScriptedVenue().script("cancel_order", OrderNotFound).script("fetch_order", OrderNotFound)
    before = count(metrics.COMMANDS, "cancel", "not_found")
    assert await handle(executor(venue), cancel()) == []
    assert count(metrics.COMMANDS, "cancel", "not_found") == before + 1


async def test_a_cancel_never_expires() -> None:
    venue = ScriptedVenue().script("cancel_order", a_order("c1", "canceled"))
    assert [o.status for o in await handle(executor(venue), cancel(), stored_ms=NOW - 3_600_000)] == ["canceled"]


def cancel_all(ttl_ms: int = 30_000) -> CancelAll:
    return CancelAll(id="ca", venue="sim", account="main", symbol="BTC/USDT:USDT", origin="t", ts=T0, ttl_ms=ttl_ms)


async def test_a_cancel_all_takes_off_what_rests_now() -> None:
    venue = ScriptedVenue().script("cancel_all_orders", [a_order("a", "canceled"), a_order("b", "canceled")])
    before = count(metrics.COMMANDS, "cancel_all", "done")
    out = await handle(executor(venue), cancel_all(), stored_ms=NOW - 30_000)  # exactly its time-to-live: still fresh
    assert [o.client_order_id for o in out] == ["a", "b"] and venue.calls == [("cancel_all_orders", "BTC/USDT:USDT")]
    assert count(metrics.COMMANDS, "cancel_all", "done") == before + 1


async def test_a_cancel_all_older_than_its_time_to_live_is_refused_without_calling_the_venue() -> None:
    venue = ScriptedVenue()
    before = count(metrics.FAILURES, "cancel_all", "expired")
    assert await handle(executor(venue), cancel_all(), stored_ms=NOW - 30_001) == []
    assert venue.calls == [] and count(metrics.FAILURES, "cancel_all", "expired") == before + 1


# ----------------------------------------------------------------------------- retries


async def test_transient_errors_back_off_doubling_with_jitter_up_to_the_cap() -> None:
    venue = ScriptedVenue().script("cancel_order", *[Transient("busy")] * 5, a_order("c1", "canceled"))
    sleeps: list[float] = []
    before = count(metrics.RETRIES, "cancel", "venue_error")
    out = await handle(executor(venue, sleeps, retries=5, backoff_ms=10, backoff_max_ms=40), cancel())
    assert [o.status for o in out] == ["canceled"] and venue.count("cancel_order") == 6
    for seconds, base in zip(sleeps, [0.01, 0.02, 0.04, 0.04, 0.04], strict=True):
        assert 0.5 * base <= seconds <= 1.5 * base
    assert count(metrics.RETRIES, "cancel", "venue_error") == before + 5


async def test_retries_that_run_out_leave_the_outcome_unknown_and_are_counted() -> None:
    venue = ScriptedVenue().script("cancel_order", *[Transient("busy")] * 3)
    before = count(metrics.FAILURES, "cancel", "venue_error")
    with pytest.raises(RetryLater, match=r"cancel: busy \(after 3 attempts\)"):
        await handle(executor(venue, retries=2), cancel())
    assert venue.count("cancel_order") == 3 and count(metrics.FAILURES, "cancel", "venue_error") == before + 1


async def test_the_command_to_venue_latency_is_observed_from_its_store_time() -> None:
    venue = ScriptedVenue().script("cancel_order", a_order("c1", "canceled"))
    histogram = metrics.COMMAND_TO_VENUE.labels("cancel")
    before = histogram._sum.get()
    await handle(executor(venue), cancel(), stored_ms=NOW - 250)
    assert histogram._sum.get() - before == pytest.approx(0.25)


def test_an_answers_message_is_the_reason_cut_to_500_characters() -> None:
    answer = invalid_command(SUBJECT, bad(), "r" * 700, NOW)
    assert answer is not None and answer.message == "r" * 500


async def test_cancels_go_through_the_rate_limiter_and_retry_under_their_own_verbs() -> None:
    throttled: list[str] = []

    async def throttle() -> None:
        throttled.append("t")

    async def no_sleep(_s: float) -> None:
        return None

    venue = ScriptedVenue().script("cancel_order", OrderNotFound).script("fetch_order", Transient("busy"), a_order("c1", "canceled"))
    venue.script("cancel_all_orders", Transient("busy"), [])
    view: Any = ScriptedBreakers()
    x = Executor(venue, view, ExecutorConfig(retries=2, backoff_ms=1, backoff_max_ms=1), throttle, clock=lambda: NOW / 1000, sleep=no_sleep)
    retries = {v: count(metrics.RETRIES, v, "venue_error") for v in ("cancel", "cancel_all")}
    await handle(x, cancel())
    assert throttled == ["t"]  # the cancel itself; the lookup after "not found" is a read
    await handle(x, cancel_all())
    assert throttled == ["t", "t", "t"]  # each attempt of a cancel-all
    assert {v: count(metrics.RETRIES, v, "venue_error") - n for v, n in retries.items()} == {"cancel": 1, "cancel_all": 1}


async def test_an_expired_cancel_all_is_counted_as_expired() -> None:
    before = count(metrics.COMMANDS, "cancel_all", "expired")
    await handle(executor(ScriptedVenue()), cancel_all(ttl_ms=1), stored_ms=NOW - 2)
    assert count(metrics.COMMANDS, "cancel_all", "expired") == before + 1


def test_a_refused_market_order_says_it_was_a_market_order() -> None:
    cmd = place("m1", price=None, order_type="market", ts=T0)
    assert order_event(cmd, "rejected", "invalid", "m", NOW / 1000).order_type == "market"
