"""Which events become which alerts (pure: no clock, no I/O).

An `Alert` has two identities:
- `key`, the event it comes from (the message id: `Nats-Msg-Id`, which our publishers set to the
  body's deterministic `id`). The same event delivered twice, or published again, is one alert;
  per-channel confirmations are stored under it, so a restart never sends it twice.
- `condition` and `state`, what it is about: the same condition in the same state repeating
  within the dedupe window is one alert (a DLQ storm on one subject, a breaker re-tripping with
  new evidence). A new state under one condition (halted -> ok -> halted) always alerts.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

import msgspec

from bus import dlq
from schemas.account import OrderUpdate
from schemas.market import GapMarker
from schemas.ops import BreakerChange, ReconciliationFinding, RiskAlert, Severity

AlertKind = Literal["breaker", "finding", "gap", "dlq", "unknown_order", "risk", "component"]
KINDS: tuple[AlertKind, ...] = ("breaker", "finding", "gap", "dlq", "unknown_order", "risk", "component")

# Presence alerts are RiskAlerts the monitor publishes itself (so they are stored, deduplicated
# and confirmed like any other input); their message starts with the service they are about.
COMPONENT = "alerts"
DOWN = "component_down"
BACK = "component_back"

AlertInput = GapMarker | OrderUpdate | BreakerChange | ReconciliationFinding | RiskAlert

_BREAKER_SEVERITY: dict[str, Severity] = {"halted": "critical", "reduce_only": "warning", "ok": "info"}
_CRITICAL_FINDINGS = frozenset({"position_drift", "unresolved_unknown", "missing_fill"})
_SHORT = 300  # a field quoted from an event is cut here: the message must stay readable


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    key: str  # the event: one alert per key, whatever happens
    kind: AlertKind
    severity: Severity
    condition: str  # what repeats
    state: str = ""  # a new state under one condition is a new alert
    title: str
    detail: str = ""
    ts: int = 0  # when it happened (ms); 0 when unknown
    repeats: int = 0  # how often its condition repeated, unsent, in the window before it


def short(text: Any, limit: int = _SHORT) -> str:
    """One line, printable, bounded: an event's text is anyone's text."""
    one = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _num(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


def from_event(key: str, event: AlertInput) -> Alert | None:
    """The alert an admitted input raises, or None when it raises none (an order that is not
    `unknown`, a reconciliation that found everything in sync)."""
    match event:
        case BreakerChange():
            return _breaker(key, event)
        case ReconciliationFinding():
            return None if event.kind == "in_sync" else _finding(key, event)
        case GapMarker():
            return _gap(key, event)
        case OrderUpdate():
            return _unknown_order(key, event) if event.status == "unknown" else None
        case RiskAlert():
            return _risk(key, event)
    return None


def _breaker(key: str, e: BreakerChange) -> Alert:
    trips = "; ".join(
        short(f"{t.breaker} {t.state}: {_num(t.value)} vs limit {_num(t.limit)}{' (' + t.detail + ')' if t.detail else ''}", 160)
        for t in e.trips[:5]
    )
    more = f" (+{len(e.trips) - 5} more)" if len(e.trips) > 5 else ""
    closed = e.state == "ok"
    return Alert(
        key=key,
        kind="breaker",
        severity=_BREAKER_SEVERITY[e.state],
        condition=f"breaker:{e.scope}",
        state=e.state,
        title=short(f"breaker {e.scope} {'closed' if closed else e.state} (was {e.previous})", 120),
        detail=short(f"{e.reason}; by {e.instance}" + (f"; trips: {trips}{more}" if trips else ""), 600),
        ts=e.ts,
    )


def _finding(key: str, e: ReconciliationFinding) -> Alert:
    order = e.client_order_id or e.order_id or ""
    numbers = f"; expected {_num(e.expected)}, actual {_num(e.actual)}" if e.expected is not None or e.actual is not None else ""
    return Alert(
        key=key,
        kind="finding",
        severity="critical" if e.kind in _CRITICAL_FINDINGS else "warning",
        condition=f"finding:{e.venue}:{e.account}:{e.symbol}:{e.kind}:{order}",
        title=short(f"reconciliation: {e.kind} on {e.venue}/{e.account} {e.symbol}" + (f" order {order}" if order else ""), 160),
        detail=short(f"{e.detail}{numbers}; action: {e.action}; by {e.instance}"),
        ts=e.ts,
    )


def _gap(key: str, e: GapMarker) -> Alert:
    where = f"{e.venue}/{e.account} {e.symbol}" if e.account else f"{e.venue} {e.symbol}"
    return Alert(
        key=key,
        kind="gap",
        severity="warning",
        condition=f"gap:{e.venue}:{e.account or ''}:{e.symbol}:{e.stream}",
        title=short(f"gap in {e.stream} of {where}: {max(0, e.until - e.since) / 1000:.1f} s", 160),
        detail=short(f"{e.reason}; {e.backfilled} events backfilled"),
        ts=e.ts,
    )


def _unknown_order(key: str, e: OrderUpdate) -> Alert:
    return Alert(
        key=key,
        kind="unknown_order",
        severity="critical",
        condition=f"unknown:{e.venue}:{e.account}:{e.client_order_id}",
        title=short(f"unknown outcome: {e.side} {_num(e.amount)} {e.symbol} @ {_num(e.price)} on {e.venue}/{e.account}", 160),
        detail=short(f"client order id {e.client_order_id}; the order may exist; {e.message or 'the reconciler settles it'}"),
        ts=e.ts,
    )


def _risk(key: str, e: RiskAlert) -> Alert:
    if e.component == COMPONENT and e.kind in (DOWN, BACK):
        service = e.message.split(" ", 1)[0]
        return Alert(
            key=key,
            kind="component",
            severity=e.severity,
            condition=f"component:{service}",
            state=e.kind,
            title=short(e.message, 160),
            ts=e.ts,
        )
    where = " ".join(x for x in (e.venue, e.symbol) if x)
    numbers = f" ({_num(e.value)} vs threshold {_num(e.threshold)})" if e.value is not None else ""
    return Alert(
        key=key,
        kind="risk",
        severity=e.severity,
        condition=f"risk:{e.component}:{e.instance}:{e.kind}:{e.venue or ''}:{e.symbol or ''}",
        state=e.severity,
        title=short(f"{e.component} {e.instance}: {e.kind}" + (f" on {where}" if where else ""), 160),
        detail=short(f"{e.message}{numbers}"),
        ts=e.ts,
    )


def from_dead_letter(key: str, subject: str, headers: Mapping[str, str], size: int, ts: int) -> Alert:
    """A DLQ arrival. Anything on `dlq.>` is one, whatever its payload or headers: a dead letter
    is never refused (refusing one would dead-letter it again, and alert on that, forever)."""
    original = headers.get(dlq.SUBJECT) or subject.partition(".")[2]
    consumer = headers.get(dlq.CONSUMER) or "?"
    truncated = f", truncated from {headers[dlq.TRUNCATED]} bytes" if dlq.TRUNCATED in headers else ""
    return Alert(
        key=key,
        kind="dlq",
        severity="warning",
        condition=f"dlq:{short(consumer, 80)}:{short(original, 200)}",
        title=short(f"dead letter from {consumer} on {original}", 160),
        detail=short(f"{size} bytes{truncated}, seq {headers.get(dlq.SEQ) or '?'}: {headers.get(dlq.ERROR) or 'no reason given'}"),
        ts=ts,
    )


def component_alert_message(service: str, down: bool, silent_s: float) -> str:
    """The text of a presence alert; its first word names the service (`from_event` reads it)."""
    if down:
        return f"{service} stopped answering its ping ({silent_s:.0f} s without an answer)"
    return f"{service} answers again (after {silent_s:.0f} s)"
