"""The funding monitor's state: what it last saw of each leg, and what it last published per pair.

Plain frozen values (checkpointed as JSON, rebuilt identically by folding the input stream).
Legs are keyed `venue|symbol`, pairs by their configured name.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.ops import FundingSpread


def leg_key(venue: str, symbol: str) -> str:
    return f"{venue}|{symbol}"


class LegSeen(msgspec.Struct, frozen=True, kw_only=True):
    """One market's latest funding (perpetuals only) and latest two-sided book."""

    funding_rate: Decimal | None = None
    predicted_rate: Decimal | None = None
    interval_ms: int = 0
    next_funding_time: int = 0
    funding_ts: int = 0  # event time of its last funding (0: none yet)
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None  # the last accepted price: market-data sanity bands the next one on it
    book_ts: int = 0  # event time of its last ticker (0: none yet)


class FundingState(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    now: int = 0  # the latest time the inputs have shown (ms)
    started: int = 0  # the first
    seq: int = 0
    legs: dict[str, LegSeen] = {}
    snapshots: dict[str, FundingSpread] = {}  # pair -> the last snapshot published for it
