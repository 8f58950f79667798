"""Every event for one of the grid's own client ids is booked, once, whoever tracks the order.

An order reported refused can land later; a fill can be reported after its order ended; a
first start's venue snapshot races the events of the orders it lists. In each case the grid's
position and fills must end equal to the venue's, and no client id may be placed twice.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from schemas.account import Liquidation, Position
from schemas.ops import BreakerChange, VenueSnapshot
from strategies.grid.diff import STRAY_PATIENCE_MS
from strategies.grid.lattice import client_order_id, client_prefix, parse_client_order_id
from strategies.grid.state import Booked
from testkit.events import order_update
from testkit.grid import Driver, T, cancels, grid, places

PREFIX = client_prefix("g1")


def slot_of(cid: str) -> int:
    parsed = parse_client_order_id(PREFIX, cid)
    assert parsed is not None
    return parsed[1]


def placed_ids(outs: list[list[Any]]) -> list[str]:
    return [p.client_order_id for out in outs for p in places(out)]


def test_an_order_event_of_another_instance_changes_nothing() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    d.feed(order_update("zz" + before.slots[0].client_order_id[2:], "closed", "10", "10", "90"))
    assert d.state.slots == before.slots and d.state.fills == 0 and d.core.position(d.state) == 0


def test_an_order_reported_refused_that_lands_later_is_booked_and_canceled() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")  # the executor's word, which turned out wrong
    refused = d.slot(slot_of(buy.client_order_id))
    assert refused.client_order_id is None and refused.rejects == 1  # freed, backing off
    out = d.order(buy, "open")  # ... the order landed after all
    assert [c.client_order_id for c in cancels(out)] == [buy.client_order_id]  # one order per slot
    assert [s.client_order_id for s in d.state.strays] == [buy.client_order_id]
    out = d.order(buy, "canceled", filled="4")  # it filled partly before the cancel took it off
    assert d.core.position(d.state) == D(4) and d.state.fills == 1
    assert d.state.strays == []
    [close] = [p for p in places(out) if p.side == "sell"]
    assert close.amount == D(4)  # the late fill gets its closing order like any other


def test_a_fill_reported_after_its_order_ended_is_booked_once() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    d.order(buy, "canceled", filled="0")  # the cancel's answer came first
    d.order(buy, "open", filled="3")  # the venue's report of a fill before the cancel, late
    d.order(buy, "canceled", filled="3")
    assert d.core.position(d.state) == D(3) and d.state.fills == 1
    for late in (("canceled", "3"), ("open", "3"), ("open", "1")):  # copies and older news
        d.order(buy, late[0], filled=late[1])
    assert d.core.position(d.state) == D(3) and d.state.fills == 1 and d.state.strays == []


def test_fills_around_a_cancel_in_flight_are_booked_exactly_once() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    out = d.tick("130")  # trailing: the far buy is canceled
    assert [c.client_order_id for c in cancels(out)] == [buy.client_order_id]
    d.order(buy, "open", filled="2")  # a fill while the cancel is on its way
    d.order(buy, "open", filled="2")  # the same fact again
    d.order(buy, "canceled", filled="5")  # more filled before the cancel landed
    assert d.core.position(d.state) == D(5) and d.state.fills == 2


def test_an_unknown_outcome_keeps_the_slot_and_places_nothing_in_it() -> None:
    d = Driver(grid(mode="long", levels=1))
    outs = [d.tick("100")]
    [buy] = places(outs[0])
    outs.append(d.order(buy, "unknown", reason="venue_error"))
    index = slot_of(buy.client_order_id)
    assert d.slot(index).client_order_id == buy.client_order_id and d.slot(index).phase == "pending"
    for p in ("100.1", "99.9", "100"):
        outs.append(d.tick(p))
    assert placed_ids(outs) == [buy.client_order_id]  # nothing else in that slot while unknown
    d.order(buy, "open")  # the truth, when it comes
    assert d.slot(index).phase == "open"


def test_a_canceled_stray_with_no_answer_is_let_go_after_a_minute() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.order(buy, "open")
    assert d.state.strays and d.state.strays[0].canceling
    d.ts += STRAY_PATIENCE_MS + 1
    d.tick("100")
    assert d.state.strays == []


def long(contracts: str | int) -> Position:
    return Position(id="p", venue="sim", account="main", symbol="BTC/USDT:USDT", side="long", contracts=D(contracts), ts=T, ts_local=T)


def _snapshot(orders: list[Any], input_seq: int, ts: int = T, **kw: Any) -> VenueSnapshot:
    return VenueSnapshot(
        id="s", component="grid", instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT",
        orders=orders, input_seq=input_seq, ts=ts, **kw,
    )  # fmt: skip


def test_events_around_the_first_start_snapshot_are_booked_once() -> None:
    """The venue is asked at input seq 2; events up to it are in its answer, later ones are not."""
    d = Driver(grid(mode="long", levels=2), snapshot=None, adopt=False)
    cid = client_order_id(PREFIX, "open", -1, 3)
    e = dict(amount="11.111", price="90", side="buy", order_id="a")
    d.feed(order_update(cid, "open", "1", ts=T - 10, **e))  # seq 1: reflected in the snapshot
    d.feed(order_update(cid, "open", "2", ts=T - 5, **e))  # seq 2: reflected
    d.feed(order_update(cid, "open", "5", ts=T + 5, **e))  # seq 3: after the venue was asked
    listed = order_update(cid, "open", "2", ts=T - 5, **e)
    d.feed(_snapshot([listed], input_seq=2, positions=[long(2)], ts=T))
    assert d.core.position(d.state) == D(5)  # 2 from the snapshot (its slot) + 3 booked after
    d.feed(order_update(cid, "open", "4", ts=T + 6, **e))  # older news than the 5 booked
    d.feed(order_update(cid, "closed", "11.111", ts=T + 7, **e))
    assert d.core.position(d.state) == D("11.111")


def test_an_order_that_ended_before_the_snapshot_is_not_booked_again() -> None:
    d = Driver(grid(mode="long", levels=2), snapshot=None, adopt=False)
    e = dict(amount="12.5", price="80", side="buy")
    d.feed(_snapshot([], input_seq=0, ts=T, positions=[long("12.5")]))  # its fills are in the position
    d.feed(order_update(client_order_id(PREFIX, "open", -2, 0), "closed", "12.5", ts=T - 100, order_id="b", **e))  # its end, late
    assert d.core.position(d.state) == D("12.5") and d.state.fills == 0
    # An order of an earlier run of this instance that the venue took only after it was asked:
    d.feed(order_update(client_order_id(PREFIX, "open", -1, 0), "closed", "1", ts=T + 100, order_id="c", **e))
    assert d.core.position(d.state) == D("13.5") and d.state.fills == 1


def test_a_breaker_read_at_snapshot_time_never_overwrites_a_newer_breaker_event() -> None:
    d = Driver(grid(mode="long", levels=1), snapshot=None, adopt=False)
    newer = BreakerChange(id="b2", instance="r", scope="global", state="halted", previous="ok", reason="crash", ts=T + 10)
    older = BreakerChange(id="b1", instance="r", scope="global", state="ok", previous="halted", reason="cleared", ts=T)
    d.feed(newer)
    d.feed(_snapshot([], input_seq=0, ts=T, breakers={"global": older}))
    d.tick("100")
    assert d.state.breaker == "halted" and d.state.status == "halted"
    d.feed(BreakerChange(id="b3", instance="r", scope="global", state="ok", previous="halted", reason="cleared", ts=T + 20))
    assert d.state.breaker == "ok"


def test_a_liquidation_empties_the_grid_and_halts_it_until_an_operator_resets_it() -> None:
    d = Driver(grid(mode="long", levels=2))
    buy90, buy80 = sorted(places(d.tick("100")), key=lambda p: -p.price)
    [close] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    d.order(close, "open")
    d.order(buy80, "open")
    out = d.feed(
        Liquidation(id="l", venue="sim", account="main", symbol="BTC/USDT:USDT", side="long", contracts=buy90.amount,
                    price=D(50), fee=D(1), ts=d.ts + 1, ts_local=d.ts + 1)
    )  # fmt: skip
    assert d.core.position(d.state) == 0 and d.state.status == "halted" and "liquidated" in (d.state.fault or "")
    assert {c.client_order_id for c in cancels(out)} == {close.client_order_id, buy80.client_order_id}
    assert d.state.realized_pnl == (D(50) - D(90)) * buy90.amount


def test_a_stray_that_ends_is_remembered_with_what_was_booked_of_it() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="expired")
    d.order(buy, "open", filled="1", fee_cost=D("0.02"), average=D(90))
    d.order(buy, "canceled", filled="4", fee_cost=D("0.05"), average=D("89.5"))
    assert d.state.booked[buy.client_order_id] == Booked(D(4), D(358), D("0.05"))
    assert d.state.fees == D("0.05")
