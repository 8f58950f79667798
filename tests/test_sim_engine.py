"""Unit tests of the simulated exchange's pure matching engine (`venues.sim.engine.SimEngine`).

The engine has no clock and no I/O: every test builds a tiny explicit `SimConfig`, seeds
prices with a `Tick` and steps journal entries with increasing sequence numbers.

Reference market (swap `BTC/USDT:USDT` and spot `BTC/USDT`, both seeded at 100):
tick 0.1, one-tick half spread, so the quotes are bid 99.9 / ask 100.1.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
import pytest

from bus.contract import Inbound
from schemas.account import Balance, Fill, OrderUpdate, Position
from schemas.market import Candle, FundingRate, GapMarker, Ticker, Trade
from venues.protocol import OrderRequest
from venues.sim.config import SimConfig, SimMarket
from venues.sim.engine import EngineState, SimEngine, state_digest
from venues.sim.journal import Bar, Cancel, CancelAll, Fund, History, Place, Print, Quote, Tick, journal_subject


def place(account: str, **order: Any) -> Place:
    """A journal entry placing one order."""
    return Place(account=account, order=OrderRequest(**order))


D = Decimal

SWAP = "BTC/USDT:USDT"
SPOT = "BTC/USDT"
T0 = 1_699_999_200_000  # an hour boundary, hence also a minute boundary
MINUTE = 60_000
HOUR = 3_600_000

SWAP_MAKER, SWAP_TAKER = D("0.0002"), D("0.0005")
SPOT_MAKER, SPOT_TAKER = D("0.001"), D("0.002")


# ---------------------------------------------------------------------------- helpers


def swap_market(**overrides: Any) -> SimMarket:
    fields: dict[str, Any] = dict(
        symbol=SWAP,
        kind="swap",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.002"),  # above the lot, so "below min amount" is distinguishable from "off lot"
        min_notional=D("5"),
        maker_fee=SWAP_MAKER,
        taker_fee=SWAP_TAKER,
        start_price=D("100"),
        tick_volume=D("1"),
        spread_ticks=1,
        funding_interval_h=8,
    )
    fields.update(overrides)
    return SimMarket(**fields)


def spot_market(**overrides: Any) -> SimMarket:
    fields: dict[str, Any] = dict(
        symbol=SPOT,
        kind="spot",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.001"),
        min_notional=D("5"),
        maker_fee=SPOT_MAKER,
        taker_fee=SPOT_TAKER,
        start_price=D("100"),
        tick_volume=D("1"),
        spread_ticks=1,
    )
    fields.update(overrides)
    return SimMarket(**fields)


def make_config(
    *, markets: list[SimMarket] | None = None, accounts: dict[str, dict[str, Decimal]] | None = None, **overrides: Any
) -> SimConfig:
    fields: dict[str, Any] = dict(
        venue="sim",
        seed=1,
        tick_ms=500,
        fill_ratio=D("1"),
        leverage=D("5"),
        markets=markets if markets is not None else [swap_market(), spot_market()],
        accounts=accounts if accounts is not None else {"main": {"USDT": D("10000"), "BTC": D("1")}},
    )
    fields.update(overrides)
    return SimConfig(**fields)


class Sim:
    """One engine and its state, stepped with increasing journal sequence numbers."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.engine = SimEngine(config or make_config())
        self.state: EngineState = self.engine.initial_state()
        self.seq = 0
        self.step_no = 0
        self.ts = T0

    def apply(self, entry: Any) -> list[Any]:
        self.seq += 1
        self.state, events = self.engine.step(self.state, Inbound(self.seq, journal_subject("sim", entry), entry))
        return list(events)

    def ticks(self, prints: list[tuple[str, str, str]], *, ts: int | None = None) -> list[Any]:
        """One tick with several prints `(symbol, price, volume)`; 500 ms after the last by default."""
        self.ts = ts if ts is not None else self.ts + 500
        self.step_no += 1
        fills = self.apply(Tick(step=self.step_no, ts=self.ts, prints=[Print(s, D(p), D(v)) for s, p, v in prints]))
        return fills + self.apply(Quote(step=self.step_no))  # a tick's fills, then its market data

    def tick(self, price: str, volume: str = "10", *, symbol: str = SWAP, ts: int | None = None) -> list[Any]:
        return self.ticks([(symbol, price, volume)], ts=ts)

    def place(
        self,
        cid: str,
        side: str,
        amount: str,
        price: str | None = None,
        *,
        account: str = "main",
        symbol: str = SWAP,
        order_type: str | None = None,
        **flags: Any,
    ) -> list[Any]:
        return self.apply(
            place(
                account,
                symbol=symbol,
                client_order_id=cid,
                side=side,
                order_type=order_type or ("market" if price is None else "limit"),
                amount=D(amount),
                price=None if price is None else D(price),
                **flags,
            )
        )

    def balance(self, asset: str, account: str = "main") -> Balance:
        return next(b for b in self.engine.balances(self.state, account) if b.asset == asset)

    def position(self, symbol: str = SWAP, account: str = "main") -> Position:
        return next(p for p in self.engine.positions(self.state, account) if p.symbol == symbol)

    def order(self, cid: str, account: str = "main") -> OrderUpdate | None:
        return self.engine.order_view(self.state, account, cid, None)


def seeded(config: SimConfig | None = None, *, ts: int = T0, swap: str = "100", spot: str | None = "100") -> Sim:
    """A sim whose markets have a first price (quotes: price -/+ one tick)."""
    sim = Sim(config)
    prints = [(SWAP, swap, "10")] + ([(SPOT, spot, "10")] if spot is not None else [])
    sim.ticks(prints, ts=ts)
    return sim


def of(events: list[Any], cls: type) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def one(events: list[Any], cls: type) -> Any:
    found = of(events, cls)
    assert len(found) == 1, f"expected one {cls.__name__}, got {found}"
    return found[0]


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
def test_taker_orders_fill_immediately_at_the_touch_with_taker_fee(side: str, price: str | None, expected: str) -> None:
    sim = seeded()  # the seed tick's volume is 10: takers are not limited by it
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
        ("unknown_symbol", dict(symbol="ETH/USDT:USDT", amount="1", price="100")),
        ("off_tick", dict(amount="1", price="99.95")),
        ("below_min", dict(side="sell", amount="0.001", price="6000")),  # notional 6 is fine, amount is not
        ("below_min", dict(amount="0.04", price="100")),  # notional 4 < 5
        ("invalid", dict(amount="0.0025", price="99")),  # not a multiple of the lot
        ("invalid", dict(amount="0", price="99")),
        ("insufficient_balance", dict(amount="600", price="99")),  # 600 * 99 / 5 = 11880 > 10000
    ],
    ids=["unknown-symbol", "off-tick", "below-min-amount", "below-min-notional", "off-lot", "zero-amount", "no-margin"],
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


def test_market_order_with_a_non_positive_price_never_half_applies() -> None:
    sim = seeded()
    events = sim.place("neg", "sell", "1", "-1", order_type="market")
    assert of(events, OrderUpdate)[-1].status in ("rejected", "closed")
    assert sim.engine.open_orders(sim.state, "main", None) == []
    sim.tick("100")
    assert all(p.entry_price is None or p.entry_price > 0 for p in sim.engine.positions(sim.state, "main"))


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
    config = make_config(
        markets=[swap_market(funding_interval_h=1, **market_overrides)],
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

    events = sim.tick("110", ts=T0 + HOUR)  # the flat bar that closes keeps the rate at 0.0001
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
    sim = funding_sim()
    sim.place("l", "buy", "2")
    before = sim.balance("USDT").total
    sim.tick("99", ts=T0 + HOUR - 500)  # the bar falls 1%: rate 0.0001 - 0.005, capped at -0.003
    sim.tick("99", ts=T0 + HOUR)
    assert sim.state.markets[SWAP].funding_rate == D("-0.003")
    assert sim.balance("USDT").total == before + D("2") * D("99") * D("0.003")


def test_flat_accounts_pay_no_funding() -> None:
    sim = funding_sim()
    events = sim.tick("100", ts=T0 + HOUR)
    assert of(events, Balance) == []
    assert sim.balance("USDT").total == D("10000")


# ---------------------------------------------------------------------------- spot and margin


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
    # Either the plain sell is refused, or every negative holding is covered by a loan.
    assert plain.status == "rejected" or account.balances["BTC"] + account.borrowed.get("BTC", D("0")) >= 0


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


# ---------------------------------------------------------------------------- candles, gaps, stale ticks


def test_ticks_in_one_minute_form_one_bar_and_the_next_minute_closes_it() -> None:
    sim = Sim()
    forming = []
    for offset, price, volume in [(58_000, "100", "1"), (58_500, "102", "2"), (59_000, "99", "3"), (59_500, "101", "4")]:
        candle = one(sim.tick(price, volume, ts=T0 + offset), Candle)
        assert (candle.closed, candle.open_time) == (False, T0)
        forming.append(candle)
    assert (forming[-1].open, forming[-1].high, forming[-1].low, forming[-1].close, forming[-1].volume) == (
        D("100"),
        D("102"),
        D("99"),
        D("101"),
        D("10"),
    )
    assert sim.engine.candles(sim.state, SWAP, None, None) == []

    events = sim.tick("103", "5", ts=T0 + MINUTE)
    candles = of(events, Candle)
    closed = [c for c in candles if c.closed]
    assert len(closed) == 1
    bar = closed[0]
    assert (bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume) == (T0, D("100"), D("102"), D("99"), D("101"), D("10"))
    assert bar.ts == T0 + MINUTE - 1
    new = [c for c in candles if not c.closed]
    assert [(c.open_time, c.open, c.volume) for c in new] == [(T0 + MINUTE, D("103"), D("5"))]
    assert events.index(bar) < events.index(new[0])
    assert sim.engine.candles(sim.state, SWAP, None, None) == [bar]


def test_tick_emits_trade_and_ticker_with_quotes_one_tick_around_the_price() -> None:
    sim = Sim()
    events = sim.tick("100", "3")
    ticker = one(events, Ticker)
    assert (ticker.bid, ticker.ask, ticker.last) == (D("99.9"), D("100.1"), D("100"))
    trade = one(events, Trade)
    assert (trade.price, trade.amount) == (D("100"), D("3"))


def test_prints_for_unknown_symbols_are_ignored() -> None:
    sim = Sim()
    assert sim.tick("5", symbol="DOGE/USDT") == []
    assert "DOGE/USDT" not in sim.state.markets


def bars(first: int, closes: list[str]) -> list[Bar]:
    return [Bar(first + i * MINUTE, D(c), D(c) + 1, D(c) - 1, D(c), D("2")) for i, c in enumerate(closes)]


def test_history_backfills_closed_bars_once() -> None:
    sim = Sim()
    backfill = bars(T0 - 3 * MINUTE, ["98", "99", "100"])
    events = sim.apply(History(symbol=SWAP, bars=backfill, ts=T0))
    assert [(c.open_time, c.close, c.closed) for c in events] == [(b.open_time, b.close, True) for b in backfill]
    assert [c.close for c in sim.engine.candles(sim.state, SWAP, None, None)] == [D("98"), D("99"), D("100")]
    market = sim.state.markets[SWAP]
    assert (market.last, market.bid, market.ask) == (D("100"), D("99.9"), D("100.1"))

    again = sim.apply(History(symbol=SWAP, bars=bars(T0 - 2 * MINUTE, ["50", "60"]), ts=T0))
    assert again == []
    assert [c.close for c in sim.engine.candles(sim.state, SWAP, None, None)] == [D("98"), D("99"), D("100")]
    assert sim.state.markets[SWAP].last == D("100")


def test_candles_query_honours_since_and_limit() -> None:
    sim = Sim()
    sim.apply(History(symbol=SWAP, bars=bars(T0, ["10", "20", "30", "40"]), ts=T0 + 4 * MINUTE))
    closes = lambda since, limit: [c.close for c in sim.engine.candles(sim.state, SWAP, since, limit)]  # noqa: E731
    assert closes(None, 2) == [D("30"), D("40")]  # the latest
    assert closes(T0 + MINUTE, 2) == [D("20"), D("30")]  # the first after `since`
    assert closes(T0 + 2 * MINUTE, None) == [D("30"), D("40")]


def test_tick_more_than_three_tick_intervals_after_the_last_emits_a_gap_marker() -> None:
    sim = seeded(spot=None)
    assert of(sim.tick("100", ts=T0 + 1_500), GapMarker) == []  # exactly 3 * tick_ms: no gap
    gap = one(sim.tick("100", ts=T0 + 1_500 + 1_501), GapMarker)
    assert (gap.symbol, gap.stream, gap.since, gap.until) == (SWAP, "ticker", T0 + 1_500, T0 + 3_001)


def test_tick_older_than_the_engine_time_is_ignored() -> None:
    sim = seeded()
    sim.place("b", "buy", "1", "99.5")
    sim.tick("100", ts=T0 + 1_000)
    before = msgspec.json.encode(sim.state)
    assert sim.tick("99.0", ts=T0 + 999) == []
    assert msgspec.json.encode(sim.state) == before


def test_quotes_stay_on_the_tick_grid_for_non_decimal_tick_sizes() -> None:
    sim = Sim(make_config(markets=[swap_market(tick_size=D("0.5"))]))
    ticker = one(sim.tick("100.3"), Ticker)
    assert ticker.bid % D("0.5") == 0 and ticker.ask % D("0.5") == 0


# ---------------------------------------------------------------------------- determinism


def scenario() -> list[Any]:
    """A journal touching most paths: maker, taker, partial, spot margin, cancel, funding, history."""
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
        place("main", symbol=SPOT, client_order_id="s2", side="buy", amount=D("1"), order_type="market"),
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
    # the scenario really exercised the engine: fills on both markets, funding, a rejection
    assert {f.symbol for f in of(events_a, Fill)} == {SWAP, SPOT}
    assert any(isinstance(e, FundingRate) for e in events_a)
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
