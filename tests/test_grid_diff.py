"""Target, then diff, one rule at a time: which live orders rest on, which are canceled and why,
what is placed within `max_open_orders`, and what the state remembers (pure: the whole command
list and the whole resulting state are compared)."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

from msgspec.structs import replace

from schemas.commands import CancelOrder, PlaceOrder
from schemas.ops import LiveStatus, OrderRole
from strategies.grid.booking import BOOKED_KEPT
from strategies.grid.config import GridConfig
from strategies.grid.diff import STRAY_PATIENCE_MS, quiet_bounds, reconcile
from strategies.grid.lattice import Lattice, client_order_id, client_prefix
from strategies.grid.state import Booked, GridSlot, GridState, Stray, settle
from testkit.grid import MARKET, T, grid

PREFIX = client_prefix("g1")
SEQ = 9
GEN = 20  # the next generation in every state here
SIZE = {-5: D("20"), -4: D("16.666"), -3: D("14.285"), -2: D("12.5"), -1: D("11.111"), 1: D("9.090"), 2: D("8.333")}


def config(**kw: Any) -> GridConfig:
    return grid(**({"ttl_ms": 5_000} | kw))


def lat(cfg: GridConfig) -> Lattice:
    return Lattice(cfg, MARKET, D(100))


def state(cfg: GridConfig, slots: list[GridSlot], strays: list[Stray] | None = None, **kw: Any) -> GridState:
    base: dict[str, Any] = dict(
        instance="g1",
        venue="sim",
        account="main",
        symbol=cfg.symbol,
        mode=cfg.mode,
        market=MARKET,
        status="running",
        adopted=True,
        anchor=D(100),
        last_price=D(100),
        bid=D("99.9"),
        ask=D("100.1"),
        ts=T,
        seq=SEQ,
        next_generation=GEN,
        slots=slots,
        strays=strays or [],
    )
    return GridState(**(base | kw))


def run(cfg: GridConfig, st: GridState) -> tuple[GridState, list[Any]]:
    return reconcile(cfg, PREFIX, st, lat(cfg), SEQ)


def live(
    index: int, side: str, price: str | int | D, amount: str | int | D, role: OrderRole = "open", status: LiveStatus = "open", **kw: Any
) -> GridSlot:
    gen = kw.pop("generation", 3)
    return settle(
        GridSlot(index=index),
        generation=gen,
        client_order_id=client_order_id(PREFIX, role, index, gen),
        order_id=f"x{index}",
        role=role,
        side=side,
        price=D(price),
        amount=D(amount),
        status=status,
        **kw,
    )


def held(index: int, holding: str | D, **kw: Any) -> GridSlot:
    return settle(GridSlot(index=index), holding=D(holding), entry_price=D(100), **kw)


def stray(index: int, generation: int = 1, **kw: Any) -> Stray:
    cid = client_order_id(PREFIX, "open", index, generation)
    return Stray(client_order_id=cid, order_id=f"s{index}", index=index, side="sell", **kw)


def cancel(cid: str | None, order_id: str | None, reason: str) -> CancelOrder:
    assert cid is not None
    return CancelOrder(
        id=f"cancel:sim:main:{cid}",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        client_order_id=cid,
        order_id=order_id,
        origin="grid/g1",
        reason=reason,
        ts=T,
        ttl_ms=5_000,
    )


def place(index: int, side: str, price: str | int | D, amount: D, gen: int, role: OrderRole = "open", **kw: Any) -> PlaceOrder:
    cid = client_order_id(PREFIX, role, index, gen)
    return PlaceOrder(
        id=f"place:sim:main:{cid}",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        client_order_id=cid,
        side=side,  # type: ignore[arg-type]
        order_type="limit",
        price=D(price),
        amount=amount,
        post_only=kw.pop("post_only", True),
        reduce_only=kw.pop("reduce_only", False),
        origin="grid/g1",
        ts=T,
        ttl_ms=5_000,
    )


def pending(slot: GridSlot, role: OrderRole, side: str, price: str | int | D, amount: D, gen: int) -> GridSlot:
    """The slot with a new order just sent."""
    return settle(
        slot,
        generation=gen,
        client_order_id=client_order_id(PREFIX, role, slot.index, gen),
        order_id=None,
        role=role,
        side=side,
        price=D(price),
        amount=amount,
        filled=D(0),
        cost=D(0),
        fee=D(0),
        status="pending",
        sent_seq=SEQ,
    )


def after(cfg: GridConfig, st: GridState, level: int = 0, **kw: Any) -> GridState:
    """What reconcile leaves when it changes only `kw`: the quiet bounds always follow the book."""
    return replace(st, quiet=quiet_bounds(lat(cfg), level, st.bid, st.ask), **kw)


# ------------------------------------------------------------------ live orders


def test_a_live_order_that_is_the_target_rests_on_within_a_tick_and_counting_its_fills() -> None:
    cfg = config(mode="long", levels=2)
    slots = [
        live(-2, "sell", 90, 10, role="close", filled=D(6), holding=D(4)),  # a closing order, 6 of 10 filled: 4 to go
        live(-1, "buy", "90.1", SIZE[-1]),  # adopted a tick off the level
    ]
    st = state(cfg, slots, bid=D("49.9"), ask=D("150.1"))
    assert run(cfg, st) == (after(cfg, st), [])


def test_a_live_order_whose_target_moved_or_changed_is_canceled_once() -> None:
    cfg = config(mode="long", levels=2)
    waiting = GridSlot(index=-6, rejects=1)  # no live order: passed over
    canceling = live(-3, "buy", 70, SIZE[-3], status="canceling")  # already on its way out
    changed = live(-2, "buy", 80, D(5))  # the target is 12.5 there
    kept = live(-1, "buy", 90, SIZE[-1])
    moved = live(1, "sell", 110, SIZE[1])  # a long grid has no target there
    st = state(cfg, [waiting, canceling, changed, kept, moved])
    new, out = run(cfg, st)
    assert out == [
        cancel(changed.client_order_id, "x-2", "target changed"),
        cancel(moved.client_order_id, "x1", "target moved"),
    ]
    assert new == after(cfg, st, slots=[waiting, canceling, settle(changed, status="canceling"), kept, settle(moved, status="canceling")])


def test_the_center_trails_the_price_only_beyond_trail_levels() -> None:
    cfg = config(mode="long", levels=1, trail_levels=2)
    assert run(cfg, state(cfg, [], last_price=D(120)))[0].center == 0  # two levels away: not beyond
    assert run(cfg, state(cfg, [], last_price=D(130)))[0].center == 3
    assert run(cfg, state(cfg, [], last_price=D(110), center=2, bid=D("109.9"), ask=D("110.1")))[0].center == 2
    assert run(cfg, state(cfg, [], last_price=D(70), center=-2, bid=D("69.9"), ask=D("70.1")))[0].center == -2
    assert run(config(mode="long", levels=1, trail_levels=0), state(cfg, [], last_price=D(300)))[0].center == 0  # 0: never


# ------------------------------------------------------------------ places within the limit


def test_places_fill_the_room_left_by_live_orders_canceling_ones_and_strays() -> None:
    cfg = config(mode="long", levels=5, max_open_orders=5)
    slots = [live(-2, "buy", 80, SIZE[-2]), live(-1, "buy", 90, SIZE[-1])]
    st = state(cfg, slots, [stray(7)])
    new, out = run(cfg, st)
    assert out == [
        cancel(stray(7).client_order_id, "s7", "not an order of any slot"),
        place(-3, "buy", 70, SIZE[-3], GEN),
        place(-4, "buy", 60, SIZE[-4], GEN + 1),
    ]
    assert new == after(
        cfg,
        st,
        slots=[
            pending(GridSlot(index=-4), "open", "buy", 60, SIZE[-4], GEN + 1),
            pending(GridSlot(index=-3), "open", "buy", 70, SIZE[-3], GEN),
            *slots,
        ],
        strays=[stray(7, canceling=True, canceled_at=T)],
        next_generation=GEN + 2,
    )


def test_no_room_places_nothing() -> None:
    cfg = config(mode="long", levels=5, max_open_orders=5)
    slots = [live(-2, "buy", 80, SIZE[-2]), live(-1, "buy", 90, SIZE[-1]), live(-3, "buy", 70, SIZE[-3])]
    strays = [stray(7, canceling=True, canceled_at=T - 1), stray(8, canceling=True, canceled_at=T - 1)]
    st = state(cfg, slots, strays)
    assert run(cfg, st) == (after(cfg, st, slots=sorted(slots, key=lambda s: s.index)), [])


def test_closing_orders_go_first_then_the_opening_orders_nearest_the_price() -> None:
    cfg = config(levels=2, max_open_orders=4)
    inventory = held(-1, SIZE[-1])
    st = state(cfg, [inventory], [stray(7), stray(8)], last_price=D(95), bid=D("94.9"), ask=D("95.1"))
    new, out = run(cfg, st)
    assert out == [
        cancel(stray(7).client_order_id, "s7", "not an order of any slot"),
        cancel(stray(8).client_order_id, "s8", "not an order of any slot"),
        place(-1, "sell", 100, SIZE[-1], GEN, role="close", reduce_only=True),
        place(-2, "buy", 80, SIZE[-2], GEN + 1),  # one level from 95's level (-1); the sell at 110 is two
    ]
    assert new.slots == [
        pending(GridSlot(index=-2), "open", "buy", 80, SIZE[-2], GEN + 1),
        pending(inventory, "close", "sell", 100, SIZE[-1], GEN),
    ]


def test_a_slot_refused_recently_waits_while_the_others_are_placed() -> None:
    cfg = config(mode="long", levels=2, post_only_retries=3)
    waiting = GridSlot(index=-1, rejects=1, retry_at=T + 500)
    done_waiting = GridSlot(index=-2, rejects=2, retry_at=T, post_only_rejects=3)  # and past its post-only retries
    st = state(cfg, [done_waiting, waiting])
    new, out = run(cfg, st)
    assert out == [place(-2, "buy", 80, SIZE[-2], GEN, post_only=False)]
    assert new == after(
        cfg,
        st,
        slots=[pending(done_waiting, "open", "buy", 80, SIZE[-2], GEN), waiting],
        next_generation=GEN + 1,
        wake_at=T + 500,
    )


def test_a_new_order_starts_from_nothing_whatever_the_slot_kept() -> None:
    cfg = config(mode="long", levels=1)
    stale = GridSlot(index=-1, order_id="old", filled=D(1), cost=D(90), fee=D("0.1"), rejects=1, generation=2, sent_seq=1)
    new, out = run(cfg, state(cfg, [stale]))
    assert out == [place(-1, "buy", 90, SIZE[-1], GEN)]
    assert new.slots == [pending(stale, "open", "buy", 90, SIZE[-1], GEN)]
    assert (new.slots[0].order_id, new.slots[0].filled, new.slots[0].cost, new.slots[0].fee) == (None, 0, 0, 0)


# ------------------------------------------------------------------ room for closing orders


def crowded(cfg: GridConfig, strays: list[Stray], status: LiveStatus = "pending") -> GridState:
    """Neutral, levels 2, a wide book; the price at level -2. Two holdings want their closing
    orders; live: a closing order far below, opening orders at -2 and +2."""
    slots = [
        live(-7, "sell", 40, D(5), role="close", holding=D(5)),
        live(-2, "buy", 80, SIZE[-2], status=status),
        held(-1, SIZE[-1]),
        held(1, -SIZE[1]),
        live(2, "sell", 120, SIZE[2]),
    ]
    return state(cfg, slots, strays, last_price=D(80), bid=D("29.9"), ask=D("150.1"))


def test_a_closing_order_makes_room_by_canceling_the_opening_order_farthest_from_the_price() -> None:
    cfg = config(levels=2, max_open_orders=4)
    st = crowded(cfg, [])
    new, out = run(cfg, st)
    far = st.slots[4]
    assert out == [
        cancel(far.client_order_id, "x2", "room for a closing order"),
        place(-1, "sell", 100, SIZE[-1], GEN, role="close"),  # the net (long 7.021) cannot absorb 11.111: not reduce-only
    ]
    slots = [
        st.slots[0],
        st.slots[1],
        pending(st.slots[2], "close", "sell", 100, SIZE[-1], GEN),
        st.slots[3],
        settle(far, status="canceling"),
    ]
    assert new == after(cfg, st, level=-2, slots=slots, next_generation=GEN + 1)


def test_opening_orders_pending_or_open_both_give_way_to_closing_orders() -> None:
    cfg = config(levels=2, max_open_orders=4)
    st = crowded(cfg, [stray(9)])
    new, out = run(cfg, st)
    assert out == [
        cancel(stray(9).client_order_id, "s9", "not an order of any slot"),
        cancel(st.slots[4].client_order_id, "x2", "room for a closing order"),
        cancel(st.slots[1].client_order_id, "x-2", "room for a closing order"),
    ]
    assert [s.status for s in new.slots] == ["open", "canceling", None, None, "canceling"]


def test_the_opening_order_to_give_way_is_the_lower_one_at_equal_distance() -> None:
    cfg = config(levels=2, max_open_orders=4)
    st = replace(crowded(cfg, [], status="open"), last_price=D(100))
    _, out = run(cfg, st)
    assert out[0] == cancel(st.slots[1].client_order_id, "x-2", "room for a closing order")


# ------------------------------------------------------------------ strays


def test_a_stray_is_canceled_once_and_let_go_a_minute_after_its_cancel() -> None:
    cfg = config(mode="long", levels=1)
    kept = stray(5, canceling=True, canceled_at=T - STRAY_PATIENCE_MS, filled=D(2))  # exactly a minute: still waited for
    gone = stray(6, generation=900, canceling=True, canceled_at=T - STRAY_PATIENCE_MS - 1, filled=D(3), cost=D(270), fee=D("0.05"))
    booked = {client_order_id(PREFIX, "open", 1, g): Booked(D(1)) for g in range(2, BOOKED_KEPT + 2)}  # full: the oldest goes
    closing = live(-1, "sell", 100, D("0.5"), role="close", holding=D("0.5"))  # rests: nothing else to do
    st = state(cfg, [closing], [gone, kept], booked=booked)  # one let go does not drop the others
    new, out = run(cfg, st)
    assert out == []
    remembered = {k: v for k, v in booked.items() if k != client_order_id(PREFIX, "open", 1, 2)} | {
        gone.client_order_id: Booked(D(3), gone.cost, gone.fee)
    }
    assert new == after(cfg, st, strays=[kept], booked=remembered, forgotten_below=3)


# ------------------------------------------------------------------ the cleaner


def test_the_cleaner_cancels_the_oldest_opening_orders_beyond_the_limit_counting_every_live_order() -> None:
    # Only a state from elsewhere (an adopted account) can hold more than the limit.
    cfg = config(mode="long", levels=3, max_open_orders=3)
    slots = [
        live(-4, "buy", 60, SIZE[-4], status="canceling"),
        live(-3, "buy", 70, SIZE[-3], sent_seq=4),
        live(-2, "buy", 80, SIZE[-2], sent_seq=3),
        live(-1, "buy", 90, SIZE[-1], status="pending", sent_seq=5),
    ]
    st = state(cfg, slots, [stray(7, canceling=True, canceled_at=T)])
    new, out = run(cfg, st)
    assert out == [
        cancel(slots[2].client_order_id, "x-2", "over max_open_orders"),
        cancel(slots[1].client_order_id, "x-3", "over max_open_orders"),
    ]  # 3 live + 1 canceling + 1 stray is 2 over: by age, then level
    assert new == after(cfg, st, slots=[slots[0], settle(slots[1], status="canceling"), settle(slots[2], status="canceling"), slots[3]])


def test_the_cleaner_counts_pending_orders_too() -> None:
    cfg = config(mode="long", levels=3, max_open_orders=3)
    slots = [
        live(-3, "buy", 70, SIZE[-3], status="pending", sent_seq=2),
        live(-2, "buy", 80, SIZE[-2], status="pending", sent_seq=3),
        live(-1, "buy", 90, SIZE[-1], status="pending", sent_seq=4),
    ]
    _, out = run(cfg, state(cfg, slots, [stray(7, canceling=True, canceled_at=T)]))
    assert out == [cancel(slots[0].client_order_id, "x-3", "over max_open_orders")]


# ------------------------------------------------------------------ quiet bounds


def test_the_quiet_bounds_are_the_levels_around_the_ask_the_bid_and_the_last_price() -> None:
    lattice = lat(config())
    assert quiet_bounds(lattice, 0, D("99.9"), D("100.1")) == [D(100), D(110), D(90), D(100), D(100), D(110)]
    # An ask on a level: a buy there would take it, so the bounds are the levels below and on it.
    assert quiet_bounds(lattice, 3, D(85), D(90)) == [D(80), D(90), D(80), D(90), D(130), D(140)]
    assert quiet_bounds(lattice, -1, D(90), D("95.5")) == [D(90), D(100), D(90), D(100), D(90), D(100)]


def test_without_a_bid_or_an_ask_nothing_is_quiet() -> None:
    lattice = lat(config())
    assert quiet_bounds(lattice, 0, None, D(100)) is None
    assert quiet_bounds(lattice, 0, D(100), None) is None
    assert quiet_bounds(lattice, 0, None, None) is None
