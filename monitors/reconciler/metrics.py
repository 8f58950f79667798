"""The reconciler's Prometheus metrics (bounded labels: venue, trigger, kind, method, reason; never ids)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

CHECKS = Counter(
    "sqt_reconciler_checks_total", "Reconciliation passes started, by what started them", ["venue", "trigger"], registry=REGISTRY
)
CHECK_SECONDS = Histogram(
    "sqt_reconciler_check_duration_seconds",
    "One full pass: venue reads, record barrier, comparison, confirmations, actions",
    ["venue"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
FINDINGS = Counter("sqt_reconciler_findings_total", "Findings published, by kind", ["venue", "kind"], registry=REGISTRY)
ACTIONS = Counter(
    "sqt_reconciler_actions_total", "What policy `fix` did, by finding kind and action", ["venue", "kind", "action"], registry=REGISTRY
)
DEFERRED = Counter(
    "sqt_reconciler_deferred_total", "Differences left for the next pass (recent activity)", ["venue", "kind"], registry=REGISTRY
)
VENUE_CALLS = Counter("sqt_reconciler_venue_calls_total", "Venue calls made, by method", ["venue", "method"], registry=REGISTRY)
FAILURES = Counter("sqt_reconciler_failures_total", "Failed passes and calls, by reason category", ["venue", "reason"], registry=REGISTRY)
CONSECUTIVE_FAILURES = Gauge(
    "sqt_reconciler_consecutive_failures", "Passes failed in a row (0: the last one worked)", ["venue"], registry=REGISTRY
)
