"""Pre-trade checks (`venues.sim.checks`): every refusal with its reason and its exact message,
and every limit at its boundary (exactly at it passes, one step beyond is refused).

A refusal's message is what an operator reads in the order event, and it states the numbers the
check computed (the margin an order needs and what is free), so pinning it pins the arithmetic.

Reference market (tests/test_sim_helpers.py): swap `BTC/USDT:USDT` and spot `BTC/USDT` at 100,
bid 99.9 / ask 100.1, leverage 5, swap taker fee 0.0005, spot taker fee 0.002, book depth 10
a level unless told otherwise, `spot_margin_ratio` 0.5.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from schemas.account import Fill, OrderUpdate
from schemas.base import OrderType, Side
from tests.test_sim_helpers import SPOT, SWAP, T0, D, Sim, make_config, of, one, seeded, spot_market, swap_market
from venues.protocol import OrderRequest
from venues.sim.book import Level

USDC_SPOT = "BTC/USDC"  # a second spot market of BTC: its loans are valued on BTC/USDT, the first listed


def refusal(events: list[Any]) -> tuple[str | None, str | None]:
    """The reason and message of the one order event, which must be a rejection."""
    update = one(events, OrderUpdate)
    assert (update.status, update.filled, update.remaining) == ("rejected", D("0"), update.amount)
    return update.reason, update.message


def status(events: list[Any]) -> str:
    return of(events, OrderUpdate)[-1].status


def with_usdt(usdt: str, **config: Any) -> Sim:
    return seeded(make_config(accounts={"main": {"USDT": D(usdt)}}, **config))


# ---------------------------------------------------------------------------- every refusal, word for word


@pytest.mark.parametrize(
    ("order", "reason", "message"),
    [
        (dict(side="buy", amount="0", price="99"), "invalid", "amount must be positive, got 0"),
        (dict(side="sell", amount="0.001", price="6000"), "below_min", "amount 0.001 is below the minimum 0.002"),
        (dict(side="buy", amount="0.0025", price="99"), "invalid", "amount 0.0025 is not a multiple of the lot size 0.001"),
        (dict(side="buy", amount="1", price=None, order_type="limit"), "invalid", "a limit order needs a positive price"),
        (dict(side="buy", amount="1", price="99.95"), "off_tick", "price 99.95 is not on the tick size 0.1"),
        (dict(side="buy", amount="0.04", price="100"), "below_min", "notional 4.00 is below the minimum 5"),
        # the notional of a limit order is priced at its limit, not at the last price (0.06 x 100 = 6 would pass)
        (dict(side="buy", amount="0.06", price="50"), "below_min", "notional 3.00 is below the minimum 5"),
        (
            dict(side="buy", amount="1", price="100.1", post_only=True),
            "post_only_would_take",
            "post-only buy at 100.1 would take against 100.1",
        ),
        (
            dict(side="sell", amount="1", price="99.9", time_in_force="PO"),
            "post_only_would_take",
            "post-only sell at 99.9 would take against 99.9",
        ),
        (dict(side="buy", amount="1", price="99.5", time_in_force="FOK"), "upstream_rejected", "fill-or-kill order cannot fill now"),
        (dict(side="sell", amount="1", price="100", time_in_force="FOK"), "upstream_rejected", "fill-or-kill order cannot fill now"),
        (
            dict(side="buy", amount="11", price="100.2", time_in_force="FOK"),
            "upstream_rejected",
            "fill-or-kill order for 11 finds 10 within its price",
        ),
        (dict(side="sell", amount="1", price="101", reduce_only=True), "reduce_only_would_increase", "reduce-only sell with position 0"),
        (dict(side="buy", amount="1", price="99", reduce_only=True), "reduce_only_would_increase", "reduce-only buy with position 0"),
        (dict(side="buy", amount="600", price="99"), "insufficient_balance", "needs 11909.70000000 USDT of margin, 10000.00000000 free"),
        (dict(side="sell", amount="2", symbol=SPOT), "insufficient_balance", "needs 2 BTC, 1.00000000 free"),
        (
            dict(side="buy", amount="200", price="99.5", symbol=SPOT),
            "insufficient_balance",
            "needs 19939.80000000 USDT, 10000.00000000 free",
        ),
    ],
    ids=[
        "zero-amount",
        "below-min-amount",
        "off-lot",
        "limit-without-price",
        "off-tick",
        "below-min-notional",
        "notional-at-the-limit-price",
        "post-only-buy",
        "tif-po-sell",
        "fok-buy-below-the-ask",
        "fok-sell-above-the-bid",
        "fok-beyond-the-book",
        "reduce-only-sell-flat",
        "reduce-only-buy-flat",
        "swap-margin",
        "spot-sell-holdings",
        "spot-buy-quote",
    ],
)
def test_each_refusal_says_why_in_its_message(order: dict[str, Any], reason: str, message: str) -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("5")), spot_market()]))
    args = dict(order)
    events = sim.place("bad", args.pop("side"), args.pop("amount"), args.pop("price", None), **args)
    assert refusal(events) == (reason, message)
    assert events == [sim.order("bad")]  # one event, the order as the venue keeps it


def test_an_order_on_a_market_without_a_price_is_refused_as_the_exchange_would() -> None:
    assert refusal(Sim().place("early", "buy", "1", "100")) == ("upstream_rejected", "BTC/USDT:USDT has no price yet")


@pytest.mark.parametrize(
    ("config", "reason", "message"),
    [
        (dict(margin_enabled=False), "margin_unavailable", "margin trading is disabled on this venue"),
        (dict(borrow_limit={"BTC": D("0")}), "margin_unavailable", "BTC cannot be borrowed"),
        (dict(borrow_limit={"BTC": D("0.5")}), "insufficient_collateral", "a loan of 1 BTC would exceed the limit 0.5"),
        (
            dict(accounts={"main": {"USDT": D("49.99999999")}}),
            "insufficient_collateral",
            "a loan of 1 BTC needs 50.00000000 USDT more collateral, 49.99999999 free",
        ),
    ],
    ids=["margin-disabled", "not-borrowable", "beyond-the-limit", "collateral"],
)
def test_each_margin_refusal_says_why_in_its_message(config: dict[str, Any], reason: str, message: str) -> None:
    sim = seeded(make_config(**config))  # holds 1 BTC unless told otherwise: selling 2 (or 1 with none) borrows 1
    held = sim.state.accounts["main"].balances.get("BTC", D("0"))
    assert refusal(sim.place("short", "sell", str(held + 1), symbol=SPOT, use_margin=True)) == (reason, message)


def test_a_refusal_states_a_negative_free_amount_as_zero() -> None:
    sim = with_usdt("-1")  # an account in debt has nothing free, and says so as zero
    assert refusal(sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)) == (
        "insufficient_collateral",
        "a loan of 1 BTC needs 50.00000000 USDT more collateral, 0 free",
    )
    sim = seeded(make_config(accounts={"main": {"USDT": D("10"), "BTC": D("-0.5")}}))  # a short holding, no loan recorded
    assert refusal(sim.place("sell", "sell", "1", symbol=SPOT)) == ("insufficient_balance", "needs 1 BTC, 0 free")


# ---------------------------------------------------------------------------- limits at their boundaries


def test_an_amount_exactly_at_the_minimum_is_accepted() -> None:
    sim = seeded()
    assert status(sim.place("min", "sell", "0.002", "2500")) == "open"  # notional 5: at both minimums


def test_a_notional_exactly_at_the_minimum_is_accepted() -> None:
    sim = seeded()
    assert status(sim.place("min", "buy", "0.05", "100")) == "open"  # 5.00


def test_a_notional_exactly_at_what_the_venue_accepts_is_accepted_and_one_lot_more_is_not() -> None:
    sim = with_usdt("1e15")
    assert status(sim.place("max", "buy", "100000000000000", "10")) == "open"  # 1e15
    assert refusal(sim.place("over", "buy", "100000000000000.001", "10")) == (
        "invalid",
        "notional 1000000000000000.010 is above what the venue accepts (1E+15)",
    )


def test_a_swap_order_whose_margin_and_fee_are_exactly_what_is_free_is_accepted() -> None:
    # 1 at 99: 99 / 5 of margin + 99 x 0.0005 of taker fee = 19.8495
    assert status(with_usdt("19.8495").place("exact", "buy", "1", "99")) == "open"
    assert refusal(with_usdt("19.8494").place("short", "buy", "1", "99")) == (
        "insufficient_balance",
        "needs 19.84950000 USDT of margin, 19.84940000 free",
    )


def test_a_spot_buy_whose_cost_and_fee_are_exactly_what_is_free_is_accepted() -> None:
    # 1 at 99.5 with the 0.2% taker fee reserved: 99.699
    assert status(with_usdt("99.699").place("exact", "buy", "1", "99.5", symbol=SPOT)) == "open"
    assert refusal(with_usdt("99.698").place("short", "buy", "1", "99.5", symbol=SPOT)) == (
        "insufficient_balance",
        "needs 99.69900000 USDT, 99.69800000 free",
    )


def test_a_spot_sell_of_exactly_what_is_held_needs_no_loan() -> None:
    sim = seeded(make_config(accounts={"main": {"BTC": D("1")}}, margin_enabled=False))
    assert one(sim.place("all", "sell", "1", symbol=SPOT), Fill).amount == D("1")


def test_a_loan_whose_collateral_is_exactly_what_is_free_is_accepted() -> None:
    # 1 BTC at the last price 100 needs half its value free: 50 USDT
    assert status(with_usdt("50").place("short", "sell", "1", symbol=SPOT, use_margin=True)) == "closed"


def test_a_second_loan_needs_collateral_only_for_what_it_adds() -> None:
    # The first loan of 1 BTC sells at 99.9 (fee 0.1998): 100.2998 + 99.7002 = 200 USDT, of which
    # 150 back the loan (its value and half again). A second 1 BTC needs 50 more: exactly what is free.
    sim = with_usdt("100.2998")
    sim.place("first", "sell", "1", symbol=SPOT, use_margin=True)
    assert status(sim.place("second", "sell", "1", symbol=SPOT, use_margin=True)) == "closed"
    assert sim.state.accounts["main"].borrowed == {"BTC": D("2")}

    sim = with_usdt("100.2997")
    sim.place("first", "sell", "1", symbol=SPOT, use_margin=True)
    assert refusal(sim.place("second", "sell", "1", symbol=SPOT, use_margin=True)) == (
        "insufficient_collateral",
        "a loan of 2 BTC needs 50.00000000 USDT more collateral, 49.99990000 free",
    )


# ---------------------------------------------------------------------------- what a taker is priced at


def book_sim(usdt: str) -> Sim:
    """Depth 5 a level: a buy of 12 at 100.2 takes 5 at 100.1 and 5 at 100.2 (1001.5)."""
    return seeded(make_config(markets=[swap_market(book_depth=D("5")), spot_market()], accounts={"main": {"USDT": D(usdt)}}))


def test_an_ioc_order_is_priced_at_the_levels_it_takes_only() -> None:
    # 1001.5 / 5 + 1001.5 x 0.0005 = 200.80075: the 2 it cannot take do not rest, so need no margin
    events = book_sim("200.80075").place("ioc", "buy", "12", "100.2", time_in_force="IOC")
    assert sum(f.amount for f in of(events, Fill)) == D("10")
    assert status(events) == "expired"


def test_a_limit_order_that_takes_and_rests_is_priced_at_the_levels_plus_the_rest_at_its_limit() -> None:
    # 1001.5 + 2 x 100.2 = 1201.9: 240.38 of margin + 0.60095 of fee
    sim = book_sim("240.98095")
    assert status(sim.place("gtc", "buy", "12", "100.2")) == "open"
    assert refusal(book_sim("200.80075").place("gtc", "buy", "12", "100.2")) == (
        "insufficient_balance",
        "needs 240.98095000 USDT of margin, 200.80075000 free",
    )


def test_a_market_order_ignores_a_price_it_carries() -> None:
    sim = seeded()
    events = sim.place("mkt", "buy", "1", "50", order_type="market")
    assert (one(events, Fill).price, status(events)) == (D("100.1"), "closed")


def test_check_answers_the_levels_a_taker_fills_at_and_none_for_an_order_that_rests() -> None:
    sim = seeded()
    acct = sim.state.accounts["main"]

    def check(side: Side, price: str | None, **flags: Any) -> list[Level] | None:
        kind: OrderType = "market" if price is None else "limit"
        limit = None if price is None else D(price)
        request = OrderRequest(symbol=SWAP, client_order_id="q", side=side, order_type=kind, amount=D("1"), price=limit, **flags)
        return sim.engine.checks.check(sim.state, acct, request)

    assert check("buy", "99.5") is None
    assert check("sell", "100") is None  # between the bid and the ask: it rests
    assert check("buy", "99.5", time_in_force="IOC") is None
    assert check("buy", None) == [Level(D("100.1"), D("1"))]
    assert check("sell", "99") == [Level(D("99.9"), D("1"))]
    assert sim.state.markets[SWAP].ask_taken == sim.state.markets[SWAP].bid_taken == D("0")  # checking takes nothing


def test_a_post_only_sell_between_the_bid_and_the_ask_rests() -> None:
    sim = seeded()
    update = one(sim.place("po", "sell", "1", "100", post_only=True), OrderUpdate)
    assert (update.status, update.price, update.post_only) == ("open", D("100"), True)


# ---------------------------------------------------------------------------- reduce-only


def test_reduce_only_is_refused_in_the_direction_of_a_small_long() -> None:
    sim = seeded()
    sim.place("long", "buy", "0.5")
    assert refusal(sim.place("r", "buy", "0.5", "99", reduce_only=True)) == (
        "reduce_only_would_increase",
        "reduce-only buy with position 0.5",
    )


def test_a_marketable_reduce_only_order_without_a_position_is_refused() -> None:
    sim = seeded()
    assert refusal(sim.place("r", "sell", "1", reduce_only=True)) == ("reduce_only_would_increase", "reduce-only sell with position 0")
    assert sim.state.markets[SWAP].bid_taken == D("0")


def test_a_reduce_only_buy_closes_a_short_and_is_capped_at_it() -> None:
    sim = seeded()
    sim.place("short", "sell", "1")
    events = sim.place("r", "buy", "2", reduce_only=True)
    assert [(f.price, f.amount) for f in of(events, Fill)] == [(D("100.1"), D("1"))]
    assert [(u.status, u.filled) for u in of(events, OrderUpdate)] == [("open", D("0")), ("open", D("1")), ("canceled", D("1"))]
    assert sim.position().contracts == D("0")
    assert sim.state.markets[SWAP].ask_taken == D("1")


def test_a_reduce_only_taker_walks_the_book_only_for_the_position() -> None:
    # Depth 1 a level: the 2 asked would walk two levels, the position of 1 walks one.
    sim = seeded(make_config(markets=[swap_market(book_depth=D("1")), spot_market()]))
    sim.place("long", "buy", "1")
    events = sim.place("r", "sell", "2", reduce_only=True)
    assert [(f.price, f.amount) for f in of(events, Fill)] == [(D("99.9"), D("1"))]
    final = of(events, OrderUpdate)[-1]
    assert (final.status, final.filled, final.reason) == ("canceled", D("1"), None)
    assert sim.state.markets[SWAP].bid_taken == D("1")


def test_reduce_only_means_nothing_on_a_spot_market() -> None:
    sim = seeded()
    events = sim.place("spot", "buy", "1", symbol=SPOT, reduce_only=True)
    assert [(f.price, f.amount) for f in of(events, Fill)] == [(D("100.1"), D("1"))]
    assert (status(events), sim.balance("BTC").total) == ("closed", D("2"))


# ---------------------------------------------------------------------------- the collateral a buy frees by repaying a loan


def short_sim(usdt: str = "200") -> Sim:
    """Sold 1 BTC it did not have at 99.9: owes 1 BTC (worth 100, backed by 150 USDT)."""
    sim = with_usdt(usdt)
    sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)
    return sim


def test_a_buy_is_credited_with_the_collateral_of_the_loan_it_repays_beyond_what_resting_buys_repay() -> None:
    sim = short_sim()
    assert status(sim.place("rb", "buy", "0.4", "90", symbol=SPOT)) == "open"  # repays 0.4 of the loan when it fills
    assert status(sim.place("rs", "sell", "0.3", "110", symbol=SPOT, use_margin=True)) == "open"  # a sell repays nothing
    assert status(sim.place("perp", "buy", "1", "90")) == "open"  # a perpetual buys no coin
    # 2 at 100.1 with its fee: 200.6004, less the collateral of the 0.6 it repays (0.6 x 100 x 1.5 = 90).
    # Free: 299.7002 - 150 for the loan - 36.072 for the resting spot buy - 18 of swap margin.
    assert refusal(sim.place("cover", "buy", "2", symbol=SPOT)) == ("insufficient_balance", "needs 110.60040000 USDT, 95.62820000 free")


def test_a_buy_repays_nothing_of_a_loan_resting_buys_repay_in_full() -> None:
    sim = short_sim("400")
    sim.place("rb", "buy", "1.5", "90", symbol=SPOT)  # 1.5 > the 1 owed
    # 2 at 100.1 with its fee: 200.6004, nothing off. Free: 499.7002 - 150 - 135.27 of the resting buy.
    assert refusal(sim.place("cover", "buy", "2.2", symbol=SPOT)) == ("insufficient_balance", "needs 220.66044000 USDT, 214.43020000 free")


def test_a_loan_below_one_coin_is_credited_too() -> None:
    sim = seeded(make_config(accounts={"main": {"USDT": D("100"), "BTC": D("0.5")}}))
    sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)  # owes 0.5; 199.7002 USDT, 75 of it backs the loan
    # 2 at 100.1 with its fee: 200.6004, less 0.5 x 100 x 1.5 = 75.
    assert refusal(sim.place("cover", "buy", "2", symbol=SPOT)) == ("insufficient_balance", "needs 125.60040000 USDT, 124.70020000 free")


# ---------------------------------------------------------------------------- loans on a second market of the same coin


def two_quotes(usdt: str, *, usdt_price: str | None = "100", usdc_price: str = "200", usdc: str = "0") -> Sim:
    markets = [swap_market(), spot_market(), spot_market(symbol=USDC_SPOT, start_price=D(usdc_price))]
    sim = Sim(make_config(markets=markets, accounts={"main": {"USDT": D(usdt), "USDC": D(usdc)}}))
    prints = [(SWAP, "100", "10"), (USDC_SPOT, usdc_price, "10")] + ([(SPOT, usdt_price, "10")] if usdt_price else [])
    sim.ticks(prints, ts=T0)
    return sim


def test_a_loan_is_valued_on_its_coins_first_spot_market_whichever_market_sells_it() -> None:
    sim = two_quotes("49")
    assert refusal(sim.place("short", "sell", "1", symbol=USDC_SPOT, use_margin=True)) == (
        "insufficient_collateral",
        "a loan of 1 BTC needs 50.00000000 USDT more collateral, 49.00000000 free",  # at BTC/USDT's 100, not 200
    )


def test_a_loan_is_valued_at_the_selling_markets_price_until_its_own_market_has_one() -> None:
    sim = two_quotes("49", usdt_price=None)
    assert refusal(sim.place("short", "sell", "1", symbol=USDC_SPOT, use_margin=True)) == (
        "insufficient_collateral",
        "a loan of 1 BTC needs 100.00000000 USDT more collateral, 49.00000000 free",
    )


def test_a_buy_in_another_quote_frees_no_collateral_of_the_loan_it_repays() -> None:
    sim = two_quotes("200", usdc="100")
    sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)  # the loan is backed in USDT
    # 0.5 at 200.1 with its fee: 100.2501 USDC, none of it offset by the USDT that backs the loan
    assert refusal(sim.place("cover", "buy", "0.5", symbol=USDC_SPOT)) == (
        "insufficient_balance",
        "needs 100.25010000 USDC, 100.00000000 free",
    )


def test_checks_change_nothing_when_they_refuse() -> None:
    sim = short_sim()
    before = (dict(sim.state.accounts["main"].balances), dict(sim.state.accounts["main"].borrowed))
    refusal(sim.place("cover", "buy", "5", symbol=SPOT, time_in_force="FOK"))
    assert (sim.state.accounts["main"].balances, sim.state.accounts["main"].borrowed) == before
    assert sim.state.markets[SPOT].ask_taken == Decimal(0)
