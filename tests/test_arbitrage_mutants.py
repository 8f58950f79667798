"""The arbitrage's core, pinned where mutation testing found it loose (tools/mutate.py, target
`arbitrage`): exact sizes, prices, flags, client ids, cancels, retries and what the state says.

Each test is a behaviour a trader relies on; the scenarios reuse tests/test_arbitrage_core.py's
helpers and testkit/arbitrage.py's harness.
"""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from msgspec.structs import replace

from schemas import ids
from schemas.commands import PlaceOrder
from schemas.ops import FundingSpread, StrategyState
from strategies.arbitrage import legs as L
from strategies.arbitrage.config import ArbLeg
from strategies.arbitrage.core import HEDGE_RETRY_MS, ArbCore
from strategies.arbitrage.core import PUBLISH_EVERY_MS as PUBLISH
from strategies.arbitrage.state import LegBook
from testkit.arbitrage import PERP, SPOT, T0, ArbHarness, arb_config
from tests.test_arbitrage_core import HOLD, NAKED, cancels, enter, fresh, places, start_entry

# ---------------------------------------------------------------------- helpers


def states(out: list[Any]) -> list[StrategyState]:
    return [o for o in out if isinstance(o, StrategyState)]


def stray(h: ArbHarness, leg: int, side: str, amount: str, n: int = 900) -> PlaceOrder:
    """An order of ours (by its client id) that nothing tracks: sent by a run whose state is gone."""
    c = h.cfg.legs[leg]
    cid = L.client_order_id(h.core.prefix, T0, leg, side, n)  # type: ignore[arg-type]
    book = h.state.legs[leg]
    price = (book.ask if side == "buy" else book.bid) or h.price
    return PlaceOrder(
        id=ids.place_id(c.venue, h.cfg.account, cid),
        venue=c.venue,
        account=h.cfg.account,
        symbol=c.symbol,
        client_order_id=cid,
        side=side,  # type: ignore[arg-type]
        order_type="limit",
        price=price,
        amount=D(amount),
        time_in_force="IOC",
        origin="elsewhere",
        ts=h.now,
    )


def spot_perp_reversed(**kw: Any) -> ArbHarness:
    """Perpetual first, spot second (the spot leg is leg 1)."""
    legs = [ArbLeg(venue="sim", symbol=PERP.symbol), ArbLeg(venue="sim", symbol=SPOT.symbol)]
    return ArbHarness(arb_config(legs=legs, **kw), [PERP, SPOT])


def leg(market: Any, bid: str | None = "60000", ask: str | None = "60001") -> LegBook:
    return LegBook(
        venue="sim", symbol=market.symbol, market=market, bid=None if bid is None else D(bid), ask=None if ask is None else D(ask)
    )


def published(h: ArbHarness) -> dict[str, Any]:
    return h.states[-1].state


# ---------------------------------------------------------------------- legs.py: ids, prices, minimums


def test_base36_refuses_a_negative_number_saying_so() -> None:
    with pytest.raises(ValueError, match="negative number -1"):
        L.base36(-1)


def test_a_client_id_is_the_prefix_the_funding_second_in_base36_the_leg_side_code_and_the_number() -> None:
    assert L.client_order_id("p", 36_000, 0, "buy", 37) == "p10A11"
    assert L.client_order_id("p", 36_999, 1, "sell", 0) == "p10D0"
    assert L.parse_client_order_id("p", "p10D0") == (1, "sell", 0)


def test_parsing_a_client_id_gives_back_its_number() -> None:
    cid = L.client_order_id("tx", T0, 1, "sell", 1234)
    assert L.parse_client_order_id("tx", cid) == (1, "sell", 1234)
    # every base-36 digit in the key and the number: still one of ours
    assert L.parse_client_order_id("tx", "tx0123456789abcdefghijklmnopqrstuvwxyzB0123456789abcdefghijklmnopqrstuvwxyz") == (
        0,
        "sell",
        int("0123456789abcdefghijklmnopqrstuvwxyz", 36),
    )


@pytest.mark.parametrize("tail", ["A1", "x.yA1", "abA1!", "ab", "abA"])
def test_a_client_id_that_is_not_one_of_ours_does_not_parse(tail: str) -> None:
    assert L.parse_client_order_id("tx", "tx" + tail) is None


def test_a_buy_limit_is_rounded_down_to_the_tick_never_beyond_the_band() -> None:
    book = leg(SPOT, bid="60005.98", ask="60005.99")
    # 60005.99 x 1.001 = 60065.99599: the tick below, not the nearest tick (60066.00, beyond the band)
    assert L.limit_price(book, "buy", D("0.001")) == D("60065.99")
    assert L.limit_price(book, "sell", D("0.001")) == D("59945.98")  # 59945.97402 up to the tick


def test_tradable_at_exactly_the_minimums_and_not_below() -> None:
    book = leg(SPOT)
    assert L.tradable(book, SPOT.min_amount, None)
    assert not L.tradable(book, D(0), None)
    below = replace(SPOT, min_amount=D("0.0001"))
    assert not L.tradable(leg(below), D("0.00005"), None)
    assert L.tradable(book, D("0.0001"), D(50000))  # exactly 5 USDT of notional
    assert not L.tradable(book, D("0.0001"), D(49999))
    assert not L.tradable(leg(replace(SPOT, min_amount=D(0))), D(0), None)


def test_a_perpetuals_notional_counts_its_contract_size() -> None:
    perp = replace(PERP, contract_size=D("0.001"), lot_size=D(1), min_amount=D(1))
    book = leg(perp)
    assert not L.tradable(book, D("0.001"), D(1000))  # 1 contract of 0.001 BTC at 1000: 1 USDT, below 5
    assert L.tradable(book, D("0.001"), D(5000))


# ---------------------------------------------------------------------- saga.py: orders and cancels


def test_the_entry_orders_carry_deterministic_ids_numbered_one_by_one() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    key = h.state.saga.key if h.state.saga else 0
    assert key == T0 - T0 % 28_800_000 + 28_800_000
    assert leg1.client_order_id == L.client_order_id(h.core.prefix, key, 0, "buy", 0)
    assert leg1.id == f"place:sim:main:{leg1.client_order_id}"
    assert leg1.origin == "arbitrage/t"
    [hedge] = places(h.answer("1"))
    assert hedge.client_order_id == L.client_order_id(h.core.prefix, key, 1, "sell", 1)
    assert hedge.id == f"place:sim:main:{hedge.client_order_id}"
    assert h.state.saga is not None and h.state.saga.reason == "net APR 0.3"


def test_an_entry_below_the_minimum_notional_sends_nothing_and_starts_nothing() -> None:
    h = ArbHarness(arb_config(amount=D("0.00005")))  # 3 USDT: below the spot's 5 USDT minimum
    fresh(h)
    h.spread("0.3")
    assert states(h.tick(HOLD)) == []  # nothing started: nothing to publish
    assert states(h.tick(500)) == []
    assert h.sent == [] and h.state.saga is None and h.state.next_n == 0


def test_the_cancel_at_the_naked_deadline_names_the_hedge_its_venue_id_and_why() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    [hedge] = h.pending
    h.end(hedge, "0", "open")  # the venue took it: its order id is known
    order_id = h.state.orders[0].order_id
    assert order_id is not None
    assert published(h)["orders"][0]["status"] == "open"
    h.tick(NAKED - 1)
    out = h.tick(1)
    [cancel] = cancels(out)
    assert cancel.id == ids.cancel_id("sim", "main", hedge.client_order_id)
    assert (cancel.venue, cancel.account, cancel.symbol) == ("sim", "main", PERP.symbol)
    assert cancel.client_order_id == hedge.client_order_id and cancel.order_id == order_id
    assert cancel.reason == "naked exposure limit reached"
    assert cancel.origin == "arbitrage/t" and cancel.ts == h.now and cancel.ttl_ms == NAKED
    assert states(out) and states(out)[-1].state["orders"][0]["status"] == "canceling"
    h.end(hedge, "0", "open")  # the venue still says open: it stays canceling, not canceled twice
    assert h.state.orders[0].status == "canceling"
    h.tick(500)
    h.tick(500)
    assert len(h.cancels) == 1


def test_a_hedge_update_without_an_order_id_keeps_the_one_known() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    [hedge] = h.pending
    h.end(hedge, "0", "open")
    known = h.state.orders[0].order_id
    h.feed(replace(h.update(hedge, D("0.002"), "open", average=hedge.price), order_id=None))
    assert h.state.orders[0].order_id == known and h.state.orders[0].status == "open"
    h.tick(NAKED)
    assert cancels(h.outputs)[-1].order_id == known


def test_a_pending_order_stays_pending_until_the_venue_says_open() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    assert published(h)["orders"][0]["status"] == "pending"
    h.end(leg1, "0", "pending")
    assert h.state.orders[0].status == "pending"
    h.end(leg1, "0", "open")
    assert h.state.orders[0].status == "open"


@pytest.mark.parametrize(("reason", "message", "why"), [(None, None, "rejected"), ("venue_error", "no margin", "venue_error no margin")])
def test_a_refused_hedge_unwinds_at_once_saying_what_the_venue_said(reason: str | None, message: str | None, why: str) -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    [hedge] = h.pending
    h.pending.clear()
    out = h.end(hedge, "0", "rejected", reason=reason, message=message)
    [unwind] = places(out)
    assert (unwind.symbol, unwind.side, unwind.amount) == (SPOT.symbol, "sell", D("0.01"))
    assert h.state.saga is not None and h.state.saga.reason == f"the hedge was refused: {why}"


def test_an_expired_hedge_is_tried_again_for_what_is_missing_until_the_naked_deadline() -> None:
    """An IOC hedge that found only part of its amount within the band expires: the rest is sent
    again at once; one that found nothing is sent again after a pause; neither is a refusal."""
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    out = h.answer("0.5", status="expired")
    [again] = places(out)
    assert (again.symbol, again.side, again.amount) == (PERP.symbol, "sell", D("0.005"))
    assert h.state.saga is not None and h.state.saga.step == "leg2" and h.state.saga.refused == ""
    out = h.answer("0", status="expired")
    assert places(out) == []  # nothing found: a pause before the next try
    h.tick(HEDGE_RETRY_MS)
    [third] = h.pending
    assert third.amount == D("0.005") and h.state.saga.step == "leg2"
    # The naked deadline still ends it: an unwind of what leg 2 does not cover.
    h.answer("0", status="expired")
    h.tick(h.cfg.naked_ms)
    assert h.state.saga is not None and h.state.saga.step == "unwind"
    assert h.state.saga.reason == f"the hedge did not complete within {h.cfg.naked_ms} ms"


def test_leg_1_below_one_lot_of_leg_2_says_so_when_it_unwinds() -> None:
    h = ArbHarness(arb_config(amount=D("0.05")))
    start_entry(h)
    h.answer("0.015")
    assert h.state.saga is not None and h.state.saga.reason == "leg 1 filled less than one lot of leg 2"


def test_a_hedge_below_leg_2s_minimum_notional_is_not_waited_for() -> None:
    """Leg 1 filled one lot of leg 2, but that lot is below leg 2's minimum notional: nothing can
    hedge it, so the entry ends at once and the naked leg is rebalanced away, not held 5 s."""
    perp = replace(PERP, min_notional=D(100))
    h = ArbHarness(arb_config(amount=D("0.01")), [SPOT, perp])
    start_entry(h)
    out = h.answer("0.1")  # 0.001 BTC of spot: one perpetual lot, 60 USDT < 100
    [unwind] = places(out)
    assert (unwind.symbol, unwind.side, unwind.amount) == (SPOT.symbol, "sell", D("0.001"))
    assert h.state.entries == 1 and h.state.saga is not None and h.state.saga.reason == "legs apart"


def test_a_live_unwind_order_is_not_sent_twice() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.answer(status="rejected", reason="venue_error")
    [unwind] = h.pending
    for _ in range(4):
        h.tick(500)
    assert h.pending == [unwind] and len(h.sent) == 3


@pytest.mark.parametrize("how", ["rejected", "nothing"])
def test_a_refused_or_empty_unwind_order_is_sent_again_after_exactly_retry_ms(how: str) -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.answer(status="rejected", reason="venue_error")
    if how == "rejected":
        h.answer(status="rejected", reason="venue_error")
    else:
        h.answer("0")
    assert h.pending == []
    h.tick(h.cfg.retry_ms - 1)
    assert h.pending == []
    h.tick(1)
    [again] = h.pending
    assert (again.symbol, again.side, again.amount) == (SPOT.symbol, "sell", D("0.01"))


def test_an_exit_close1_that_filled_nothing_is_sent_again_after_retry_ms() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    h.answer("0")
    h.tick(h.cfg.retry_ms - 1)
    assert h.pending == []
    h.tick(1)
    assert len(h.pending) == 1


def test_a_refused_close2_is_sent_again_after_exactly_retry_ms() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    h.answer("1")
    h.answer(status="rejected", reason="venue_error")
    h.tick(h.cfg.retry_ms - 1)
    assert h.pending == []
    h.tick(1)
    [again] = h.pending
    assert (again.symbol, again.side, again.amount, again.reduce_only) == (PERP.symbol, "buy", D("0.010"), True)


def test_an_exit_stays_an_exit_between_its_two_legs() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    assert h.state.exit_requested is False and published(h)["exit_requested"] is False
    h.answer("1")
    saga = h.state.saga
    assert saga is not None and (saga.kind, saga.step, saga.reason) == ("exit", "close2", "an operator asked")
    assert h.state.exits == 0
    h.answer("1")
    assert h.state.exits == 1 and h.state.holding_long == -1


def test_an_exit_with_the_spot_as_the_second_configured_leg_closes_the_spot_first() -> None:
    h = spot_perp_reversed(use_margin=True)
    enter(h, long_leg=0)  # long the perp, short spot on margin
    assert h.held == [D("0.010"), D("-0.010")]
    h.spread("0.01", long_leg=0)
    [close1] = h.pending
    assert (close1.symbol, close1.side, close1.amount, close1.use_margin, close1.reduce_only) == (
        SPOT.symbol,
        "buy",
        D("0.010"),
        True,
        False,
    )
    [close2] = places(h.answer("1"))
    assert (close2.symbol, close2.side, close2.amount, close2.reduce_only) == (PERP.symbol, "sell", D("0.010"), True)
    h.answer("1")
    assert h.held == [D(0), D(0)] and h.state.saga is None and h.state.exits == 1


def test_the_first_leg_grown_during_close2_is_closed_again_before_the_exit_ends() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    h.answer("1")  # spot sold
    [close2] = h.pending
    h.end(stray(h, 0, "buy", "0.002"), "0.002", "canceled")  # a late spot buy of ours lands meanwhile
    assert h.held[0] == D("0.002")
    h.pending.remove(close2)
    h.end(close2, "0.008", "canceled")  # the perp bought back to -0.002: hedges what spot holds
    [again] = h.pending
    assert h.state.saga is not None and h.state.saga.step == "close1"
    assert (again.symbol, again.side, again.amount) == (SPOT.symbol, "sell", D("0.002"))
    [last] = places(h.answer("1"))
    assert (last.symbol, last.side, last.amount, last.reduce_only) == (PERP.symbol, "buy", D("0.002"), True)
    h.answer("1")
    assert h.held == [D(0), D(0)] and h.state.saga is None and h.state.exits == 1


def test_an_exit_that_leaves_spot_dust_below_the_minimum_notional_ends() -> None:
    h = ArbHarness()
    enter(h)
    h.control("exit")
    h.answer("0.995")  # 0.00005 BTC of spot left: 3 USDT, below the 5 USDT minimum
    h.answer("1")
    assert h.held == [D("0.00005"), D(0)]
    assert h.pending == [] and h.state.saga is None and h.state.holding_long == -1


def test_spot_dust_left_by_an_exit_does_not_block_the_next_entry() -> None:
    """Spot dust below the minimum notional left by an exit is not a position (it was: every later
    input started and ended an empty exit, and no entry ever started again)."""
    h = ArbHarness()
    enter(h)
    h.spread("0.01")
    h.answer("0.995")  # 0.00005 BTC of spot left: 3 USDT, below the 5 USDT minimum
    h.answer("1")
    h.tick(500)
    h.tick(500)
    assert h.state.exits == 1
    fresh(h)
    h.spread("0.3")
    h.tick(HOLD)
    assert len(h.pending) == 1


def test_two_legs_pointing_the_same_way_are_both_unwound_at_once() -> None:
    h = ArbHarness()
    enter(h)
    h.end(stray(h, 1, "buy", "0.012"), "0.012", "canceled")  # the perp is now long 0.002 too
    out = h.outputs[-3:]
    assert h.held == [D("0.01"), D("0.002")]
    got = sorted((p.symbol, p.side, p.amount, p.reduce_only) for p in places(out))
    assert got == [(SPOT.symbol, "sell", D("0.01"), False), (PERP.symbol, "sell", D("0.002"), True)]
    assert len(h.pending) == 2
    h.answer_all()
    assert h.held == [D(0), D(0)] and h.state.saga is None


def test_legs_apart_by_exactly_one_lot_are_rebalanced() -> None:
    h = ArbHarness()
    enter(h)
    out = h.end(stray(h, 0, "buy", "0.001"), "0.001", "canceled")
    assert h.held == [D("0.011"), D("-0.010")]
    [unwind] = places(out)
    assert (unwind.symbol, unwind.side, unwind.amount) == (SPOT.symbol, "sell", D("0.001"))
    saga = h.state.saga
    assert saga is not None and (saga.kind, saga.step, saga.reason, saga.first, saga.long_leg) == ("enter", "unwind", "legs apart", 0, 0)
    assert saga.started_ts == h.now
    h.answer("1")
    assert h.held == [D("0.010"), D("-0.010")] and h.state.holding_long == 0


def test_an_imbalance_below_the_minimum_notional_does_not_stop_an_exit() -> None:
    spot = replace(SPOT, min_notional=D(100))
    h = ArbHarness(markets=[spot, PERP])
    enter(h)
    h.end(stray(h, 0, "buy", "0.001"), "0.001", "canceled")  # 60 USDT apart: below spot's 100 minimum
    assert h.held == [D("0.011"), D("-0.010")] and h.state.saga is None
    h.spread("0.01")
    [close1] = h.pending
    assert (close1.symbol, close1.side, close1.amount) == (SPOT.symbol, "sell", D("0.011"))


@pytest.mark.parametrize(("leg_", "side", "amount"), [(0, "buy", "0.002"), (1, "sell", "0.002")])
def test_a_naked_leg_outside_a_saga_is_unwound(leg_: int, side: str, amount: str) -> None:
    h = ArbHarness()
    fresh(h)
    out = h.end(stray(h, leg_, side, amount), amount, "canceled")
    [unwind] = places(out)
    back = "sell" if side == "buy" else "buy"
    assert (unwind.symbol, unwind.side, unwind.amount) == (h.cfg.legs[leg_].symbol, back, D(amount))
    saga = h.state.saga
    assert saga is not None and saga.reason == "legs apart" and saga.long_leg == (0 if leg_ == 0 else 1)
    # before any spread snapshot: the client id is keyed on the event time
    assert unwind.client_order_id == L.client_order_id(h.core.prefix, h.now, leg_, back, 0)  # type: ignore[arg-type]
    h.answer("1")
    assert h.held == [D(0), D(0)] and h.state.holding_long == -1 and h.state.saga is None


def test_an_unwind_exactly_an_hour_after_the_last_does_not_spend_the_budget() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.answer(status="rejected", reason="venue_error")
    [t1] = h.state.unwinds
    h.run_until(lambda: h.state.saga is None)
    h.now = t1 + 3_600_000 - HOLD
    start_entry(h)
    h.answer("1")
    h.answer(status="rejected", reason="venue_error")
    assert h.state.unwinds == [t1 + 3_600_000] and h.state.blocked is None


def test_the_failure_budget_blocks_every_direction_and_says_so() -> None:
    h = ArbHarness()
    for _ in range(2):
        start_entry(h)
        h.answer("1")
        h.answer(status="rejected", reason="venue_error")
        h.run_until(lambda: h.state.saga is None)
        h.tick(1_000)
    assert h.state.blocked == "failure_budget" and h.state.blocked_long == -1
    assert published(h)["blocked_long"] == -1
    [alert] = h.alerts
    assert alert.message == "arbitrage t (btc): 2 unwinds within an hour (budget 2): entries blocked until an operator resets"
    assert alert.kind == "arbitrage_failure_budget" and alert.component == "arbitrage"
    assert (alert.venue, alert.symbol) == ("sim", SPOT.symbol) and alert.ts == h.state.unwinds[-1]
    h.control("reset")
    assert h.state.blocked_long == -1 and published(h)["blocked_long"] == -1 and not h.state.paused and not h.state.halted


# ---------------------------------------------------------------------- core.py: order events and books


def test_a_fill_without_an_average_is_booked_at_the_orders_price() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    assert leg1.price is not None
    h.feed(h.update(leg1, D("0.01"), "closed"))
    assert h.state.legs[0].cash == D("0.01") * leg1.price


def test_a_perpetual_in_contracts_is_booked_at_its_contract_size() -> None:
    perp = replace(PERP, contract_size=D("0.001"), lot_size=D(1), min_amount=D(1))
    h = ArbHarness(arb_config(amount=D("0.01")), [SPOT, perp])
    start_entry(h)
    h.answer("1")
    [hedge] = h.pending
    h.answer("1", price=D(60000))
    assert hedge.amount == D(10)
    assert h.state.legs[1].held == D("-0.010") and h.state.legs[1].cash == -D("0.010") * 60000


@pytest.mark.parametrize("average", [D(59990), None])
def test_a_fee_charged_in_the_base_asset_is_valued_at_the_fill(average: D | None) -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    assert leg1.price is not None
    ev = replace(h.update(leg1, D("0.01"), "closed", average=average), fee_cost=D("0.00001"), fee_currency="BTC")
    h.feed(ev)
    at = average or leg1.price
    assert h.state.position.fees == D("0.00001") * at == h.state.total.fees


def test_a_fee_that_grows_without_more_fill_is_booked_and_an_older_smaller_one_is_not() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    base = replace(h.update(leg1, D("0.004"), "open", average=D(60000)), fee_cost=D("0.2"))
    h.feed(base)
    h.feed(replace(base, fee_cost=D("0.3")))  # the venue's later word on the same fill
    assert h.state.position.fees == D("0.3") == h.state.total.fees
    h.feed(replace(base, fee_cost=D("0.1")))  # an older copy
    assert h.state.position.fees == D("0.3") == h.state.total.fees
    assert h.state.legs[0].held == D("0.004")


def test_a_copy_of_a_partial_fill_at_another_average_changes_nothing_booked() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    h.end(leg1, "0.004", "open", price=D(60000))
    h.feed(h.update(leg1, D("0.004"), "open", average=D(61000)))
    h.end(leg1, "0.01", "closed", price=D(60000))
    assert h.state.legs[0].cash == D(600)


def test_a_late_copy_of_an_ended_stray_with_a_higher_fee_only_books_the_fee() -> None:
    h = ArbHarness()
    enter(h)
    s = stray(h, 0, "buy", "0.002")
    h.end(s, "0.002", "canceled")
    h.run_until(lambda: h.state.saga is None)
    held, fees = h.held, h.state.total.fees
    ended = h.state.ended[s.client_order_id]
    assert (ended.leg, ended.side, ended.filled) == (0, "buy", D("0.002")) and ended.cost == D("0.002") * s.price
    ev = replace(h.update(s, D("0.002"), "canceled", average=s.price + 100), fee_cost=ended.fee + 1)
    h.feed(ev)
    assert h.held == held and h.state.total.fees == fees + 1
    h.feed(ev)  # its copy: nothing
    assert h.state.total.fees == fees + 1
    assert h.state.ended[s.client_order_id].cost == ended.cost  # the same fill, whatever its average says


def test_an_open_stray_is_canceled_by_its_venue_id_saying_why() -> None:
    h = ArbHarness()
    enter(h)
    s = stray(h, 0, "buy", "0.002")
    out = h.end(s, "0.001", "open")
    [cancel] = cancels(out)
    assert cancel.reason == "an order of ours that nothing tracks"
    assert cancel.order_id is not None and cancel.order_id == str(h._order_ids)
    assert cancel.id == ids.cancel_id("sim", "main", s.client_order_id) and cancel.symbol == SPOT.symbol


def test_an_unknown_outcome_of_an_order_nothing_tracks_is_a_stale_event() -> None:
    h = ArbHarness()
    enter(h)
    before = h.state
    h.feed(h.update(stray(h, 0, "buy", "0.002"), D("0.002"), "unknown"))
    assert [b.held for b in h.state.legs] == [b.held for b in before.legs]
    assert h.state.stale_events == before.stale_events + 1


def test_ended_orders_are_remembered_up_to_a_hundred_and_the_forgotten_ones_by_number() -> None:
    h = ArbHarness(arb_config(entry_hold_ms=0))
    enter(h)
    while len(h.sent) < 101:
        h.spread("0.01")
        h.run_until(lambda: h.state.saga is None and h.state.holding_long < 0)
        fresh(h)
        h.spread("0.3")
        h.run_until(lambda: h.state.saga is None and h.state.holding_long == 0)
    n = len(h.sent)
    assert len(h.state.ended) == 100
    assert h.state.forgotten_below == n - 100
    # the first number still remembered is news if booked again? no: it is remembered, its copy changes nothing
    kept = h.sent[n - 100]
    before = h.state
    h.feed(h.update(kept, kept.amount, "closed", average=kept.price))
    assert [b.held for b in h.state.legs] == [b.held for b in before.legs] and h.state.stale_events == before.stale_events


# ---------------------------------------------------------------------- core.py: inputs and decisions


def test_a_core_needs_two_markets() -> None:
    with pytest.raises(ValueError, match="two legs"):
        ArbCore(arb_config(), [SPOT])


def test_a_breaker_on_the_first_legs_symbol_alone_blocks_entry() -> None:
    h = ArbHarness()
    h.breaker(h.scopes(0)[-1], "reduce_only")
    h.spread("0.3")
    h.tick(HOLD)
    assert h.sent == []


def test_a_breaker_back_to_ok_does_not_close_the_position() -> None:
    h = ArbHarness()
    h.breaker(h.scopes(1)[-1], "reduce_only")
    h.breaker(h.scopes(1)[-1], "ok", previous="reduce_only")
    enter(h)
    h.tick(1_000)
    assert h.state.saga is None and h.pending == [] and h.state.status == "running"


def test_the_reason_of_each_exit_is_published() -> None:
    h = ArbHarness()
    enter(h)
    h.control("halt")
    assert h.state.saga is not None and h.state.saga.reason == "halted"
    h = ArbHarness(arb_config(use_margin=True))
    enter(h)
    h.spread("0.3", long_leg=1)
    assert h.state.saga is not None and h.state.saga.reason == "the funding flipped"
    h = ArbHarness()
    enter(h)
    h.breaker(h.scopes(1)[-1], "halted")
    assert h.state.saga is not None and h.state.saga.reason == f"breaker {h.scopes(1)[-1]} is halted"
    h = ArbHarness()
    enter(h)
    h.tick(h.cfg.stale_exit_ms)
    assert h.state.saga is not None and h.state.saga.reason == f"the spread has not been fresh for {h.cfg.stale_exit_ms} ms"


def test_a_stale_snapshot_that_still_carries_a_low_apr_is_not_a_reason_to_exit() -> None:
    h = ArbHarness()
    enter(h)
    last = h.state.spread
    assert last is not None
    h.feed(replace(last, id="stale-low", state="stale", net_apr=D("0.001"), ts=h.now + 1))
    assert h.state.saga is None and h.pending == []


def test_an_operator_exit_while_flat_is_forgotten_by_the_next_position() -> None:
    h = ArbHarness()
    fresh(h)
    h.control("exit")
    assert h.state.exit_requested is False and published(h)["exit_requested"] is False
    h.control("resume")
    enter(h)
    h.tick(1_000)
    assert h.state.saga is None and h.state.holding_long == 0


def test_a_position_flattened_by_orders_nothing_tracked_is_published_flat() -> None:
    h = ArbHarness()
    enter(h)
    h.end(stray(h, 0, "sell", "0.01", n=901), "0.01", "canceled")
    h.end(stray(h, 1, "buy", "0.010", n=902), "0.010", "canceled")
    h.run_until(lambda: h.state.saga is None)
    assert h.held == [D(0), D(0)]
    assert h.state.holding_long == -1 and published(h)["holding_long"] == -1
    assert h.states[-1].unrealized_pnl == 0


def test_entry_with_the_snapshot_or_a_book_exactly_spread_fresh_ms_old() -> None:
    h = ArbHarness()
    h.spread("0.3")  # T0, like the books
    h.now += h.cfg.spread_fresh_ms
    h.book(0)  # the snapshot and leg 2's book are exactly spread_fresh_ms old: still fresh
    assert len(h.sent) == 1
    h = ArbHarness()
    h.now += h.cfg.spread_fresh_ms - HOLD
    h.spread("0.3")
    h.tick(HOLD)  # both books exactly spread_fresh_ms old
    assert len(h.sent) == 1


def test_a_snapshot_exactly_spread_fresh_ms_after_the_last_continues_the_wait() -> None:
    h = ArbHarness()
    h.spread("0.3")
    h.now += h.cfg.spread_fresh_ms
    fresh(h)
    assert len(h.sent) == 1  # held long enough already (15 s >= 10 s), snapshot still fresh
    h = ArbHarness(arb_config(entry_hold_ms=20_000))
    h.spread("0.3")
    h.now += h.cfg.spread_fresh_ms
    fresh(h)
    h.spread("0.3")  # exactly spread_fresh_ms later: no gap, the wait goes on from T0
    h.tick(20_000 - h.cfg.spread_fresh_ms)
    assert len(h.sent) == 1


def test_a_state_is_published_when_an_entry_starts_on_a_clock_tick() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.3")
    out = h.tick(HOLD)
    assert places(out) and states(out)
    assert states(out)[-1].state["saga"]["step"] == "leg1" and states(out)[-1].open_orders == 1


def test_a_state_is_published_when_the_deadline_tick_cancels_the_hedge() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    out = h.tick(NAKED)
    assert cancels(out) and states(out)


def test_the_state_is_published_when_the_books_first_arrive_and_not_on_every_ticker() -> None:
    h = ArbHarness()
    core = ArbCore(h.cfg, [SPOT, PERP])
    h.core, h.state = core, core.initial_state()
    h.tick(0)
    assert h.state.status == "starting"
    h.now += 1_000
    h.book(0)
    out = h.book(1)
    assert h.state.status == "running" and states(out) and states(out)[-1].status == "running"
    h.now += 1_000
    assert states(h.book(0)) == []
    h.tick(PUBLISH)
    assert len(states(h.outputs[-1:])) == 1
    h.now += 1
    assert states(h.book(0)) == []


def test_spread_snapshots_of_another_monitor_or_pair_are_ignored() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.3")
    last = h.state.spread
    assert last is not None
    state = h.state
    h.feed(replace(last, id="x", monitor="other", ts=h.now + 1))
    h.feed(replace(last, id="y", pair="eth", ts=h.now + 1))
    assert h.state is state


def test_an_ok_snapshot_without_its_net_apr_is_refused() -> None:
    from bus.contract import InputRejected

    h = ArbHarness()
    h.spread("0.3")
    last = h.state.spread
    assert last is not None
    with pytest.raises(InputRejected, match="an ok spread snapshot without its net APR"):
        h.feed(replace(last, id="z", net_apr=None, ts=h.now + 1))


def test_a_book_with_bid_equal_to_ask_is_accepted_and_a_crossed_one_says_so() -> None:
    from bus.contract import InputRejected

    h = ArbHarness()
    h.book(0, spread=D(0))
    assert h.state.legs[0].bid == h.state.legs[0].ask == h.price
    with pytest.raises(InputRejected, match="crossed book: bid"):
        h.book(0, spread=D(-2))


def test_a_margin_block_about_leg_0_is_lifted_when_leg_1_becomes_the_long_one() -> None:
    h = ArbHarness(arb_config(legs=[ArbLeg(venue="sim", symbol=PERP.symbol), ArbLeg(venue="sim2", symbol=PERP.symbol)]), [PERP, PERP])
    start_entry(h, long_leg=0)
    h.answer(status="rejected", reason="insufficient_collateral")
    assert (h.state.blocked, h.state.blocked_long) == ("insufficient_collateral", 0)
    fresh(h)
    h.spread("0.3", long_leg=1)
    assert h.state.blocked is None and h.state.blocked_long == -1 and published(h)["blocked_long"] == -1


_ = FundingSpread


# ---------------------------------------------------------------------- more: faults, controls, published state


def overflowing(h: ArbHarness, cmd: PlaceOrder) -> Any:
    """An order event whose booking cannot be computed (beyond Decimal's range)."""
    ev = h.update(cmd, D(0), "closed")
    return replace(ev, filled=D("1e999998"), amount=D("1e999998"), remaining=D(0), status="closed")


def test_an_order_event_that_cannot_be_booked_halts_with_the_fault_published() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    out = h.feed(overflowing(h, leg1))
    assert h.state.halted and h.state.status == "halted" and h.state.seq == h.seq
    assert h.state.fault is not None and h.state.fault.startswith(f"OrderUpdate {leg1.client_order_id}: Overflow: ")
    [st] = states(out)
    assert st.status == "halted" and st.state["fault"] == h.state.fault and st.input_seq == h.seq
    h.control("reset")
    assert h.state.fault is None and not h.state.halted and published(h)["fault"] is None
    assert published(h)["halted"] is False and published(h)["paused"] is False


def test_a_fault_while_blocked_alerts_nothing_new() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.3", long_leg=1)
    h.tick(HOLD)
    assert h.state.blocked == "margin_unavailable" and len(h.alerts) == 1
    h.feed(overflowing(h, stray(h, 0, "buy", "0.002")))
    assert h.state.fault is not None and len(h.alerts) == 1


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        ("margin_unavailable", "a margin short is needed and margin is unavailable: entries in that direction blocked"),
        ("insufficient_collateral", "the venue refused the margin loan: entries in that direction blocked"),
    ],
)
def test_a_margin_block_alert_says_why(reason: str, text: str) -> None:
    h = ArbHarness(arb_config(use_margin=True))
    start_entry(h, long_leg=1)
    h.answer(status="rejected", reason=reason)
    [alert] = h.alerts
    assert alert.message == f"arbitrage t (btc): {text}"
    fields = dict(
        component="arbitrage",
        instance="t",
        severity="critical",
        kind=f"arbitrage_{reason}",
        message=alert.message,
        venue="sim",
        symbol=SPOT.symbol,
        ts=h.now,
    )
    assert alert.id == ids.content_id("arb-alert:t", fields)
    assert (alert.component, alert.venue, alert.symbol, alert.ts) == ("arbitrage", "sim", SPOT.symbol, h.now)


def test_pause_and_resume_are_published_and_a_control_for_another_component_is_ignored() -> None:
    from schemas.ops import ControlCommand

    h = ArbHarness()
    fresh(h)
    fields: dict[str, Any] = dict(target_component="grid", target_instance="t", action="pause", operator="op", ts=h.now)
    h.feed(ControlCommand(id="other", **fields))
    assert not h.state.paused
    h.control("pause")
    assert h.state.paused is True and published(h)["paused"] is True and h.state.status == "paused"
    h.control("resume")
    assert published(h)["paused"] is False and h.state.status == "running"


def test_the_published_state_names_the_perpetual_and_splits_open_from_realized_pnl() -> None:
    h = ArbHarness()
    enter(h)  # long spot 0.01 at the ask, short perp 0.010 at the bid (through the band)
    h.book(0, D(61000))
    h.funding(1, "2")
    st = h.states[-1]
    position, total = h.core.books(h.state)
    assert position.basis != 0
    assert st.id == ids.state_id("arbitrage", "t", h.seq) and st.input_seq == h.seq
    assert (st.component, st.instance, st.venue, st.account, st.symbol) == ("arbitrage", "t", "sim", "main", PERP.symbol)
    assert st.status == "running" and st.ts == h.now and st.open_orders == 0 and st.fills == 2
    assert st.position == D("-0.010")
    assert st.unrealized_pnl == position.basis and st.realized_pnl == total.net - position.basis
    h.spread("0.01")
    h.answer_all()
    h.answer_all()
    assert h.held == [D(0), D(0)]
    st = h.states[-1]
    position, total = h.core.books(h.state)
    assert st.unrealized_pnl == 0 and st.realized_pnl == total.net and st.fills == 4


def test_the_published_state_of_a_position_long_leg_1() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    enter(h, long_leg=1)
    h.book(1, D(61000))
    h.funding(1, "1")
    st = h.states[-1]
    position, total = h.core.books(h.state)
    assert position.basis != 0 and st.unrealized_pnl == position.basis


def test_during_an_entry_the_open_basis_is_unrealized() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.book(0, D(61000))
    h.funding(1, "1")
    st = h.states[-1]
    position, _ = h.core.books(h.state)
    assert h.state.holding_long == -1 and h.state.saga is not None
    assert position.basis != 0 and st.unrealized_pnl == position.basis and st.open_orders == 1


def test_a_ticker_of_another_market_changes_no_book_and_one_at_the_same_time_does() -> None:
    from schemas.market import Ticker

    h = ArbHarness()
    legs = h.state.legs
    h.feed(Ticker(id="eth", venue="sim", symbol="ETH/USDT", bid=D(1), ask=D(2), last=D(1), ts=h.now + 1, ts_local=h.now + 1))
    assert h.state.legs == legs
    h.book(1, D(61000))  # the same time as the books from the start
    assert h.state.legs[1].bid == D("60999.5")


def test_a_clock_tick_at_the_same_time_does_nothing() -> None:
    h = ArbHarness()
    h.tick(0)
    state = h.state
    assert h.tick(0) == [] and h.state is state


def test_an_order_event_moves_the_state_to_its_time_and_sequence() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.pending.clear()
    h.now += 700
    h.end(leg1, "0.01", "closed")
    assert h.state.ts == h.now and h.state.seq == h.seq and h.states[-1].input_seq == h.seq


def test_a_late_open_copy_of_an_ended_order_is_not_canceled() -> None:
    h = ArbHarness()
    leg1 = start_entry(h)
    h.answer("1")
    ended = h.state.ended[leg1.client_order_id]
    out = h.feed(replace(h.update(leg1, D("0.01"), "open", average=leg1.price), fee_cost=ended.fee))
    assert cancels(out) == [] and places(out) == []


def test_refusals_name_what_is_wrong() -> None:
    from bus.contract import InputRejected

    h = ArbHarness()
    leg1 = start_entry(h)
    with pytest.raises(InputRejected, match="names leg 0"):
        h.feed(h.update(replace(leg1, side="sell"), D("0.01"), "closed", average=D(60000)))
    last = h.state.spread
    assert last is not None
    with pytest.raises(InputRejected, match="but arbitrage t trades"):
        h.feed(replace(last, id="w", long=replace(last.long, symbol="ETH/USDT"), ts=h.now + 1))


def test_a_snapshot_below_entry_publishes_no_direction() -> None:
    h = ArbHarness()
    fresh(h)
    h.spread("0.05", long_leg=0)
    assert h.state.above_long == -1 and published(h)["above_long"] == -1 and h.state.above_since == 0


# ---------------------------------------------------------------------- buys are checked against the minimum at the buy's own limit


def test_a_short_spot_bought_back_is_checked_against_the_minimum_at_its_buy_limit() -> None:
    """Spot's minimum notional (598) lies between 0.01 BTC at the bid less the exit band (596.99)
    and at the ask plus the band (603.01): the buy-back is tradable at its own limit, spot first."""
    spot = replace(SPOT, min_notional=D(598))
    h = ArbHarness(arb_config(use_margin=True), [spot, PERP])
    enter(h, long_leg=1)
    h.spread("0.01", long_leg=1)
    [close1] = h.pending
    assert (close1.symbol, close1.side, close1.amount, close1.use_margin) == (SPOT.symbol, "buy", D("0.01"), True)


def test_a_hedge_buy_is_checked_against_the_minimum_at_its_buy_limit() -> None:
    perp = replace(PERP, min_notional=D(600))  # 0.010 at the bid less the band: 599.4; at the ask plus the band: 600.6
    h = ArbHarness(arb_config(use_margin=True), [SPOT, perp])
    start_entry(h, long_leg=1)
    [hedge] = places(h.answer("1"))
    assert (hedge.symbol, hedge.side, hedge.amount) == (PERP.symbol, "buy", D("0.010"))


def test_a_perp_bought_back_is_checked_against_the_minimum_at_its_buy_limit() -> None:
    perp = replace(PERP, min_notional=D(598))
    h = ArbHarness(markets=[SPOT, perp])
    enter(h)
    h.control("exit")
    [close2] = places(h.answer("1"))
    assert (close2.symbol, close2.side, close2.amount, close2.reduce_only) == (PERP.symbol, "buy", D("0.010"), True)
    assert h.state.saga is not None and h.state.saga.kind == "exit"


def test_a_naked_short_perp_is_rebalanced_at_its_buy_limit() -> None:
    perp = replace(PERP, min_notional=D(598))
    h = ArbHarness(markets=[SPOT, perp])
    enter(h)
    out = h.end(stray(h, 0, "sell", "0.01"), "0.01", "canceled")  # the spot sold by someone else
    [unwind] = places(out)
    assert (unwind.symbol, unwind.side, unwind.amount, unwind.reduce_only) == (PERP.symbol, "buy", D("0.010"), True)


def test_an_exit_whose_last_perp_gap_is_below_the_minimum_notional_ends() -> None:
    perp = replace(PERP, min_notional=D(100))
    h = ArbHarness(markets=[SPOT, perp])
    enter(h)
    h.control("exit")
    h.answer("1")
    h.answer("0.9")  # 0.001 of the perp left: 60 USDT, below 100
    assert h.held == [D(0), D("-0.001")]
    assert h.state.saga is None and h.pending == [] and h.state.exits >= 1


def test_dust_held_after_a_rebalance_then_sold_elsewhere_leaves_the_instance_flat() -> None:
    h = ArbHarness()
    enter(h)
    h.end(stray(h, 0, "sell", "0.00995", n=901), "0.00995", "canceled")  # 0.00005 spot left: 3 USDT
    [unwind] = h.pending
    assert (unwind.symbol, unwind.side, unwind.amount) == (PERP.symbol, "buy", D("0.010"))
    h.answer("1")
    # 3 USDT of spot is below the venue's minimum notional: dust, not a position.
    assert h.held == [D("0.00005"), D(0)] and h.state.saga is None and h.state.holding_long == -1
    h.end(stray(h, 0, "sell", "0.00005", n=902), "0.00005", "canceled")
    assert h.held == [D(0), D(0)]
    assert h.state.holding_long == -1 and published(h)["holding_long"] == -1 and h.states[-1].unrealized_pnl == 0


def test_a_stray_spot_sale_during_close2_sends_the_exit_back_to_close1_at_its_buy_limit() -> None:
    spot = replace(SPOT, min_notional=D(598))
    h = ArbHarness(arb_config(use_margin=True), [spot, PERP])
    enter(h, long_leg=1)  # short 0.01 spot, long 0.010 perp
    h.control("exit")
    h.answer("1")  # spot bought back
    [close2] = h.pending
    h.end(stray(h, 0, "sell", "0.01"), "0.01", "canceled")  # spot short again meanwhile
    h.pending.remove(close2)
    h.end(close2, "0", "canceled")  # the perp sold nothing: it still hedges the spot
    saga = h.state.saga
    assert saga is not None and saga.kind == "exit" and saga.step == "close1" and h.state.exits == 0
    assert h.pending == []  # the empty close2 waits retry_ms before the next order
    h.tick(h.cfg.retry_ms)
    [again] = h.pending
    assert (again.symbol, again.side, again.amount, again.use_margin) == (SPOT.symbol, "buy", D("0.01"), True)


def test_a_stray_fill_before_any_book_waits_for_the_books() -> None:
    h = ArbHarness()
    core = ArbCore(h.cfg, [SPOT, PERP])
    h.core, h.state = core, core.initial_state()
    s = stray(h, 0, "buy", "0.002")
    out = h.end(s, "0.002", "canceled")
    assert places(out) == [] and h.state.saga is None and h.state.holding_long == -1
    h.book(0)
    [unwind] = places(h.book(1))
    assert (unwind.symbol, unwind.side, unwind.amount) == (SPOT.symbol, "sell", D("0.002"))


def test_a_stray_numbered_zero_after_a_lost_state_is_booked() -> None:
    h = ArbHarness()
    fresh(h)
    h.end(stray(h, 0, "buy", "0.002", n=0), "0.002", "canceled")
    assert h.held[0] == D("0.002") and h.state.stale_events == 0


def test_dust_below_the_spots_minimum_amount_does_not_stop_the_next_entry() -> None:
    spot = replace(SPOT, min_amount=D("0.0001"))
    h = ArbHarness(markets=[spot, PERP])
    enter(h)
    h.spread("0.01")
    h.answer("0.995")  # 0.00005 spot left: below its minimum amount
    h.answer("1")
    assert h.held == [D("0.00005"), D(0)] and h.state.saga is None
    h.tick(500)
    assert h.state.exits == 1
    fresh(h)
    h.spread("0.3")
    h.tick(HOLD)
    assert len(h.pending) == 1


def test_a_perp_perp_exit_closes_leg_0_first() -> None:
    from tests.test_arbitrage_core import perp_perp

    h = perp_perp()
    enter(h, long_leg=1)
    h.spread("0.01", long_leg=1)
    [close1] = h.pending
    assert (close1.venue, close1.side, close1.amount, close1.reduce_only) == ("sim", "buy", D("0.010"), True)
    saga = h.state.saga
    assert saga is not None and saga.first == 0 and saga.long_leg == 1 and saga.started_ts == h.now


@pytest.mark.parametrize("long_leg", [0, 1])
def test_an_exit_saga_remembers_which_leg_was_long(long_leg: int) -> None:
    h = ArbHarness(arb_config(use_margin=True))
    enter(h, long_leg=long_leg)
    h.control("exit")
    saga = h.state.saga
    assert saga is not None and saga.long_leg == long_leg and published(h)["saga"]["long_leg"] == long_leg


def test_an_entry_completing_exactly_stale_exit_ms_after_a_low_snapshot_exits_for_the_apr() -> None:
    h = ArbHarness()
    start_entry(h)
    h.answer("1")
    h.spread("0.01")  # below exit while the hedge is out
    h.now += h.cfg.stale_exit_ms
    h.answer("1")
    saga = h.state.saga
    assert saga is not None and saga.kind == "exit" and saga.reason == "net APR 0.01 below 0.02"


def test_a_margin_block_about_the_other_direction_does_not_stop_an_entry() -> None:
    from tests.test_arbitrage_core import perp_perp

    h = perp_perp()
    fresh(h)
    h.spread("0.3", long_leg=1)
    h.end(stray(h, 0, "buy", "0.002"), "0.002", "canceled")
    [unwind] = h.pending
    h.answer(status="rejected", reason="insufficient_collateral")
    assert (h.state.blocked, h.state.blocked_long) == ("insufficient_collateral", 0)
    assert h.alerts[-1].venue == "sim" and h.alerts[-1].symbol == PERP.symbol  # the first configured leg
    h.tick(h.cfg.retry_ms)
    h.answer("1")
    assert h.held == [D(0), D(0)] and h.state.saga is None
    h.now = T0 + HOLD
    fresh(h)
    [leg1] = h.pending
    assert (leg1.venue, leg1.side) == ("sim", "sell") and unwind.side == "sell"


def test_a_reset_unpauses() -> None:
    h = ArbHarness()
    h.control("pause")
    h.control("reset")
    assert h.state.paused is False and h.state.status == "running"


def test_exact_refusal_texts() -> None:
    from bus.contract import InputRejected

    with pytest.raises(ValueError, match=r"^an arbitrage needs its two legs \(filled from its pair\) and their markets$"):
        ArbCore(arb_config(), [SPOT])
    h = ArbHarness()
    h.spread("0.3")
    last = h.state.spread
    assert last is not None
    with pytest.raises(InputRejected, match="^an ok spread snapshot without its net APR$"):
        h.feed(replace(last, id="z", net_apr=None, ts=h.now + 1))


def test_a_block_replaced_by_another_on_a_snapshot_is_alerted_and_published() -> None:
    h = ArbHarness(arb_config(entry_hold_ms=0))
    start_entry(h, long_leg=0)
    h.answer("1")
    h.answer(status="rejected", reason="insufficient_collateral")  # the perp's collateral: blocked that way
    h.run_until(lambda: h.state.saga is None)
    assert (h.state.blocked, h.state.blocked_long, h.state.status) == ("insufficient_collateral", 0, "reduce_only")
    out = h.spread("0.3", long_leg=1)  # the other way: that block lifts, but a spot short needs margin
    assert h.state.blocked == "margin_unavailable" and h.state.status == "reduce_only"
    assert [a.kind for a in h.alerts] == ["arbitrage_insufficient_collateral", "arbitrage_margin_unavailable"]
    assert states(out) and states(out)[-1].state["blocked"] == "margin_unavailable"


def test_a_reset_forgets_the_blocked_direction() -> None:
    h = ArbHarness(arb_config(use_margin=True))
    start_entry(h, long_leg=1)
    h.answer(status="rejected", reason="margin_unavailable")
    assert h.state.blocked_long == 1
    h.control("reset")
    assert h.state.blocked is None and h.state.blocked_long == -1 and published(h)["blocked_long"] == -1


def test_a_fault_while_already_halted_is_published() -> None:
    h = ArbHarness()
    fresh(h)
    h.control("halt")
    assert h.state.status == "halted"
    out = h.feed(overflowing(h, stray(h, 0, "buy", "0.002")))
    assert h.state.fault is not None
    assert states(out) and states(out)[-1].state["fault"] == h.state.fault


def test_an_open_position_that_a_price_move_takes_below_the_minimum_notional_is_not_entered_again() -> None:
    spot, perp = replace(SPOT, min_notional=D(598)), replace(PERP, min_notional=D(598))
    h = ArbHarness(arb_config(), [spot, perp])
    enter(h)  # 0.01 on each leg at about 60000: 600 USDT, just above the minimum
    h.book(0, D(59000))
    h.book(1, D(59000))  # 590 USDT now: below the minimum on both legs
    h.spread("0.3")
    h.tick(HOLD)
    assert h.pending == [] and h.state.holding_long == 0 and h.state.entries == 1
    assert h.states[-1].unrealized_pnl != 0  # still an open position, marked at the mid
