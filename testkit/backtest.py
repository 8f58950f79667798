"""Hand-made backtest results for the summary's and the report's tests: equity curves,
inventories and fills chosen by the test, no engine run."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtest.result import BacktestResult, Level, Sample, TradeRow
from venues.sim.journal import Bar

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a midnight UTC
MINUTE = 60_000


def trade(i: int, side: str, price: str, amount: str = "1", fee: str = "0", *, t0: int = T0, step: int = MINUTE) -> TradeRow:
    """A fill at the close of candle ``i``."""
    return TradeRow(
        ts=t0 + (i + 1) * step,
        client_order_id=f"g-{side}-{i}",
        side=side,
        price=Decimal(price),
        amount=Decimal(amount),
        fee=Decimal(fee),
        liquidity="maker",
    )


def result(
    equity: Sequence[float],
    *,
    start: float | None = None,
    prices: Sequence[float] | None = None,
    positions: Sequence[float] | None = None,
    realized: Sequence[float] | None = None,
    fees: Sequence[float] | None = None,
    funding: Sequence[float] | None = None,
    trades: Sequence[TradeRow] = (),
    levels: Sequence[Level] = (),
    params: dict[str, Any] | None = None,
    commands: int = 0,
    t0: int = T0,
    step: int = MINUTE,
    symbol: str = "BTC/USDT:USDT",
) -> BacktestResult:
    """One sample per value of ``equity`` (candle i closes at t0 + (i + 1) * step); the other
    columns default to a flat price of 100 and zeros."""
    n = len(equity)

    def col(xs: Sequence[float] | None, default: float) -> list[float]:
        if xs is None:
            return [default] * n
        assert len(xs) == n, "every column needs one value per sample"
        return [float(x) for x in xs]

    p, q, r, f, fu = col(prices, 100.0), col(positions, 0.0), col(realized, 0.0), col(fees, 0.0), col(funding, 0.0)
    samples = [Sample(t0 + (i + 1) * step, p[i], float(equity[i]), q[i], r[i], f[i], fu[i]) for i in range(n)]
    return BacktestResult(
        strategy="grid",
        symbol=symbol,
        params=dict(params or {"spacing": 0.001, "levels": 10}),
        since=t0,
        until=t0 + n * step,
        candles=n,
        start_equity=float(start if start is not None else (equity[0] if n else 1000.0)),
        samples=samples,
        trades=list(trades),
        levels=list(levels),
        commands=commands,
    )


def walk(n: int, *, seed: int = 1, start: float = 10_000.0, fills_every: int = 0, params: dict[str, Any] | None = None) -> BacktestResult:
    """A random walk of ``n`` one-minute samples: price, equity and an inventory that moves
    with fills every ``fills_every`` candles (0: none); levels re-centred every 500 candles."""
    rng = random.Random(seed)
    price, equity, pos = 60_000.0, start, 0.0
    prices, equities, positions = [], [], []
    trades: list[TradeRow] = []
    levels: list[Level] = []
    for i in range(n):
        price *= 1 + rng.gauss(0, 0.0008)
        equity += pos * price * rng.gauss(0, 0.0008) + rng.gauss(0, 0.5)
        if fills_every and i % fills_every == 0:
            side = "buy" if rng.random() < 0.5 else "sell"
            pos = round(pos + (0.001 if side == "buy" else -0.001), 8)
            trades.append(trade(i, side, f"{price:.1f}", "0.001", "0.01"))
        if i % 500 == 0:
            centre = round(price, -1)
            levels.append(Level(T0 + (i + 1) * MINUTE, [centre * (1 + k * 0.002) for k in range(-3, 4) if k]))
        prices.append(price)
        equities.append(equity)
        positions.append(pos)
    return result(equities, start=start, prices=prices, positions=positions, trades=trades, levels=levels, params=params)


def sweep(spacings: Sequence[float], counts: Sequence[int], *, n: int = 300) -> list[BacktestResult]:
    """One walk per (spacing, levels) combination, each with its own seed."""
    out = []
    for i, s in enumerate(spacings):
        for j, c in enumerate(counts):
            out.append(walk(n, seed=100 + i * len(counts) + j, fills_every=7, params={"spacing": s, "levels": c, "mode": "neutral"}))
    return out


def candles(
    n: int, *, seed: int, vol: float, t0: int, start: float = 60_000.0, volume: Decimal | tuple[float, float] = Decimal(5)
) -> list[Bar]:
    """`n` 1-minute candles of a seeded random walk from `t0`: four log-normal moves of `vol` a
    candle (its open, extremes and close, on a 0.1 tick), and a fixed `volume` or one drawn
    uniformly from the (low, high) range. The same seed gives the same candles everywhere
    (tests, bench/backtest.py)."""
    rng = random.Random(seed)
    price = start
    out = []
    for i in range(n):
        points = [price]
        for _ in range(4):
            price *= math.exp(rng.gauss(0, vol))
            points.append(price)
        o, h, low, c = (Decimal(f"{x:.1f}") for x in (points[0], max(points), min(points), price))
        v = volume if isinstance(volume, Decimal) else Decimal(f"{rng.uniform(*volume):.3f}")
        out.append(Bar(t0 + i * MINUTE, o, h, low, c, v))
    return out


def write_csv(path: Path, bars: Sequence[Bar]) -> None:
    """Candles as the CSV `sqt data import` and the simulated exchange's candle-file prices read."""
    rows = "".join(f"{b.open_time},{b.open},{b.high},{b.low},{b.close},{b.volume}\n" for b in bars)
    path.write_text("timestamp,open,high,low,close,volume\n" + rows)
