"""Takers walk a book of finite depth: several prices, slippage, limits respected, depth used up.

Reference book: depth 5 at the touch and at every tick beyond it (bid 99.9 / ask 100.1).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.account import Balance, Fill, OrderUpdate, Position
from tests.test_sim_helpers import SPOT, SPOT_TAKER, SWAP, SWAP_TAKER, D, Sim, make_config, of, one, seeded, spot_market, swap_market


def book(**overrides: Any) -> Sim:
    market = dict(book_depth=D("5")) | overrides
    return seeded(make_config(markets=[swap_market(**market), spot_market(**market)]))


def levels(events: list[Any]) -> list[tuple[Decimal, Decimal]]:
    return [(f.price, f.amount) for f in of(events, Fill)]


def test_a_market_buy_larger_than_the_touch_walks_the_book_and_pays_slippage() -> None:
    sim = book()
    events = sim.place("big", "buy", "12")
    assert levels(events) == [(D("100.1"), D("5")), (D("100.2"), D("5")), (D("100.3"), D("2"))]
    assert all(f.liquidity == "taker" for f in of(events, Fill))
    assert [f.fee_cost for f in of(events, Fill)] == [p * a * SWAP_TAKER for p, a in levels(events)]
    final = of(events, OrderUpdate)[-1]
    cost = D("100.1") * 5 + D("100.2") * 5 + D("100.3") * 2
    assert (final.status, final.filled, final.average) == ("closed", D("12"), (cost / 12).quantize(D("0.001")))
    assert final.average > D("100.1")  # slippage: worse than the touch
    assert one(events, Position).entry_price == cost / 12
    assert [type(e) for e in events] == [OrderUpdate, Fill, Fill, Fill, OrderUpdate, Position, Balance]


def test_a_market_sell_walks_down_from_the_bid_by_the_configured_step() -> None:
    sim = book(book_step_ticks=2)
    assert levels(sim.place("big", "sell", "7")) == [(D("99.9"), D("5")), (D("99.7"), D("2"))]


def test_a_crossing_limit_buy_walks_only_up_to_its_limit_and_the_rest_rests_at_the_limit() -> None:
    sim = book()
    events = sim.place("cross", "buy", "12", "100.2")
    assert levels(events) == [(D("100.1"), D("5")), (D("100.2"), D("5"))]
    resting = of(events, OrderUpdate)[-1]
    assert (resting.status, resting.filled, resting.remaining, resting.price) == ("open", D("10"), D("2"), D("100.2"))
    assert [o.client_order_id for o in sim.engine.open_orders(sim.state, "main", SWAP)] == ["cross"]


def test_an_ioc_limit_fills_what_the_book_holds_within_its_limit_and_expires_the_rest() -> None:
    sim = book()
    events = sim.place("ioc", "sell", "12", "99.8", time_in_force="IOC")
    assert levels(events) == [(D("99.9"), D("5")), (D("99.8"), D("5"))]
    assert (of(events, OrderUpdate)[-1].status, of(events, OrderUpdate)[-1].filled) == ("expired", D("10"))
    assert sim.engine.open_orders(sim.state, "main", None) == []


def test_a_fill_or_kill_the_book_cannot_fill_within_its_limit_is_rejected_and_takes_nothing() -> None:
    sim = book()
    update = one(sim.place("fok", "buy", "12", "100.2", time_in_force="FOK"), OrderUpdate)
    assert (update.status, update.reason, update.filled) == ("rejected", "upstream_rejected", D("0"))
    assert sim.state.accounts["main"].positions == {}
    assert levels(sim.place("after", "buy", "5")) == [(D("100.1"), D("5"))]  # the touch is still whole


def test_a_fill_or_kill_the_book_can_fill_fills_in_full_across_levels() -> None:
    sim = book()
    events = sim.place("fok", "buy", "12", "100.3", time_in_force="FOK")
    assert sum(a for _, a in levels(events)) == D("12")
    assert of(events, OrderUpdate)[-1].status == "closed"


def test_what_takers_take_stays_taken_until_the_next_print_refills_the_book() -> None:
    sim = book()
    assert levels(sim.place("a", "buy", "3")) == [(D("100.1"), D("3"))]
    assert levels(sim.place("b", "buy", "3")) == [(D("100.1"), D("2")), (D("100.2"), D("1"))]
    assert levels(sim.place("c", "sell", "3")) == [(D("99.9"), D("3"))]  # the other side is untouched
    sim.tick("100")
    assert levels(sim.place("d", "buy", "3")) == [(D("100.1"), D("3"))]


def test_a_market_order_beyond_the_last_level_fills_what_the_book_holds_and_cancels_the_rest() -> None:
    sim = book(book_levels=2)
    events = sim.place("huge", "buy", "12")
    assert levels(events) == [(D("100.1"), D("5")), (D("100.2"), D("5"))]
    final = of(events, OrderUpdate)[-1]
    assert (final.status, final.filled, final.remaining) == ("canceled", D("10"), D("2"))


def test_a_sell_never_walks_to_a_price_of_zero() -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("30"), min_notional=D("1")), spot_market()]), swap="0.3")
    events = sim.place("dump", "sell", "100")  # bid 0.2, then 0.1; 0 is no price
    assert levels(events) == [(D("0.2"), D("30")), (D("0.1"), D("30"))]
    assert of(events, OrderUpdate)[-1].status == "canceled"


def test_the_margin_check_prices_a_taker_at_the_levels_it_will_walk() -> None:
    # Depth 1 a level, 10 apart: 3 contracts cost 100.1 + 110.1 + 120.1 = 330.3 (66.06 of margin
    # at 5x), not 3 x 100.1 = 300.3 (60.06).
    markets = [swap_market(book_depth=D("1"), book_step_ticks=100), spot_market()]
    sim = seeded(make_config(markets=markets, accounts={"main": {"USDT": D("63")}}))
    update = one(sim.place("walk", "buy", "3"), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "insufficient_balance")
    assert levels(sim.place("fits", "buy", "2")) == [(D("100.1"), D("1")), (D("110.1"), D("1"))]


def test_a_spot_buy_through_the_book_pays_each_level_in_quote() -> None:
    sim = book()
    events = sim.place("spot", "buy", "7", symbol=SPOT)
    assert levels(events) == [(D("100.1"), D("5")), (D("100.2"), D("2"))]
    cost = D("100.1") * 5 + D("100.2") * 2
    fees = sum(f.fee_cost for f in of(events, Fill))
    assert fees == D("100.1") * 5 * SPOT_TAKER + D("100.2") * 2 * SPOT_TAKER
    assert sim.balance("USDT").total == D("10000") - cost - fees
    assert sim.balance("BTC").total == D("8")
