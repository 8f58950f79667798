"""Operational events on `ops.<component>.<instance>.<kind>`: what the system decided and why.

Strategy state, risk alerts, breaker changes, reconciliation findings and operator
controls. These are what the browser draws and what an operator reads after an incident.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas.account import ZERO
from schemas.base import Message, Side, not_empty

StrategyStatus = Literal["starting", "running", "paused", "reduce_only", "halted"]
SlotState = Literal["free", "pending", "open", "filled", "canceling"]
BreakerState = Literal["ok", "reduce_only", "halted"]
Severity = Literal["info", "warning", "critical"]
FindingKind = Literal["ghost_order", "missing_order", "position_drift", "balance_drift", "in_sync"]
ControlAction = Literal["pause", "resume", "halt", "reset"]


class GridLevel(msgspec.Struct, frozen=True, kw_only=True):
    """One price level of a grid and the order its slot holds, if any."""

    index: int  # 0 = anchor; negative below, positive above
    price: Decimal
    side: Side | None = None  # side of the order the slot holds (or would place)
    slot: SlotState = "free"
    client_order_id: str | None = None
    order_id: str | None = None
    amount: Decimal = ZERO
    filled: Decimal = ZERO
    generation: int = 0


class GridView(msgspec.Struct, frozen=True, kw_only=True):
    mode: Literal["long", "short", "neutral"]
    anchor: Decimal
    last_price: Decimal | None = None
    levels: list[GridLevel] = []
    position: Decimal = ZERO  # signed base amount this grid holds
    avg_entry: Decimal | None = None
    realized_pnl: Decimal = ZERO
    unrealized_pnl: Decimal = ZERO
    fees: Decimal = ZERO
    fills: int = 0
    open_orders: int = 0


class StrategyState(Message, frozen=True, kw_only=True, tag="strategy_state"):
    """Published on every change of a strategy instance; `input_seq` is the input it reflects."""

    component: str
    instance: str
    venue: str
    account: str
    symbol: str
    status: StrategyStatus
    input_seq: int
    grid: GridView | None = None
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
    """An operator's instruction to a component instance (`*` = every instance)."""

    target_component: str
    target_instance: str
    action: ControlAction
    reason: str = ""
    operator: str
    ts: int

    def __post_init__(self) -> None:
        not_empty("operator", self.operator)
