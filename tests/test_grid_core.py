"""The grid core, one behaviour at a time (pure: events in, commands out)."""

from __future__ import annotations

import copy
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bus.contract import InputRejected
from schemas.account import Position
from schemas.ops import BreakerChange, ControlCommand, StrategyState, VenueSnapshot
from strategies.grid.core import PUBLISH_EVERY_MS, GridCore
from strategies.grid.lattice import check_config, client_order_id, client_prefix, parse_client_order_id
from strategies.grid.state import GridState
from testkit.events import order_update, ticker
from testkit.grid import MARKET, Driver, T, cancels, grid, places


def book(out: list[Any]) -> list[tuple[str, D]]:
    return sorted((p.side, p.price) for p in places(out))


def test_the_design_example_neutral_anchor_100_interval_10_windows_2() -> None:
    d = Driver(grid())
    assert d.state.status == "starting"
    out = d.tick("100")
    assert book(out) == [("buy", D(80)), ("buy", D(90)), ("sell", D(110)), ("sell", D(120))]
    assert all(p.post_only and not p.reduce_only for p in places(out))
    assert {p.price: p.amount for p in places(out)} == {D(80): D("12.5"), D(90): D("11.111"), D(110): D("9.090"), D(120): D("8.333")}
    assert d.state.status == "running"


def test_nothing_is_placed_before_the_venue_snapshot_is_adopted() -> None:
    d = Driver(grid(), snapshot=None)
    core = GridCore(grid(), MARKET)
    d.state = core.initial_state()  # no snapshot fed
    assert places(d.tick("100")) == []
    assert d.state.status == "starting"


@pytest.mark.parametrize("field", ["venue", "account", "symbol"])
def test_a_snapshot_addressed_to_the_grid_about_another_market_is_refused_before_and_after_adoption(field: str) -> None:
    own = VenueSnapshot(id="s", component="grid", instance=grid().instance, venue="sim", account="main", symbol=grid().symbol, ts=1)
    other = msgspec.structs.replace(own, **{field: "x"})
    d = Driver(grid(), adopt=False)
    with pytest.raises(InputRejected, match=f"grid g1 trades sim/main/{grid().symbol}"):
        d.feed(other)
    assert not d.state.adopted
    d.feed(own)
    with pytest.raises(InputRejected, match="a snapshot for"):
        d.feed(other)
    d.feed(msgspec.structs.replace(other, instance="another"))  # someone else's: not ours to judge


def test_long_buys_below_and_sells_each_fill_one_level_up_reduce_only() -> None:
    d = Driver(grid(mode="long", levels=3))
    out = d.tick("100")
    assert book(out) == [("buy", D(70)), ("buy", D(80)), ("buy", D(90))]
    buy90 = next(p for p in places(out) if p.price == D(90))
    d.order(buy90, "open")
    out = d.order(buy90, "closed", filled=str(buy90.amount))
    [counter] = places(out)
    assert (counter.side, counter.price, counter.amount, counter.reduce_only) == ("sell", D(100), buy90.amount, True)
    assert d.slot(-1).phase == "filled" and d.slot(-1).holding == buy90.amount
    d.order(counter, "open")
    out = d.order(counter, "closed", filled=str(counter.amount))
    assert d.state.realized_pnl == (D(100) - D(90)) * buy90.amount
    assert d.state.fills == 2
    assert [(p.side, p.price) for p in places(out)] == [("buy", D(90))]  # the level is free again: a new buy
    assert d.slot(-1).phase == "pending" and d.slot(-1).holding == 0


def test_short_is_the_mirror() -> None:
    d = Driver(grid(mode="short", levels=2))
    out = d.tick("100")
    assert book(out) == [("sell", D(110)), ("sell", D(120))]
    sell110 = next(p for p in places(out) if p.price == D(110))
    out = d.order(sell110, "closed", filled=str(sell110.amount))
    [counter] = places(out)
    assert (counter.side, counter.price, counter.reduce_only) == ("buy", D(100), True)


def test_neutral_closing_orders_are_reduce_only_only_when_they_reduce_the_net_position() -> None:
    d = Driver(grid())
    out = d.tick("100")
    buy90 = next(p for p in places(out) if p.price == D(90))
    sell110 = next(p for p in places(out) if p.price == D(110))
    [close_long] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    assert close_long.side == "sell" and close_long.reduce_only  # net long 11.111: selling it reduces
    [close_short] = places(d.order(sell110, "closed", filled=str(sell110.amount)))
    # Net now +2.021 (11.111 long, 9.090 short, netted by the venue): buying 9.090 back would
    # increase it, so that closing order cannot be reduce-only.
    assert close_short.side == "buy" and not close_short.reduce_only


def test_a_reduce_only_breaker_keeps_the_closing_orders_the_executor_accepts() -> None:
    d = Driver(grid())
    out = d.tick("100")
    opening = places(out)
    buy90 = next(p for p in opening if p.price == D(90))
    for p in opening:
        d.order(p, "open")
    [close_long] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    d.order(close_long, "open")
    reduce = BreakerChange(id="b", instance="global", scope="global", state="reduce_only", previous="ok", reason="exposure", ts=d.ts)
    out = d.feed(reduce)
    assert d.state.status == "reduce_only"
    # Every opening order goes; the closing order, reduce-only, rests on.
    assert {c.client_order_id for c in cancels(out)} == {p.client_order_id for p in opening if p is not buy90}
    assert places(out) == []


def test_geometric_levels_sit_on_the_tick_and_client_ids_are_short_and_ours() -> None:
    d = Driver(grid(anchor=D(60000), spacing=D("0.0005"), spacing_type="geometric", notional=D(100), levels=3))
    out = d.tick("60000")
    prices = sorted(p.price for p in places(out))
    assert prices == [D("59910.1"), D("59940.0"), D("59970.0"), D("60030.0"), D("60060.0"), D("60090.0")]
    for p in places(out):
        assert (p.price / MARKET.tick_size) % 1 == 0 and len(p.client_order_id) <= 32 and p.client_order_id.isalnum()
        assert parse_client_order_id(client_prefix("g1"), p.client_order_id) is not None
        assert parse_client_order_id(client_prefix("g2"), p.client_order_id) is None  # another instance's prefix


@given(
    instance=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,31}", fullmatch=True),
    role=st.sampled_from(["open", "close"]),
    index=st.integers(-60_000, 60_000),
    generation=st.integers(1, 10**7),
)
def test_client_order_ids_round_trip_and_fit_every_venue(instance: str, role: str, index: int, generation: int) -> None:
    prefix = client_prefix(instance)
    cid = client_order_id(prefix, role, index, generation)  # type: ignore[arg-type]
    assert cid.isalnum() and len(cid) <= 32
    assert parse_client_order_id(prefix, cid) == (role, index, generation)


def test_order_ids_are_never_reused_even_when_a_slot_cycles() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    seen = {buy.client_order_id}
    for _ in range(5):
        [buy] = places(d.order(buy, "rejected", reason="post_only_would_take"))  # the slot retries at once
        seen.add(buy.client_order_id)
    assert len(seen) == 6


def test_trailing_recenters_canceling_the_far_side_and_placing_the_near_side() -> None:
    d = Driver(grid(mode="long", levels=2, trail_levels=1))
    out = d.tick("100")
    old = places(out)
    for p in old:
        d.order(p, "open")
    out = d.tick("125")  # two levels above the center: more than trail_levels away
    assert d.state.center == 2
    assert {c.client_order_id for c in cancels(out)} == {p.client_order_id for p in old}
    assert places(out) == []  # the canceled ones still count until the venue confirms
    placed = []
    for p in old:
        placed += places(d.order(p, "canceled"))
    assert sorted(p.price for p in placed) == [D(100), D(110)]


def test_inventory_keeps_its_closing_order_when_the_center_moves() -> None:
    d = Driver(grid(mode="long", levels=2, trail_levels=1))
    out = d.tick("100")
    buy90 = next(p for p in places(out) if p.price == D(90))
    [counter] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    d.order(counter, "open")
    out = d.tick("60")
    assert counter.client_order_id not in {c.client_order_id for c in cancels(out)}


def test_post_only_rejections_fall_back_to_a_plain_limit_after_three() -> None:
    d = Driver(grid(mode="long", levels=1, post_only_retries=3))
    [buy] = places(d.tick("100"))
    flags = [buy.post_only]
    for _ in range(3):
        [buy] = places(d.order(buy, "rejected", reason="post_only_would_take"))
        flags.append(buy.post_only)
    assert flags == [True, True, True, False]


def test_a_plain_limit_is_never_placed_across_the_book() -> None:
    d = Driver(grid(mode="long", levels=1, post_only=False))
    assert places(d.tick("100", bid="89.9", ask="90.0")) == []  # a buy at 90 would take the ask
    assert [(p.side, p.price) for p in places(d.tick("100", bid="89.9", ask="90.1"))] == [("buy", D(90))]


def test_other_rejections_back_off_in_event_time() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "rejected", reason="insufficient_balance")
    slot = d.slot(-1)
    assert slot.rejects == 1 and slot.retry_at == d.ts + 1000
    assert places(d.tick("100.5")) == []  # 499 ms later: still waiting
    assert places(d.tick("100.6")) != []  # 999 ms later: the wait is over


def test_a_partial_fill_then_cancel_leaves_inventory_with_its_closing_order() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open", filled="4")
    assert d.slot(-1).holding == D(4) and d.slot(-1).phase == "filled"
    out = d.order(buy, "canceled", filled="4")
    [counter] = places(out)
    assert (counter.side, counter.price, counter.amount) == ("sell", D(100), D(4))


def test_pause_cancels_opening_orders_keeps_closing_ones_and_resume_restores() -> None:
    d = Driver(grid(mode="long", levels=2))
    out = d.tick("100")
    buy90, buy80 = sorted(places(out), key=lambda p: -p.price)
    [counter] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    d.order(counter, "open")
    d.order(buy80, "open")
    out = d.feed(ControlCommand(id="c1", target_component="grid", target_instance="g1", action="pause", operator="ops", ts=d.ts))
    assert d.state.status == "paused"
    assert [c.client_order_id for c in cancels(out)] == [buy80.client_order_id]  # the closing order stays
    assert places(d.order(buy80, "canceled")) == []  # paused: the opening order does not come back
    out = d.feed(ControlCommand(id="c2", target_component="grid", target_instance="all", action="resume", operator="ops", ts=d.ts))
    assert d.state.status == "running"
    [again] = places(out)  # resume restores what pause removed: the same order, under a new client id
    assert (again.side, again.price, again.amount) == (buy80.side, buy80.price, buy80.amount)
    assert again.client_order_id != buy80.client_order_id and cancels(out) == []
    assert d.slot(-1).client_order_id == counter.client_order_id  # the closing order rested throughout


def test_halted_takes_every_order_off_closing_orders_too_and_places_nothing() -> None:
    d = Driver(grid(mode="long", levels=2))
    buy90, buy80 = sorted(places(d.tick("100")), key=lambda p: -p.price)
    [counter] = places(d.order(buy90, "closed", filled=str(buy90.amount)))
    d.order(counter, "open")
    d.order(buy80, "open")
    out = d.feed(ControlCommand(id="h", target_component="grid", target_instance="g1", action="halt", operator="ops", ts=d.ts))
    assert d.state.status == "halted"
    assert {c.client_order_id for c in cancels(out)} == {counter.client_order_id, buy80.client_order_id}
    later = d.order(counter, "canceled") + d.order(buy80, "canceled") + d.tick("95") + d.tick("105")
    assert places(later) == []
    assert d.slot(-1).holding == buy90.amount  # the inventory is still booked, with nothing resting for it


def test_back_off_doubles_per_refusal_and_is_capped_at_a_minute() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    waits = []
    for _ in range(9):
        d.order(buy, "rejected", reason="insufficient_balance")
        slot = d.slot(-1)
        waits.append(slot.retry_at - d.ts)
        d.ts = slot.retry_at
        [buy] = places(d.tick("100"))  # the wait is over: it tries again
    assert waits == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
    d.order(buy, "open")
    d.order(buy, "canceled")
    assert d.slot(-1).rejects == 0 and d.slot(-1).retry_at == 0  # an order the venue took resets it


def test_breakers_reduce_only_then_halt_and_other_markets_are_ignored() -> None:
    d = Driver(grid(mode="long", levels=1))
    [buy] = places(d.tick("100"))
    d.order(buy, "open")
    other = BreakerChange(id="b0", instance="global", scope="symbol.sim.ETH-USDT-USDT", state="halted", previous="ok", reason="x", ts=d.ts)
    assert cancels(d.feed(other)) == [] and d.state.status == "running"
    reduce = BreakerChange(id="b1", instance="global", scope="venue.sim", state="reduce_only", previous="ok", reason="exposure", ts=d.ts)
    assert [c.client_order_id for c in cancels(d.feed(reduce))] == [buy.client_order_id]
    assert d.state.status == "reduce_only"
    halt = BreakerChange(id="b2", instance="global", scope="global", state="halted", previous="ok", reason="feed stale", ts=d.ts)
    d.feed(halt)
    assert d.state.status == "halted" and d.state.breaker == "halted"
    ok = BreakerChange(id="b3", instance="global", scope="global", state="ok", previous="halted", reason="fresh", ts=d.ts + 1)
    d.feed(ok)
    assert d.state.status == "reduce_only"  # the venue scope is still reduce-only: the worst wins


def test_first_start_adopts_the_venues_orders_and_position_instead_of_duplicating() -> None:
    config = grid(mode="long", levels=3, anchor=None)
    prefix = client_prefix("g1")
    resting_buy = order_update(client_order_id(prefix, "open", -2, 7), "open", "0", "12.5", "80", side="buy", order_id="a")
    closing = order_update(client_order_id(prefix, "close", -1, 9), "open", "1", "11.111", "100", side="sell", order_id="b")
    foreign = order_update("someoneelse1", "open", "0", "1", "85", side="buy", order_id="c")
    position = Position(
        id="p", venue="sim", account="main", symbol="BTC/USDT:USDT", side="long", contracts=D("12.111"), entry_price=D(90), ts=T, ts_local=T
    )
    snap = VenueSnapshot(
        id="s",
        component="grid",
        instance="g1",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        orders=[resting_buy, closing, foreign],
        positions=[position],
        ts=T,
    )
    config = msgspec.structs.replace(config, spacing=D("0.1111111111"), spacing_type="geometric")
    d = Driver(config, snapshot=snap)
    assert d.state.adopted and d.state.next_generation == 10
    assert d.slot(-2).client_order_id == resting_buy.client_order_id and d.slot(-2).phase == "open"
    assert d.slot(-1).holding == D("10.111") and d.slot(-1).role == "close"  # what the closing order still has to sell
    assert d.state.unassigned == D(2)  # the rest of the venue's position
    assert d.state.anchor is not None
    out = d.tick("90")
    placed_slots = {parse_client_order_id(prefix, p.client_order_id)[1] for p in places(out)}
    assert -2 not in placed_slots and -1 not in placed_slots  # nothing placed twice


def test_the_cleaner_keeps_open_orders_under_the_limit_oldest_first() -> None:
    # Validation keeps max_open_orders >= levels, so only a state from elsewhere (an adopted
    # account, a lowered limit) can hold too many orders: build one directly.
    d = Driver(grid(mode="long", levels=3))
    out = d.tick("100")
    for p in sorted(places(out), key=lambda p: p.price):  # accepted lowest price first
        d.order(p, "open")
    slots = [msgspec.structs.replace(s, sent_seq=100 + s.index) for s in d.state.slots]  # -3 oldest, -1 newest
    d.state = msgspec.structs.replace(d.state, slots=slots, quiet=None)
    lowered = copy.copy(d.core.cfg)
    msgspec.structs.force_setattr(lowered, "max_open_orders", 2)  # bypasses validation, as intended here
    d.core.cfg = lowered
    out = d.tick("100.1")
    [cancel] = cancels(out)
    assert cancel.reason == "over max_open_orders"
    assert parse_client_order_id(client_prefix("g1"), cancel.client_order_id)[1] == -3


def test_state_is_published_on_change_and_every_five_seconds_of_event_time() -> None:
    d = Driver(grid())
    out = d.tick("100")
    [state] = [o for o in out if isinstance(o, StrategyState)]
    assert state.id == f"state:grid:g1:{d.seq}" and state.input_seq == d.seq
    assert state.state is not None and msgspec.convert(state.state, GridState) == d.state  # a replay can start here
    assert state.open_orders == 4 and state.status == "running"
    assert {lvl.price for lvl in state.levels} >= {D(80), D(90), D(110), D(120)}
    quiet = [o for o in d.tick("100.2") if isinstance(o, StrategyState)]
    assert quiet == []
    d.ts += PUBLISH_EVERY_MS
    assert [o for o in d.tick("100.3") if isinstance(o, StrategyState)]  # price refresh


def test_dust_below_the_minimum_joins_a_neighbour_instead_of_a_closing_order() -> None:
    d = Driver(grid(mode="long", levels=2, notional=D(20)))
    out = d.tick("100")
    buy90, buy80 = sorted(places(out), key=lambda p: -p.price)
    d.order(buy80, "closed", filled=str(buy80.amount))
    out = d.order(buy90, "canceled", filled="0.002")  # 0.002 x 100 = 0.2 USDT: below the 5 USDT minimum
    assert d.slot(-1).holding == 0 and d.slot(-1).role == "open"  # its dust went to the neighbour; it buys again
    assert d.slot(-2).holding == buy80.amount + D("0.002")
    assert d.core.position(d.state) == buy80.amount + D("0.002")


@pytest.mark.parametrize(
    "config, market_kind, fragment",
    [
        (dict(spacing=D("0.01"), spacing_type="arithmetic"), "swap", "below the tick size"),
        (dict(notional=D(1)), "swap", "notional 1"),
        (dict(mode="neutral"), "spot", "needs a derivatives market"),
        (dict(anchor=None, lower=D(200), upper=D(300)), "swap", "outside"),
    ],
)
def test_configs_that_cannot_trade_the_market_are_refused_naming_the_field(config: dict[str, Any], market_kind: str, fragment: str) -> None:
    market = msgspec.structs.replace(MARKET, kind=market_kind)
    problems = check_config(grid(**config), market, D(100))
    assert problems and any(fragment in p for p in problems)


def test_an_order_event_the_core_cannot_book_halts_the_grid_instead_of_vanishing(monkeypatch: pytest.MonkeyPatch) -> None:
    d = Driver(grid(mode="long", levels=2))
    opening = places(d.tick("100"))
    for p in opening:
        d.order(p, "open")

    def broken(*_args: Any) -> None:
        raise ArithmeticError("cannot book this")

    monkeypatch.setattr("strategies.grid.core.book_slot_order", broken)
    out = d.order(opening[0], "closed", filled=str(opening[0].amount))
    assert d.state.status == "halted" and "cannot book this" in (d.state.fault or "")
    assert {c.client_order_id for c in cancels(out)} == {p.client_order_id for p in opening}
    [state] = [o for o in out if isinstance(o, StrategyState)]
    assert state.state is not None and state.state["fault"]  # operators see why
    d.feed(ControlCommand(id="r", target_component="grid", target_instance="g1", action="reset", operator="ops", ts=d.ts))
    assert d.state.fault is None and not d.state.halted


def test_an_adopted_fill_before_the_first_price_is_booked_and_closed_later() -> None:
    prefix = client_prefix("g1")
    buy = order_update(client_order_id(prefix, "open", -1, 3), "open", "0", "11.111", "90", side="buy", order_id="a")
    snap = VenueSnapshot(id="s", component="grid", instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT", orders=[buy], ts=T)
    d = Driver(grid(mode="long", levels=2, anchor=None), snapshot=snap)
    assert d.state.anchor == D(100)  # inferred from the adopted order: 90 + 1 level of 10
    d.feed(order_update(buy.client_order_id, "canceled", "0.5", "11.111", "90", side="buy", order_id="a", ts=T + 1))
    assert d.state.fault is None and d.slot(-1).holding == D("0.5")
    out = d.tick("100")
    assert ("sell", D(100)) in [(p.side, p.price) for p in places(out)]


def test_a_ticker_older_than_the_last_one_is_ignored() -> None:
    d = Driver(grid(mode="long", levels=1))
    d.tick("100")
    before = d.state
    d.feed(ticker("50", ts=d.ts - 100))  # late, out of order
    assert d.state.last_price == before.last_price == D(100)
