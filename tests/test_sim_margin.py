"""Spot margin as strict as a venue's: finite borrow limits, collateral, loans as liabilities, hourly interest.

Reference: spot `BTC/USDT` at 100 (bid 99.9 / ask 100.1), `spot_margin_ratio` 0.5 (the account
keeps half a loan's value as its own collateral).
"""

from __future__ import annotations

from typing import Any

from schemas.account import Balance, BorrowInterest, Fill, OrderUpdate, Position
from schemas.subjects import subject_of
from tests.test_sim_helpers import HOUR, SPOT, SPOT_MAKER, SPOT_TAKER, T0, D, Sim, make_config, of, one, seeded, spot_market, swap_market
from venues.sim.journal import Fund


def margin(accounts: dict[str, dict[str, Any]] | None = None, **config: Any) -> Sim:
    return seeded(make_config(accounts=accounts or {"main": {"USDT": D("10000"), "BTC": D("1")}}, **config))


def rejected(events: list[Any]) -> tuple[str, str | None]:
    update = one(events, OrderUpdate)
    return update.status, update.reason


def test_an_asset_without_its_own_limit_can_be_borrowed_up_to_the_default_value_at_its_start_price() -> None:
    sim = margin(default_borrow_value=D("1000"))  # 1000 USDT at 100: 10 BTC
    assert sim.engine.config.borrow_limits() == {"BTC": D("10")}
    assert rejected(sim.place("s", "sell", "12", symbol=SPOT, use_margin=True)) == ("rejected", "insufficient_collateral")
    assert sum(f.amount for f in of(sim.place("ok", "sell", "11", symbol=SPOT, use_margin=True), Fill)) == D("11")
    assert sim.state.accounts["main"].borrowed == {"BTC": D("10")}


def test_an_asset_with_a_zero_limit_or_no_spot_market_cannot_be_borrowed() -> None:
    sim = margin(borrow_limit={"BTC": D("0")})
    assert rejected(sim.place("s", "sell", "2", symbol=SPOT, use_margin=True)) == ("rejected", "margin_unavailable")
    assert sim.engine.config.borrow_limits() == {"BTC": D("0")}  # USDT is no spot market's base: not even listed


def test_a_margin_sell_beyond_what_the_equity_supports_is_refused_for_collateral() -> None:
    sim = margin(accounts={"main": {"USDT": D("100")}})  # 100 of equity backs a loan worth 200 at ratio 0.5
    assert rejected(sim.place("s", "sell", "2.1", symbol=SPOT, use_margin=True)) == ("rejected", "insufficient_collateral")
    assert sum(f.amount for f in of(sim.place("ok", "sell", "1.9", symbol=SPOT, use_margin=True), Fill)) == D("1.9")


def test_resting_margin_sells_share_one_collateral() -> None:
    sim = margin(accounts={"main": {"USDT": D("100")}})
    assert one(sim.place("a", "sell", "1.5", "101", symbol=SPOT, use_margin=True), OrderUpdate).status == "open"
    assert rejected(sim.place("b", "sell", "0.6", "101", symbol=SPOT, use_margin=True)) == ("rejected", "insufficient_collateral")


def test_a_second_margin_sell_counts_the_existing_loan_once() -> None:
    sim = margin(accounts={"main": {"USDT": D("10000")}}, borrow_limit={"BTC": D("1.5")})
    sim.place("first", "sell", "1", symbol=SPOT, use_margin=True)
    assert sum(f.amount for f in of(sim.place("second", "sell", "0.5", symbol=SPOT, use_margin=True), Fill)) == D("0.5")
    assert sim.state.accounts["main"].borrowed == {"BTC": D("1.5")}
    assert rejected(sim.place("third", "sell", "0.1", symbol=SPOT, use_margin=True)) == ("rejected", "insufficient_collateral")


def test_the_proceeds_of_a_margin_sell_back_its_loan_and_are_not_free_for_other_trades() -> None:
    sim = margin(accounts={"main": {"USDT": D("100")}})
    sim.place("short", "sell", "1.9", symbol=SPOT, use_margin=True)  # + 189.81 USDT, owes 1.9 BTC
    assert sim.balance("USDT").total > D("289")
    # 20 of margin for a swap would be plenty if the proceeds were free; they back the loan
    # (equity 100 - 0.38 of fees keeps 95 of collateral: 4.43 is free).
    assert rejected(sim.place("perp", "buy", "1", "99")) == ("rejected", "insufficient_balance")


def test_a_short_on_margin_can_always_be_bought_back() -> None:
    sim = margin(accounts={"main": {"USDT": D("100")}})
    sim.place("short", "sell", "1.9", symbol=SPOT, use_margin=True)
    sim.tick("104", symbol=SPOT)  # the short lost money: even less is free
    fill = one(sim.place("cover", "buy", "1.9", symbol=SPOT), Fill)
    assert fill.amount == D("1.9")
    assert sim.state.accounts["main"].borrowed == {"BTC": D("0")}


def test_a_deposit_of_a_borrowed_coin_repays_the_loan() -> None:
    sim = margin()
    sim.place("short", "sell", "3", symbol=SPOT, use_margin=True)  # owes 2
    sim.apply(Fund(account="main", asset="BTC", amount=D("1.5")))
    assert sim.state.accounts["main"].borrowed == {"BTC": D("0.5")}
    assert sim.balance("BTC").total == D("-0.5")


def test_a_withdrawal_that_would_leave_a_loan_without_collateral_is_refused() -> None:
    sim = margin(accounts={"main": {"USDT": D("100")}})
    sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)  # backs 1 x 100 x 1.5 of its ~199.8 USDT
    before = sim.balance("USDT").total
    assert sim.apply(Fund(account="main", asset="USDT", amount=D("-100"))) == []
    assert sim.balance("USDT").total == before
    assert one(sim.apply(Fund(account="main", asset="USDT", amount=D("-40"))), Balance).total == before - 40


# ---------------------------------------------------------------------------- spot trading and the basics of margin


def test_spot_market_buy_moves_quote_to_base_and_charges_the_fee_in_quote() -> None:
    sim = seeded()
    events = sim.place("b", "buy", "0.5", symbol=SPOT)
    fill = one(events, Fill)
    assert (fill.price, fill.liquidity, fill.fee_currency) == (D("100.1"), "taker", "USDT")
    assert fill.fee_cost == D("100.1") * D("0.5") * SPOT_TAKER == D("0.1001")
    assert of(events, Position) == []
    totals = {b.asset: b.total for b in of(events, Balance)}
    assert totals == {"BTC": D("1.5"), "USDT": D("10000") - D("50.05") - D("0.1001")}
    assert sim.state.accounts["main"].positions == {}


def test_spot_resting_buy_reserves_quote_then_fills_as_maker() -> None:
    sim = seeded()
    sim.place("b", "buy", "0.5", "99.5", symbol=SPOT)
    reserved = D("99.5") * D("0.5") * (1 + SPOT_TAKER)
    usdt = sim.balance("USDT")
    assert (usdt.used, usdt.free, usdt.total) == (reserved, D("10000") - reserved, D("10000"))

    fill = one(sim.tick("99.5", symbol=SPOT), Fill)
    assert (fill.liquidity, fill.fee_cost) == ("maker", D("99.5") * D("0.5") * SPOT_MAKER)
    usdt = sim.balance("USDT")
    assert (usdt.used, usdt.total) == (D("0"), D("10000") - D("49.75") - fill.fee_cost)
    assert sim.balance("BTC").total == D("1.5")


def test_spot_buy_beyond_the_quote_balance_is_rejected() -> None:
    sim = seeded()
    update = one(sim.place("b", "buy", "100", "99.5", symbol=SPOT), OrderUpdate)  # reserves 9969.9 of 10000
    assert update.status == "open"
    update = one(sim.place("b2", "buy", "1", "99.5", symbol=SPOT), OrderUpdate)  # needs 99.699, 30.1 free
    assert (update.status, update.reason) == ("rejected", "insufficient_balance")


def test_spot_sell_beyond_holdings_without_margin_is_rejected() -> None:
    sim = seeded()
    update = one(sim.place("s", "sell", "2", symbol=SPOT), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "insufficient_balance")
    assert sim.balance("BTC").total == D("1")


def test_spot_sell_on_margin_borrows_the_shortfall_and_buying_back_repays_it() -> None:
    sim = seeded()
    fill = one(sim.place("s", "sell", "2", symbol=SPOT, use_margin=True), Fill)
    assert fill.price == D("99.9")
    account = sim.state.accounts["main"]
    assert account.borrowed == {"BTC": D("1")}
    assert account.balances["BTC"] == D("-1")
    assert account.balances["USDT"] == D("10000") + D("199.8") - fill.fee_cost

    sim.place("b", "buy", "1", symbol=SPOT)
    assert account.borrowed["BTC"] == D("0")
    assert account.balances["BTC"] == D("0")


def test_spot_sell_within_holdings_does_not_borrow() -> None:
    sim = seeded()
    sim.place("s", "sell", "0.5", symbol=SPOT, use_margin=True)
    assert sim.state.accounts["main"].borrowed == {}
    assert sim.balance("BTC").total == D("0.5")


def test_spot_margin_sell_is_refused_when_margin_is_disabled() -> None:
    sim = seeded(make_config(margin_enabled=False))
    update = one(sim.place("s", "sell", "2", symbol=SPOT, use_margin=True), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "margin_unavailable")


def test_spot_margin_sell_beyond_the_borrow_limit_is_refused() -> None:
    sim = seeded(make_config(borrow_limit={"BTC": D("0.5")}))
    update = one(sim.place("s", "sell", "2", symbol=SPOT, use_margin=True), OrderUpdate)  # would borrow 1
    assert (update.status, update.reason) == ("rejected", "insufficient_collateral")
    events = sim.place("ok", "sell", "1.5", symbol=SPOT, use_margin=True)  # borrows exactly 0.5
    assert one(events, Fill).amount == D("1.5")
    assert sim.state.accounts["main"].borrowed == {"BTC": D("0.5")}


def test_resting_margin_sells_cannot_borrow_beyond_the_limit_together() -> None:
    sim = seeded(make_config(borrow_limit={"BTC": D("0.5")}, accounts={"main": {"USDT": D("10000")}}))
    assert one(sim.place("s1", "sell", "0.5", "100.5", symbol=SPOT, use_margin=True), OrderUpdate).status == "open"
    sim.place("s2", "sell", "0.5", "100.5", symbol=SPOT, use_margin=True)
    sim.tick("101", symbol=SPOT)
    assert sim.state.accounts["main"].borrowed.get("BTC", D("0")) <= D("0.5")


def test_a_sell_without_margin_never_leaves_an_unrecorded_short() -> None:
    sim = seeded()  # holds 1 BTC
    sim.place("margin", "sell", "1", "100.5", symbol=SPOT, use_margin=True)
    plain = one(sim.place("plain", "sell", "1", "100.5", symbol=SPOT), OrderUpdate)
    sim.tick("101", symbol=SPOT)
    account = sim.state.accounts["main"]
    # The margin sell reserved the coin: a plain sell of it is refused, and no holding is short
    # without a loan to cover it.
    assert (plain.status, plain.reason) == ("rejected", "insufficient_balance")
    assert account.balances["BTC"] + account.borrowed.get("BTC", D("0")) >= 0


# ---------------------------------------------------------------------------- interest


def interest_sim(**config: Any) -> Sim:
    """Borrowed 1 BTC at T0 (an hour boundary), at 0.1% an hour unless told otherwise."""
    fields: dict[str, Any] = dict(default_borrow_rate=D("0.001"), markets=[swap_market(), spot_market()]) | config
    sim = seeded(make_config(accounts={"main": {"USDT": D("10000")}}, **fields))
    sim.place("short", "sell", "1", symbol=SPOT, use_margin=True)
    return sim


def test_borrow_interest_is_charged_at_each_hour_boundary_in_the_borrowed_asset() -> None:
    sim = interest_sim()
    assert of(sim.tick("100", symbol=SPOT, ts=T0 + HOUR - 500), BorrowInterest) == []

    events = sim.tick("100", symbol=SPOT, ts=T0 + HOUR)
    charge = one(events, BorrowInterest)
    assert (charge.asset, charge.amount_borrowed, charge.interest, charge.interest_rate, charge.period_ms) == (
        "BTC",
        D("1"),
        D("0.001"),
        D("0.001"),
        HOUR,
    )
    assert subject_of(charge) == "acct.sim.main.BTC.interest"
    assert one(events, Balance).total == D("-1.001")
    assert sim.state.accounts["main"].borrowed == {"BTC": D("1.001")}  # owed like the principal
    assert events.index(charge) < events.index(one(events, Balance))

    assert of(sim.tick("100", symbol=SPOT, ts=T0 + HOUR + 500), BorrowInterest) == []  # once per hour
    assert one(sim.tick("100", symbol=SPOT, ts=T0 + 2 * HOUR), BorrowInterest).interest == D("0.00100100")


def test_hours_the_clock_skipped_are_charged_in_one_event() -> None:
    sim = interest_sim()
    charge = one(sim.tick("100", symbol=SPOT, ts=T0 + 3 * HOUR + 10), BorrowInterest)
    assert (charge.interest, charge.interest_rate, charge.period_ms) == (D("0.003"), D("0.003"), 3 * HOUR)
    assert of(sim.tick("100", symbol=SPOT, ts=T0 + 3 * HOUR + 500), BorrowInterest) == []


def test_interest_uses_the_asset_rate_and_rounds_like_money() -> None:
    sim = interest_sim(borrow_rate={"BTC": D("0.0000012345")})
    assert one(sim.tick("100", symbol=SPOT, ts=T0 + HOUR), BorrowInterest).interest == D("0.00000123")


def test_no_interest_is_charged_without_a_loan() -> None:
    sim = interest_sim()
    sim.place("cover", "buy", "1", symbol=SPOT)
    events = sim.tick("100", symbol=SPOT, ts=T0 + HOUR)
    assert of(events, BorrowInterest) == [] and of(events, Balance) == []
