"""Fills event for event (`venues.sim.matching`): every field of every Fill and OrderUpdate, and
the Position and Balance that follow, as a client of the venue receives them.

Struct equality compares every field, so these tests pin what the field-by-field tests elsewhere
leave open: venue, account, trade ids (venue-wide, consecutive), timestamps, fee currencies.

Reference market (tests/test_sim_helpers.py): swap `BTC/USDT:USDT` and spot `BTC/USDT` at 100,
bid 99.9 / ask 100.1, swap fees 0.0002 maker / 0.0005 taker, spot 0.001 / 0.002, leverage 5.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from schemas import ids
from schemas.account import Balance, Fill, OrderUpdate, Position
from tests.test_sim_helpers import (
    SPOT,
    SPOT_TAKER,
    SWAP,
    SWAP_MAKER,
    SWAP_TAKER,
    T0,
    D,
    make_config,
    of,
    seeded,
    spot_market,
    swap_market,
)

ACCOUNT_EVENTS = (Fill, OrderUpdate, Position, Balance)


def account_events(events: list[Any]) -> list[Any]:
    """The events a client's account stream carries, in order; positions and balances without their
    content-derived ids (a digest of the other fields, which are compared)."""
    return [msgspec.structs.replace(e, id="") if isinstance(e, Position | Balance) else e for e in events if isinstance(e, ACCOUNT_EVENTS)]


def fill(
    trade: int,
    cid: str,
    oid: str,
    side: str,
    price: str,
    amount: str,
    liquidity: str,
    ts: int,
    *,
    rate: Decimal,
    account: str = "main",
    symbol: str = SWAP,
) -> Fill:
    fee = D(price) * D(amount) * rate
    return Fill(
        id=ids.fill_id("sim", account, str(trade)),
        venue="sim",
        account=account,
        symbol=symbol,
        trade_id=str(trade),
        order_id=oid,
        client_order_id=cid,
        side=side,  # type: ignore[arg-type]
        price=D(price),
        amount=D(amount),
        fee_cost=fee,
        fee_currency="USDT",
        liquidity=liquidity,  # type: ignore[arg-type]
        ts=ts,
        ts_local=ts,
    )


def update(
    cid: str,
    oid: str,
    side: str,
    amount: str,
    price: str | None,
    status: str,
    ts: int,
    *,
    filled: str = "0",
    average: str | None = None,
    fee: Decimal = D("0"),
    reason: str | None = None,
    reduce_only: bool = False,
    account: str = "main",
    symbol: str = SWAP,
) -> OrderUpdate:
    return OrderUpdate(
        id=ids.order_event_id("sim", account, cid, status, D(filled)),
        venue="sim",
        account=account,
        symbol=symbol,
        order_id=oid,
        client_order_id=cid,
        side=side,  # type: ignore[arg-type]
        order_type="market" if price is None else "limit",
        price=None if price is None else D(price),
        amount=D(amount),
        filled=D(filled),
        remaining=D(amount) - D(filled),
        average=None if average is None else D(average),
        status=status,  # type: ignore[arg-type]
        reduce_only=reduce_only,
        fee_cost=fee,
        fee_currency="USDT",
        reason=reason,  # type: ignore[arg-type]
        ts=ts,
        ts_local=ts,
    )


def position(
    side: str | None, contracts: str, entry: str | None, mark: str, upnl: str, realized: str, ts: int, account: str = "main"
) -> Position:
    return Position(
        id="",
        venue="sim",
        account=account,
        symbol=SWAP,
        side=side,  # type: ignore[arg-type]
        contracts=D(contracts),
        entry_price=None if entry is None else D(entry),
        mark_price=D(mark),
        unrealized_pnl=D(upnl),
        realized_pnl=D(realized),
        leverage=D("5"),
        ts=ts,
        ts_local=ts,
    )


def balance(asset: str, total: Decimal, ts: int, *, used: Decimal = D("0"), account: str = "main") -> Balance:
    return Balance(id="", venue="sim", account=account, asset=asset, free=total - used, used=used, total=total, ts=ts, ts_local=ts)


# ---------------------------------------------------------------------------- resting orders


def test_a_print_that_fills_part_of_a_resting_order_reports_the_fill_the_order_the_position_and_the_balance() -> None:
    sim = seeded(make_config(fill_ratio=D("0.5")))
    sim.place("b1", "buy", "1.2", "99.5")
    t1 = T0 + 500
    events = sim.tick("99.5", "1", ts=t1)  # 0.5 of the print's volume is ours
    fee = D("99.5") * D("0.5") * SWAP_MAKER
    assert account_events(events) == [
        fill(1, "b1", "1", "buy", "99.5", "0.5", "maker", t1, rate=SWAP_MAKER),
        update("b1", "1", "buy", "1.2", "99.5", "open", t1, filled="0.5", average="99.5", fee=fee),
        position("long", "0.5", "99.5", "99.5", "0", "0", t1),
        balance("USDT", D("10000") - fee, t1),
    ]

    t2 = t1 + 500
    events = sim.tick("99.4", "1.4", ts=t2)  # the remaining 0.7 of 0.7 available
    fee2 = D("99.5") * D("0.7") * SWAP_MAKER
    assert account_events(events) == [
        fill(2, "b1", "1", "buy", "99.5", "0.7", "maker", t2, rate=SWAP_MAKER),
        update("b1", "1", "buy", "1.2", "99.5", "closed", t2, filled="1.2", average="99.5", fee=fee + fee2),
        position("long", "1.2", "99.5", "99.4", "-0.12", "0", t2),
        balance("USDT", D("10000") - fee - fee2, t2),
    ]


def test_orders_at_one_price_fill_oldest_first_across_accounts() -> None:
    sim = seeded(make_config(accounts={"main": {"USDT": D("10000")}, "zed": {"USDT": D("10000")}}))
    sim.place("first", "buy", "0.5", "99.5", account="zed")  # an account that sorts last, but the older order
    sim.place("second", "buy", "0.5", "99.5")
    fills = of(sim.tick("99", "0.6"), Fill)
    assert [(f.account, f.client_order_id, f.amount) for f in fills] == [("zed", "first", D("0.5")), ("main", "second", D("0.1"))]


def test_a_print_fills_only_the_orders_of_its_own_market() -> None:
    sim = seeded()
    sim.place("spot", "buy", "0.5", "99.5", symbol=SPOT)  # rests first, at the same price, on the other market
    sim.place("swap", "buy", "0.5", "99.5")
    assert [(f.symbol, f.client_order_id) for f in of(sim.tick("99", symbol=SWAP), Fill)] == [(SWAP, "swap")]
    assert sim.order("spot").status == "open"
    assert [(f.symbol, f.client_order_id) for f in of(sim.tick("99", symbol=SPOT), Fill)] == [(SPOT, "spot")]


def test_a_resting_reduce_only_order_whose_position_is_gone_is_canceled_by_the_print_that_reaches_it() -> None:
    sim = seeded()
    sim.place("long", "buy", "1")  # 1 at 100.1
    sim.place("r", "sell", "1", "100.5", reduce_only=True)  # order 2
    sim.place("close", "sell", "1")  # the position is closed by another order
    sim.place("s", "sell", "0.5", "100.8")  # order 4: a plain sell behind it
    t1 = sim.ts + 500
    events = sim.tick("101", ts=t1)
    assert account_events(events) == [
        update("r", "2", "sell", "1", "100.5", "canceled", t1, reason="reduce_only_would_increase", reduce_only=True),
        # it took nothing of the print's volume: the next order fills in full
        fill(3, "s", "4", "sell", "100.8", "0.5", "maker", t1, rate=SWAP_MAKER),  # and no trade id
        update("s", "4", "sell", "0.5", "100.8", "closed", t1, filled="0.5", average="100.8", fee=D("100.8") * D("0.5") * SWAP_MAKER),
        position("short", "0.5", "100.8", "101", "-0.1", "-0.2", t1),
        balance(
            "USDT",
            D("10000") - D("0.2") - (D("100.1") + D("99.9")) * SWAP_TAKER - D("100.8") * D("0.5") * SWAP_MAKER,
            t1,
        ),
    ]


def test_a_resting_reduce_only_buy_fills_against_a_short_up_to_the_position() -> None:
    sim = seeded()
    sim.place("short", "sell", "1")  # 1 at 99.9, order 1, trade 1
    sim.place("r", "buy", "2", "99.5", reduce_only=True)
    t1 = sim.ts + 500
    events = sim.tick("99", ts=t1)
    fee = D("99.5") * SWAP_MAKER
    assert account_events(events) == [
        fill(2, "r", "2", "buy", "99.5", "1", "maker", t1, rate=SWAP_MAKER),
        update("r", "2", "buy", "2", "99.5", "open", t1, filled="1", average="99.5", fee=fee, reduce_only=True),
        position(None, "0", None, "99", "0", "0.4", t1),
        balance("USDT", D("10000") + D("0.4") - D("99.9") * SWAP_TAKER - fee, t1),
    ]
    t2 = t1 + 500
    events = sim.tick("98", ts=t2)  # nothing left to reduce: the rest is canceled
    assert account_events(events) == [
        update(
            "r",
            "2",
            "buy",
            "2",
            "99.5",
            "canceled",
            t2,
            filled="1",
            average="99.5",
            fee=fee,
            reason="reduce_only_would_increase",
            reduce_only=True,
        )
    ]


# ---------------------------------------------------------------------------- takers


def test_a_taker_through_two_levels_reports_one_fill_each_with_consecutive_trade_ids() -> None:
    accounts = {"main": {"USDT": D("10000")}, "other": {"USDT": D("10000")}}
    sim = seeded(make_config(markets=[swap_market(book_depth=D("5")), spot_market()], accounts=accounts))
    events = sim.place("big", "buy", "7")
    cost = D("100.1") * 5 + D("100.2") * 2
    fee = cost * SWAP_TAKER
    assert account_events(events) == [
        update("big", "1", "buy", "7", None, "open", T0),
        fill(1, "big", "1", "buy", "100.1", "5", "taker", T0, rate=SWAP_TAKER),
        fill(2, "big", "1", "buy", "100.2", "2", "taker", T0, rate=SWAP_TAKER),
        update("big", "1", "buy", "7", None, "closed", T0, filled="7", average=str((cost / 7).quantize(D("0.001"))), fee=fee),
        position("long", "7", str(cost / 7), "100", str(7 * D("100") - cost), "0", T0),
        balance("USDT", D("10000") - fee, T0),
    ]
    # trade ids are the venue's, not the account's
    events = sim.place("theirs", "sell", "1", account="other")
    assert of(events, Fill) == [fill(3, "theirs", "2", "sell", "99.9", "1", "taker", T0, rate=SWAP_TAKER, account="other")]
    assert of(events, OrderUpdate)[-1] == update(
        "theirs", "2", "sell", "1", None, "closed", T0, filled="1", average="99.9", fee=D("99.9") * SWAP_TAKER, account="other"
    )


def test_a_spot_sale_of_everything_held_credits_a_quote_the_account_never_had_and_borrows_nothing() -> None:
    sim = seeded(make_config(accounts={"main": {"BTC": D("1")}}))
    events = sim.place("all", "sell", "1", symbol=SPOT)
    fee = D("99.9") * SPOT_TAKER
    closed = update("all", "1", "sell", "1", None, "closed", T0, filled="1", average="99.9", fee=fee, symbol=SPOT)
    assert account_events(events)[1:] == [
        msgspec.structs.replace(fill(1, "all", "1", "sell", "99.9", "1", "taker", T0, rate=SPOT_TAKER), symbol=SPOT),
        closed,
        balance("BTC", D("0"), T0),
        balance("USDT", D("99.9") - fee, T0),
    ]
    assert sim.state.accounts["main"].borrowed == {}


# ---------------------------------------------------------------------------- positions


def test_partial_closes_keep_the_entry_price_and_add_up_the_realized_pnl() -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("100")), spot_market()]))
    sim.place("open", "buy", "2")  # long 2 at 100.1
    assert sim.position().entry_price == D("100.1")
    sim.place("a", "sell", "1")  # at 99.9: -0.2
    assert (sim.position().contracts, sim.position().entry_price, sim.position().realized_pnl) == (D("1"), D("100.1"), D("-0.2"))
    sim.place("b", "sell", "0.5")  # -0.1 more
    assert (sim.position().contracts, sim.position().entry_price, sim.position().realized_pnl) == (D("0.5"), D("100.1"), D("-0.3"))
    sim.place("c", "sell", "0.5")
    assert (sim.position().side, sim.position().contracts, sim.position().realized_pnl) == (None, D("0"), D("-0.4"))
    assert sim.state.accounts["main"].positions[SWAP].entry_price == D("0")
    sim.place("again", "buy", "1")  # a new position starts from its own fill price
    assert (sim.position().contracts, sim.position().entry_price, sim.position().realized_pnl) == (D("1"), D("100.1"), D("-0.4"))


def test_partial_closes_of_a_short_keep_its_entry_price() -> None:
    sim = seeded()
    sim.place("open", "sell", "2")  # short 2 at 99.9
    sim.place("a", "buy", "0.5")  # at 100.1: -0.1
    assert (sim.position().side, sim.position().contracts, sim.position().entry_price, sim.position().realized_pnl) == (
        "short",
        D("1.5"),
        D("99.9"),
        D("-0.1"),
    )
