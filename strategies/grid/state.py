"""What a grid instance knows: its slots, the orders it no longer tracks in a slot, and the rest.

These types belong to the grid (they do not cross the bus as messages of their own; a
`StrategyState` event carries them as its `state`). Everything here is checkpointed, published
and replayed from, so it is plain data: frozen msgspec structs with Decimal money.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec
from msgspec.structs import replace

from schemas.account import ZERO, OrderUpdate
from schemas.base import Side
from schemas.market import Market
from schemas.ops import BreakerState, GridMode, LiveStatus, OrderRole, SlotPhase, StrategyStatus

TERMINAL = frozenset({"closed", "canceled", "rejected", "expired"})


class GridSlot(msgspec.Struct, frozen=True, kw_only=True):
    """One level of a grid's lattice: at most one live order, and the inventory it holds.

    Phase: free -> pending (command sent) -> open (venue accepted) -> filled (holds inventory;
    its closing order lives here too) -> free; canceling while a cancel is on its way; back to
    free (or to filled, for a closing order) on cancel or reject. A slot leaves pending only on
    the venue's word: an `unknown` outcome keeps it pending.
    """

    index: int  # lattice level: 0 = anchor, negative below
    phase: SlotPhase = "free"
    generation: int = 0  # generation of the slot's latest order; part of its client order id
    client_order_id: str | None = None  # the live order, if any
    order_id: str | None = None
    role: OrderRole | None = None  # "open" adds inventory, "close" takes it off
    side: Side | None = None
    price: Decimal | None = None
    amount: Decimal = ZERO
    filled: Decimal = ZERO  # of the live order
    cost: Decimal = ZERO  # quote value of the live order's fills so far
    fee: Decimal = ZERO  # cumulative fee reported for the live order
    status: LiveStatus | None = None
    sent_seq: int = 0  # input seq at which the live order was sent (the cleaner cancels oldest first)
    holding: Decimal = ZERO  # signed inventory: + long, - short
    entry_price: Decimal | None = None
    post_only_rejects: int = 0  # consecutive: after `post_only_retries` the slot places plain limits
    rejects: int = 0  # consecutive other rejections: each doubles the wait before the next try
    retry_at: int = 0  # event time before which this slot places nothing (0 = no wait)


class Stray(msgspec.Struct, frozen=True, kw_only=True):
    """One of this grid's orders live at the venue that no slot tracks.

    An older generation that landed after it was reported refused, or an order of this
    instance's prefix the grid learnt of only from its events. Its fills are booked into the
    slot its client id names (position and fills always equal the venue's), and it is canceled:
    no slot ever rests two orders, and the grid does not rest what it did not decide.
    """

    client_order_id: str
    order_id: str | None = None
    index: int
    side: Side
    filled: Decimal = ZERO  # booked so far
    cost: Decimal = ZERO
    fee: Decimal = ZERO
    canceling: bool = False
    canceled_at: int = 0  # event time its cancel was sent


class Booked(msgspec.Struct, frozen=True, array_like=True):
    """What was booked of an ended order of ours: a late report is booked from here on."""

    filled: Decimal
    cost: Decimal = ZERO  # quote value of `filled`
    fee: Decimal = ZERO  # cumulative


class Early(msgspec.Struct, frozen=True, array_like=True):
    """An order event that arrived before the first start's venue snapshot (kept until then)."""

    seq: int
    event: OrderUpdate


class GridState(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a grid instance knows; checkpointed, published, and replayed from."""

    instance: str
    venue: str
    account: str
    symbol: str
    mode: GridMode
    market: Market
    status: StrategyStatus = "starting"
    paused: bool = False  # by an operator: no new opening orders
    halted: bool = False  # by an operator: no orders at all
    breakers: dict[str, BreakerState] = {}  # the risk breakers whose scope covers this grid
    breakers_at: dict[str, int] = {}  # event time of the fact each breaker state comes from
    breaker: BreakerState = "ok"  # the worst of them
    anchor: Decimal | None = None
    center: int = 0  # lattice level the order windows are centred on (trails the price)
    last_price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    ts: int = 0  # time of the last input (from the events, never a clock)
    tick_ts: int = 0  # time of the last ticker: an older one arriving late is ignored
    seq: int = 0  # last input sequence folded in
    slots: list[GridSlot] = []  # slots that are not free, by index
    strays: list[Stray] = []  # our orders live at the venue that no slot tracks
    booked: dict[str, Booked] = {}  # ended orders of ours with fills, by client id
    forgotten_below: int = 0  # `booked` forgets the oldest generations; ids below this are history
    early: list[Early] = []  # order events before the first start's snapshot
    next_generation: int = 1  # every order gets a new one, so a client order id is never reused
    first_own_generation: int = 0  # the first generation this grid issued (older ones were adopted)
    adopted_ts: int = 0  # venue time of the snapshot adopted at the first start
    unassigned: Decimal = ZERO  # adopted position no slot accounts for
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    stale_events: int = 0  # events for orders so old the grid no longer knows what it booked
    adopted: bool = False  # the first start's venue snapshot was applied
    fault: str | None = None  # an input the core could not handle: it halts rather than guess
    quiet: list[Decimal] | None = None  # prices within which a tick changes no decision
    wake_at: int = 0  # the earliest retry_at of a waiting slot: a tick then must decide again
    published_ts: int = 0


def phase_of(holding: Decimal, status: str | None) -> SlotPhase:
    if holding != 0:
        return "filled"
    if status is None:
        return "free"
    return status  # type: ignore[return-value]  # pending | open | canceling


def settle(slot: GridSlot, **changes: Any) -> GridSlot:
    """A slot with changes applied and its phase recomputed from them."""
    s = replace(slot, **changes)
    phase = phase_of(s.holding, s.status)
    return s if s.phase == phase else replace(s, phase=phase)


def freed(slot: GridSlot, **changes: Any) -> GridSlot:
    """The slot after its live order ended: inventory kept, the order forgotten."""
    return settle(
        slot,
        client_order_id=None,
        order_id=None,
        role=None,
        side=None,
        price=None,
        amount=ZERO,
        filled=ZERO,
        cost=ZERO,
        fee=ZERO,
        status=None,
        **changes,
    )


def kept(slots: dict[int, GridSlot]) -> list[GridSlot]:
    """Slots worth remembering: free ones carry nothing the next order needs."""
    return [s for _, s in sorted(slots.items()) if s.phase != "free" or s.post_only_rejects or s.rejects]


def position(st: GridState) -> Decimal:
    """The grid's signed position: what its slots hold plus what no slot accounts for."""
    return sum((s.holding for s in st.slots), st.unassigned)
