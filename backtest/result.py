"""What a backtest produces, in one shape that the summary, the report and the sweep read.

Money is Decimal (what the engine computed); curves are floats (what charts and statistics
use). Times are milliseconds since the epoch, event time of the candles.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec


class Sample(msgspec.Struct, frozen=True, array_like=True):
    """The account after one candle: the equity curve, the inventory, what was earned so far."""

    ts: int  # the candle's close time
    price: float  # the candle's close
    equity: float  # quote-currency value of the account at the close (balances + unrealized)
    position: float  # signed base quantity: + long, - short
    realized: float  # cumulative realized PnL (price PnL of closed inventory), before fees and funding
    fees: float  # cumulative fees paid (positive = paid)
    funding: float  # cumulative funding received (negative = paid)


class TradeRow(msgspec.Struct, frozen=True, kw_only=True):
    """One execution at the simulated exchange, as the CSV of trades lists it."""

    ts: int
    client_order_id: str
    side: str  # buy | sell
    price: Decimal
    amount: Decimal  # base quantity
    fee: Decimal
    liquidity: str  # maker | taker
    symbol: str | None = None  # the market, where a run trades more than one (the arbitrage's two legs)


class Level(msgspec.Struct, frozen=True, array_like=True):
    """Grid levels in force from `ts` on (the report draws them as steps)."""

    ts: int
    prices: list[float]


class BacktestResult(msgspec.Struct, kw_only=True):
    strategy: str  # grid | arbitrage
    symbol: str
    params: dict[str, Any]  # the strategy's parameters as run (after --set / --sweep)
    since: int
    until: int
    candles: int
    start_equity: float
    samples: list[Sample]
    trades: list[TradeRow]
    levels: list[Level]
    commands: int  # places and cancels the core decided
    summary: dict[str, Any] = msgspec.field(default_factory=dict)  # backtest/metrics.summarize


def params_of(config: msgspec.Struct) -> dict[str, Any]:
    """A strategy's parameters as a report shows them: Decimals as their exact text, no port."""
    return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in msgspec.to_builtins(config).items() if k != "metrics_port"}
