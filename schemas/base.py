"""What every message on the bus shares: the tagged base struct, literal vocabularies, validation.

Messages are frozen, keyword-only msgspec structs tagged by `type`, so a payload reads
`{"type": "candle", ...}` to any NATS client. Money, prices, quantities and rates are
`Decimal` (strings on the wire); times are integer milliseconds since the epoch.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
# `unknown`: the executor could not learn the outcome of a create within its window (the venue
# stayed unreachable); the order may exist. Not an end: whoever tracks it waits for the truth.
OrderStatus = Literal["open", "closed", "canceled", "rejected", "expired", "unknown"]
PositionSide = Literal["long", "short"]
Liquidity = Literal["maker", "taker"]
MarginMode = Literal["cross", "isolated"]
TimeInForce = Literal["GTC", "IOC", "FOK", "PO"]

# Why an order was rejected or ended early. A small closed set, so metrics labels stay bounded
# and a strategy can react by category; the free text goes in `message`.
RejectReason = Literal[
    "invalid",  # malformed command: missing field, non-positive size, bad price
    "unknown_symbol",
    "off_tick",  # price not on the market's tick size
    "below_min",  # below lot size or minimum notional
    "insufficient_balance",
    "post_only_would_take",
    "reduce_only_would_increase",
    "duplicate",  # client_order_id already used for a different order
    "expired",  # command older than its time-to-live when it reached the executor
    "breaker_open",  # a risk breaker forbids exposure-increasing orders
    "rate_limited",
    "margin_unavailable",
    "insufficient_collateral",
    "upstream_rejected",  # the venue said no for a reason we do not map
    "not_found",
    "venue_error",  # transient failures exhausted their retries
]


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every event and command.

    `id` is deterministic (a function of what the message says), and is sent as
    `Nats-Msg-Id`, so JetStream drops the copy that a retry or a replay publishes.
    """

    id: str


def positive(name: str, value: Decimal | None) -> None:
    """Raise ValueError unless value is None or a finite number > 0."""
    if value is not None and (not value.is_finite() or value <= 0):
        raise ValueError(f"`{name}` must be a positive number, got {value}")


def non_negative(name: str, value: Decimal | None) -> None:
    """Raise ValueError unless value is None or a finite number >= 0."""
    if value is not None and (not value.is_finite() or value < 0):
        raise ValueError(f"`{name}` must be zero or positive, got {value}")


def finite(name: str, value: Decimal | None) -> None:
    if value is not None and not value.is_finite():
        raise ValueError(f"`{name}` must be a finite number, got {value}")


def not_empty(name: str, value: str) -> None:
    if not value:
        raise ValueError(f"`{name}` must not be empty")
