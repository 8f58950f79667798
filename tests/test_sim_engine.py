"""Unit tests of the simulated exchange's pure matching engine (`venues.sim.engine.SimEngine`).

Helpers and the reference market are in `tests/test_sim_helpers.py`: swap `BTC/USDT:USDT` and
spot `BTC/USDT`, both seeded at 100, tick 0.1, one-tick half spread (bid 99.9 / ask 100.1).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from bus.contract import Inbound
from schemas.account import Balance, BorrowInterest, Fill, OrderUpdate, Position
from schemas.market import FundingRate
from testkit import fresh
from tests.test_sim_helpers import (
    HOUR,
    MINUTE,
    SPOT,
    SWAP,
    SWAP_MAKER,
    SWAP_TAKER,
    T0,
    D,
    Sim,
    bars,
    make_config,
    of,
    one,
    place,
    seeded,
    spot_market,
    swap_market,
)
from venues.sim.engine import EngineState, SimEngine, state_digest
from venues.sim.journal import Cancel, CancelAll, Fund, History, Print, Quote, Tick, journal_subject

# ---------------------------------------------------------------------------- resting (maker) fills


def test_resting_limit_buy_fills_as_maker_at_its_price_once_the_range_reaches_it() -> None:
    sim = seeded()
    placed = one(sim.place("b1", "buy", "1", "99.5"), OrderUpdate)
    assert (placed.status, placed.filled, placed.remaining) == ("open", D("0"), D("1"))

    assert of(sim.tick("99.6"), Fill) == []  # range 100 -> 99.6 does not reach 99.5
    assert sim.order("b1").status == "open"

    events = sim.tick("99.0")  # range 99.6 -> 99.0 crosses 99.5
    fill = one(events, Fill)
    assert (fill.price, fill.amount, fill.liquidity, fill.side) == (D("99.5"), D("1"), "maker", "buy")
    assert fill.fee_cost == D("99.5") * D("1") * SWAP_MAKER == D("0.0199")
    assert (fill.fee_currency, fill.client_order_id, fill.order_id) == ("USDT", "b1", placed.order_id)

    update = one(events, OrderUpdate)
    assert (update.status, update.filled, update.remaining, update.average) == ("closed", D("1"), D("0"), D("99.5"))
    assert update.fee_cost == D("0.0199")

    position = one(events, Position)
    assert (position.side, position.contracts, position.entry_price) == ("long", D("1"), D("99.5"))

    balance = one(events, Balance)
    assert (balance.asset, balance.total) == ("USDT", D("10000") - D("0.0199"))

    # the four account events come in this order, after the market data of the tick
    kinds = [type(e) for e in events if isinstance(e, (Fill, OrderUpdate, Position, Balance))]
    assert kinds == [Fill, OrderUpdate, Position, Balance]
    assert sim.engine.open_orders(sim.state, "main", None) == []
    assert sim.order("b1").status == "closed"


def test_resting_limit_sell_fills_when_the_range_touches_its_price_exactly() -> None:
    sim = seeded()
    sim.place("s1", "sell", "1", "100.5")
    assert of(sim.tick("100.4"), Fill) == []
    fill = one(sim.tick("100.5"), Fill)
    assert (fill.price, fill.side, fill.liquidity) == (D("100.5"), "sell", "maker")
    assert sim.position().side == "short"


def test_resting_order_fills_partially_up_to_tick_volume_times_fill_ratio() -> None:
    sim = seeded(make_config(fill_ratio=D("0.5")))
    sim.place("b1", "buy", "1.2", "99.5")

    events = sim.tick("99.5", "1")  # 1 * 0.5 available
    assert one(events, Fill).amount == D("0.5")
    update = one(events, OrderUpdate)
    assert (update.status, update.filled, update.remaining) == ("open", D("0.5"), D("0.7"))
    assert [o.client_order_id for o in sim.engine.open_orders(sim.state, "main", SWAP)] == ["b1"]

    events = sim.tick("99.4", "1")
    assert one(events, Fill).amount == D("0.5")
    update = one(events, OrderUpdate)
    assert (update.status, update.filled, update.remaining) == ("open", D("1.0"), D("0.2"))

    events = sim.tick("99.5", "1")  # range 99.4 -> 99.5 still reaches the order
    assert one(events, Fill).amount == D("0.2")
    update = one(events, OrderUpdate)
    assert (update.status, update.filled, update.remaining) == ("closed", D("1.2"), D("0"))
    assert update.fee_cost == D("99.5") * D("1.2") * SWAP_MAKER
    assert sim.position().contracts == D("1.2")


def test_available_volume_is_rounded_down_to_the_lot_size() -> None:
    sim = seeded()
    sim.place("b1", "buy", "0.1", "99.5")
    assert one(sim.tick("99.5", "0.0019"), Fill).amount == D("0.001")
    assert of(sim.tick("99.4", "0.0009"), Fill) == []  # less than one lot: nothing
    assert sim.order("b1").filled == D("0.001")


def test_higher_priced_buy_fills_first_when_volume_is_short() -> None:
    sim = seeded()
    sim.place("low", "buy", "0.5", "99.5")  # placed first, but a worse price
    sim.place("high", "buy", "0.5", "99.8")
    fills = of(sim.tick("99.0", "0.7"), Fill)
    assert [(f.client_order_id, f.price, f.amount) for f in fills] == [("high", D("99.8"), D("0.5")), ("low", D("99.5"), D("0.2"))]


def test_lower_priced_sell_fills_first_when_volume_is_short() -> None:
    sim = seeded()
    sim.place("high", "sell", "0.5", "100.8")
    sim.place("low", "sell", "0.5", "100.3")
    fills = of(sim.tick("101.0", "0.6"), Fill)
    assert [(f.client_order_id, f.amount) for f in fills] == [("low", D("0.5")), ("high", D("0.1"))]


def test_orders_at_the_same_price_fill_in_arrival_order() -> None:
    sim = seeded()
    sim.place("first", "buy", "0.5", "99.5")
    sim.place("second", "buy", "0.5", "99.5")
    fills = of(sim.tick("99.0", "0.6"), Fill)
    assert [(f.client_order_id, f.amount) for f in fills] == [("first", D("0.5")), ("second", D("0.1"))]


# ---------------------------------------------------------------------------- taker fills


@pytest.mark.parametrize(
    ("side", "price", "expected"),
    [
        ("buy", None, "100.1"),  # market buy at the ask
        ("sell", None, "99.9"),  # market sell at the bid
        ("buy", "101", "100.1"),  # marketable limit buy: at the ask, not its limit
        ("sell", "99", "99.9"),  # marketable limit sell: at the bid
    ],
    ids=["market-buy", "market-sell", "marketable-limit-buy", "marketable-limit-sell"],
)
def test_taker_orders_fill_immediately_at_the_touch_with_taker_fee_when_the_book_is_deep_enough(
    side: str, price: str | None, expected: str
) -> None:
    sim = seeded(make_config(markets=[swap_market(book_depth=D("100")), spot_market()]))  # the touch holds 100 > 20
    events = sim.place("t1", side, "20", price)
    fill = one(events, Fill)
    assert (fill.price, fill.amount, fill.liquidity) == (D(expected), D("20"), "taker")
    assert fill.fee_cost == D(expected) * D("20") * SWAP_TAKER
    updates = of(events, OrderUpdate)
    assert [u.status for u in updates] == ["open", "closed"]
    assert updates[-1].order_type == ("market" if price is None else "limit")
    assert updates[-1].filled == D("20")
    assert sim.balance("USDT").total == D("10000") - fill.fee_cost
    assert sim.position().contracts == D("20")


def test_ioc_limit_that_cannot_take_expires_without_filling() -> None:
    sim = seeded()
    events = sim.place("ioc", "buy", "1", "99.5", time_in_force="IOC")
    assert [u.status for u in of(events, OrderUpdate)] == ["open", "expired"]
    assert of(events, Fill) == []
    assert of(sim.tick("99.0"), Fill) == []  # it is not resting


def test_fok_limit_that_cannot_take_is_rejected() -> None:
    sim = seeded()
    update = one(sim.place("fok", "buy", "1", "99.5", time_in_force="FOK"), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "upstream_rejected")


# ---------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("side", "price", "flags"),
    [
        ("buy", "100.1", {"post_only": True}),
        ("sell", "99.9", {"post_only": True}),
        ("buy", "100.5", {"time_in_force": "PO"}),
    ],
    ids=["post-only-buy-at-ask", "post-only-sell-at-bid", "tif-po-buy-through-ask"],
)
def test_post_only_that_would_take_is_rejected(side: str, price: str, flags: dict[str, Any]) -> None:
    sim = seeded()
    events = sim.place("po", side, "1", price, **flags)
    update = one(events, OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "post_only_would_take")
    assert (update.filled, update.remaining) == (D("0"), D("1"))
    assert update.message
    assert of(events, Fill) == []
    assert sim.engine.open_orders(sim.state, "main", None) == []
    assert sim.order("po").status == "rejected"
    assert sim.state.accounts["main"].positions.get(SWAP) is None


def test_post_only_that_would_not_take_rests() -> None:
    sim = seeded()
    update = one(sim.place("po", "buy", "1", "100.0", post_only=True), OrderUpdate)
    assert (update.status, update.post_only) == ("open", True)


@pytest.mark.parametrize(
    ("reason", "overrides"),
    [
        ("off_tick", dict(amount="1", price="99.95")),
        ("below_min", dict(side="sell", amount="0.001", price="6000")),  # notional 6 is fine, amount is not
        ("below_min", dict(amount="0.04", price="100")),  # notional 4 < 5
        ("invalid", dict(amount="0.0025", price="99")),  # not a multiple of the lot
        ("invalid", dict(amount="0", price="99")),
        ("insufficient_balance", dict(amount="600", price="99")),  # 600 * 99 / 5 = 11880 > 10000
    ],
    ids=["off-tick", "below-min-amount", "below-min-notional", "off-lot", "zero-amount", "no-margin"],
)
def test_invalid_orders_are_rejected_with_a_reason_and_change_nothing(reason: str, overrides: dict[str, Any]) -> None:
    sim = seeded()
    before = msgspec.json.encode(sim.state.accounts["main"].balances)
    args = dict(side="buy", symbol=SWAP) | overrides
    events = sim.place("bad", args.pop("side"), args.pop("amount"), args.pop("price"), **args)
    update = one(events, OrderUpdate)
    assert (update.status, update.reason) == ("rejected", reason)
    assert len(events) == 1
    assert msgspec.json.encode(sim.state.accounts["main"].balances) == before
    assert sim.engine.open_orders(sim.state, "main", None) == []
    assert sim.state.accounts["main"].positions == {}


def test_a_place_for_a_symbol_the_venue_does_not_list_changes_nothing() -> None:
    # The API answers "unknown_symbol" before journaling; an entry that gets here anyway is not an order.
    sim = seeded()
    before = state_digest(sim.state)
    assert sim.place("x", "buy", "1", "100", symbol="ETH/USDT:USDT") == []
    assert state_digest(sim.state) == before
    assert sim.order("x") is None


def test_order_on_a_market_without_a_price_yet_is_rejected() -> None:
    sim = Sim()
    update = one(sim.place("early", "buy", "1", "100"), OrderUpdate)
    assert (update.status, update.reason) == ("rejected", "upstream_rejected")


def test_margin_check_counts_resting_orders() -> None:
    sim = seeded()
    assert one(sim.place("a", "buy", "400", "99"), OrderUpdate).status == "open"  # 7920 of 10000 margin
    update = one(sim.place("b", "buy", "150", "99"), OrderUpdate)  # 2970 more
    assert (update.status, update.reason) == ("rejected", "insufficient_balance")


def test_order_for_unknown_account_is_ignored() -> None:
    sim = seeded()
    assert sim.place("x", "buy", "1", "99", account="nobody") == []


# ---------------------------------------------------------------------------- client order ids


def test_client_order_id_places_exactly_one_order_per_account() -> None:
    sim = seeded()
    first = one(sim.place("c1", "buy", "0.5", "99"), OrderUpdate)
    assert sim.place("c1", "sell", "0.3", "101") == []  # a duplicate: no events, no new order
    view = sim.order("c1")
    assert view == first
    assert (view.side, view.amount, view.price) == ("buy", D("0.5"), D("99"))
    assert len(sim.engine.open_orders(sim.state, "main", None)) == 1


def test_a_rejected_client_order_id_stays_taken() -> None:
    sim = seeded()
    assert one(sim.place("c1", "buy", "0.5", "99.95"), OrderUpdate).reason == "off_tick"
    assert sim.place("c1", "buy", "0.5", "99.9") == []
    assert sim.order("c1").status == "rejected"


def test_same_client_order_id_on_another_account_is_another_order() -> None:
    sim = seeded()
    one(sim.apply(Fund(account="other", asset="USDT", amount=D("1000"))), Balance)
    mine = one(sim.place("c1", "buy", "0.5", "99"), OrderUpdate)
    theirs = one(sim.place("c1", "sell", "0.2", "101", account="other"), OrderUpdate)
    assert theirs.status == "open"
    assert (theirs.account, theirs.side) == ("other", "sell")
    assert theirs.order_id != mine.order_id
    assert theirs.id != mine.id
    assert sim.order("c1").side == "buy"
    assert sim.order("c1", account="other").side == "sell"


# ---------------------------------------------------------------------------- cancel


def test_cancel_by_client_id_ends_the_order_and_it_no_longer_fills() -> None:
    sim = seeded()
    sim.place("c", "buy", "1", "99.5")
    update = one(sim.apply(Cancel(account="main", symbol=SWAP, client_order_id="c")), OrderUpdate)
    assert (update.status, update.filled, update.remaining) == ("canceled", D("0"), D("1"))
    assert sim.engine.open_orders(sim.state, "main", None) == []
    assert sim.order("c").status == "canceled"
    assert of(sim.tick("99.0"), Fill) == []


def test_cancel_by_order_id() -> None:
    sim = seeded()
    oid = one(sim.place("c", "buy", "1", "99.5"), OrderUpdate).order_id
    assert one(sim.apply(Cancel(account="main", symbol=SWAP, order_id=oid)), OrderUpdate).status == "canceled"


@pytest.mark.parametrize(
    "cancel",
    [
        Cancel(account="main", symbol=SWAP, client_order_id="nope"),
        Cancel(account="main", symbol=SWAP, order_id="999"),
        Cancel(account="main", symbol=SWAP),
        Cancel(account="main", symbol=SPOT, client_order_id="live"),  # right id, wrong symbol
        Cancel(account="nobody", symbol=SWAP, client_order_id="live"),
    ],
    ids=["unknown-cid", "unknown-oid", "no-id", "wrong-symbol", "unknown-account"],
)
def test_cancel_of_an_unknown_order_emits_nothing(cancel: Cancel) -> None:
    sim = seeded()
    sim.place("live", "buy", "1", "99.5")
    assert sim.apply(cancel) == []
    assert sim.order("live").status == "open"


def test_cancel_of_an_ended_order_emits_nothing() -> None:
    sim = seeded()
    sim.place("filled", "buy", "1")
    sim.place("gone", "buy", "1", "99.5")
    sim.apply(Cancel(account="main", symbol=SWAP, client_order_id="gone"))
    assert sim.apply(Cancel(account="main", symbol=SWAP, client_order_id="filled")) == []
    assert sim.apply(Cancel(account="main", symbol=SWAP, client_order_id="gone")) == []
    assert sim.order("filled").status == "closed"


def test_cancel_all_cancels_every_open_order_of_that_symbol_and_account_only() -> None:
    sim = seeded()
    sim.apply(Fund(account="other", asset="USDT", amount=D("1000")))
    sim.place("a", "buy", "1", "99.5")
    sim.place("b", "sell", "1", "100.5")
    sim.place("spot", "buy", "0.1", "99.5", symbol=SPOT)
    sim.place("theirs", "buy", "1", "99.5", account="other")
    events = sim.apply(CancelAll(account="main", symbol=SWAP))
    assert sorted((u.client_order_id, u.status) for u in of(events, OrderUpdate)) == [("a", "canceled"), ("b", "canceled")]
    assert [o.client_order_id for o in sim.engine.open_orders(sim.state, "main", None)] == ["spot"]
    assert [o.client_order_id for o in sim.engine.open_orders(sim.state, "other", None)] == ["theirs"]
    assert sim.apply(CancelAll(account="main", symbol=SWAP)) == []


# ---------------------------------------------------------------------------- determinism


def scenario() -> list[Any]:
    """A journal touching most paths: maker, taker, partial, spot margin and its interest, cancel, funding, history."""
    t = T0 + HOUR - 2_000
    return [
        History(symbol=SPOT, bars=bars(T0 + HOUR - 4 * MINUTE, ["99", "100"]), ts=t - 1),
        Fund(account="other", asset="USDT", amount=D("5000")),
        Tick(step=1, ts=t, prints=[Print(SWAP, D("100"), D("1")), Print(SPOT, D("100"), D("1"))]),
        Quote(step=1),
        place("main", symbol=SWAP, client_order_id="m1", side="buy", amount=D("2"), price=D("99.5")),
        place("main", symbol=SWAP, client_order_id="m2", side="buy", amount=D("1"), price=D("99.8")),
        place("other", symbol=SWAP, client_order_id="m1", side="sell", amount=D("1"), order_type="market"),
        place("main", symbol=SPOT, client_order_id="s1", side="sell", amount=D("2"), order_type="market", use_margin=True),
        place("main", symbol=SWAP, client_order_id="bad", side="buy", amount=D("1"), price=D("99.95")),
        Tick(step=2, ts=t + 500, prints=[Print(SWAP, D("99.4"), D("1.5")), Print(SPOT, D("100.2"), D("1"))]),
        Quote(step=2),
        Tick(step=3, ts=t + 1_000, prints=[Print(SWAP, D("99.5"), D("3")), Print(SPOT, D("100.1"), D("1"))]),
        Quote(step=3),
        place("main", symbol=SWAP, client_order_id="m3", side="sell", amount=D("1"), price=D("101")),
        Cancel(account="main", symbol=SWAP, client_order_id="m3"),
        place("main", symbol=SPOT, client_order_id="s2", side="buy", amount=D("0.5"), order_type="market"),  # half the loan stays
        Tick(step=4, ts=t + 2_000, prints=[Print(SWAP, D("101"), D("2")), Print(SPOT, D("101"), D("1"))]),
        Quote(step=4),
        place("main", symbol=SWAP, client_order_id="m4", side="sell", amount=D("4"), order_type="market"),
        Tick(step=5, ts=t + 2_500, prints=[Print(SWAP, D("100.5"), D("2"))]),
        Quote(step=5),
        CancelAll(account="main", symbol=SWAP),
    ]


def run(entries: list[Any]) -> tuple[SimEngine, EngineState, list[Any]]:
    sim = Sim(make_config(markets=[swap_market(funding_interval_h=1), spot_market()]))
    events: list[Any] = []
    for entry in entries:
        events.extend(sim.apply(entry))
    return sim.engine, sim.state, events


def test_the_same_journal_gives_the_same_events_and_state() -> None:
    _, state_a, events_a = run(scenario())
    _, state_b, events_b = run(scenario())
    assert events_a == events_b
    assert msgspec.json.encode(state_a) == msgspec.json.encode(state_b)
    assert state_digest(state_a) == state_digest(state_b)
    # the scenario really exercised the engine: fills on both markets, funding, interest, a rejection
    assert {f.symbol for f in of(events_a, Fill)} == {SWAP, SPOT}
    assert any(isinstance(e, FundingRate) for e in events_a)
    assert any(isinstance(e, BorrowInterest) for e in events_a)
    assert any(isinstance(e, OrderUpdate) and e.status == "rejected" for e in events_a)


def test_order_and_fill_event_ids_are_deterministic_and_unique() -> None:
    _, _, events_a = run(scenario())
    _, _, events_b = run(scenario())
    ids_a = [e.id for e in events_a if isinstance(e, (OrderUpdate, Fill))]
    ids_b = [e.id for e in events_b if isinstance(e, (OrderUpdate, Fill))]
    assert ids_a == ids_b
    assert len(ids_a) > 10
    assert len(set(ids_a)) == len(ids_a)


def test_a_checkpointed_state_continues_exactly_like_the_original() -> None:
    entries = scenario()
    engine, state, _ = run(entries[:9])
    restored = msgspec.json.decode(msgspec.json.encode(state), type=EngineState)
    rest_original, rest_restored = [], []
    for seq, entry in enumerate(entries[9:], start=100):
        inbound = Inbound(seq, journal_subject("sim", entry), entry)
        state, out = engine.step(state, inbound)
        rest_original.extend(out)
        restored, out = engine.step(restored, inbound)
        rest_restored.extend(out)
    assert rest_original == rest_restored
    assert msgspec.json.encode(state) == msgspec.json.encode(restored)


def test_the_same_journal_gives_the_same_events_and_state_in_a_fresh_process() -> None:
    job = fresh.sim_job(make_config(markets=[swap_market(funding_interval_h=1), spot_market()]), scenario())
    assert fresh.digest("sim", job) == fresh.digest_elsewhere("sim", job)
