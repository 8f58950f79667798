"""A first start, one rule at a time: the venue's orders of this instance take their slots with
what they still have to do, the position no slot accounts for is kept apart, the lattice is the
one the orders were placed on, and a breaker reading never overwrites a newer breaker event."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from msgspec.structs import replace

from schemas.account import OrderUpdate, Position
from schemas.ops import BreakerChange, BreakerState, VenueSnapshot
from schemas.subjects import breaker_scopes
from strategies.grid.adoption import adopt, apply_breaker
from strategies.grid.config import GridConfig
from strategies.grid.lattice import client_order_id, client_prefix
from strategies.grid.state import GridSlot, GridState
from testkit.events import order_update
from testkit.grid import MARKET, T, grid

PREFIX = client_prefix("g1")
SCOPES = set(breaker_scopes("sim", "BTC/USDT:USDT"))


def before(cfg: GridConfig, **kw: Any) -> GridState:
    base: dict[str, Any] = dict(
        instance="g1", venue="sim", account="main", symbol=cfg.symbol, mode=cfg.mode, market=MARKET, anchor=cfg.anchor, ts=T - 1_000
    )
    return GridState(**(base | kw))


def order(role: str, index: int, gen: int, side: str, amount: str, price: str, filled: str = "0", **kw: Any) -> OrderUpdate:
    cid = client_order_id(PREFIX, role, index, gen)  # type: ignore[arg-type]
    return order_update(cid, kw.pop("status", "open"), filled, amount, price, side=side, order_id=f"v{index}", **kw)


def snapshot(orders: list[OrderUpdate], positions: list[Position] | None = None, **kw: Any) -> VenueSnapshot:
    return VenueSnapshot(
        id="s", component="grid", instance="g1", venue="sim", account="main", symbol="BTC/USDT:USDT",
        orders=orders, positions=positions or [], ts=T, **kw,
    )  # fmt: skip


def position(side: str | None, contracts: str, symbol: str = "BTC/USDT:USDT") -> Position:
    return Position(id="p", venue="sim", account="main", symbol=symbol, side=side, contracts=D(contracts), ts=T, ts_local=T)  # type: ignore[arg-type]


def adopted(o: OrderUpdate, index: int, gen: int, role: str, holding: str, cost: str, phase: str) -> GridSlot:
    return GridSlot(
        index=index,
        phase=phase,  # type: ignore[arg-type]
        generation=gen,
        client_order_id=o.client_order_id,
        order_id=o.order_id,
        role=role,  # type: ignore[arg-type]
        side=o.side,
        price=o.price,
        amount=o.amount,
        filled=o.filled,
        cost=D(cost),
        fee=o.fee_cost,
        status="open",
        holding=D(holding),
        entry_price=o.price if D(holding) else None,
    )


def test_the_venues_orders_of_this_instance_take_their_slots_with_what_they_still_have_to_do() -> None:
    cfg = grid(anchor=None)
    buy = order("open", -2, 7, "buy", "12.5", "80", filled="0.5", average=D("79.9"))  # partly filled: holds 0.5
    sell = order("open", 2, 4, "sell", "8.333", "120", filled="1")  # no average: its fills cost its price
    close_long = order("close", -1, 9, "sell", "11.111", "100", filled="1", fee_cost=D("0.02"))  # 10.111 still to sell
    close_short = order("close", 1, 5, "buy", "9.09", "100", filled="2")  # 7.09 still to buy back
    resting = order("open", -3, 2, "buy", "14.285", "70")
    ignored = [
        order_update("someoneelse1", "open", "0", "1", "85", side="buy", order_id="c"),  # not ours
        order("open", -4, 30, "buy", "1", "60", symbol="ETH/USDT:USDT"),  # ours, another market
        order("open", -5, 31, "buy", "1", "50", status="closed", filled="1"),  # ours, already ended
    ]
    positions = [position("long", "12"), position("short", "3"), position("long", "5", "ETH/USDT:USDT"), position(None, "0")]
    st = adopt(cfg, PREFIX, before(cfg), snapshot([*ignored, buy, sell, close_long, close_short, resting], positions), SCOPES, 42)
    assert st == before(
        cfg,
        slots=[
            adopted(resting, -3, 2, "open", "0", "0", "open"),
            adopted(buy, -2, 7, "open", "0.5", "39.95", "filled"),
            adopted(close_long, -1, 9, "close", "10.111", "100", "filled"),
            adopted(close_short, 1, 5, "close", "-7.09", "200", "filled"),
            adopted(sell, 2, 4, "open", "-1", "120", "filled"),
        ],
        next_generation=10,
        first_own_generation=10,
        adopted_ts=T,
        anchor=D(100),  # -2's buy at 80, ten below per level
        unassigned=D(9) - D("2.521"),  # long 12, short 3: net 9, of which the slots hold 2.521
        adopted=True,
        ts=T,
        seq=42,
    )


def test_an_empty_venue_starts_the_generations_where_the_state_left_them_and_keeps_a_later_time() -> None:
    cfg = grid()
    st = adopt(cfg, PREFIX, before(cfg, next_generation=5, ts=T + 10), snapshot([]), SCOPES, 3)
    assert st == before(cfg, next_generation=5, first_own_generation=5, adopted_ts=T, adopted=True, ts=T + 10, seq=3)


def anchor_of(cfg: GridConfig, o: OrderUpdate) -> D | None:
    return adopt(cfg, PREFIX, before(cfg), snapshot([o]), SCOPES, 1).anchor


def test_the_anchor_is_the_lattice_the_adopted_orders_were_placed_on() -> None:
    arithmetic = grid(anchor=None)
    assert anchor_of(arithmetic, order("open", -2, 1, "buy", "1", "80")) == D(100)
    assert anchor_of(arithmetic, order("close", -3, 1, "sell", "1", "80")) == D(100)  # a sell closes the level below it
    assert anchor_of(arithmetic, order("close", 3, 1, "buy", "1", "120")) == D(100)  # a buy closes the level above it
    geometric = grid(anchor=None, spacing=D("0.1"), spacing_type="geometric")
    assert anchor_of(geometric, order("open", 2, 1, "sell", "1", "121")) == D(100)
    assert anchor_of(geometric, order("close", 1, 1, "sell", "1", "121")) == D(100)
    assert anchor_of(geometric, order("close", 3, 1, "buy", "1", "121")) == D(100)


def test_a_configured_anchor_is_kept_whatever_the_orders_say() -> None:
    assert anchor_of(grid(anchor=D(100)), order("open", -1, 1, "buy", "1", "85")) == D(100)


def breaker(state: BreakerState, ts: int) -> BreakerChange:
    return BreakerChange(id=f"b{ts}", instance="risk", scope="x", state=state, previous="ok", reason="r", ts=ts)


def test_the_snapshots_breakers_apply_when_they_cover_the_grid_and_are_strictly_newer() -> None:
    cfg = grid()
    events = {"venue.sim": "halted", "symbol.sim.BTC-USDT-USDT": "ok"}
    st = before(cfg, breakers=events, breakers_at={"venue.sim": T, "symbol.sim.BTC-USDT-USDT": T - 10}, breaker="halted")
    read = {
        "global": breaker("reduce_only", T - 50),  # nothing known yet: taken
        "venue.sim": breaker("ok", T),  # the event at the same time was stored after the reading: kept
        "symbol.sim.BTC-USDT-USDT": breaker("reduce_only", T),  # newer than the event: taken
        "venue.other": breaker("halted", T),  # another venue's
    }
    new = adopt(cfg, PREFIX, st, snapshot([], breakers=read), SCOPES, 1)
    assert (new.breakers, new.breakers_at, new.breaker) == (
        {"venue.sim": "halted", "symbol.sim.BTC-USDT-USDT": "reduce_only", "global": "reduce_only"},
        {"venue.sim": T, "symbol.sim.BTC-USDT-USDT": T, "global": T - 50},
        "halted",
    )


def test_a_breaker_event_applies_at_the_same_time_as_what_is_known_but_not_earlier() -> None:
    st = before(grid(), breakers={"global": "halted"}, breakers_at={"global": T}, breaker="halted")
    assert apply_breaker(st, "global", breaker("ok", T)) == replace(st, breakers={"global": "ok"}, breaker="ok")
    assert apply_breaker(st, "global", breaker("ok", T - 1)) == st
    assert apply_breaker(st, "global", breaker("ok", T), strictly_newer=True) == st
    assert apply_breaker(st, "global", breaker("reduce_only", T + 1), strictly_newer=True) == replace(
        st, breakers={"global": "reduce_only"}, breakers_at={"global": T + 1}, breaker="reduce_only"
    )
