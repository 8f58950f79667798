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
