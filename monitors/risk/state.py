"""The risk monitor's state: what it has seen, and which conditions hold which scopes.

Plain frozen values (checkpointed as JSON, rebuilt identically by folding the input stream).
Keys are strings so the state is its own JSON: markets `venue|symbol`, positions
`venue|account|symbol`, accounts `venue|account`.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.ops import BreakerChange, Trip

ZERO = Decimal(0)


def market_key(venue: str, symbol: str) -> str:
    return f"{venue}|{symbol}"


def account_key(venue: str, account: str) -> str:
    return f"{venue}|{account}"


def position_key(venue: str, account: str, symbol: str) -> str:
    return f"{venue}|{account}|{symbol}"


class Seen(msgspec.Struct, frozen=True, kw_only=True):
    """One market's data: when it last spoke, and its prices over the flash-crash window."""

    last_ts: int = 0  # the venue's time of the last market event (0: none yet)
    last_seq: int = 0
    price: Decimal | None = None
    window: tuple[tuple[int, Decimal, int], ...] = ()  # (ts, price, input seq), oldest first


class Held(msgspec.Struct, frozen=True, kw_only=True):
    """One position as the venue last reported it; `base` is signed (short < 0), in base units."""

    base: Decimal = ZERO
    mark: Decimal | None = None
    liquidation: Decimal | None = None
    unrealized: Decimal = ZERO
    realized: Decimal = ZERO
    seq: int = 0


class Latch(msgspec.Struct, frozen=True, kw_only=True):
    """A tripped breaker: it stays until closed, and may close only once its condition stopped."""

    trip: Trip
    holding: bool
    cleared_at: int = 0  # when the condition stopped holding


class RiskState(msgspec.Struct, frozen=True, kw_only=True):
    instance: str
    now: int = 0  # the latest time the inputs have shown (ms)
    started: int = 0  # the first: a market that never spoke is stale from here
    seq: int = 0
    markets: dict[str, Seen] = {}
    positions: dict[str, Held] = {}
    equity: dict[str, Decimal] = {}  # account -> its quote balance
    outcomes: dict[str, tuple[tuple[int, bool, int], ...]] = {}  # account -> (ts, refused, seq) of creates
    placed: dict[str, tuple[int, str, str, int]] = {}  # client id -> (command ts, venue, account, seq)
    answers: dict[str, tuple[tuple[int, int, int], ...]] = {}  # venue -> (ts, latency ms, seq)
    day: int = -1  # UTC day number of `day_marks`
    # Each position's realized + unrealized PnL when the day began for it: at the day's first
    # input, or at its first report of the day (a position first seen mid-day, or after a fresh
    # start, counts only what it made or lost since, never its history).
    day_marks: dict[str, Decimal] = {}
    latches: dict[str, dict[str, Latch]] = {}  # scope -> breaker -> latch
    published: dict[str, BreakerChange] = {}  # scope -> the last change published (the bucket's value)
