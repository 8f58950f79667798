"""Booking fills: what an order filled since we last heard of it becomes inventory, entry price,
realized PnL and fees, exactly once.

Order events carry cumulative amounts (`filled`, `fee_cost`), so a fill is the difference from
what was booked for that client id before: an event that repeats or lags behind what was booked
books nothing, and one that jumps ahead books the whole difference. That makes booking
idempotent whatever order the events arrive in, which is what lets the grid take events for
orders it no longer tracks (a late fill, a late landing) without ever booking one twice.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from msgspec.structs import replace

from schemas.account import ZERO, OrderUpdate
from schemas.base import Side
from schemas.market import Market
from strategies.grid.lattice import Lattice, parse_client_order_id
from strategies.grid.state import Booked, GridSlot, GridState, settle

BOOKED_KEPT = 256  # ended orders with fills remembered by client id (the rest is history)


class FillDelta(NamedTuple):
    amount: Decimal  # newly filled
    price: Decimal  # their average price
    fee: Decimal  # newly charged
    filled: Decimal  # cumulative, as the event says
    cost: Decimal  # cumulative quote value


def fill_delta(filled: Decimal, cost: Decimal, fee: Decimal, ev: OrderUpdate, fallback_price: Decimal | None) -> FillDelta:
    """What `ev` adds to an order of which `filled` (worth `cost`, charged `fee`) was booked."""
    fee_delta = ev.fee_cost - fee if ev.fee_cost > fee else ZERO
    amount = ev.filled - filled
    if amount <= 0:
        return FillDelta(ZERO, ZERO, fee_delta, filled, cost)
    cost_now = (ev.average or ev.price or fallback_price or ZERO) * ev.filled
    return FillDelta(amount, (cost_now - cost) / amount, fee_delta, ev.filled, cost_now)


def book_fill(
    holding: Decimal, entry: Decimal | None, side: Side, amount: Decimal, price: Decimal, contract_size: Decimal
) -> tuple[Decimal, Decimal | None, Decimal]:
    """(holding, entry price, realized PnL) after `amount` filled at `price` on `side`."""
    signed = amount if side == "buy" else -amount
    if holding == 0 or (holding > 0) == (signed > 0):
        new = holding + signed
        return new, ((entry or price) * abs(holding) + price * amount) / abs(new), ZERO
    closing = min(amount, abs(holding))
    realized = (price - (entry or price)) * closing * contract_size * (1 if holding > 0 else -1)
    new = holding + signed
    if new == 0:
        return new, None, realized
    if (new > 0) != (holding > 0):  # flipped: what is left opened at the fill price
        return new, price, realized
    return new, entry, realized


def book_into(st: GridState, slots: dict[int, GridSlot], index: int, side: Side, d: FillDelta) -> GridState:
    """Book a fill of an order no slot tracks into the slot its client id names."""
    if d.amount <= 0:
        return replace(st, fees=st.fees + d.fee) if d.fee else st
    slot = slots.get(index) or GridSlot(index=index)
    holding, entry, realized = book_fill(slot.holding, slot.entry_price, side, d.amount, d.price, st.market.contract_size)
    # New inventory wants its closing order now, whatever an earlier refusal in this slot said.
    slots[index] = settle(slot, holding=holding, entry_price=entry, rejects=0, retry_at=0)
    return replace(st, realized_pnl=st.realized_pnl + realized, fees=st.fees + d.fee, fills=st.fills + 1)


def book_slot_order(st: GridState, slot: GridSlot, ev: OrderUpdate) -> tuple[GridState, GridSlot]:
    """Book what the slot's live order filled since we last heard of it."""
    d = fill_delta(slot.filled, slot.cost, slot.fee, ev, slot.price)
    if d.amount <= 0:
        return (replace(st, fees=st.fees + d.fee), replace(slot, fee=ev.fee_cost)) if d.fee else (st, slot)
    assert slot.side is not None
    holding, entry, realized = book_fill(slot.holding, slot.entry_price, slot.side, d.amount, d.price, st.market.contract_size)
    slot = replace(slot, filled=d.filled, cost=d.cost, fee=ev.fee_cost, holding=holding, entry_price=entry)
    return replace(st, realized_pnl=st.realized_pnl + realized, fees=st.fees + d.fee, fills=st.fills + 1), slot


def remember_ended(
    st: GridState, prefix: str, client_order_id: str, filled: Decimal, cost: Decimal = ZERO, fee: Decimal = ZERO
) -> GridState:
    """An order of ours ended having filled `filled` (worth `cost`, charged `fee`): remember it,
    so a late report of the same fills is recognized and a later one booked from here on.
    Bounded: the oldest generations are forgotten first."""
    if filled <= 0 and client_order_id not in st.booked:
        return st
    booked = dict(st.booked)
    booked[client_order_id] = Booked(filled, cost, fee)
    forgotten = st.forgotten_below
    if len(booked) > BOOKED_KEPT:
        by_generation = sorted(booked, key=lambda cid: _generation(prefix, cid))
        for cid in by_generation[: len(booked) - BOOKED_KEPT]:
            forgotten = max(forgotten, _generation(prefix, cid) + 1)
            del booked[cid]
    return replace(st, booked=booked, forgotten_below=forgotten)


def _generation(prefix: str, cid: str) -> int:
    parsed = parse_client_order_id(prefix, cid)
    return parsed[2] if parsed else 0


def absorb_dust(st: GridState, slots: dict[int, GridSlot], index: int, lattice: Lattice | None, market: Market) -> GridState:
    """A holding too small to close on its own (a partial fill below the venue's minimums)
    joins the nearest slot holding the same side, or the unassigned position."""
    slot = slots[index]
    if lattice is None or slot.holding == 0:
        return st  # no lattice yet (adopted before the first price): decided when it comes
    closing_price = lattice.price(index + (1 if slot.holding > 0 else -1))
    amount = abs(slot.holding)
    if amount >= market.min_amount and amount * closing_price * market.contract_size >= market.min_notional:
        return st
    same_side = [s for i, s in slots.items() if i != index and s.holding * slot.holding > 0]
    slots[index] = settle(slot, holding=ZERO, entry_price=None)
    if not same_side:
        return replace(st, unassigned=st.unassigned + slot.holding)
    host = min(same_side, key=lambda s: (abs(s.index - index), s.index))
    total = host.holding + slot.holding
    entry = ((host.entry_price or ZERO) * abs(host.holding) + (slot.entry_price or ZERO) * amount) / abs(total)
    slots[host.index] = settle(host, holding=total, entry_price=entry)
    return st
