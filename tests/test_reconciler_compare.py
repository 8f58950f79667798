"""The reconciler's pure parts: our record folded from ACCOUNT events, and the comparison with
the venue's answers (grace period, tolerance, what counts as ghost, missing, drift)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bus.contract import Inbound
from monitors.reconciler.compare import Settings, compare
from monitors.reconciler.config import ReconcilerConfig
from monitors.reconciler.record import Record, RecordCore
from schemas import ids
from schemas.account import Fill, OrderUpdate, Position
from schemas.base import OrderStatus
from schemas.market import GapMarker

SYMBOL = "BTC/USDT:USDT"
T0 = 1_700_000_000_000
GRACE = 5_000
SETTINGS = Settings(grace_ms=GRACE, position_tolerance=Decimal("0.001"), unknown_after_ms=30_000)


def order(cid: str, status: OrderStatus = "open", filled: str = "0", ts: int = T0, amount: str = "1") -> OrderUpdate:
    return OrderUpdate(
        id=ids.order_event_id("sim", "main", cid, status, Decimal(filled)),
        venue="sim",
        account="main",
        symbol=SYMBOL,
        order_id=f"o-{cid}",
        client_order_id=cid,
        side="buy",
        price=Decimal(100),
        amount=Decimal(amount),
        filled=Decimal(filled),
        remaining=Decimal(amount) - Decimal(filled),
        status=status,
        ts=ts,
        ts_local=ts,
    )


def position(contracts: str, side: Any = "long", symbol: str = SYMBOL) -> Position:
    return Position(id="p", venue="sim", account="main", symbol=symbol, side=side, contracts=Decimal(contracts), ts=T0, ts_local=T0)


def fold(*events: Any, at: int = T0) -> Record:
    core = RecordCore(keep_ended=3)
    state = core.initial_state()
    for seq, event in enumerate(events, 1):
        state, outputs = core.step(state, Inbound(seq, "s", event, at * 1_000_000))
        assert outputs == []
    return state


def kinds(record: Record, orders: list[OrderUpdate], positions: tuple[Position, ...] = (), now: int = T0 + 60_000) -> list[tuple[str, str]]:
    c = compare(record, orders, list(positions), now, now, SETTINGS)
    return sorted((d.kind, d.key) for d in c.differences)


def deferred(
    record: Record, orders: list[OrderUpdate], positions: tuple[Position, ...] = (), now: int = T0 + 60_000
) -> list[tuple[str, str]]:
    c = compare(record, orders, list(positions), now, now, SETTINGS)
    return sorted((d.kind, d.key) for d in c.deferred)


# ----------------------------------------------------------------------------- the record


def test_the_record_keeps_the_most_it_learnt_an_ended_order_never_reopens_and_filled_never_goes_back() -> None:
    r = fold(order("a", "open", "0.5"), order("a", "closed", "1"), order("a", "open", "0"))
    assert r.orders["a"].status == "closed" and r.orders["a"].filled == Decimal(1)


def test_an_unknown_outcome_never_overwrites_what_the_venue_reported_but_counts_as_a_trigger_when_new() -> None:
    r = fold(order("a", "open"), order("a", "unknown"))
    assert r.orders["a"].status == "open" and r.triggers == 0
    r = fold(order("b", "unknown"))
    assert r.orders["b"].status == "unknown" and r.triggers == 1


def test_a_gap_marker_on_the_account_stream_asks_for_a_check() -> None:
    gap = GapMarker(id="g", venue="sim", symbol=SYMBOL, account="main", stream="order", since=1, until=2, reason="r", ts=T0, ts_local=T0)
    assert fold(gap).triggers == 1


def test_fills_are_booked_against_their_order_and_a_fill_of_an_order_never_seen_makes_it_known() -> None:
    fill = Fill(
        id="f",
        venue="sim",
        account="main",
        symbol=SYMBOL,
        trade_id="t1",
        order_id="o-x",
        client_order_id="x",
        side="buy",
        price=Decimal(100),
        amount=Decimal("0.4"),
        liquidity="maker",
        ts=T0,
        ts_local=T0,
    )
    r = fold(order("a"), msgspec_replace(fill, client_order_id="a"), fill)
    assert r.orders["a"].booked == Decimal("0.4")
    assert r.orders["x"].status == "open" and r.orders["x"].fills == Decimal("0.4")


def test_ended_orders_are_bounded_open_ones_never_evicted() -> None:
    r = fold(order("open1"), *[order(f"e{i}", "canceled") for i in range(5)])
    assert sorted(r.orders) == ["e2", "e3", "e4", "open1"]


def test_positions_are_signed_and_the_latest_wins() -> None:
    r = fold(position("2"), position("1.5", "short"))
    assert r.positions[SYMBOL].contracts == Decimal("-1.5")


# ----------------------------------------------------------------------------- the comparison


def test_in_sync_when_the_venue_says_what_our_record_says() -> None:
    r = fold(order("a"), order("b", "closed", "1"), position("1"))
    c = compare(r, [order("a")], [position("1")], T0 + 60_000, T0 + 60_000, SETTINGS)
    assert c.in_sync


def test_an_order_open_at_the_venue_that_our_record_does_not_know_is_a_ghost() -> None:
    assert kinds(fold(), [order("g")]) == [("ghost_order", "g")]


def test_an_order_open_at_the_venue_that_our_record_says_ended_is_a_ghost_too() -> None:
    assert kinds(fold(order("g", "canceled")), [order("g")]) == [("ghost_order", "g")]


def test_an_order_open_in_our_record_that_the_venue_does_not_list_is_missing() -> None:
    assert kinds(fold(order("m")), []) == [("missing_order", "m")]


def test_a_fill_the_venue_reports_and_our_record_lacks_is_missing() -> None:
    assert kinds(fold(order("f", "open", "0.2")), [order("f", "open", "0.5")]) == [("missing_fill", "f")]
    assert kinds(fold(order("f", "open", "0.5")), [order("f", "open", "0.5")]) == []


def test_nothing_is_judged_about_an_order_active_here_within_the_grace_period() -> None:
    now = T0 + GRACE - 1  # the record's events were stored at T0
    r = fold(order("m"), order("f", "open", "0.1"), order("g", "canceled"))
    venue = [order("f", "open", "0.3"), order("g")]
    assert kinds(r, venue, now=now) == []
    assert deferred(r, venue, now=now) == [("ghost_order", "g"), ("missing_fill", "f"), ("missing_order", "m")]
    assert kinds(r, venue, now=T0 + GRACE) == [("ghost_order", "g"), ("missing_fill", "f"), ("missing_order", "m")]


def test_nothing_is_judged_about_an_order_the_venue_updated_within_the_grace_period() -> None:
    now = T0 + 60_000
    fresh = order("g", ts=now - GRACE + 1)
    assert kinds(fold(), [fresh], now=now) == [] and deferred(fold(), [fresh], now=now) == [("ghost_order", "g")]
    assert kinds(fold(), [order("g", ts=now - GRACE)], now=now) == [("ghost_order", "g")]


def test_positions_drift_only_beyond_the_tolerance_and_not_while_the_market_is_active() -> None:
    r = fold(position("1"))
    assert kinds(r, [], (position("1.001"),)) == []  # within 0.001
    assert kinds(r, [], (position("1.002"),)) == [("position_drift", SYMBOL)]
    assert kinds(r, [], (position("1", "short"),)) == [("position_drift", SYMBOL)]  # -1 vs +1
    assert kinds(fold(), [], (position("0.5"),)) == [("position_drift", SYMBOL)]  # none in our record
    assert kinds(r, [], ()) == [("position_drift", SYMBOL)]  # flat at the venue
    assert kinds(r, [], (position("2"),), now=T0 + GRACE - 1) == []
    assert deferred(r, [], (position("2"),), now=T0 + GRACE - 1) == [("position_drift", SYMBOL)]


def test_an_unknown_outcome_is_settled_at_once_when_the_venue_lists_it_and_reported_when_overdue() -> None:
    r = fold(order("u", "unknown"))
    assert kinds(r, [order("u")]) == [("unresolved_unknown", "u")]
    assert kinds(r, [], now=T0 + 29_999) == [] and deferred(r, [], now=T0 + 29_999) == [("unresolved_unknown", "u")]
    assert kinds(r, [], now=T0 + 30_000) == [("unresolved_unknown", "u")]


@pytest.mark.parametrize(
    ("prefixes", "cid", "ours"), [(["abc"], "abcO1", True), (["abc"], "xabc", False), ([], "abc", False), (["a", "b"], "b1", True)]
)
def test_fix_acts_only_on_client_ids_with_one_of_our_prefixes(prefixes: list[str], cid: str, ours: bool) -> None:
    assert ReconcilerConfig(client_prefixes=prefixes).ours(cid) is ours


def test_the_config_refuses_an_empty_prefix_and_names_the_instance_after_venue_and_account() -> None:
    with pytest.raises(ValueError, match="client_prefixes"):
        ReconcilerConfig(client_prefixes=[""])
    assert ReconcilerConfig(venue="sim", account="main").name == "sim-main"


def msgspec_replace(event: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(event, **changes)
