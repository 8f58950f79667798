"""Our record: what the ACCOUNT stream says about one venue account, folded by a pure core.

The reconciler compares this with the venue. It is the stream's word, not the venue's: orders by
client id (open and unknown ones always, the newest `keep_ended` ended ones), the fills booked
against each, the last position per market, and when each last saw activity here (the time
JetStream stored its latest event; an order or a market that was just active is not judged).

Events carry cumulative amounts and may arrive out of order (the executor's "accepted" after
the venue's "filled"), so the fold keeps the most it has learnt: an ended order never reopens,
`filled` never goes back, and an `unknown` outcome never overwrites what the venue reported.
An `unknown` order and an account gap marker ask for a check at once (`triggers` counts them).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

from bus.contract import Inbound
from schemas.account import ZERO, Fill, OrderUpdate, Position
from schemas.base import OrderStatus, Side
from schemas.market import GapMarker

RecordInput = OrderUpdate | Fill | Position | GapMarker
ENDED: frozenset[str] = frozenset({"closed", "canceled", "rejected", "expired"})


class OrderRec(msgspec.Struct, array_like=True):
    """One order as our record knows it."""

    client_order_id: str
    order_id: str | None
    symbol: str
    side: Side
    status: OrderStatus
    amount: Decimal
    filled: Decimal  # the largest cumulative fill an order event reported
    fills: Decimal  # the sum of Fill events booked against it
    ts: int  # the latest event's own time (venue clock)
    seen: int  # ms: when JetStream stored the latest event about it (local activity)

    @property
    def booked(self) -> Decimal:
        return max(self.filled, self.fills)


class PositionRec(msgspec.Struct, array_like=True):
    symbol: str
    contracts: Decimal  # signed: long > 0, short < 0
    ts: int
    seen: int


class Record(msgspec.Struct, kw_only=True):
    orders: dict[str, OrderRec] = {}
    ended: dict[str, None] = {}  # client ids of ended orders, oldest first (bounded)
    positions: dict[str, PositionRec] = {}
    market_seen: dict[str, int] = {}  # ms: the latest stored event per market
    triggers: int = 0  # inputs that asked for a check at once
    last_trigger: str = ""


def signed(position: Position) -> Decimal:
    return -position.contracts if position.side == "short" else position.contracts


class RecordCore:
    """Core[Record, RecordInput] for the consumer runtime."""

    def __init__(self, keep_ended: int = 2_000) -> None:
        self.keep_ended = keep_ended

    def initial_state(self) -> Record:
        return Record()

    def step(self, state: Record, inbound: Inbound[RecordInput]) -> tuple[Record, list[Any]]:
        event = inbound.event
        seen = inbound.stored_ns // 1_000_000
        match event:
            case OrderUpdate():
                self._order(state, event, seen)
            case Fill():
                self._fill(state, event, seen)
            case Position():
                state.positions[event.symbol] = PositionRec(event.symbol, signed(event), event.ts, seen)
                state.market_seen[event.symbol] = max(seen, state.market_seen.get(event.symbol, 0))
            case GapMarker():
                state.triggers += 1
                state.last_trigger = f"gap in the {event.stream} stream of {event.symbol}"
        return state, []

    def _order(self, state: Record, event: OrderUpdate, seen: int) -> None:
        cid = event.client_order_id
        rec = state.orders.get(cid)
        state.market_seen[event.symbol] = max(seen, state.market_seen.get(event.symbol, 0))
        if event.status == "unknown":
            if rec is not None and rec.status != "unknown":
                rec.seen = max(rec.seen, seen)
                return  # the venue's word about this order already stands
            state.triggers += 1
            state.last_trigger = f"unknown outcome of {cid}"
        if rec is None:
            rec = state.orders[cid] = OrderRec(
                cid, event.order_id, event.symbol, event.side, event.status, event.amount, event.filled, ZERO, event.ts, seen
            )
        else:
            if rec.status not in ENDED:  # an ended order never reopens (late "accepted" events)
                rec.status = event.status
            rec.order_id = rec.order_id or event.order_id
            rec.amount = event.amount
            rec.filled = max(rec.filled, event.filled)
            rec.ts = max(rec.ts, event.ts)
            rec.seen = max(rec.seen, seen)
        if rec.status in ENDED:
            self._ended(state, cid)

    def _fill(self, state: Record, fill: Fill, seen: int) -> None:
        cid = fill.client_order_id
        state.market_seen[fill.symbol] = max(seen, state.market_seen.get(fill.symbol, 0))
        rec = state.orders.get(cid)
        if rec is None:
            # A fill of an order whose events we never saw: we know it exists and traded this much.
            rec = state.orders[cid] = OrderRec(cid, fill.order_id, fill.symbol, fill.side, "open", fill.amount, ZERO, ZERO, fill.ts, seen)
        rec.fills += fill.amount
        rec.seen = max(rec.seen, seen)

    def _ended(self, state: Record, cid: str) -> None:
        ended = state.ended
        ended.pop(cid, None)
        ended[cid] = None
        while len(ended) > self.keep_ended:
            oldest = next(iter(ended))
            del ended[oldest]
            old = state.orders.get(oldest)
            if old is not None and old.status in ENDED:
                del state.orders[oldest]
