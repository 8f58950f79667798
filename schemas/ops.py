"""Operational events on `ops.<component>.<instance>.<kind>`: what the system decided and why.

Strategy state, risk alerts, breaker changes, reconciliation findings and operator
controls. These are what the browser draws and what an operator reads after an incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Literal

import msgspec

from schemas.account import ZERO, OrderUpdate, Position
from schemas.base import Message, Side, not_empty
from schemas.market import Market

StrategyStatus = Literal["starting", "running", "paused", "reduce_only", "halted"]
SlotPhase = Literal["free", "pending", "open", "filled", "canceling"]
OrderRole = Literal["open", "close"]
LiveStatus = Literal["pending", "open", "canceling"]
BreakerState = Literal["ok", "reduce_only", "halted"]
Severity = Literal["info", "warning", "critical"]
FindingKind = Literal["ghost_order", "missing_order", "position_drift", "balance_drift", "in_sync"]
ControlAction = Literal["pause", "resume", "halt", "reset"]
GridMode = Literal["long", "short", "neutral"]


BREAKER_SEVERITY: dict[BreakerState, int] = {"ok": 0, "reduce_only": 1, "halted": 2}


def worst_breaker(states: Iterable[BreakerState]) -> BreakerState:
    worst: BreakerState = "ok"
    for state in states:
        if BREAKER_SEVERITY[state] > BREAKER_SEVERITY[worst]:
            worst = state
    return worst


class GridSlot(msgspec.Struct, frozen=True, kw_only=True):
    """One level of a grid's lattice: at most one live order, and the inventory it holds.

    Phase: free -> pending (command sent) -> open (venue accepted) -> filled (holds inventory;
    its closing order lives here too) -> free; canceling while a cancel is on its way; back to
    free (or to filled, for a closing order) on cancel or reject.
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
    next_generation: int = 1  # every order gets a new one, so a client order id is never reused
    unassigned: Decimal = ZERO  # adopted position no slot accounts for
    realized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    adopted: bool = False  # the first start's venue snapshot was applied
    fault: str | None = None  # an input the core could not handle: it halts rather than guess
    quiet: list[Decimal] | None = None  # prices within which a tick changes no decision
    wake_at: int = 0  # the earliest retry_at of a waiting slot: a tick then must decide again
    published_ts: int = 0


class GridLevel(msgspec.Struct, frozen=True, kw_only=True):
    """A drawable level: its price and what its slot holds (for screens, derived from GridState)."""

    index: int
    price: Decimal
    phase: SlotPhase = "free"
    side: Side | None = None
    role: OrderRole | None = None
    client_order_id: str | None = None
    order_price: Decimal | None = None
    amount: Decimal = ZERO
    filled: Decimal = ZERO
    holding: Decimal = ZERO


class StrategyState(Message, frozen=True, kw_only=True, tag="strategy_state"):
    """Published when a strategy instance changes; `input_seq` is the input it reflects."""

    component: str
    instance: str
    venue: str
    account: str
    symbol: str
    status: StrategyStatus
    input_seq: int
    position: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    open_orders: int = 0
    fills: int = 0
    grid: GridState | None = None
    levels: list[GridLevel] = []
    ts: int


class VenueSnapshot(Message, frozen=True, kw_only=True, tag="venue_snapshot"):
    """What the venue said at a moment: open orders, positions, breakers (a first start adopts it)."""

    component: str
    instance: str
    venue: str
    account: str
    symbol: str
    orders: list[OrderUpdate] = []
    positions: list[Position] = []
    breakers: dict[str, BreakerState] = {}
    ts: int


class RiskAlert(Message, frozen=True, kw_only=True, tag="risk_alert"):
    component: str = "risk"
    instance: str
    severity: Severity
    kind: str  # feed_stale | exposure | drawdown | latency | volatility | margin | ...
    message: str
    venue: str | None = None
    symbol: str | None = None
    value: Decimal | None = None
    threshold: Decimal | None = None
    ts: int

    def __post_init__(self) -> None:
        not_empty("kind", self.kind)


class BreakerChange(Message, frozen=True, kw_only=True, tag="breaker"):
    """A breaker moved. `reduce_only`: no exposure-increasing orders; `halted`: no orders at all.

    `scope` is the key in the breakers bucket: "global", "venue.<venue>" or
    "symbol.<venue>.<symbol token>". `instance` is the risk instance (or "operator") that moved it.
    """

    instance: str
    scope: str
    state: BreakerState
    previous: BreakerState
    reason: str
    ts: int

    def __post_init__(self) -> None:
        not_empty("scope", self.scope)


class ReconciliationFinding(Message, frozen=True, kw_only=True, tag="reconciliation"):
    """What the reconciler found when comparing our record with the venue, and what it did."""

    instance: str
    venue: str
    account: str
    symbol: str
    kind: FindingKind
    detail: str
    action: str  # "none", "canceled", "adopted", "alerted", ...
    client_order_id: str | None = None
    order_id: str | None = None
    expected: Decimal | None = None
    actual: Decimal | None = None
    ts: int


class ControlCommand(Message, frozen=True, kw_only=True, tag="control"):
    """An operator's instruction to a component instance (`all` = every instance)."""

    target_component: str
    target_instance: str
    action: ControlAction
    reason: str = ""
    operator: str
    ts: int

    def __post_init__(self) -> None:
        not_empty("operator", self.operator)
