"""The simulated exchange's journal: every input to its matching engine, in order.

The engine is a consumer of its journal stream (`VENUE_<VENUE>`), so after a crash it
rebuilds from a checkpoint plus the journal tail exactly like any other consumer, and a
duplicate request (same client order id within the dedupe window) is dropped by the stream.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from bus.streams import DAY, MINUTE, StreamSpec
from schemas import subjects
from venues.protocol import OrderRequest


class Print(msgspec.Struct, frozen=True, array_like=True):
    """One market's move in a tick: the traded price and amount."""

    symbol: str
    price: Decimal
    volume: Decimal


class Bar(msgspec.Struct, frozen=True, array_like=True):
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


class Tick(msgspec.Struct, frozen=True, kw_only=True, tag="tick"):
    step: int
    ts: int
    prints: list[Print]


class Quote(msgspec.Struct, frozen=True, kw_only=True, tag="quote"):
    """Publish the market data of the prints so far (a tick's second half)."""

    step: int


class History(msgspec.Struct, frozen=True, kw_only=True, tag="history"):
    """Backfilled closed bars for a market that has none yet (fresh start)."""

    symbol: str
    bars: list[Bar]
    ts: int


class Place(msgspec.Struct, frozen=True, kw_only=True, tag="place"):
    account: str
    order: OrderRequest


class Cancel(msgspec.Struct, frozen=True, kw_only=True, tag="cancel"):
    account: str
    symbol: str
    client_order_id: str | None = None
    order_id: str | None = None


class CancelAll(msgspec.Struct, frozen=True, kw_only=True, tag="cancel_all"):
    account: str
    symbol: str


class Fund(msgspec.Struct, frozen=True, kw_only=True, tag="fund"):
    """Operator/test adjustment of a balance (a deposit or withdrawal)."""

    account: str
    asset: str
    amount: Decimal


Entry = Tick | Quote | History | Place | Cancel | CancelAll | Fund


def journal_stream(venue: str) -> StreamSpec:
    return StreamSpec(
        name=f"VENUE_{venue.upper()}",
        subjects=(subjects.journal(venue, ">"),),
        description=f"journal of the simulated exchange {venue!r}: every engine input in order",
        max_age=30 * DAY,
        duplicate_window=15 * MINUTE,
    )


def journal_subject(venue: str, entry: Entry) -> str:
    return subjects.journal(venue, type(entry).__struct_config__.tag)


def journal_id(venue: str, entry: Entry) -> str | None:
    """Dedupe id: a place is identified by its client id, a tick by its step."""
    match entry:
        case Place(account=a, order=order):
            return f"place:{venue}:{a}:{order.client_order_id}"
        case Tick(step=step):
            return f"tick:{venue}:{step}"
        case Quote(step=step):
            return f"quote:{venue}:{step}"
        case History(symbol=s):
            return f"history:{venue}:{s}"
    return None
