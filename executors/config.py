"""Settings of the order executor (the `[executor]` table)."""

from __future__ import annotations

import msgspec


class ExecutorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "sim"
    account: str = "main"
    rate_limit: float = 20.0  # orders per second sustained (token bucket refill)
    burst: int = 40  # bucket size
    retries: int = 4  # on transient errors (timeouts, rate limited)
    backoff_ms: int = 100  # first retry delay; doubles with jitter
    backoff_max_ms: int = 2_000
    request_timeout: float = 3.0  # seconds per venue call
    # How far past a create's deadline the venue's clock must be before "not found" is final
    # (what the venue's clock may lag the moment a request reaches it).
    deadline_margin_ms: int = 2_000
    # A place whose outcome is still unknown this long after its time-to-live is published as
    # `unknown` (the reconciler settles it) instead of holding up every command behind it.
    unknown_after_ms: int = 120_000
    metrics_port: int = 0  # Prometheus /metrics; 0 = off
    # With a risk monitor required: its heartbeat older than this makes every market reduce-only
    # (ADR 0012). 0 = no risk monitor required (tests and experiments without one).
    risk_heartbeat_ms: int = 0

    def __post_init__(self) -> None:
        if self.rate_limit <= 0:
            raise ValueError("`rate_limit` must be positive")
        if self.burst < 1:
            raise ValueError("`burst` must be at least 1")
        if self.retries < 0:
            raise ValueError("`retries` must not be negative")
        if not 0 < self.backoff_ms <= self.backoff_max_ms:
            raise ValueError("`backoff_ms` must be positive and at most `backoff_max_ms`")
        if self.request_timeout <= 0:
            raise ValueError("`request_timeout` must be positive")
        if self.deadline_margin_ms < 0:
            raise ValueError("`deadline_margin_ms` must not be negative")
        if self.risk_heartbeat_ms < 0:
            raise ValueError("`risk_heartbeat_ms` must not be negative (0 = no risk monitor required)")
        if self.unknown_after_ms <= 0:
            raise ValueError("`unknown_after_ms` must be positive")
