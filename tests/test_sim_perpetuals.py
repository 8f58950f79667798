"""Perpetual positions and funding: entry prices, realized and unrealized PnL, reduce-only, funding payments."""

from __future__ import annotations

from typing import Any

import pytest

from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.market import FundingRate
from tests.test_sim_helpers import HOUR, MINUTE, SWAP, T0, D, Sim, make_config, of, one, seeded, swap_market

# ---------------------------------------------------------------------------- perpetual positions


def test_closing_a_long_higher_realizes_pnl_into_the_settle_balance_minus_fees() -> None:
    sim = seeded()
    buy = one(sim.place("open", "buy", "1"), Fill)  # at the ask 100.1
    sim.tick("110")  # quotes 109.9 / 110.1
    events = sim.place("close", "sell", "1")
    sell = one(events, Fill)
    assert (buy.price, sell.price) == (D("100.1"), D("109.9"))

    pnl = (D("109.9") - D("100.1")) * D("1")
    assert sim.balance("USDT").total == D("10000") + pnl - buy.fee_cost - sell.fee_cost == D("10009.695")
    position = one(events, Position)
    assert (position.side, position.contracts, position.entry_price) == (None, D("0"), None)
    assert (position.realized_pnl, position.unrealized_pnl) == (pnl, D("0"))


def test_closing_a_short_higher_realizes_a_loss() -> None:
    sim = seeded()
    sell = one(sim.place("open", "sell", "2"), Fill)  # at 99.9
    sim.tick("105")
    buy = one(sim.place("close", "buy", "2"), Fill)  # at 105.1
    assert sim.position().realized_pnl == D("-10.4")  # 2 * (99.9 - 105.1)
    assert sim.balance("USDT").total == D("10000") - D("10.4") - sell.fee_cost - buy.fee_cost


def test_adding_to_a_position_averages_the_entry_price() -> None:
    sim = seeded()
    sim.place("a", "buy", "1")  # 100.1
    sim.tick("102")
    sim.place("b", "buy", "1")  # 102.1
    position = sim.position()
    assert (position.contracts, position.entry_price) == (D("2"), D("101.1"))


def test_fill_larger_than_the_opposite_position_flips_it_at_the_fill_price() -> None:
    sim = seeded()
    buy = one(sim.place("long", "buy", "1"), Fill)  # 100.1
    events = sim.place("flip", "sell", "3")  # 99.9
    sell = one(events, Fill)
    position = one(events, Position)
    assert (position.side, position.contracts, position.entry_price) == ("short", D("2"), D("99.9"))
    assert position.realized_pnl == D("-0.2")  # only the closed contract realizes
    assert sim.balance("USDT").total == D("10000") - D("0.2") - buy.fee_cost - sell.fee_cost


@pytest.mark.parametrize(
    ("side", "entry", "expected_side", "upnl"),
    [("buy", "100.1", "long", "9.8"), ("sell", "99.9", "short", "-10.2")],
    ids=["long", "short"],
)
def test_unrealized_pnl_is_signed_contracts_times_mark_minus_entry(side: str, entry: str, expected_side: str, upnl: str) -> None:
    sim = seeded()
    at_fill = one(sim.place("p", side, "2"), Position)
    assert at_fill.mark_price == D("100")
    assert at_fill.unrealized_pnl == (D("2") if side == "buy" else D("-2")) * (D("100") - D(entry))

    events = sim.tick("105", ts=T0 + MINUTE)  # a new minute: the bar closes and positions are marked
    marked = one(events, Position)
    assert (marked.side, marked.contracts, marked.entry_price, marked.mark_price) == (expected_side, D("2"), D(entry), D("105"))
    assert marked.unrealized_pnl == D(upnl)
    assert sim.position().unrealized_pnl == D(upnl)


def test_reduce_only_without_a_position_is_rejected() -> None:
    sim = seeded()
    update = one(sim.place("r", "sell", "1", "101", reduce_only=True), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "reduce_only_would_increase")


def test_reduce_only_in_the_direction_of_the_position_is_rejected() -> None:
    sim = seeded()
    sim.place("long", "buy", "1")
    update = one(sim.place("r", "buy", "1", "99", reduce_only=True), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "reduce_only_would_increase")


def test_reduce_only_market_order_is_capped_at_the_position_and_the_rest_canceled() -> None:
    sim = seeded()
    sim.place("long", "buy", "1")
    events = sim.place("r", "sell", "2", reduce_only=True)
    assert one(events, Fill).amount == D("1")
    assert [(u.status, u.filled) for u in of(events, OrderUpdate)] == [("open", D("0")), ("open", D("1")), ("canceled", D("1"))]
    assert sim.position().contracts == D("0")


def test_ioc_reduce_only_limit_larger_than_the_position_does_not_rest() -> None:
    sim = seeded()
    sim.place("long", "buy", "0.5")
    events = sim.place("r", "sell", "1", "99", reduce_only=True, time_in_force="IOC")
    assert one(events, Fill).amount == D("0.5")
    assert of(events, OrderUpdate)[-1].status in ("expired", "canceled")
    assert sim.engine.open_orders(sim.state, "main", None) == []


# ---------------------------------------------------------------------------- funding


def funding_sim(**market_overrides: Any) -> Sim:
    """Funding that stays at its mean (no volatility): the walk itself is tested in test_sim_funding.py."""
    config = make_config(
        markets=[swap_market(**({"funding_interval_h": 1, "funding_volatility": D(0)} | market_overrides))],
        accounts={"main": {"USDT": D("10000")}, "other": {"USDT": D("10000")}},
    )
    return seeded(config, ts=T0 + HOUR - 2_000, spot=None)  # the first swap tick sets the next funding time


def test_first_swap_tick_schedules_the_next_funding_time() -> None:
    sim = funding_sim()
    assert sim.state.markets[SWAP].next_funding_time == T0 + HOUR


def test_long_pays_and_short_receives_funding_when_a_tick_crosses_the_funding_time() -> None:
    sim = funding_sim()
    sim.place("l", "buy", "2")
    sim.place("s", "sell", "2", account="other")
    long_before, short_before = sim.balance("USDT").total, sim.balance("USDT", "other").total

    events = sim.tick("100", ts=T0 + HOUR - 500)  # before the funding time: nothing
    assert of(events, FundingRate) == [] and of(events, Balance) == []

    events = sim.tick("110", ts=T0 + HOUR)  # a walk without volatility stays at its mean, 0.0001
    assert sim.state.markets[SWAP].funding_rate == D("0.0001")
    payment = D("2") * D("110") * D("0.0001")  # contracts * mark * rate
    assert sim.balance("USDT").total == long_before - payment
    assert sim.balance("USDT", "other").total == short_before + payment
    assert {b.account for b in of(events, Balance)} == {"main", "other"}
    assert [f.next_funding_time for f in of(events, FundingRate)][-1] == T0 + 2 * HOUR
    assert sim.state.markets[SWAP].next_funding_time == T0 + 2 * HOUR

    events = sim.tick("110", ts=T0 + HOUR + 500)  # paid once per funding time
    assert of(events, Balance) == []
    assert sim.balance("USDT").total == long_before - payment


def test_long_receives_funding_when_the_rate_is_negative() -> None:
    sim = funding_sim(funding_mean=D("-0.003"))
    sim.place("l", "buy", "2")
    before = sim.balance("USDT").total
    sim.tick("99", ts=T0 + HOUR - 500)
    sim.tick("99", ts=T0 + HOUR)
    assert sim.state.markets[SWAP].funding_rate == D("-0.003")
    assert sim.balance("USDT").total == before + D("2") * D("99") * D("0.003")


def test_flat_accounts_pay_no_funding() -> None:
    sim = funding_sim()
    events = sim.tick("100", ts=T0 + HOUR)
    assert of(events, Balance) == []
    assert sim.balance("USDT").total == D("10000")
