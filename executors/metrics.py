"""The executor's Prometheus metrics (bounded labels: verb, outcome and reason categories)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

COMMAND_TO_VENUE = Histogram(
    "sqt_executor_command_to_venue_seconds",
    "From a command stored in COMMAND to the venue's answer",
    ["verb"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
COMMANDS = Counter("sqt_executor_commands_total", "Commands handled, by outcome", ["verb", "outcome"], registry=REGISTRY)
RETRIES = Counter("sqt_executor_retries_total", "Venue calls retried after a transient error", ["verb", "reason"], registry=REGISTRY)
FAILURES = Counter("sqt_executor_failures_total", "Commands refused or failed, by reason category", ["verb", "reason"], registry=REGISTRY)
# Measured around the executor by executors/runner.py (`Observed`), not inside it.
DECISION_TO_ANSWER = Histogram(
    "sqt_executor_decision_to_answer_seconds",
    "From a command's decision time (its `ts`, the sender's clock) to the executor's answer (venue answered, outputs ready)",
    ["verb"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
ORDER_REPORTS = Counter(
    "sqt_executor_order_reports_total", "Order events the executor published, by order status", ["venue", "status"], registry=REGISTRY
)
REPORTED_FILLED = Counter(
    "sqt_executor_reported_fills_total",
    "Order events the executor published that carry a fill (a taker order filled at placement, a fetch of a filled order)",
    ["venue", "symbol"],
    registry=REGISTRY,
)
RETRY_LATER = Counter(
    "sqt_executor_retry_later_total",
    "Batches left unacked because an outcome is unknown (they come back after a backoff)",
    registry=REGISTRY,
)
