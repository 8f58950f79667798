"""What the grid publishes about itself: the state event (position, PnL, open orders, the whole
state) and the drawable levels (the order windows around the center plus every busy slot)."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
from msgspec.structs import replace

from schemas.ops import GridLevel, StrategyState
from strategies.grid.core import GridCore
from strategies.grid.state import GridSlot, GridState, Stray
from testkit.grid import MARKET, T, grid

MARKET_HALF = replace(MARKET, contract_size=D("0.5"))
CORE = GridCore(grid(levels=1), MARKET_HALF)

SLOTS = [
    GridSlot(index=-4, phase="filled", holding=D(2), entry_price=D(60)),
    GridSlot(
        index=-1, phase="pending", generation=5, client_order_id="b", role="open", side="buy", price=D(90), amount=D(3), status="pending"
    ),
    GridSlot(index=1, phase="canceling", client_order_id="s", role="open", side="sell", price=D(110), amount=D(2), status="canceling"),
    GridSlot(
        index=2,
        phase="filled",
        client_order_id="c",
        role="close",
        side="buy",
        price=D(110),
        amount=D(1),
        filled=D("0.5"),
        status="open",
        holding=D(-1),
        entry_price=D(110),
    ),
    GridSlot(index=3, phase="filled", holding=D("0.5")),  # adopted without a price: no entry to value it from
]
STATE = GridState(
    instance="g1",
    venue="sim",
    account="main",
    symbol="BTC/USDT:USDT",
    mode="neutral",
    market=MARKET_HALF,
    status="running",
    anchor=D(100),
    center=1,
    last_price=D(105),
    ts=T + 5,
    seq=17,
    slots=SLOTS,
    strays=[Stray(client_order_id="x", index=7, side="sell")],
    unassigned=D(1),
    realized_pnl=D(3),
    fills=4,
)


def test_the_state_event_carries_position_pnl_open_orders_and_the_whole_state() -> None:
    assert CORE.state_event(STATE) == StrategyState(
        id="state:grid:g1:17",
        component="grid",
        instance="g1",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        status="running",
        input_seq=17,
        position=D("2.5"),  # 2 - 1 + 0.5 held, 1 unassigned
        realized_pnl=D(3),
        unrealized_pnl=D("47.5"),  # (105 - 60) x 2 x 0.5 + (105 - 110) x -1 x 0.5
        open_orders=4,  # pending, canceling, open, and the stray
        fills=4,
        state=msgspec.to_builtins(STATE),
        levels=CORE.levels(STATE),
        ts=T + 5,
    )


def test_before_the_first_price_nothing_is_unrealized() -> None:
    assert CORE.state_event(replace(STATE, last_price=None)).unrealized_pnl == 0


def test_the_levels_are_the_windows_around_the_center_plus_every_busy_slot() -> None:
    assert CORE.levels(STATE) == [
        GridLevel(index=-4, price=D(60), phase="filled", holding=D(2)),
        GridLevel(index=-1, price=D(90), phase="pending", side="buy", role="open", client_order_id="b", order_price=D(90), amount=D(3)),
        GridLevel(index=0, price=D(100)),
        GridLevel(index=1, price=D(110), phase="canceling", side="sell", role="open", client_order_id="s", order_price=D(110), amount=D(2)),
        GridLevel(
            index=2,
            price=D(120),
            phase="filled",
            side="buy",
            role="close",
            client_order_id="c",
            order_price=D(110),
            amount=D(1),
            filled=D("0.5"),
            holding=D(-1),
        ),
        GridLevel(index=3, price=D(130), phase="filled", holding=D("0.5")),
    ]


def test_with_no_busy_slot_the_levels_are_the_windows_and_one_more_level_each_side() -> None:
    assert CORE.levels(replace(STATE, slots=[])) == [GridLevel(index=k, price=D(100 + 10 * k)) for k in range(-1, 4)]


def test_without_an_anchor_there_are_no_levels() -> None:
    assert CORE.levels(replace(STATE, anchor=None)) == []
