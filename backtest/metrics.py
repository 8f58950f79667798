"""The summary statistics of one backtest, from its samples (one per candle) and its trades.

Pure and one pass over each list: a year of 1-minute samples (525,600) summarizes in a fraction
of a second, without numpy. Every value is JSON-ready: ints, finite floats, strings or None
(a statistic that is undefined for the run, such as Sharpe on a flat equity curve, is None,
never inf or NaN). Times are milliseconds since the epoch, like the result's.

What the money figures mean (all in the quote currency, from the engine's own cumulative
columns of the last sample, so they agree with what it booked):

- ``net_pnl`` = final equity - start equity. ``total_return_pct`` = 100 * net_pnl / start equity.
- ``realized_pnl``: the price PnL of inventory that was closed (the engine's cost basis),
  before fees and funding.
- ``fees``: fees paid, positive = paid (a maker rebate makes it smaller or negative).
- ``funding``: funding received, negative = paid.
- ``unrealized_pnl`` = final equity - start equity - realized + fees - funding: the mark-to-market
  PnL of the inventory still open at the last close, against its cost basis. It is what is left
  of the equity change once the booked figures are taken out, so the identity
  ``net_pnl = realized_pnl + unrealized_pnl - fees + funding`` holds (to within the rounding of
  the float columns, which is shown as 0: below 1e-12 of the largest of the figures). It is 0 when the
  run ends flat, and it would also absorb anything else the engine booked into equity (a
  liquidation's penalty, a deposit), which the engine does not do today.

Round trips (``round_trips``, ``win_rate_pct``, ``avg_holding_s``) are matched FIFO from the
trades alone, assuming the run starts flat: each trade first closes the oldest opposite
inventory, and what is left of it opens new inventory. A round trip is one closing trade (it may
close several lots); it wins when its price PnL minus its share of both legs' fees is positive.
They describe the trading, not the books: realized PnL stays the engine's figure.
"""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from backtest.result import BacktestResult, TradeRow

YEAR_MS = 365 * 86_400_000  # crypto trades every day of the year


def sampling_period_ms(ts: list[int]) -> int | None:
    """The median spacing of the samples (robust to gaps in the data); None under 2 samples."""
    if len(ts) < 2:
        return None
    diffs = sorted(b - a for a, b in zip(ts, ts[1:]))
    mid = len(diffs) // 2
    period = diffs[mid] if len(diffs) % 2 else (diffs[mid - 1] + diffs[mid]) // 2
    return period if period > 0 else None


def _max_drawdown(start: float, since: int, ts: list[int], equity: list[float]) -> dict[str, Any]:
    """The deepest fall from a running peak, relative and absolute (they may be two episodes).

    The start equity at ``since`` is the first peak. Relative drawdown is (peak - equity) / peak;
    it exceeds 100% only if equity went below zero.
    """
    peak, peak_ts = start, since
    best_pct = best_abs = 0.0
    pct_peak_ts = pct_trough_ts = abs_peak_ts = abs_trough_ts = None
    pct_peak = 0.0
    for t, e in zip(ts, equity):
        if e > peak:
            peak, peak_ts = e, t
            continue
        dd = peak - e
        if dd > best_abs:
            best_abs, abs_peak_ts, abs_trough_ts = dd, peak_ts, t
        if peak > 0 and dd / peak > best_pct:
            best_pct, pct_peak_ts, pct_trough_ts, pct_peak = dd / peak, peak_ts, t, peak
    recovered = None
    if pct_trough_ts is not None:  # the first time the equity got back to that peak
        for t, e in zip(ts, equity):
            if t > pct_trough_ts and e >= pct_peak:
                recovered = t
                break
    return {
        "max_drawdown_pct": 100.0 * best_pct,
        "max_drawdown_peak_ts": pct_peak_ts,
        "max_drawdown_trough_ts": pct_trough_ts,
        "max_drawdown_recovered_ts": recovered,
        "max_drawdown_abs": best_abs,
        "max_drawdown_abs_peak_ts": abs_peak_ts,
        "max_drawdown_abs_trough_ts": abs_trough_ts,
    }


def _ratios(start: float, equity: list[float], periods_per_year: float | None) -> tuple[float | None, float | None]:
    """Sharpe and Sortino of the per-sample simple returns, annualized by sqrt(periods per year).

    No risk-free rate. Sharpe: mean / sample standard deviation. Sortino: mean / downside
    deviation, sqrt(sum(min(r, 0)^2) / n) over all n returns (target 0). None when there are
    fewer than 2 returns, when the deviation is 0 (a flat curve; steady growth; for Sortino, no
    losing sample), or without a sampling period.
    """
    if periods_per_year is None or periods_per_year <= 0:
        return None, None
    n = 0
    total = 0.0
    returns: list[float] = []
    prev = start
    for e in equity:
        if prev > 0:
            r = e / prev - 1.0
            returns.append(r)
            total += r
            n += 1
        prev = e
    if n < 2:
        return None, None
    mean = total / n
    sq = down = 0.0
    for r in returns:
        d = r - mean
        sq += d * d
        if r < 0:
            down += r * r
    scale = math.sqrt(periods_per_year)
    sd = math.sqrt(sq / (n - 1))
    dd = math.sqrt(down / n)
    # a deviation that is only rounding noise of equal returns (steady growth) is zero
    flat = 1e-9 * abs(mean)
    sharpe = mean / sd * scale if sd > flat and math.isfinite(sd) else None
    sortino = mean / dd * scale if dd > flat and math.isfinite(dd) else None
    return _finite(sharpe), _finite(sortino)


def _noise_is_zero(x: float, scale: float) -> float:
    """0 for what is only the rounding of float sums of terms up to ``scale`` (a run that ends
    flat leaves some 1e-14 here)."""
    return 0.0 if abs(x) <= 1e-12 * max(1.0, scale) else x


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _round_trips(trades: list[TradeRow]) -> dict[str, Any]:
    """FIFO round trips of the trades (see the module's docstring), market by market: a leg of an
    arbitrage does not close the other leg's inventory."""
    books: dict[str | None, deque[list[Any]]] = {}  # per symbol: [ts, signed qty, price, fee per unit] of open inventory
    trips = wins = 0
    held_qty = held_weighted = 0.0  # sum(qty), sum(qty * seconds held) of the closed pieces
    for t in trades:
        qty = float(t.amount)
        if qty <= 0:
            continue
        lots = books.setdefault(t.symbol, deque())
        sign = 1.0 if t.side == "buy" else -1.0
        price = float(t.price)
        fee_unit = float(t.fee) / qty
        left = qty
        pnl = 0.0
        closed = False
        while left > 0 and lots and (lots[0][1] > 0) != (sign > 0):
            lot = lots[0]
            take = min(left, abs(lot[1]))
            # a long lot closed by a sell earns (sell - buy); a short lot closed by a buy (sell - buy)
            pnl += (price - lot[2]) * take * (-sign) - (lot[3] + fee_unit) * take
            held_qty += take
            held_weighted += take * (t.ts - lot[0]) / 1000.0
            left -= take
            closed = True
            if take >= abs(lot[1]) - 1e-15 * max(1.0, abs(lot[1])):
                lots.popleft()
            else:
                lot[1] += take * sign
        if left > 1e-15 * max(1.0, qty):
            lots.append([t.ts, left * sign, price, fee_unit])
        if closed:
            trips += 1
            wins += pnl > 0
    return {
        "round_trips": trips,
        "win_rate_pct": 100.0 * wins / trips if trips else None,
        "avg_holding_s": held_weighted / held_qty if held_qty > 0 else None,
    }


def summarize(result: BacktestResult, periods_per_year: float | None = None) -> dict[str, Any]:
    """The summary of one run (what `format_summary`, `write_json` and the report read).

    ``periods_per_year`` annualizes Sharpe and Sortino; by default it is derived from the
    samples' median spacing over a 365-day year (525,600 for 1-minute samples).
    """
    samples = result.samples
    start = float(result.start_equity)
    ts = [s.ts for s in samples]
    equity = [s.equity for s in samples]
    period = sampling_period_ms(ts)
    if periods_per_year is None and period is not None:
        periods_per_year = YEAR_MS / period

    last = samples[-1] if samples else None
    final = last.equity if last else start
    realized = last.realized if last else 0.0
    fees = last.fees if last else 0.0
    funding = last.funding if last else 0.0
    net = final - start

    in_market = 0
    max_long = max_short = max_exposure = 0.0
    max_long_ts = max_short_ts = max_exposure_ts = None
    for s in samples:
        p = s.position
        if p != 0:
            in_market += 1
            if p > max_long:
                max_long, max_long_ts = p, s.ts
            elif p < max_short:
                max_short, max_short_ts = p, s.ts
            exposure = abs(p) * s.price
            if exposure > max_exposure:
                max_exposure, max_exposure_ts = exposure, s.ts

    buys = sells = 0
    notional = Decimal(0)
    trade_fees = Decimal(0)
    maker = 0
    for t in result.trades:
        if t.side == "buy":
            buys += 1
        else:
            sells += 1
        notional += t.price * t.amount
        trade_fees += t.fee
        maker += t.liquidity == "maker"
    turnover = float(notional)
    sharpe, sortino = _ratios(start, equity, periods_per_year)
    dd = _max_drawdown(start, result.since, ts, equity)
    summary: dict[str, Any] = {
        "strategy": result.strategy,
        "symbol": result.symbol,
        "since": result.since,
        "until": result.until,
        "candles": result.candles,
        "samples": len(samples),
        "sampling_period_ms": period,
        "start_equity": start,
        "final_equity": final,
        "net_pnl": net,
        "total_return_pct": 100.0 * net / start if start else None,
        "realized_pnl": realized,
        "unrealized_pnl": _noise_is_zero(
            net - realized + fees - funding, max(abs(final), abs(start), abs(realized), abs(fees), abs(funding))
        ),
        "fees": fees,
        "funding": funding,
        **dd,
        "return_over_drawdown": None,
        "sharpe": sharpe,
        "sortino": sortino,
        "fills": len(result.trades),
        "buys": buys,
        "sells": sells,
        "maker_fills": maker,
        "fees_of_trades": float(trade_fees),
        "turnover": turnover,
        "turnover_x": turnover / start if start else None,
        "time_in_market_pct": 100.0 * in_market / len(samples) if samples else None,
        "max_long": max_long,
        "max_long_ts": max_long_ts,
        "max_short": max_short,
        "max_short_ts": max_short_ts,
        "max_exposure": max_exposure,
        "max_exposure_ts": max_exposure_ts,
        "final_position": last.position if last else 0.0,
        **_round_trips(result.trades),
        "commands": result.commands,
    }
    if summary["total_return_pct"] is not None and dd["max_drawdown_pct"] > 0:
        summary["return_over_drawdown"] = summary["total_return_pct"] / dd["max_drawdown_pct"]
    return summary


# ---- output ----------------------------------------------------------------------------------


def quote_of(symbol: str) -> str:
    """BTC/USDT:USDT -> USDT; a symbol without a slash -> ''."""
    if "/" not in symbol:
        return ""
    return symbol.split("/", 1)[1].split(":", 1)[0]


def iso(ms: int | None) -> str:
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    d, rest = divmod(s, 86_400)
    h, rest = divmod(rest, 3600)
    m = rest // 60
    if d:
        return f"{d}d {h}h"
    return f"{h}h {m:02d}m" if h else f"{m}m {s % 60:02d}s"


def money(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    digits = 2 if abs(x) >= 1 or x == 0 else 6
    return f"{x:,.{digits}f}" + (f" {unit}" if unit else "")


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:,.2f}%"


def num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def qty(x: float | None) -> str:
    return "—" if x is None else f"{x:,.8g}"


def summary_rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs in reading order: the terminal and the report show the same."""
    q = quote_of(str(s.get("symbol", "")))
    return [
        ("strategy", f"{s['strategy']} on {s['symbol']}"),
        ("window", f"{iso(s['since'])} → {iso(s['until'])} UTC"),
        ("candles", f"{s['candles']:,}"),
        ("start equity", money(s["start_equity"], q)),
        ("final equity", money(s["final_equity"], q)),
        ("total return", f"{pct(s['total_return_pct'])}  ({money(s['net_pnl'], q)})"),
        ("realized PnL", money(s["realized_pnl"], q)),
        ("unrealized PnL", money(s["unrealized_pnl"], q)),
        ("fees paid", money(s["fees"], q)),
        ("funding received", money(s["funding"], q)),
        (
            "max drawdown",
            f"{pct(s['max_drawdown_pct'])}  ({iso(s['max_drawdown_peak_ts'])} → {iso(s['max_drawdown_trough_ts'])})",
        ),
        (
            "max drawdown (abs)",
            f"{money(s['max_drawdown_abs'], q)}  ({iso(s['max_drawdown_abs_peak_ts'])} → {iso(s['max_drawdown_abs_trough_ts'])})",
        ),
        ("return / drawdown", num(s["return_over_drawdown"])),
        ("Sharpe (annualized)", num(s["sharpe"])),
        ("Sortino (annualized)", num(s["sortino"])),
        ("fills", f"{s['fills']:,}  ({s['buys']:,} buys, {s['sells']:,} sells, {s['maker_fills']:,} maker)"),
        ("turnover", f"{money(s['turnover'], q)}  ({num(s['turnover_x'])}× start equity)"),
        ("time in market", pct(s["time_in_market_pct"])),
        ("max long", f"{qty(s['max_long'])}  ({iso(s['max_long_ts'])})"),
        ("max short", f"{qty(s['max_short'])}  ({iso(s['max_short_ts'])})"),
        ("max exposure", f"{money(s['max_exposure'], q)}  ({iso(s['max_exposure_ts'])})"),
        ("final position", qty(s["final_position"])),
        ("round trips (FIFO)", f"{s['round_trips']:,}  (win rate {pct(s['win_rate_pct'])}, avg hold {duration(s['avg_holding_s'])})"),
        ("commands", f"{s['commands']:,}"),
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """The summary for the terminal: one aligned line per figure, in human units."""
    rows = summary_rows(summary)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def write_json(summary: dict[str, Any], path: Path | str) -> None:
    """The summary as JSON (strict: a NaN or inf would raise rather than write invalid JSON)."""
    Path(path).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


TRADE_COLUMNS = ["ts", "time", "symbol", "client_order_id", "side", "price", "amount", "notional", "fee", "liquidity"]


def write_trades_csv(trades: list[TradeRow], path: Path | str) -> None:
    """The trades as CSV, one row per execution; money as exact decimals, time in ms and UTC."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRADE_COLUMNS)
        for t in trades:
            w.writerow(
                [t.ts, iso(t.ts), t.symbol or "", t.client_order_id, t.side, t.price, t.amount, t.price * t.amount, t.fee, t.liquidity]
            )
