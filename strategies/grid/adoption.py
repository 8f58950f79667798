"""A first start: adopt the venue's orders of this instance and its position instead of duplicating.

The runner asks the venue what rests and what is held, notes the input stream's last sequence
before it asked (`input_seq`), and publishes the answer into the grid's own input stream. Order
events that reach the grid before the snapshot are kept (`GridState.early`): those stored at or
before `input_seq` happened before the venue was asked, so the snapshot reflects them; later
ones may not be reflected, and are booked after adoption like any event (by cumulative fills,
so what the snapshot already counts is never booked twice). Breaker states travel with the time
of the change they come from, and a newer one never gives way to an older one.
"""

from __future__ import annotations

from decimal import Decimal

from msgspec.structs import replace

from schemas.account import ZERO, OrderUpdate
from schemas.ops import BreakerChange, VenueSnapshot, worst_breaker
from strategies.grid.config import GridConfig
from strategies.grid.lattice import parse_client_order_id
from strategies.grid.state import GridSlot, GridState, kept, settle


def adopt(cfg: GridConfig, prefix: str, st: GridState, ev: VenueSnapshot, scopes: set[str], seq: int) -> GridState:
    """The state with the snapshot's orders in their slots, its position, and its breakers."""
    slots = {s.index: s for s in st.slots}
    next_gen = st.next_generation
    anchor = st.anchor
    for o in ev.orders:
        parsed = parse_client_order_id(prefix, o.client_order_id)
        if parsed is None or o.symbol != st.symbol or o.status != "open":
            continue
        role, index, gen = parsed
        slots[index] = _adopted_slot(o, role, index, gen)
        next_gen = max(next_gen, gen + 1)
        if anchor is None and o.price is not None:
            anchor = _anchor_of(cfg, o, role, index)
    net = ZERO
    for p in ev.positions:
        if p.symbol == st.symbol and p.side is not None:
            net += p.contracts if p.side == "long" else -p.contracts
    assigned = sum((s.holding for s in slots.values()), ZERO)
    st = replace(
        st,
        slots=kept(slots),
        next_generation=next_gen,
        first_own_generation=next_gen,
        adopted_ts=ev.ts,
        anchor=anchor,
        unassigned=net - assigned,
        adopted=True,
        ts=max(st.ts, ev.ts),
        seq=seq,
    )
    for scope, change in sorted(ev.breakers.items()):
        if scope in scopes:
            st = apply_breaker(st, scope, change, strictly_newer=True)
    return st


def apply_breaker(st: GridState, scope: str, change: BreakerChange, strictly_newer: bool = False) -> GridState:
    """Take a breaker fact unless the state already holds a newer one for its scope.

    A change event is applied at equal times (it was stored after what was read before it);
    a snapshot's reading only when strictly newer than what the events already said."""
    seen = st.breakers_at.get(scope)
    if seen is not None and (change.ts < seen or (strictly_newer and change.ts == seen)):
        return st
    breakers = dict(st.breakers)
    breakers[scope] = change.state
    at = dict(st.breakers_at)
    at[scope] = change.ts
    return replace(st, breakers=breakers, breakers_at=at, breaker=worst_breaker(breakers.values()))


def _adopted_slot(o: OrderUpdate, role: str, index: int, gen: int) -> GridSlot:
    held = ZERO
    if role == "close":  # a closing order means its slot holds what it still has to close
        held = (o.amount - o.filled) * (1 if o.side == "sell" else -1)
    elif o.filled > 0:
        held = o.filled * (1 if o.side == "buy" else -1)
    return settle(
        GridSlot(index=index),
        generation=gen,
        client_order_id=o.client_order_id,
        order_id=o.order_id,
        role=role,
        side=o.side,
        price=o.price,
        amount=o.amount,
        filled=o.filled,
        cost=(o.average or o.price or ZERO) * o.filled,
        fee=o.fee_cost,
        status="open",
        holding=held,
        entry_price=o.price if held else None,
    )


def _anchor_of(cfg: GridConfig, o: OrderUpdate, role: str, index: int) -> Decimal:
    """Keep the lattice the adopted orders were placed on."""
    assert o.price is not None
    level = index if role == "open" else index + (1 if o.side == "sell" else -1)
    if cfg.spacing_type == "geometric":
        return o.price / (1 + cfg.spacing) ** level
    return o.price - cfg.spacing * level
