"""A candle as the prints that trade it: the one intra-candle path that both the backtester and
the simulated exchange's candle-file prices (venues/sim/prices.CandleFile) use.

Open, then the extreme nearer the open, then the other extreme, then the close: the path that
travels least, which is what an OHLC bar most likely hid. On a tie the bar's direction decides
(an up bar dips first). Each print carries a quarter of the volume, rounded down to the lot and
at least one lot, so resting orders fill as they would in live trading on the same prints.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

PRINTS_PER_CANDLE = 4


def candle_path(o: Decimal, h: Decimal, low: Decimal, c: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    if h - o < o - low or (h - o == o - low and c < o):
        return o, h, low, c
    return o, low, h, c


def print_volume(volume: Decimal, lot: Decimal) -> Decimal:
    lots = (volume / PRINTS_PER_CANDLE / lot).to_integral_value(rounding=ROUND_DOWN)
    return max(lot, lots * lot)


def on_tick(price: Decimal, tick: Decimal) -> Decimal:
    """A recorded price on the market's tick (a file may carry more decimals than the venue)."""
    if price % tick == 0:
        return price
    return max(tick, (price / tick).to_integral_value() * tick)
