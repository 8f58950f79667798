"""Settings of one reconciler (the `[reconciler]` table): one per (venue, account)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from schemas.subjects import SubjectError, name_token

Policy = Literal["report", "fix"]


class ReconcilerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str = "sim"
    account: str = "main"
    instance: str = ""  # empty: "<venue>-<account>"
    interval_ms: int = 2_000  # a full check this often (and at once after a gap marker or an `unknown`)
    # report: findings only. fix: also cancel ghosts carrying one of `client_prefixes`, publish the
    # venue's real state of a missing order, alert risk about a drifted position.
    policy: Policy = "report"
    client_prefixes: list[str] = []  # client order ids `fix` may act on; empty = it cancels nothing
    position_tolerance: Decimal = Decimal(0)  # contracts either way before a position counts as drifted
    # A difference about an order (or a market) with activity this recent, on our side (an event
    # stored) or the venue's (its own update time), is checked again at the next pass instead.
    grace_ms: int = 5_000
    unknown_after_ms: int = 30_000  # an `unknown` outcome still unsettled this long is reported
    backoff_ms: int = 1_000  # a failing check waits this long, doubling each failure ...
    backoff_max_ms: int = 60_000  # ... up to this
    summary_every_ms: int = 300_000  # an `in_sync` summary at least this often (and on every change)
    record_wait_ms: int = 5_000  # how long a pass waits for the record to catch up with ACCOUNT
    keep_ended: int = 2_000  # ended orders the record remembers (open and unknown ones always)
    request_timeout: float = 3.0  # seconds per venue call
    metrics_port: int = 0  # /metrics, /health, /status; 0 = off

    def __post_init__(self) -> None:
        try:
            name_token("venue", self.venue)
            name_token("account", self.account)
            name_token("instance", self.name)
        except SubjectError as exc:
            raise ValueError(str(exc)) from None
        for key in ("interval_ms", "backoff_ms", "record_wait_ms", "summary_every_ms", "keep_ended"):
            if getattr(self, key) <= 0:
                raise ValueError(f"`{key}` must be positive")
        for key in ("grace_ms", "unknown_after_ms"):
            if getattr(self, key) < 0:
                raise ValueError(f"`{key}` must not be negative")
        if self.backoff_max_ms < self.backoff_ms:
            raise ValueError("`backoff_max_ms` must be at least `backoff_ms`")
        if not self.position_tolerance.is_finite() or self.position_tolerance < 0:
            raise ValueError("`position_tolerance` must be zero or positive")
        if any(not p for p in self.client_prefixes):
            raise ValueError("`client_prefixes` must not contain an empty prefix (it would match every order)")
        if self.request_timeout <= 0:
            raise ValueError("`request_timeout` must be positive")

    @property
    def name(self) -> str:
        return self.instance or f"{self.venue}-{self.account}"

    def ours(self, client_order_id: str) -> bool:
        """Whether `fix` may act on an order with this client id."""
        return any(client_order_id.startswith(p) for p in self.client_prefixes)
