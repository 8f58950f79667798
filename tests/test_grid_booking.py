"""Booking, one rule at a time: what an order event adds, how a fill changes a holding, what an
ended order leaves behind, and where dust goes (pure functions of state and event)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import msgspec
import pytest

from schemas.account import OrderUpdate
from strategies.grid.booking import (
    BOOKED_KEPT,
    FillDelta,
    absorb_dust,
    book_fill,
    book_into,
    book_slot_order,
    fill_delta,
    remember_ended,
)
from strategies.grid.lattice import Lattice, client_order_id, client_prefix
from strategies.grid.state import Booked, GridSlot, GridState
from testkit.events import order_update
from testkit.grid import MARKET, grid

PREFIX = client_prefix("g1")
ZERO = D(0)


def state(**kw: Any) -> GridState:
    base: dict[str, Any] = dict(instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT", mode="long", market=MARKET)
    return GridState(**(base | kw))


def event(filled: str, price: str | None = "90", average: str | None = None, fee: str = "0", amount: str = "10") -> OrderUpdate:
    ev = order_update("g1h9ptOnG1", "open", filled, amount, price or "90", fee_cost=D(fee), average=D(average) if average else None)
    return msgspec.structs.replace(ev, price=None) if price is None else ev


# ------------------------------------------------------------------ fill_delta


def test_a_fill_is_the_difference_from_what_was_booked_at_its_own_average_price() -> None:
    # 4 booked for 360; the order now says 10 at an average of 93: 6 more, worth 930 - 360.
    assert fill_delta(D(4), D(360), D("0.1"), event("10", average="93", fee="0.4"), D(80)) == FillDelta(
        D(6), D(95), D("0.3"), D(10), D(930)
    )


def test_without_an_average_the_order_price_is_the_fill_price_then_the_fallback() -> None:
    assert fill_delta(ZERO, ZERO, ZERO, event("2", price="91"), D(80)) == FillDelta(D(2), D(91), ZERO, D(2), D(182))
    assert fill_delta(ZERO, ZERO, ZERO, event("2", price=None), D(80)) == FillDelta(D(2), D(80), ZERO, D(2), D(160))
    assert fill_delta(ZERO, ZERO, ZERO, event("2", price=None), None) == FillDelta(D(2), ZERO, ZERO, D(2), ZERO)


def test_an_event_that_repeats_or_lags_books_nothing_and_keeps_what_was_booked() -> None:
    assert fill_delta(D(4), D(360), D("0.5"), event("4", fee="0.5"), D(90)) == FillDelta(ZERO, ZERO, ZERO, D(4), D(360))
    assert fill_delta(D(4), D(360), D("0.5"), event("3", fee="0.2"), D(90)) == FillDelta(ZERO, ZERO, ZERO, D(4), D(360))


def test_a_fee_charged_without_a_new_fill_is_booked_alone() -> None:
    assert fill_delta(D(4), D(360), D("0.5"), event("4", fee="0.75"), D(90)) == FillDelta(ZERO, ZERO, D("0.25"), D(4), D(360))


# ------------------------------------------------------------------ book_fill


def test_a_fill_on_the_side_of_the_holding_adds_at_the_average_entry() -> None:
    assert book_fill(ZERO, None, "buy", D(10), D(90), D(1)) == (D(10), D(90), ZERO)
    assert book_fill(D(10), D(90), "buy", D(10), D(110), D(1)) == (D(20), D(100), ZERO)
    assert book_fill(D(1), D(90), "buy", D("0.5"), D(120), D(1)) == (D("1.5"), D(100), ZERO)  # less than one unit adds too
    assert book_fill(D(-10), D(110), "sell", D(10), D(90), D(1)) == (D(-20), D(100), ZERO)


def test_a_fill_against_a_long_holding_realizes_its_gain() -> None:
    assert book_fill(D(3), D(90), "sell", D(2), D(100), D(1)) == (D(1), D(90), D(20))  # 1 left, still at 90
    assert book_fill(D("0.5"), D(100), "sell", D("0.5"), D(110), D(1)) == (ZERO, None, D(5))  # closed: no entry
    assert book_fill(D(3), D(90), "sell", D(2), D(100), D("0.01")) == (D(1), D(90), D("0.2"))  # per contract


def test_a_fill_against_a_short_holding_realizes_its_gain() -> None:
    assert book_fill(D(-10), D(100), "buy", D(4), D(90), D(1)) == (D(-6), D(100), D(40))
    assert book_fill(D(-10), D(100), "buy", D(10), D(110), D(1)) == (ZERO, None, D(-100))


def test_a_fill_beyond_the_holding_flips_it_and_the_rest_opens_at_the_fill_price() -> None:
    assert book_fill(D(-1), D(100), "buy", D("1.5"), D(90), D(1)) == (D("0.5"), D(90), D(10))
    assert book_fill(D("0.5"), D(100), "sell", D(1), D(110), D(1)) == (D("-0.5"), D(110), D(5))
    assert book_fill(D(2), D(100), "sell", D(5), D(90), D(1)) == (D(-3), D(90), D(-20))


# ------------------------------------------------------------------ book_into (orders no slot tracks)


def test_a_stray_fill_books_into_the_slot_its_id_names_and_clears_its_back_off() -> None:
    slots = {-1: GridSlot(index=-1, holding=D(2), entry_price=D(90), rejects=2, retry_at=5_000, phase="filled")}
    st = book_into(state(fees=D(1), fills=3, realized_pnl=D(7)), slots, -1, "buy", FillDelta(D(2), D(100), D("0.5"), D(2), D(200)))
    assert st == state(fees=D("1.5"), fills=4, realized_pnl=D(7))
    assert slots == {-1: GridSlot(index=-1, holding=D(4), entry_price=D(95), phase="filled")}


def test_a_stray_fill_that_closes_inventory_realizes_it() -> None:
    slots = {-1: GridSlot(index=-1, holding=D(2), entry_price=D(90), phase="filled")}
    market = msgspec.structs.replace(MARKET, contract_size=D("0.5"))
    st = book_into(state(market=market), slots, -1, "sell", FillDelta(D(2), D(100), ZERO, D(2), D(200)))
    assert st == state(market=market, realized_pnl=D(10), fills=1)
    assert slots == {-1: GridSlot(index=-1)}


def test_a_stray_fill_into_a_free_slot_starts_its_inventory() -> None:
    slots: dict[int, GridSlot] = {}
    st = book_into(state(), slots, 3, "sell", FillDelta(D(2), D(130), ZERO, D(2), D(260)))
    assert st == state(fills=1)
    assert slots == {3: GridSlot(index=3, holding=D(-2), entry_price=D(130), phase="filled")}


def test_a_stray_event_with_only_a_fee_books_the_fee_alone() -> None:
    slots = {-1: GridSlot(index=-1, holding=D(2), entry_price=D(90), phase="filled")}
    before = dict(slots)
    assert book_into(state(fees=D(1)), slots, -1, "buy", FillDelta(ZERO, ZERO, D("0.5"), D(2), D(180))) == state(fees=D("1.5"))
    assert book_into(state(fees=D(1)), slots, -1, "buy", FillDelta(ZERO, ZERO, ZERO, D(2), D(180))) == state(fees=D(1))
    assert slots == before


# ------------------------------------------------------------------ book_slot_order


def live(**kw: Any) -> GridSlot:
    base: dict[str, Any] = dict(
        index=-1, phase="open", generation=1, client_order_id="g1h9ptOn1G1", role="open", side="buy", price=D(90), amount=D(10)
    )
    return GridSlot(**(base | {"status": "open"} | kw))


def test_a_live_order_fill_books_into_its_slot_with_the_cumulative_amounts() -> None:
    slot = live(filled=D(2), cost=D(180), fee=D("0.1"), holding=D(2), entry_price=D(90), phase="filled")
    st, after = book_slot_order(state(fees=D(1), fills=1), slot, event("5", average="92", fee="0.4"))
    assert st == state(fees=D("1.3"), fills=2)
    assert after == msgspec.structs.replace(slot, filled=D(5), cost=D(460), fee=D("0.4"), holding=D(5), entry_price=D(92))


def test_a_live_order_fill_without_a_price_books_at_the_order_price() -> None:
    slot = live(price=D(90))
    st, after = book_slot_order(state(), slot, event("2", price=None))
    assert st == state(fills=1)
    assert after == msgspec.structs.replace(slot, filled=D(2), cost=D(180), holding=D(2), entry_price=D(90))


def test_a_live_order_event_with_only_a_new_fee_books_the_fee() -> None:
    slot = live(filled=D(2), cost=D(180), fee=D("0.1"), holding=D(2), entry_price=D(90), phase="filled")
    st, after = book_slot_order(state(fees=D(1)), slot, event("2", fee="0.3"))
    assert st == state(fees=D("1.2"))
    assert after == msgspec.structs.replace(slot, fee=D("0.3"))


def test_a_live_order_event_that_lags_changes_nothing() -> None:
    slot = live(filled=D(2), cost=D(180), fee=D("0.3"), holding=D(2), entry_price=D(90), phase="filled")
    assert book_slot_order(state(fees=D(1)), slot, event("1", fee="0.1")) == (state(fees=D(1)), slot)


# ------------------------------------------------------------------ remember_ended


def test_an_ended_order_is_remembered_only_if_it_filled_or_was_remembered_before() -> None:
    cid = client_order_id(PREFIX, "open", -1, 7)
    assert remember_ended(state(), PREFIX, cid, ZERO) == state()
    assert remember_ended(state(), PREFIX, cid, D("0.5"), D(45), D("0.01")) == state(booked={cid: Booked(D("0.5"), D(45), D("0.01"))})
    assert remember_ended(state(booked={cid: Booked(D(1))}), PREFIX, cid, ZERO) == state(booked={cid: Booked(ZERO)})


def many(n: int) -> dict[str, Booked]:
    """n ended orders, generations 2..n+1, at level 5 (their ids sort after the level-1 ids)."""
    return {client_order_id(PREFIX, "open", 5, g): Booked(D(1)) for g in range(2, n + 2)}


def test_remembering_stops_at_the_limit_forgetting_the_oldest_generation_first() -> None:
    newest = client_order_id(PREFIX, "open", 1, 900)
    oldest = client_order_id(PREFIX, "open", 5, 2)
    kept = many(BOOKED_KEPT - 1)
    assert remember_ended(state(booked=kept), PREFIX, newest, D(1)) == state(booked=kept | {newest: Booked(D(1))})  # exactly the limit
    full = many(BOOKED_KEPT)
    st = remember_ended(state(booked=full, forgotten_below=1), PREFIX, newest, D(1))
    assert st == state(booked={k: v for k, v in full.items() if k != oldest} | {newest: Booked(D(1))}, forgotten_below=3)


def test_forgetting_never_moves_the_boundary_back() -> None:
    st = remember_ended(state(booked=many(BOOKED_KEPT), forgotten_below=50), PREFIX, client_order_id(PREFIX, "open", 1, 900), D(1))
    assert st.forgotten_below == 50 and len(st.booked) == BOOKED_KEPT


def test_an_id_that_does_not_parse_counts_as_the_oldest_generation() -> None:
    booked = {"foreign": Booked(D(1))} | many(BOOKED_KEPT - 1)
    st = remember_ended(state(booked=booked), PREFIX, client_order_id(PREFIX, "open", 1, 900), D(1))
    assert "foreign" not in st.booked and len(st.booked) == BOOKED_KEPT and st.forgotten_below == 1


def test_the_generation_decides_what_is_forgotten_first_not_the_order_or_the_text() -> None:
    oldest = client_order_id(PREFIX, "open", 9, 2)  # remembered last, and its id sorts after the others
    booked = {client_order_id(PREFIX, "open", 5, g): Booked(D(1)) for g in range(3, BOOKED_KEPT + 2)} | {oldest: Booked(D(1))}
    newest = client_order_id(PREFIX, "open", 1, 0x600)  # its id sorts first
    st = remember_ended(state(booked=booked), PREFIX, newest, D(1))
    assert st == state(booked={k: v for k, v in booked.items() if k != oldest} | {newest: Booked(D(1))}, forgotten_below=3)


# ------------------------------------------------------------------ absorb_dust


LAT = Lattice(grid(), MARKET, D(100))  # levels 10 apart around 100


def slot(index: int, holding: str, entry: str | None = None, **kw: Any) -> GridSlot:
    return GridSlot(
        index=index, holding=D(holding), entry_price=D(entry) if entry else None, phase="filled" if D(holding) else "free", **kw
    )


def test_a_holding_worth_the_minimum_at_its_closing_price_is_not_dust() -> None:
    for slots in ({-1: slot(-1, "0.05", "90")}, {1: slot(1, "-0.05", "110")}):  # each closes at 100: worth exactly 5
        before = dict(slots)
        index = next(iter(slots))
        assert absorb_dust(state(), slots, index, LAT, MARKET) == state()
        assert slots == before


@pytest.mark.parametrize("index, holding", [(-1, "0.049"), (1, "-0.049"), (-2, "0.05")])
def test_a_holding_below_the_minimum_at_its_closing_price_goes_to_the_unassigned_position(index: int, holding: str) -> None:
    slots = {index: slot(index, holding, "90", generation=4)}
    assert absorb_dust(state(unassigned=D(1)), slots, index, LAT, MARKET) == state(unassigned=1 + D(holding))
    assert slots == {index: GridSlot(index=index, generation=4)}


def test_a_holding_of_the_minimum_amount_worth_the_minimum_notional_is_not_dust() -> None:
    market = msgspec.structs.replace(MARKET, min_notional=D("0.1"))
    slots = {-1: slot(-1, "0.001", "90")}
    assert absorb_dust(state(), slots, -1, LAT, market) == state()
    assert slots == {-1: slot(-1, "0.001", "90")}


def test_dust_counts_the_contract_size() -> None:
    market = msgspec.structs.replace(MARKET, contract_size=D(2))
    slots = {-1: slot(-1, "0.03", "90")}  # 0.03 x 100 x 2 = 6
    assert absorb_dust(state(), slots, -1, LAT, market) == state()
    assert slots == {-1: slot(-1, "0.03", "90")}


def test_one_unit_below_the_minimum_amount_is_dust_too() -> None:
    market = msgspec.structs.replace(MARKET, min_amount=D(2))
    slots = {-1: slot(-1, "1", "90")}
    assert absorb_dust(state(), slots, -1, LAT, market) == state(unassigned=D(1))
    assert slots == {-1: GridSlot(index=-1)}


def test_without_a_lattice_or_a_holding_nothing_is_decided() -> None:
    for slots, lat in (({-1: slot(-1, "0.001", "90")}, None), ({-1: slot(-1, "0")}, LAT)):
        before = dict(slots)
        assert absorb_dust(state(), slots, -1, lat, MARKET) == state()
        assert slots == before


def test_dust_joins_the_nearest_slot_holding_the_same_side_at_their_average_entry() -> None:
    slots = {
        -4: slot(-4, "10", "60"),
        -1: slot(-1, "0.02", "95"),
        0: slot(0, "-3", "100"),  # the other side: never a host
        -2: slot(-2, "0", status="open", role="open", side="buy"),  # holds nothing: never a host
        -3: slot(-3, "10", "90"),
    }
    assert absorb_dust(state(), slots, -1, LAT, MARKET) == state()
    assert slots[-1] == GridSlot(index=-1)
    assert slots[-3] == slot(-3, "10.02", str((D(900) + D("1.9")) / D("10.02")))
    assert slots[-4] == slot(-4, "10", "60") and slots[0] == slot(0, "-3", "100")


def test_dust_between_two_hosts_at_the_same_distance_joins_the_lower_one() -> None:
    slots = {4: slot(4, "-10", "140"), 2: slot(2, "-0.01", "120"), 0: slot(0, "-10", "100")}
    absorb_dust(state(), slots, 2, LAT, MARKET)
    assert (slots[0].holding, slots[4].holding, slots[2].holding) == (D("-10.01"), D(-10), ZERO)


def test_dust_joins_the_nearest_host_not_the_one_nearest_level_zero() -> None:
    slots = {-2: slot(-2, "-10", "80"), 2: slot(2, "-0.01", "120"), 1: slot(1, "-10", "110")}
    absorb_dust(state(), slots, 2, LAT, MARKET)
    assert (slots[1].holding, slots[-2].holding) == (D("-10.01"), D(-10))


def test_dust_without_an_entry_price_joins_at_the_hosts_weighted_entry() -> None:
    slots = {-3: slot(-3, "10", "90"), -1: slot(-1, "0.02")}
    absorb_dust(state(), slots, -1, LAT, MARKET)
    assert slots[-3] == slot(-3, "10.02", str(D(900) / D("10.02")))
