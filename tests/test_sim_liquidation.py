"""Perpetual liquidation: below maintenance margin, the venue closes the position at the mark.

Reference: maintenance margin 5% of notional, liquidation fee 1%, leverage 5. An account with
100 USDT buys 4 contracts at the ask 100.1 (fee 0.2002), so at a mark p its equity is
99.7998 + 4 (p - 100.1) and its maintenance margin 0.2 p: it is liquidated below p = 79.105.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from bus.contract import Inbound
from schemas.account import Balance, Liquidation, OrderUpdate, Position
from schemas.subjects import subject_of
from tests.test_sim_helpers import SPOT, SWAP, D, Sim, make_config, of, one, seeded, spot_market, swap_market
from venues.sim.engine import EngineState
from venues.sim.journal import Fund, Print, Quote, Tick, journal_subject

RATES = dict(maintenance_margin_rate=D("0.05"), liquidation_fee_rate=D("0.01"))
ENTRY_BALANCE = D("100") - D("100.1") * 4 * D("0.0005")  # 99.7998


def long_sim(usdt: str = "100") -> Sim:
    markets = [swap_market(book_depth=D("100")), spot_market()]
    sim = seeded(make_config(markets=markets, accounts={"main": {"USDT": D(usdt)}}, **RATES))
    sim.place("long", "buy", "4")
    return sim


def test_a_long_whose_equity_falls_below_maintenance_is_closed_at_the_mark_with_a_fee() -> None:
    sim = long_sim()
    sim.place("dip", "buy", "0.1", "70")  # open orders on the symbol are canceled first
    events = sim.tick("79")

    liquidation = one(events, Liquidation)
    equity = ENTRY_BALANCE + 4 * (D("79") - D("100.1"))  # 15.3998
    assert (liquidation.side, liquidation.contracts, liquidation.price) == ("long", D("4"), D("79"))
    assert (liquidation.fee, liquidation.fee_currency) == (D("3.16"), "USDT")  # 1% of 316
    assert liquidation.margin_ratio == (D("15.8") / equity).quantize(D("0.000001"))
    assert subject_of(liquidation) == "acct.sim.main.BTC-USDT-USDT.liquidation"

    canceled = one(events, OrderUpdate)
    assert (canceled.client_order_id, canceled.status) == ("dip", "canceled")
    position = one(events, Position)
    assert (position.side, position.contracts, position.realized_pnl) == (None, D("0"), D("-84.4"))
    assert one(events, Balance).total == equity - D("3.16")
    account_events = [e for e in events if isinstance(e, (OrderUpdate, Liquidation, Position, Balance))]
    assert [type(e) for e in account_events] == [OrderUpdate, Liquidation, Position, Balance]
    assert sim.engine.open_orders(sim.state, "main", None) == []


def test_a_position_just_above_maintenance_is_not_liquidated() -> None:
    sim = long_sim()
    assert of(sim.tick("80"), Liquidation) == []
    assert sim.position().contracts == D("4")


def test_a_short_is_liquidated_when_the_price_rises() -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("100")), spot_market()], accounts={"main": {"USDT": D("100")}}, **RATES))
    sim.place("short", "sell", "4")  # at the bid 99.9; liquidated above about 118.9
    assert of(sim.tick("118"), Liquidation) == []
    liquidation = one(sim.tick("119"), Liquidation)
    assert (liquidation.side, liquidation.contracts, liquidation.price) == ("short", D("4"), D("119"))


def test_a_liquidated_account_is_not_liquidated_again() -> None:
    sim = long_sim()
    one(sim.tick("79"), Liquidation)
    assert of(sim.tick("60"), Liquidation) == []


def test_a_loss_beyond_the_balance_is_the_insurance_funds_and_no_fee_is_charged() -> None:
    sim = long_sim()
    events = sim.tick("50")  # a gap far through the liquidation price: the loss is 200.4
    liquidation = one(events, Liquidation)
    assert (liquidation.fee, liquidation.margin_ratio) == (D("0"), None)
    assert one(events, Balance).total == D("0")


def test_spot_loans_count_against_the_equity_that_backs_perpetual_positions() -> None:
    markets = [swap_market(book_depth=D("100")), spot_market()]
    sim = seeded(make_config(markets=markets, accounts={"plain": {"USDT": D("100")}, "short": {"USDT": D("100")}}, **RATES))
    sim.place("long", "buy", "4", account="plain")
    sim.place("loan", "sell", "0.1", symbol=SPOT, use_margin=True, account="short")
    sim.place("long", "buy", "4", account="short")
    sim.tick("150", symbol=SPOT)  # the borrowed coin is now worth 15, sold for 9.99
    events = sim.tick("79.5")
    assert [liq.account for liq in of(events, Liquidation)] == ["short"]


def test_liquidation_after_a_checkpoint_is_the_same_as_without_one() -> None:
    sim = long_sim()
    restored = msgspec.json.decode(msgspec.json.encode(sim.state), type=EngineState)
    entries: list[Any] = [Tick(step=10, ts=sim.ts + 500, prints=[Print(SWAP, Decimal("79"), Decimal("1"))]), Quote(step=10)]
    entries.append(Fund(account="main", asset="USDT", amount=D("1")))
    original: list[Any] = []
    replayed: list[Any] = []
    for seq, entry in enumerate(entries, start=100):
        inbound = Inbound(seq, journal_subject("sim", entry), entry)
        sim.state, out = sim.engine.step(sim.state, inbound)
        original += out
        restored, out = sim.engine.step(restored, inbound)
        replayed += out
    assert original == replayed and any(isinstance(e, Liquidation) for e in original)
    assert msgspec.json.encode(sim.state) == msgspec.json.encode(restored)
