"""The backtester's figures: candles/s of a grid backtest over a year of 1-minute candles, beside
the grid core alone folding the same candles' tickers in memory (the ceiling: no exchange).

    .venv/bin/python bench/backtest.py [--candles 525600] [--exact 50000]

A year of candles is generated (a seeded walk with BTC-like 1-minute moves, 0.07% stdev) and
run through two grids, the shipped config's (`spacing` 0.05%: a level every 30 USDT, so most
minutes trade) and a wider one (0.5%), each with the quiet-candle shortcut; `--exact` candles
are also run printing every candle in full (same results, tests/test_backtest_session.py).
Also: loading the year from the Parquet file `sqt data import` writes, and peak memory.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backtest.candles import Meta, load_bars, write_parquet  # noqa: E402
from backtest.session import run_grid_backtest  # noqa: E402
from bus.contract import Inbound  # noqa: E402
from schemas import ids  # noqa: E402
from schemas.market import Ticker  # noqa: E402
from schemas.ops import VenueSnapshot  # noqa: E402
from strategies.grid.config import GridConfig  # noqa: E402
from strategies.grid.core import GridCore  # noqa: E402
from testkit.backtest import candles  # noqa: E402
from venues.sim.candle_path import candle_path  # noqa: E402
from venues.sim.config import SimConfig, SimMarket  # noqa: E402
from venues.sim.journal import Bar  # noqa: E402

SYMBOL = "BTC/USDT:USDT"
START = 1_735_689_600_000  # 2025-01-01T00:00Z


def year(n: int, seed: int = 1) -> list[Bar]:
    return candles(n, seed=seed, vol=0.00035, t0=START, volume=(0.5, 6))


def sim() -> SimConfig:
    market = SimMarket(
        symbol=SYMBOL,
        tick_size=Decimal("0.1"),
        lot_size=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        start_price=Decimal(60_000),
        funding_volatility=Decimal(0),  # what `sqt backtest` runs: a constant rate
    )
    return SimConfig(markets=[market], accounts={"main": {"USDT": Decimal(100_000)}}, tick_ms=15_000, history_minutes=0)


def grid(spacing: str) -> GridConfig:
    return GridConfig(
        instance="bench", levels=5, spacing=Decimal(spacing), notional=Decimal(200), trail_levels=2, max_open_orders=20, post_only=True
    )


def core_only(g: GridConfig, bars: list[Bar]) -> tuple[float, int]:
    """Ticks/s of the grid core alone over the candles' four prints each (tickers built beforehand)."""
    market = sim().market_map()[SYMBOL]
    core = GridCore(g, market, publish_every_ms=2**62)
    ticks = []
    for b in bars:
        for j, p in enumerate(candle_path(b.open, b.high, b.low, b.close)):
            ts = b.open_time + j * 15_000
            ticks.append(
                Ticker(id=ids.ticker_id("sim", SYMBOL, ts), venue="sim", symbol=SYMBOL, bid=p - 1, ask=p + 1, last=p, ts=ts, ts_local=ts)
            )
    state = core.initial_state()
    state, _ = core.step(
        state, Inbound(1, "s", VenueSnapshot(id="s", component="grid", instance="bench", venue="sim", account="main", symbol=SYMBOL, ts=0))
    )
    decisions = 0
    started = time.perf_counter()
    for seq, t in enumerate(ticks, start=2):
        state, out = core.step(state, Inbound(seq, "t", t))
        decisions += bool(out)
    return len(ticks) / (time.perf_counter() - started), decisions


def run(g: GridConfig, bars: list[Bar], skip: bool) -> dict[str, Any]:
    started = time.perf_counter()
    result, session = run_grid_backtest(g, sim(), bars, skip_quiet=skip)
    elapsed = time.perf_counter() - started
    return {
        "rate": len(bars) / elapsed,
        "elapsed": elapsed,
        "skipped": session.skipped / len(bars),
        "fills": len(result.trades),
        "commands": result.commands,
    }


def main(n: int, exact_n: int) -> None:
    print(f"generating {n:,} 1-minute candles ...", file=sys.stderr)
    bars = year(n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1m.parquet"
        write_parquet(path, bars, Meta(venue="sim", symbol=SYMBOL, interval="1m"))
        started = time.perf_counter()
        loaded = load_bars(path)
        load_s = time.perf_counter() - started
        assert loaded == bars
        del loaded  # one copy of the year in memory, as a backtest holds
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\nbacktest of {n:,} 1-minute candles (one process, one core)")
    print(f"  load from Parquet (sqt data import's file)   {load_s:6.2f} s  ({n / load_s:,.0f} candles/s)")
    for spacing, what in (("0.0005", "shipped grid, spacing 0.05%"), ("0.005", "wide grid, spacing 0.5%")):
        g = grid(spacing)
        ceiling, _ = core_only(g, bars[: min(n, 200_000)])
        fast = run(g, bars, skip=True)
        exact = run(g, bars[:exact_n], skip=False)
        print(f"  {what}:")
        print(
            f"    backtest            {fast['rate']:10,.0f} candles/s  ({fast['elapsed']:.1f} s; {fast['skipped'] * 100:.1f}% of candles quiet; "
            f"{fast['fills']:,} fills, {fast['commands']:,} commands)"
        )
        print(f"    every print in full {exact['rate']:10,.0f} candles/s  (first {exact_n:,} candles)")
        print(
            f"    ceiling: grid core alone, 4 tickers a candle, in memory  {ceiling:,.0f} ticks/s = {ceiling / 4:,.0f} candles/s"
            f"  -> backtest {fast['rate'] / (ceiling / 4):.2f}x"
        )
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"  peak memory (RSS) {rss_after / 1024:,.0f} MiB, of which the year's candles (Decimal bars) and the load before the"
        f" runs {rss_before / 1024:,.0f} MiB; the runs {(rss_after - rss_before) / 1024:,.0f} MiB above that"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candles", type=int, default=525_600)
    p.add_argument("--exact", type=int, default=50_000)
    a = p.parse_args()
    main(a.candles, a.exact)
