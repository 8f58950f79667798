"""The alerts monitor's Prometheus metrics, in base units, with bounded labels only: `channel`
(slack, telegram, log), `kind` (alerts.KINDS) and `outcome` (a fixed set). Never a URL, a token,
a message id or free text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

ALERTS = Counter(
    "sqt_alerts_alerts_total",
    "Alerts raised by inputs, by kind and verdict (new: sent; duplicate: the same event again; repeat: its condition within the window)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
IGNORED = Counter(
    "sqt_alerts_inputs_ignored_total", "Inputs that raise no alert (an order not unknown, an in-sync finding)", registry=REGISTRY
)
ATTEMPTS = Counter(
    "sqt_alerts_requests_total",
    "Requests to a channel, by outcome (ok, rate_limited, transient, permanent)",
    ["channel", "outcome"],
    registry=REGISTRY,
)
DELIVERED = Counter(
    "sqt_alerts_delivered_total", "Alerts a channel confirmed (one digest confirms many)", ["channel", "kind"], registry=REGISTRY
)
ALREADY_SENT = Counter(
    "sqt_alerts_already_sent_total",
    "Alerts not sent because the channel had confirmed them before (a restart)",
    ["channel"],
    registry=REGISTRY,
)
MESSAGES = Counter(
    "sqt_alerts_messages_total", "Messages a channel accepted, by shape (single, digest)", ["channel", "outcome"], registry=REGISTRY
)
WAITING = Gauge("sqt_alerts_waiting", "Alerts waiting for a channel (queued or being sent)", ["channel"], registry=REGISTRY)
UNACKED = Gauge("sqt_alerts_unacked_inputs", "Inputs delivered and not acked yet (their alerts are not everywhere yet)", registry=REGISTRY)
REQUEST_SECONDS = Histogram(
    "sqt_alerts_request_seconds",
    "One request to a channel, until its answer",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DELIVERY_SECONDS = Histogram(
    "sqt_alerts_delivery_seconds",
    "From an alert's input arriving to its channel's confirmation stored (waits, retries, rate limits included)",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
COMPONENTS = Gauge("sqt_alerts_components", "Micro services seen answering the ping, by state (up, down)", ["outcome"], registry=REGISTRY)
