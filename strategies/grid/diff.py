"""Target, then diff: the cancels and places that close the gap between what rests and what should.

A replay or a restart recomputes the same target and so the same orders with the same client
ids (the generation counter lives in the state). Closing orders come before opening ones when
`max_open_orders` is tight, the cleaner cancels the oldest opening orders beyond the limit, a
slot refused recently waits out its back-off, and strays (our orders no slot tracks) are
canceled.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from msgspec.structs import replace

from schemas import ids
from schemas.account import ZERO
from schemas.commands import CancelOrder, PlaceOrder
from strategies.grid.booking import remember_ended
from strategies.grid.config import GridConfig
from strategies.grid.lattice import Lattice, client_order_id
from strategies.grid.state import GridSlot, GridState, kept, settle
from strategies.grid.targets import Target, targets

STRAY_PATIENCE_MS = 60_000  # how long a canceled stray is waited for before it is let go


def reconcile(cfg: GridConfig, prefix: str, st: GridState, lat: Lattice, seq: int) -> tuple[GridState, list[Any]]:
    assert st.last_price is not None
    level = lat.level_at(st.last_price)
    center = st.center
    if cfg.trail_levels and abs(level - center) > cfg.trail_levels:
        center = level
    slots = {s.index: s for s in st.slots}
    wanted_now = targets(cfg, st, lat, slots, center)

    out: list[Any] = []
    live = 0
    for index, slot in list(slots.items()):
        if slot.status is None:
            continue
        live += 1
        if slot.status == "canceling":
            continue
        t = wanted_now.get(index)
        if (
            t is not None
            and t.role == slot.role
            and t.side == slot.side
            and slot.price is not None
            and abs(t.price - slot.price) <= st.market.tick_size  # an adopted order may sit a tick off
            and t.amount == slot.amount - slot.filled
        ):
            continue  # the live order is the one we want
        slots[index] = settle(slot, status="canceling")
        out.append(cancel(cfg, slot.client_order_id, slot.order_id, st.ts, "target moved" if t is None else "target changed"))

    strays = []
    for stray in st.strays:
        if stray.canceling and st.ts - stray.canceled_at > STRAY_PATIENCE_MS:
            # Its cancel was answered with nothing new: the order had already ended, and the
            # venue's report of that end is the one booked before (an event seen once). A
            # report that still comes makes it a stray again, booked from what is known.
            st = remember_ended(st, prefix, stray.client_order_id, stray.filled, stray.cost, stray.fee)
            continue
        live += 1
        if not stray.canceling:
            out.append(cancel(cfg, stray.client_order_id, stray.order_id, st.ts, "not an order of any slot"))
            stray = replace(stray, canceling=True, canceled_at=st.ts)
        strays.append(stray)

    wanted = [
        (t.role != "close", abs(i - level), i, t)  # closing orders first, then nearest to the price
        for i, t in wanted_now.items()
        if slots.get(i) is None or slots[i].status is None
    ]
    wanted.sort()
    room = max(cfg.max_open_orders - live, 0)
    closing = sum(1 for w in wanted if not w[0])
    if closing > room:
        # Inventory comes first: make room for closing orders by canceling opening ones,
        # the farthest from the price first (they come back once there is room).
        opening = [s for s in slots.values() if s.status in ("pending", "open") and s.role == "open"]
        for slot in sorted(opening, key=lambda s: (-abs(s.index - level), s.index))[: closing - room]:
            slots[slot.index] = settle(slot, status="canceling")
            out.append(cancel(cfg, slot.client_order_id, slot.order_id, st.ts, "room for a closing order"))
    next_gen = st.next_generation
    for _, _, index, t in wanted:
        waiting = slots.get(index)
        if waiting is not None and waiting.retry_at > st.ts:
            continue  # refused recently: not yet
        if room <= 0:
            break
        room -= 1
        slot = slots.get(index) or GridSlot(index=index)
        cid = client_order_id(prefix, t.role, index, next_gen)
        post_only = cfg.post_only and slot.post_only_rejects < cfg.post_only_retries
        slots[index] = settle(
            slot,
            generation=next_gen,
            client_order_id=cid,
            order_id=None,
            role=t.role,
            side=t.side,
            price=t.price,
            amount=t.amount,
            filled=ZERO,
            cost=ZERO,
            fee=ZERO,
            status="pending",
            sent_seq=seq,
        )
        next_gen += 1
        out.append(place(cfg, cid, t, post_only, st.ts))

    # The cleaner: never more than max_open_orders live; the oldest opening orders go first.
    live_now = [s for s in slots.values() if s.status in ("pending", "open")]
    excess = len(live_now) + sum(1 for s in slots.values() if s.status == "canceling") + len(strays) - cfg.max_open_orders
    if excess > 0:
        for slot in sorted((s for s in live_now if s.role == "open"), key=lambda s: (s.sent_seq, s.index))[:excess]:
            slots[slot.index] = settle(slot, status="canceling")
            out.append(cancel(cfg, slot.client_order_id, slot.order_id, st.ts, "over max_open_orders"))

    waits = [s.retry_at for s in slots.values() if s.retry_at > st.ts]
    st = replace(
        st,
        slots=kept(slots),
        strays=strays,
        center=center,
        next_generation=next_gen,
        quiet=quiet_bounds(lat, level, st.bid, st.ask),
        wake_at=min(waits) if waits else 0,
    )
    return st, out


def quiet_bounds(lat: Lattice, level: int, bid: Decimal | None, ask: Decimal | None) -> list[Decimal] | None:
    """Price bounds within which the next tick would reach the same decisions."""
    if bid is None or ask is None:
        return None
    a = lat.level_at(ask)
    if lat.price(a) == ask:
        a -= 1  # the set {k: price(k) < ask} changes when ask crosses price(a) or price(a+1)
    b = lat.level_at(bid)  # the set {k: price(k) > bid} changes outside [price(b), price(b+1))
    return [lat.price(a), lat.price(a + 1), lat.price(b), lat.price(b + 1), lat.price(level), lat.price(level + 1)]


def place(cfg: GridConfig, cid: str, t: Target, post_only: bool, ts: int) -> PlaceOrder:
    return PlaceOrder(
        id=ids.place_id(cfg.venue, cfg.account, cid),
        venue=cfg.venue,
        account=cfg.account,
        symbol=cfg.symbol,
        client_order_id=cid,
        side=t.side,
        order_type="limit",
        price=t.price,
        amount=t.amount,
        post_only=post_only,
        reduce_only=t.reduce_only,
        origin=f"grid/{cfg.instance}",
        ts=ts,
        ttl_ms=cfg.ttl_ms,
    )


def cancel(cfg: GridConfig, cid: str | None, order_id: str | None, ts: int, reason: str) -> CancelOrder:
    assert cid is not None
    return CancelOrder(
        id=ids.cancel_id(cfg.venue, cfg.account, cid),
        venue=cfg.venue,
        account=cfg.account,
        symbol=cfg.symbol,
        client_order_id=cid,
        order_id=order_id,
        origin=f"grid/{cfg.instance}",
        reason=reason,
        ts=ts,
        ttl_ms=cfg.ttl_ms,
    )
