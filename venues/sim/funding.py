"""Each perpetual's funding rate: a seeded mean-reverting walk, moved by event time.

The rate is an Ornstein-Uhlenbeck process, dr = reversion x (mean - r) dt + volatility dW (t in
hours), sampled every `funding_every_ms` of the engine's clock: from one sample to the next, dt
later, it moves by the exact transition

    r' = mean + (r - mean) e^(-reversion dt) + volatility sqrt((1 - e^(-2 reversion dt)) / (2 reversion)) z

with z the draw `normal(seed, symbol, "funding", k)` for the step k = ts // funding_every_ms it
reaches, then capped at +-`funding_cap` and rounded to 1e-8 like a venue's quoted rate. Steps the
clock jumped over (downtime, a quiet paper feed) are one transition over the whole gap, so the
path is the same whatever the gap, and a replay of the journal (same ticks, same times) draws
exactly the same rates: nothing here reads a clock or keeps a generator.

What a FundingRate event says: `funding_rate` is what the next funding time pays if the rate
does not move before it; `predicted_rate` is the process's expectation one funding interval
later, mean + (r - mean) e^(-reversion x interval), i.e. what the funding time after the next one
pays if the rate only reverts toward its mean. A rate pinned by the test hook (`set_funding`)
does not move; its predicted rate is the one given with it, or the rate itself.
"""

from __future__ import annotations

import math
from decimal import Decimal

from schemas.account import ZERO
from venues.sim.config import SimConfig, SimMarket
from venues.sim.draws import normal
from venues.sim.state import HOUR_MS, MarketState

RATE = Decimal("0.00000001")
_UNITS = (("h", 3_600_000), ("m", 60_000), ("s", 1_000))


def interval_text(ms: int) -> str:
    """ccxt's way of saying a funding interval: the largest unit that divides it exactly
    ("10s", "2m", "1h", "8h"; a day is "24h", as ccxt says it)."""
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"  # not reachable from the config (whole seconds), said plainly all the same


def rate(value: float, cap: Decimal) -> Decimal:
    """A float of the walk as a quoted rate: rounded to 1e-8, within +-cap, "0" for zero."""
    quoted = max(-cap, min(cap, Decimal(repr(value)).quantize(RATE)))
    return quoted if quoted else ZERO


class FundingProcess:
    def __init__(self, config: SimConfig) -> None:
        self.seeds = {m.symbol: config.seed_of(m) for m in config.markets}
        self.every = config.funding_every_ms
        self.specs: dict[str, SimMarket] = {m.symbol: m for m in config.markets}

    def expected(self, symbol: str, current: Decimal) -> Decimal:
        """The rate one funding interval from now, if it only reverts toward the mean."""
        spec = self.specs[symbol]
        hours = spec.funding_interval_ms / HOUR_MS
        mean = float(spec.funding_mean)
        return rate(mean + (float(current) - mean) * math.exp(-float(spec.funding_reversion) * hours), spec.funding_cap)

    def advance(self, ms: MarketState, symbol: str, ts: int) -> bool:
        """Move the rate to the step `ts` is in; whether that is a new step (a FundingRate is due).

        A market's first swap print starts the walk at its mean (unless a rate is pinned)."""
        k = ts // self.every
        if ms.funding_step >= 0 and k <= ms.funding_step:
            return False
        if not ms.funding_pinned:
            if ms.funding_step < 0:
                ms.funding_rate = self.specs[symbol].funding_mean
            else:
                ms.funding_rate = self._move(symbol, float(ms.funding_rate), (k - ms.funding_step) * self.every / HOUR_MS, k)
            ms.funding_predicted = self.expected(symbol, ms.funding_rate)
        ms.funding_step = k
        return True

    def _move(self, symbol: str, current: float, hours: float, k: int) -> Decimal:
        spec = self.specs[symbol]
        mean, kappa, sigma = float(spec.funding_mean), float(spec.funding_reversion), float(spec.funding_volatility)
        decay = math.exp(-kappa * hours)
        # Without reversion the walk is a plain Brownian motion (the limit of the formula).
        variance = sigma * sigma * ((1 - decay * decay) / (2 * kappa) if kappa > 0 else hours)
        z, _ = normal(self.seeds[symbol], symbol, "funding", k)
        return rate(mean + (current - mean) * decay + math.sqrt(variance) * z, spec.funding_cap)

    def pin(self, ms: MarketState, symbol: str, pinned: Decimal | None, predicted: Decimal | None) -> None:
        """The test hook: hold the rate at `pinned` (the walk stops moving it), or with None let
        the walk go on from the rate it holds."""
        if pinned is None:
            ms.funding_pinned = False
            ms.funding_predicted = self.expected(symbol, ms.funding_rate)
            return
        ms.funding_pinned = True
        ms.funding_rate = pinned if pinned else ZERO
        ms.funding_predicted = predicted if predicted is not None else ms.funding_rate
