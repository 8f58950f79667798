"""Metrics of the calls a ccxt venue makes (bounded labels: venue, method, outcome category).

They are in the bus registry, which every component serves beside its own: whichever process
holds the venue (executor, grid, reconciler, risk) exports them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from bus.metrics import REGISTRY

CALLS = Counter(
    "sqt_venue_calls_total", "REST calls to a ccxt venue, by method and outcome", ["venue", "method", "outcome"], registry=REGISTRY
)
CALL_SECONDS = Histogram(
    "sqt_venue_call_seconds",
    "Time a ccxt venue call took, ccxt's own rate limiter included",
    ["venue", "method"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "sqt_venue_rate_limited_total", "Answers that said slow down (HTTP 418/429, rate-limit codes)", ["venue"], registry=REGISTRY
)
RATE_LIMIT_WAIT = Counter(
    "sqt_venue_rate_limit_wait_seconds_total", "Seconds waited because the venue asked us to back off", ["venue"], registry=REGISTRY
)
