"""The target, one rule at a time: which orders should rest for a given price, slots and status
(pure: the whole target is compared, every order with its side, price, size and flags)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import msgspec

from schemas.market import Market
from schemas.ops import StrategyStatus
from strategies.grid.lattice import Lattice
from strategies.grid.state import GridSlot, GridState
from strategies.grid.targets import Target, crosses, targets
from testkit.grid import MARKET, grid

# notional 1000 on levels 10 apart around 100: the sizes per level
SIZE = {-3: D("14.285"), -2: D("12.5"), -1: D("11.111"), 1: D("9.090"), 2: D("8.333"), 3: D("7.692")}


def target(
    slots: list[GridSlot],
    status: StrategyStatus = "running",
    bid: str | None = "99.9",
    ask: str | None = "100.1",
    center: int = 0,
    market: Market = MARKET,
    **config: Any,
) -> dict[int, Target]:
    cfg = grid(**config)
    st = GridState(
        instance="g1",
        venue="sim",
        account="main",
        symbol=cfg.symbol,
        mode=cfg.mode,
        market=market,
        status=status,
        bid=D(bid) if bid else None,
        ask=D(ask) if ask else None,
        slots=slots,
    )
    return targets(cfg, st, Lattice(cfg, market, D(100)), {s.index: s for s in slots}, center)


def held(index: int, holding: str, **kw: Any) -> GridSlot:
    return GridSlot(index=index, phase="filled", holding=D(holding), entry_price=D(100), **kw)


def opening(index: int, side: str, **kw: Any) -> GridSlot:
    return GridSlot(index=index, phase="open", role="open", side=side, status="open", price=D(100), amount=D(1), **kw)  # type: ignore[arg-type]


def opens(side: str, *levels: int) -> dict[int, Target]:
    return {k: Target("open", side, 100 + 10 * D(k), SIZE[k]) for k in levels}  # type: ignore[arg-type]


def test_an_order_crosses_the_book_when_a_buy_reaches_the_ask_or_a_sell_the_bid() -> None:
    assert crosses("buy", D(100), None, D(100)) and crosses("buy", D("100.1"), None, D(100))
    assert not crosses("buy", D("99.9"), D(100), D(100)) and not crosses("buy", D(100), D(100), None)
    assert crosses("sell", D(100), D(100), None) and crosses("sell", D("99.9"), D(100), D(200))
    assert not crosses("sell", D("100.1"), D(100), D(100)) and not crosses("sell", D(100), None, D(100))


def test_neutral_rests_levels_opening_orders_each_side_nearest_first() -> None:
    assert target([]) == opens("buy", -1, -2) | opens("sell", 1, 2)
    assert list(target([])) == [-1, -2, 1, 2]
    assert target([], mode="long", levels=3) == opens("buy", -1, -2, -3)
    assert target([], mode="short", levels=3) == opens("sell", 1, 2, 3)


def test_the_windows_sit_around_the_center_not_the_anchor() -> None:
    assert target([], center=-1, bid="89.9", ask="90.1") == opens("buy", -2, -3) | {
        0: Target("open", "sell", D(100), D(10)),
        1: Target("open", "sell", D(110), SIZE[1]),
    }


def test_every_holding_rests_its_closing_order_one_level_on() -> None:
    slots = [held(-2, "3"), held(-1, "1"), held(1, "-0.5"), held(2, "-2")]  # net long 1.5
    assert target(slots, levels=3, bid=None, ask=None) == {
        -2: Target("close", "sell", D(90), D(3), False),  # selling 3 would turn the net short: not reduce-only
        -1: Target("close", "sell", D(100), D(1), True),
        1: Target("close", "buy", D(100), D("0.5"), False),
        2: Target("close", "buy", D(110), D(2), False),
        -3: Target("open", "buy", D(70), SIZE[-3]),
        3: Target("open", "sell", D(130), SIZE[3]),
    }


def test_a_one_sided_grids_closing_orders_always_reduce_on_a_swap_and_never_on_spot() -> None:
    assert target([held(-1, "2")], mode="long", levels=1) == {-1: Target("close", "sell", D(100), D(2), True)}
    spot = msgspec.structs.replace(MARKET, kind="spot")
    assert target([held(-1, "2")], mode="long", levels=1, market=spot) == {-1: Target("close", "sell", D(100), D(2), False)}


def test_a_neutral_closing_order_reduces_only_when_the_net_covers_it_exactly_or_more() -> None:
    assert target([held(1, "-5")], levels=1) == {1: Target("close", "buy", D(100), D(5), True)} | opens("buy", -1)  # net -5
    assert target([held(1, "-5"), held(-1, "0.5")], levels=1)[1] == Target("close", "buy", D(100), D(5), False)  # net -4.5
    assert target([held(-1, "5")], levels=1) == {-1: Target("close", "sell", D(100), D(5), True)} | opens("sell", 1)
    assert target([held(-1, "5"), held(1, "-0.5")], levels=1)[-1] == Target("close", "sell", D(100), D(5), False)


def test_reduce_only_keeps_only_the_closing_orders_that_reduce_in_any_slot_order() -> None:
    slots = [held(-2, "-1"), held(-1, "3"), held(1, "3")]  # net long 5: the buy back at -2 would increase it
    assert target(slots, status="reduce_only") == {
        -1: Target("close", "sell", D(100), D(3), True),
        1: Target("close", "sell", D(120), D(3), True),
    }
    assert target(slots, status="running")[-2] == Target("close", "buy", D(70), D(1), False)


def test_paused_keeps_closing_orders_and_halted_keeps_nothing() -> None:
    slots = [held(-1, "2")]
    assert target(slots, status="paused") == {-1: Target("close", "sell", D(100), D(2), True)}
    assert target(slots, status="starting") == {-1: Target("close", "sell", D(100), D(2), True)}
    assert target(slots, status="halted") == {}


def test_a_closing_order_that_would_take_liquidity_waits() -> None:
    assert target([held(-1, "2")], mode="long", levels=1, bid="100", ask="100.1") == {}
    assert target([held(-1, "2")], mode="long", levels=1, bid="99.9", ask="100.1") == {-1: Target("close", "sell", D(100), D(2), True)}
    assert target([held(1, "-2")], mode="short", levels=1, bid="99.9", ask="100") == {}
    assert target([held(1, "-2")], mode="short", levels=1, bid="99.8", ask="99.9") == {}  # and the closing buy at 100 too
    assert target([held(1, "-2")], mode="short", levels=1, bid=None, ask=None) == {1: Target("close", "buy", D(100), D(2), True)}


def test_an_opening_order_that_would_take_liquidity_is_left_out_and_the_next_level_rests() -> None:
    assert target([], mode="short", bid="115", ask="115.1") == {
        2: Target("open", "sell", D(120), SIZE[2])
    }  # 110 is at or below the bid: only 120, nothing beyond the window
    assert target([], mode="long", bid="84.9", ask="85") == opens("buy", -2)


def test_a_slot_with_a_free_phase_before_a_holding_one_does_not_hide_it() -> None:
    slots = [opening(-2, "buy"), held(-1, "1")]
    assert target(slots, mode="long", levels=2) == {
        -1: Target("close", "sell", D(100), D(1), True),
        -2: Target("open", "buy", D(80), SIZE[-2]),
    }


def test_a_holding_of_exactly_one_unit_rests_its_closing_order() -> None:
    assert target([held(-1, "1")], mode="long", levels=1) == {-1: Target("close", "sell", D(100), D(1), True)}


def test_inventory_outside_the_window_counts_toward_the_levels_per_side() -> None:
    # Far below the price, their closing sells would take the bid: they wait, but still count.
    assert target([held(-6, "1"), held(-5, "0.5")]) == opens("sell", 1, 2)
    assert target([held(-5, "0.5")]) == opens("buy", -1) | opens("sell", 1, 2)
    assert target([held(6, "-1"), held(5, "-1")]) == opens("buy", -1, -2)


def test_live_opening_orders_count_on_their_own_side_only() -> None:
    assert target([opening(1, "sell")], levels=1) == opens("buy", -1) | opens("sell", 1)
    closing_buy = held(1, "-5", role="close", side="buy", status="open", client_order_id="c")
    assert target([closing_buy], levels=1) == {1: Target("close", "buy", D(100), D(5), True)} | opens("buy", -1)


def test_a_live_opening_order_keeps_its_place_when_the_side_is_full() -> None:
    slots = [held(-5, "1"), opening(-1, "buy")]  # two units on the buy side, counting the live order: the limit
    assert target(slots) == opens("buy", -1) | opens("sell", 1, 2)


def test_a_full_side_still_keeps_a_live_opening_order_farther_out() -> None:
    slots = [held(-5, "1"), opening(-2, "buy")]  # the side is full; the free level -1 nearer the center stays empty
    assert target(slots, mode="long") == opens("buy", -2)


def test_a_slot_busy_with_a_closing_order_is_skipped_by_the_window() -> None:
    slots = [GridSlot(index=-1, phase="open", role="close", side="sell", status="open", price=D(100), amount=D(1))]
    assert target(slots, mode="long", levels=2) == opens("buy", -2)


def test_levels_outside_the_bounds_or_below_the_minimums_are_left_out() -> None:
    assert target([], lower=D(85), upper=D(115)) == opens("buy", -1) | opens("sell", 1)
    assert target([], lower=D(80), upper=D(120)) == opens("buy", -1, -2) | opens("sell", 1, 2)
    small = target([], notional=D("5.05"))  # 0.045 at 110 is worth 4.95, below the 5 minimum
    assert small == {
        -1: Target("open", "buy", D(90), D("0.056")),
        -2: Target("open", "buy", D(80), D("0.063")),
        2: Target("open", "sell", D(120), D("0.042")),
    }


def test_an_order_of_exactly_one_unit_is_an_order() -> None:
    assert target([], mode="long", levels=1, notional=D(90)) == {-1: Target("open", "buy", D(90), D(1))}
