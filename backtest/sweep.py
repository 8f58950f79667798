"""Parameter sweeps: every combination of the swept values, one backtest each, on every core.

Each worker process loads the candles once (passing half a million candles to every task would
cost more than the backtest) and runs the combinations it is handed; results come back whole,
in the order of the combinations, so a sweep's report is the same however the work was split.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from backtest.candles import infer_interval, read_any
from backtest.result import BacktestResult
from backtest.session import BacktestError, run_grid_backtest
from strategies.grid.config import GridConfig
from venues.sim.config import SimConfig
from venues.sim.journal import Bar


@dataclass(frozen=True)
class Data:
    """Where a worker reads its candles: the file and the window."""

    path: Path
    since_ms: int | None = None
    until_ms: int | None = None
    interval: str | None = None

    def load(self) -> list[Bar]:
        return read_any(self.path, interval=self.interval, since_ms=self.since_ms, until_ms=self.until_ms)


def parse_sweeps(items: Sequence[str], known: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--sweep spacing=0.0005,0.001 --sweep levels=5,10` as [(name, values)], each name known."""
    out: list[tuple[str, list[str]]] = []
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        choices = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not choices:
            raise BacktestError(f"--sweep {item!r}: expected NAME=V1,V2,... (e.g. spacing=0.0005,0.001)")
        if name not in known:
            raise BacktestError(f"--sweep {item!r}: {name!r} is not a parameter (one of {', '.join(known)})")
        if any(name == seen for seen, _ in out):
            raise BacktestError(f"--sweep: {name!r} is swept twice")
        out.append((name, choices))
    return out


def combinations(sweeps: list[tuple[str, list[str]]]) -> list[list[str]]:
    """Every combination as KEY=VALUE overrides, the first parameter varying slowest."""
    names = [name for name, _ in sweeps]
    return [[f"{n}={v}" for n, v in zip(names, values)] for values in itertools.product(*(vals for _, vals in sweeps))]


_bars: list[Bar] = []


def _load(data: Data) -> None:
    global _bars
    _bars = data.load()


def _run(job: tuple[GridConfig, SimConfig, Decimal | None]) -> BacktestResult:
    grid, sim, capital = job
    result, _ = run_grid_backtest(grid, sim, _bars, capital=capital, candle_ms=infer_interval(_bars))
    return result


def run_sweep(
    grids: list[GridConfig],
    sim: SimConfig,
    data: Data,
    capital: Decimal | None = None,
    jobs: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[BacktestResult]:
    """One backtest per grid config, on `jobs` processes (default: every core)."""
    workers = max(1, min(jobs or os.cpu_count() or 1, len(grids)))
    tasks = [(g, sim, capital) for g in grids]
    if workers == 1:
        _load(data)
        results = []
        for i, task in enumerate(tasks, start=1):
            results.append(_run(task))
            if on_done is not None:
                on_done(i)
        return results
    with ProcessPoolExecutor(max_workers=workers, initializer=_load, initargs=(data,)) as pool:
        results = []
        for i, result in enumerate(pool.map(_run, tasks), start=1):
            results.append(result)
            if on_done is not None:
                on_done(i)
        return results
