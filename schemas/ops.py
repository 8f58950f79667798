"""Operational events on `ops.<component>.<instance>.<kind>`: what the system decided and why.

Strategy state, risk alerts, breaker changes, reconciliation findings and operator
controls. These are what the browser draws and what an operator reads after an incident.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

import msgspec

from schemas.account import ZERO, OrderUpdate, Position
from schemas.base import Message, Side, not_empty

StrategyStatus = Literal["starting", "running", "paused", "reduce_only", "halted"]
SlotPhase = Literal["free", "pending", "open", "filled", "canceling"]
OrderRole = Literal["open", "close"]
LiveStatus = Literal["pending", "open", "canceling"]
BreakerState = Literal["ok", "reduce_only", "halted"]
Severity = Literal["info", "warning", "critical"]
FindingKind = Literal["ghost_order", "missing_order", "missing_fill", "position_drift", "balance_drift", "unresolved_unknown", "in_sync"]
ControlAction = Literal["pause", "resume", "halt", "reset", "exit"]
GridMode = Literal["long", "short", "neutral"]
SpreadState = Literal["ok", "stale", "missing"]
MarketKind = Literal["spot", "swap"]


BREAKER_SEVERITY: dict[BreakerState, int] = {"ok": 0, "reduce_only": 1, "halted": 2}


def worst_breaker(states: Iterable[BreakerState]) -> BreakerState:
    worst: BreakerState = "ok"
    for state in states:
        if BREAKER_SEVERITY[state] > BREAKER_SEVERITY[worst]:
            worst = state
    return worst


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
    """Published when a strategy instance changes; `input_seq` is the input it reflects.

    Full or compact (docs/adr/0024-bounded-state-events.md): a full one carries `state` (and, for
    a grid, `levels`) and is a replay starting point; a compact one only the summary, with
    `state=None` and `levels=[]`. A grid publishes a full one at least once a minute of event
    time and on every status change; anything needing the state or the levels reads the last
    full one (`state is not None`), not the last message on the subject. Events stored before
    ADR 0024 are all full."""

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
    # The strategy's whole state in its own schema (a grid's is strategies/grid/state.py
    # GridState): a full state event is also a replay starting point (ADR 0007); None: compact.
    state: dict[str, Any] | None = None
    levels: list[GridLevel] = []
    ts: int


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    """One condition holding a breaker open, with its evidence: what was measured against what
    limit, since when, and the input events (risk's input sequences) that showed it."""

    breaker: str  # feed_stale | flash_crash | position | exposure | reject_rate | latency | margin | liquidation | daily_loss | operator
    state: BreakerState
    value: Decimal | None = None
    limit: Decimal | None = None
    detail: str = ""
    since: int = 0  # ms: when the condition was first seen
    events: list[int] = []


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
    trips: list[Trip] = []  # every condition holding it (empty when it closes)
    ts: int

    def __post_init__(self) -> None:
        not_empty("scope", self.scope)


class RiskHeartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """The `heartbeat` key of the breakers bucket: the risk monitor is alive and judging.

    The executor treats breakers as `reduce_only` once this is older than its configured limit."""

    instance: str
    ts: int  # wall clock ms when written
    input_seq: int = 0


class Clock(Message, frozen=True, kw_only=True, tag="clock"):
    """A time signal a monitor's shell puts into its own input stream, so that conditions made of
    silence (a stale feed, a cool-down) are decided from the log and replay the same."""

    component: str
    instance: str
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
    breakers: dict[str, BreakerChange] = {}  # the last change of each scope, as the bucket holds it
    # The input stream's last sequence before the venue was asked: events up to it are
    # reflected in what the venue said; later ones may not be (the core books those).
    input_seq: int = 0
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
    evidence: dict[str, Any] = {}  # what each side said: the venue's order/fills/position, our record
    ts: int


class ControlCommand(Message, frozen=True, kw_only=True, tag="control"):
    """An operator's instruction to a component instance (`all` = every instance)."""

    target_component: str
    target_instance: str
    action: ControlAction
    reason: str = ""
    scope: str | None = None  # for risk: the breaker scope to halt or reset (None = every scope)
    operator: str
    ts: int

    def __post_init__(self) -> None:
        not_empty("operator", self.operator)


class SpreadLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One leg of a funding spread as the monitor last saw it (None: never seen)."""

    venue: str
    symbol: str
    kind: MarketKind
    funding_rate: Decimal | None = None  # per funding interval; 0 for spot
    predicted_rate: Decimal | None = None
    interval_ms: int = 0  # the venue's real funding interval; 0 for spot
    next_funding_time: int = 0  # ms; 0 for spot
    funding_ts: int = 0  # when the last funding event for it happened (0: none yet)
    bid: Decimal | None = None
    ask: Decimal | None = None
    book_ts: int = 0  # when its last ticker happened
    fee: Decimal = ZERO  # the fee rate one trade on it pays (taker: the saga crosses the book)


class FundingSpread(Message, frozen=True, kw_only=True, tag="funding_spread"):
    """A funding monitor's snapshot of one configured pair of legs, on `ops.funding.<symbol>.spread`.

    `long` is the leg to hold long (the lower funding), `short` the leg to hold short. Rates are
    per each leg's own interval; the APRs annualize each leg over its real interval. Only an `ok`
    snapshot carries the spread and APRs: with either leg `missing` (never seen) or `stale`
    (older than its TTL) there is no decision to make, and `reason` says which leg.
    """

    monitor: str  # the funding monitor instance
    pair: str  # the configured pair's name
    symbol: str  # the subject's symbol: the pair's (first) perpetual
    state: SpreadState
    reason: str = ""
    long: SpreadLeg
    short: SpreadLeg
    use_margin: bool = False  # holding `short` means borrowing spot to sell it
    spread: Decimal | None = None  # short rate minus long rate, each per its own interval
    apr: Decimal | None = None  # funding collected per year on the notional of one leg
    predicted_apr: Decimal | None = None  # the same from the predicted rates (current where none)
    cost_apr: Decimal | None = None  # entering and leaving (fees and slippage), spread over the holding horizon
    borrow_apr: Decimal | None = None  # interest on a margin short
    net_apr: Decimal | None = None  # apr - cost_apr - borrow_apr
    next_funding_time: int = 0  # the earlier of the legs' next funding times (0: no perpetual)
    ts: int
