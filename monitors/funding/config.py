"""Settings of the funding monitor (the `[funding]` table, with one `[[funding.pairs]]` per pair).

A pair is two legs the arbitrage could hold against each other: a spot market and a perpetual
on one venue, or two perpetuals on two venues. Which leg is held long and which short is not
configured: the monitor decides it from the legs' funding (the lower funding is held long), so
the order of the legs decides only which perpetual names the snapshots' subject (the first).
A bad value names its key.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.subjects import SubjectError, name_token, symbol_token


class UnknownPair(KeyError):
    """No configured pair has that name (the message names the ones there are)."""

    def __str__(self) -> str:
        return str(self.args[0])  # a KeyError would show its message in quotes


class LegConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    venue: str
    symbol: str  # ccxt unified: `BTC/USDT` (spot) or `BTC/USDT:USDT` (perpetual)


class PairConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    legs: list[LegConfig]
    # Hourly interest of a margin loan, paid when the spot leg is held short (negative funding).
    borrow_rate: Decimal = Decimal("0.00001")
    margin: bool = True  # whether the spot leg can be shorted on margin at all


class FundingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    instance: str = "main"
    # A leg's funding or ticker older than this, in event time, is stale: no decision is made on it.
    ttl_ms: int = 30_000
    ttl_ms_by_venue: dict[str, int] = {}  # a venue that publishes less often gets its own TTL
    publish_ms: int = 1_000  # a snapshot of a pair at most this often, unless its funding or state changes
    hold_hours: Decimal = Decimal(72)  # the horizon the cost of entering and leaving is spread over
    slippage: Decimal = Decimal("0.0002")  # per trade, beyond half the quoted spread
    clock_ms: int = 500  # how often the shell puts the time into its input stream
    metrics_port: int = 0  # /health, /status, /metrics; 0 = off
    pairs: list[PairConfig] = []

    def __post_init__(self) -> None:
        try:
            name_token("instance", self.instance)
            for venue in self.ttl_ms_by_venue:
                name_token("venue", venue)
        except SubjectError as exc:
            raise ValueError(f"`funding`: {exc}") from None
        for key in ("ttl_ms", "publish_ms", "clock_ms"):
            if getattr(self, key) <= 0:
                raise ValueError(f"`funding.{key}` must be positive")
        for venue, ttl in self.ttl_ms_by_venue.items():
            if ttl <= 0:
                raise ValueError(f"`funding.ttl_ms_by_venue.{venue}` must be positive")
        if not self.hold_hours.is_finite() or self.hold_hours <= 0:
            raise ValueError(f"`funding.hold_hours` must be a positive number of hours, got {self.hold_hours}")
        if not self.slippage.is_finite() or not 0 <= self.slippage < 1:
            raise ValueError(f"`funding.slippage` must be a fraction of the price in [0, 1), got {self.slippage}")
        if not 0 <= self.metrics_port < 65536:
            raise ValueError("`funding.metrics_port` must be a TCP port or 0")
        seen: set[str] = set()
        for i, pair in enumerate(self.pairs):
            check_pair(f"funding.pairs[{i}]", pair)
            if pair.name in seen:
                raise ValueError(f"`funding.pairs[{i}].name` {pair.name!r} is used by another pair")
            seen.add(pair.name)

    def pair(self, name: str) -> PairConfig:
        for p in self.pairs:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.pairs) or "none configured"
        raise UnknownPair(f"no funding pair {name!r} (known: {known})")

    def ttl(self, venue: str) -> int:
        return self.ttl_ms_by_venue.get(venue, self.ttl_ms)

    def legs(self) -> list[tuple[str, str]]:
        """Every configured (venue, symbol), once, sorted."""
        return sorted({(leg.venue, leg.symbol) for p in self.pairs for leg in p.legs})


def check_pair(key: str, pair: PairConfig) -> None:
    try:
        name_token("name", pair.name)
    except SubjectError as exc:
        raise ValueError(f"`{key}.name`: {exc}") from None
    if len(pair.legs) != 2:
        raise ValueError(f"`{key}.legs` must name exactly two legs, got {len(pair.legs)}")
    for j, leg in enumerate(pair.legs):
        try:
            name_token("venue", leg.venue)
        except SubjectError as exc:
            raise ValueError(f"`{key}.legs[{j}].venue`: {exc}") from None
        try:
            symbol_token(leg.symbol)
        except SubjectError as exc:
            raise ValueError(f"`{key}.legs[{j}].symbol`: {exc}") from None
    if pair.legs[0] == pair.legs[1]:
        raise ValueError(f"`{key}.legs` names {pair.legs[0].venue} {pair.legs[0].symbol} twice: a pair needs two different legs")
    if not pair.borrow_rate.is_finite() or not 0 <= pair.borrow_rate < 1:
        raise ValueError(f"`{key}.borrow_rate` must be an hourly rate in [0, 1), got {pair.borrow_rate}")
