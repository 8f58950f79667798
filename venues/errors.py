"""What a venue can say no with, as a small closed set of categories.

The executor decides from the category alone: retry (transient), report a rejection
(permanent), or treat as success (the order already exists). The ccxt adapter maps
ccxt's exception classes onto these; the simulated exchange raises them directly.
"""

from __future__ import annotations

from schemas.account import OrderUpdate
from schemas.base import RejectReason


class VenueError(Exception):
    reason: RejectReason = "upstream_rejected"

    def __init__(self, message: str, reason: RejectReason | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class OrderRejected(VenueError):
    """The venue refused the order for a reason that will not change by retrying."""


class OrderNotFound(VenueError):
    reason: RejectReason = "not_found"


class DuplicateOrder(VenueError):
    """The client order id is taken: the order exists (fetch it; never place it again)."""

    reason: RejectReason = "duplicate"

    def __init__(self, message: str, existing: OrderUpdate | None = None) -> None:
        super().__init__(message)
        self.existing = existing


class Transient(VenueError):
    """Timeouts, rate limits, unavailability: the same request may succeed later."""

    reason: RejectReason = "venue_error"


class RateLimited(Transient):
    """`retry_after`: the seconds the venue asked us to wait, when it said (a Retry-After header,
    Binance's "IP banned until" message, Bybit's reset timestamp); None when it did not."""

    reason: RejectReason = "rate_limited"

    def __init__(self, message: str, reason: RejectReason | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, reason)
        self.retry_after = retry_after


class MarginUnavailable(OrderRejected):
    reason: RejectReason = "margin_unavailable"


class InsufficientCollateral(OrderRejected):
    reason: RejectReason = "insufficient_collateral"
