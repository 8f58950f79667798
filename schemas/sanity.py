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
from functools import lru_cache

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


@lru_cache(maxsize=256)
def band_limits(last: Decimal, max_jump: Decimal) -> tuple[Decimal, Decimal]:
    """The lowest and highest believable price around `last` (cached: a feed repeats its prices)."""
    return last / (1 + max_jump), last * (1 + max_jump)


@lru_cache(maxsize=256)
def steady_range(last: Decimal, max_jump: Decimal) -> tuple[Decimal, Decimal]:
    """Prices any two of which are within the band of each other: [last / r, last * r] with
    r = sqrt(1 + max_jump). A strategy may skip the check for a tick whose prices all fall in
    it (every price in it is believable whichever of them was the last one accepted)."""
    r = (1 + max_jump).sqrt()
    return last / r, min(last * r, ABSURD)


def check_price(name: str, price: Decimal, market: Market, last: Decimal | None, last_ts: int, ts: int, band: PriceBand) -> str | None:
    """Why `price` is not believable for `market` (None when it is)."""
    if price < market.tick_size:
        return f"{name} {price} is below one tick ({market.tick_size}) of {market.symbol}"
    if price > ABSURD:
        return f"{name} {price} is absurd for {market.symbol}"
    if last is not None and ts - last_ts < band.window_ms:
        floor, ceiling = band_limits(last, band.max_jump)
        if not floor <= price <= ceiling:
            return (
                f"{name} {price} is more than {band.max_jump:%} away from the last price {last} "
                f"of {market.symbol} ({ts - last_ts} ms earlier)"
            )
    return None


def check_ticker(ev: Ticker, market: Market, last: Decimal | None, last_ts: int, band: PriceBand) -> str | None:
    """Why a ticker is garbage (None when it can be folded into a strategy's state).

    Every ticker of every market passes here: the common case is a few comparisons of the
    extremes; the reason is worked out only for garbage."""
    bid, ask, price = ev.bid, ev.ask, ev.last
    low = high = price
    if bid is not None:
        low, high = min(low, bid), max(high, bid)
    if ask is not None:
        low, high = min(low, ask), max(high, ask)
    believable = market.tick_size <= low and high <= ABSURD
    if believable and last is not None and ev.ts - last_ts < band.window_ms:
        floor, ceiling = band_limits(last, band.max_jump)
        believable = floor <= low and high <= ceiling
    if believable and (bid is None or ask is None or bid <= ask):
        return None
    for name, value in (("last", price), ("bid", bid), ("ask", ask)):
        if value is not None:
            problem = check_price(name, value, market, last, last_ts, ev.ts, band)
            if problem:
                return problem
    return f"crossed book: bid {bid} above ask {ask}"
