"""Where the simulated exchange's prices come from: a seeded random walk, a candle file, or a
real venue's published trades (paper trading, `venues/sim/paper.py`). A market that follows
another (`follows`) prints its leader's price times a small basis, whatever the source
(`venues/sim/basis.py`); `MarketPrices` puts the two together for the service.

The walk is counter-based: the move at step k is a pure function of (seed, symbol, k), so a
restarted simulator continues the very path an uninterrupted one would have taken.
"""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Protocol

from venues.sim.basis import Basis
from venues.sim.candle_csv import read_csv
from venues.sim.candle_path import PRINTS_PER_CANDLE, candle_path, on_tick, print_volume
from venues.sim.config import SimConfig, SimMarket
from venues.sim.draws import normal
from venues.sim.journal import Bar, Print

MINUTE_MS = 60_000
_SUB_STEPS = 12  # price points per backfilled bar


def _on_tick(price: float, spec: SimMarket) -> Decimal:
    ticks = Decimal(repr(price)) / spec.tick_size
    return max(spec.tick_size, ticks.to_integral_value() * spec.tick_size)


def _on_lot(amount: float, spec: SimMarket) -> Decimal:
    lots = (Decimal(repr(amount)) / spec.lot_size).to_integral_value(rounding=ROUND_DOWN)
    return max(spec.lot_size, lots * spec.lot_size)


class PriceSource(Protocol):
    def history(self, symbol: str, end_ms: int, minutes: int) -> list[Bar]: ...

    def next_print(self, symbol: str, step: int, last: Decimal) -> Print: ...


class RandomWalk:
    def __init__(self, config: SimConfig) -> None:
        self.specs = {m.symbol: m for m in config.markets}
        self.seeds = {m.symbol: config.seed_of(m) for m in config.markets}
        self.ticks_per_minute = max(1, MINUTE_MS // config.tick_ms)

    def next_print(self, symbol: str, step: int, last: Decimal) -> Print:
        spec = self.specs[symbol]
        z, u = normal(self.seeds[symbol], symbol, "tick", step)
        price = float(last) * math.exp(float(spec.volatility) * z)
        volume = float(spec.tick_volume) * (0.25 + 1.5 * u)
        return Print(symbol, _on_tick(price, spec), _on_lot(volume, spec))

    def history(self, symbol: str, end_ms: int, minutes: int) -> list[Bar]:
        spec = self.specs[symbol]
        seed = self.seeds[symbol]
        sigma = float(spec.volatility) * math.sqrt(self.ticks_per_minute / _SUB_STEPS)
        price = float(spec.start_price)
        first = end_ms - end_ms % MINUTE_MS - minutes * MINUTE_MS
        bars = []
        k = 0
        for i in range(minutes):
            points = []
            volume = 0.0
            for _ in range(_SUB_STEPS):
                z, u = normal(seed, symbol, "history", k)
                k += 1
                price *= math.exp(sigma * z)
                points.append(price)
                volume += float(spec.tick_volume) * (0.25 + 1.5 * u) * self.ticks_per_minute / _SUB_STEPS
            prices = [_on_tick(p, spec) for p in points]
            bars.append(Bar(first + i * MINUTE_MS, prices[0], max(prices), min(prices), prices[-1], _on_lot(volume, spec)))
        return bars


class CandleFile:
    """Prices from a recorded candle CSV: `timestamp,open,high,low,close,volume` (venues/sim/candle_csv.py).

    The first `history_minutes` rows are the backfill; each later row becomes the four prints
    of venues/sim/candle_path.py (the backtester's too), and the file loops at its end.
    """

    def __init__(self, config: SimConfig) -> None:
        assert config.csv_path is not None
        self.specs = {m.symbol: m for m in config.markets}
        self.rows = self._load(Path(config.csv_path))
        self.history_rows = min(config.history_minutes, max(len(self.rows) - 1, 0))

    @staticmethod
    def _load(path: Path) -> list[tuple[Decimal, Decimal, Decimal, Decimal, Decimal]]:
        # Only the prices are read: the file's times are not used (the backfill is dated back from
        # the start, and the live rows follow the clock), so they are not checked for order or gaps.
        rows = []
        for row in read_csv(path):  # the one candle CSV reader; its errors name file and line
            try:
                Bar(0, *row.values)  # the journal would refuse it later, mid-run: say so now
            except (ValueError, ArithmeticError) as exc:
                raise ValueError(f"{row.where}: expected timestamp,open,high,low,close,volume ({exc})") from None
            rows.append(row.values)
        if len(rows) < 2:
            raise ValueError(f"{path}: needs at least two candles")
        return rows

    def history(self, symbol: str, end_ms: int, minutes: int) -> list[Bar]:
        n = min(minutes, self.history_rows)
        first = end_ms - end_ms % MINUTE_MS - n * MINUTE_MS
        return [Bar(first + i * MINUTE_MS, *self.rows[i]) for i in range(n)]

    def next_print(self, symbol: str, step: int, last: Decimal) -> Print:
        spec = self.specs[symbol]
        live = self.rows[self.history_rows :] or self.rows
        o, h, low, c, v = live[((step - 1) // PRINTS_PER_CANDLE) % len(live)]
        price = candle_path(o, h, low, c)[(step - 1) % PRINTS_PER_CANDLE]
        return Print(symbol, on_tick(price, spec.tick_size), print_volume(v, spec.lot_size))


class FeedPrices:
    """Paper trading: every print is a real trade, journaled by the feed consumer as it arrives
    (venues/sim/paper_feed.py), so there is nothing to draw here.

    No made-up history either: the paper venue's chart starts with its first real print, and its
    clock is the feed's, which a backfill dated by the wall clock would push ahead of the feed."""

    def history(self, symbol: str, end_ms: int, minutes: int) -> list[Bar]:
        return []

    def next_print(self, symbol: str, step: int, last: Decimal) -> Print:
        raise RuntimeError(f"{symbol}: a paper venue prints the feed's trades; it draws no prices of its own")


def price_source(config: SimConfig) -> PriceSource:
    if config.prices == "paper":
        return FeedPrices()
    return CandleFile(config) if config.prices == "csv" else RandomWalk(config)


class MarketPrices:
    """Every market's print in a tick, and its backfill: a leader's (a market that follows none)
    from the price source, a follower's from its leader's."""

    def __init__(self, config: SimConfig) -> None:
        self.source = price_source(config)
        self.basis = Basis(config)
        self.markets = config.markets
        self.specs = {m.symbol: m for m in config.markets}
        self.leaders = [m for m in config.markets if m.follows is None]
        self.phases = config.tick_phases

    def history(self, symbol: str, end_ms: int, minutes: int) -> list[Bar]:
        spec = self.specs[symbol]
        if spec.follows is None:
            return self.source.history(symbol, end_ms, minutes)
        return self.basis.history(spec, self.source.history(spec.follows, end_ms, minutes))

    def next_prints(self, step: int, last: dict[str, Decimal]) -> list[Print]:
        """The tick's prints, one per market of the clock step's phase (every market with one
        phase) in the configured order; `last` holds each market's previous print (the
        followers' basis is read off it). A market's own path advances once per print."""
        phases = self.phases
        own = (step + phases - 1) // phases  # the market's print number (step itself with one phase)
        drawn: dict[str, Print] = {}
        for i, spec in enumerate(self.leaders):
            if phases == 1 or i % phases == step % phases:
                drawn[spec.symbol] = self.source.next_print(spec.symbol, own, last.get(spec.symbol, spec.start_price))
        for leader in list(drawn.values()):
            for p in self.basis.prints(own, leader, last):
                drawn[p.symbol] = p
        return [drawn[spec.symbol] for spec in self.markets if spec.symbol in drawn]
