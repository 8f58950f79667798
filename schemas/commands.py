"""Order commands: strategies and risk publish them on `cmd.<venue>.<account>.<symbol>.<verb>`.

The executor is the only component that turns them into venue calls. A command carries the
time of the decision (`ts`, taken from the event that caused it, never from a clock) and a
time-to-live: the executor refuses a command that reaches it later than `ttl_ms` after it
was written to COMMAND, so a backlog after an outage is not executed against a moved market.
"""

from __future__ import annotations

import re
from decimal import Decimal

from schemas.base import Message, OrderType, Side, TimeInForce, not_empty, positive

# The strictest venue we support (OKX `clOrdId`) allows 1-32 ASCII letters and digits.
CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
DEFAULT_TTL_MS = 30_000


def check_client_order_id(value: str) -> None:
    if not CLIENT_ORDER_ID.fullmatch(value):
        raise ValueError(f"`client_order_id` must be 1-32 letters and digits, got {value!r}")


def _check_envelope(ttl_ms: int, origin: str) -> None:
    if ttl_ms <= 0:
        raise ValueError(f"`ttl_ms` must be positive, got {ttl_ms}")
    not_empty("origin", origin)


class PlaceOrder(Message, frozen=True, kw_only=True, tag="place_order"):
    venue: str
    account: str
    symbol: str
    client_order_id: str
    side: Side
    order_type: OrderType = "limit"
    price: Decimal | None = None
    amount: Decimal
    post_only: bool = False
    reduce_only: bool = False
    use_margin: bool = False  # spot only: route through the margin account (borrow to short)
    time_in_force: TimeInForce | None = None
    origin: str  # the component instance that decided it, e.g. "grid/btc-neutral"
    ts: int
    ttl_ms: int = DEFAULT_TTL_MS

    def __post_init__(self) -> None:
        check_client_order_id(self.client_order_id)
        positive("amount", self.amount)
        positive("price", self.price)
        if self.order_type == "limit" and self.price is None:
            raise ValueError("a limit order needs a `price`")
        _check_envelope(self.ttl_ms, self.origin)


class CancelOrder(Message, frozen=True, kw_only=True, tag="cancel_order"):
    venue: str
    account: str
    symbol: str
    client_order_id: str | None = None
    order_id: str | None = None
    origin: str
    reason: str | None = None
    ts: int
    ttl_ms: int = DEFAULT_TTL_MS

    def __post_init__(self) -> None:
        if not self.client_order_id and not self.order_id:
            raise ValueError("a cancel needs `client_order_id` or `order_id`")
        _check_envelope(self.ttl_ms, self.origin)


class CancelAll(Message, frozen=True, kw_only=True, tag="cancel_all"):
    """Cancel every open order of the account on one symbol (risk's emergency brake)."""

    venue: str
    account: str
    symbol: str
    origin: str
    reason: str | None = None
    ts: int
    ttl_ms: int = DEFAULT_TTL_MS

    def __post_init__(self) -> None:
        _check_envelope(self.ttl_ms, self.origin)


Command = PlaceOrder | CancelOrder | CancelAll
