"""Market data sanity, in one place every strategy (and the risk monitor) uses.

Any NATS client can publish a ticker. What decodes is not yet believable: a price below one
tick, a crossed book, or a price absurdly far from the last one is garbage, and folding it
into a strategy's state would move its orders (or hang a loop over price levels). Such an
event is refused with its reason (the runtime dead-letters it), never folded in.

The band exists to stop garbage, not volatility: real markets move 10-30% in minutes, and the
risk monitor must see those moves. So the band is wide (by default a price may not be above
twice or below half the last accepted one), and it only applies within a window of
the last accepted price: after a silence that long (a feed outage, a stopped process), the
next price is accepted whatever it is, so a real move while we were away can never lock a
strategy out. Times are checked by the runtime against the moment JetStream stored the event
(bus/contract.py), which catches a ticker dated in the future without refusing real gaps.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec

from schemas.market import Market, Ticker

ABSURD = Decimal("1e15")  # no traded asset is quoted this high; beyond it a price is garbage


class PriceBand(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far a price may be from the last accepted one, and for how long that one counts."""

    max_jump: Decimal = Decimal(1)  # 1: at most twice the last, at least half of it
    window_ms: int = 60_000

    def __post_init__(self) -> None:
        if not self.max_jump.is_finite() or self.max_jump <= 0:
            raise ValueError("`max_jump` must be a positive fraction (0.5 = 50%)")
        if self.window_ms <= 0:
            raise ValueError("`window_ms` must be positive")


def check_price(name: str, price: Decimal, market: Market, last: Decimal | None, last_ts: int, ts: int, band: PriceBand) -> str | None:
    """Why `price` is not believable for `market` (None when it is)."""
    if price < market.tick_size:
        return f"{name} {price} is below one tick ({market.tick_size}) of {market.symbol}"
    if price > ABSURD:
        return f"{name} {price} is absurd for {market.symbol}"
    if last is not None and ts - last_ts < band.window_ms:
        ceiling = last * (1 + band.max_jump)
        floor = last / (1 + band.max_jump)
        if not floor <= price <= ceiling:
            return (
                f"{name} {price} is more than {band.max_jump:%} away from the last price {last} "
                f"of {market.symbol} ({ts - last_ts} ms earlier)"
            )
    return None


def check_ticker(ev: Ticker, market: Market, last: Decimal | None, last_ts: int, band: PriceBand) -> str | None:
    """Why a ticker is garbage (None when it can be folded into a strategy's state)."""
    for name, price in (("last", ev.last), ("bid", ev.bid), ("ask", ev.ask)):
        if price is not None:
            problem = check_price(name, price, market, last, last_ts, ev.ts, band)
            if problem:
                return problem
    if ev.bid is not None and ev.ask is not None and ev.bid > ev.ask:
        return f"crossed book: bid {ev.bid} above ask {ev.ask}"
    return None
