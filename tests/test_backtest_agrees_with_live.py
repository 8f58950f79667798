"""A backtest agrees with live trading: the same candles traded live through NATS (the simulated
exchange priced from the candle file, the executor and the grid as real processes, driven in
lock-step) and backtested in one process make the same commands and fills, and end with the same
position and money. Any difference is a defect in one of them (docs/adr/0021-backtest.md)."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backtest.session import GridSession, run_grid_backtest
from bus.connection import connect
from bus.reader import read_stream
from cli.config import load
from schemas.account import Fill
from schemas.codec import decode
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from testkit.chaos import Cluster, drive
from venues.sim.client import SimVenue
from venues.sim.journal import MINUTE_MS, Bar
from venues.sim.prices import CandleFile

pytestmark = pytest.mark.e2e

T1 = 1_767_225_600_000  # the first traded candle (2026-01-01T00:00Z); the file's first row is the backfill
CANDLES = 36
INSTANCE = "agree"

CONFIG = """
data_dir = "{data}"
log_level = "INFO"

[sim]
clock = "lockstep"
prices = "csv"
csv_path = "{csv}"
history_minutes = 1
start_time_ms = {start}
tick_ms = 15000
seed = 3

[sim.accounts.main]
USDT = "20000"

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
funding_interval_s = 300
funding_mean = "0.0003"
funding_volatility = "0"
{walk}

[executor]
request_timeout = 2.0
retries = 3
backoff_ms = 50

[[grids]]
instance = "{instance}"
symbol = "BTC/USDT:USDT"
mode = "neutral"
levels = 3
spacing = "0.0004"
notional = "300"
trail_levels = 2
max_open_orders = 12
"""


def write_candles(path: Path, seed: int) -> list[Bar]:
    """A busy half hour: moves of several grid levels a minute, both ways."""
    rng = random.Random(seed)
    price = 60_000.0
    bars = []
    for i in range(CANDLES + 1):
        points = [price]
        for _ in range(4):
            price *= math.exp(rng.gauss(0, 0.0007))
            points.append(price)
        o, h, low, c = (Decimal(f"{x:.1f}") for x in (points[0], max(points), min(points), price))
        bars.append(Bar(T1 + (i - 1) * MINUTE_MS, o, h, low, c, Decimal(f"{rng.uniform(0.5, 4):.3f}")))
    path.write_text(
        "timestamp,open,high,low,close,volume\n" + "".join(f"{b.open_time},{b.open},{b.high},{b.low},{b.close},{b.volume}\n" for b in bars)
    )
    return bars


async def live_run(workdir: Path, config: str) -> dict[str, Any]:
    with Cluster(workdir, config, instance=INSTANCE) as cluster:
        grid = load(cluster.config, environ={}).grid(INSTANCE)
        for name in ("sim", "executor", "grid"):
            cluster.start(name)
        nc = await connect(cluster.server.url, name="agreement-driver", attempts=10)
        try:
            await drive(cluster, nc, grid, steps=4 * CANDLES)
            commands: list[Any] = []
            async for batch in read_stream(nc, "COMMAND", subjects=("cmd.sim.main.>",)):
                commands += [decode(m.data) for m in batch]
            fills: list[Fill] = []
            async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.main.*.fill",)):
                fills += [decode(m.data) for m in batch]
            venue = SimVenue(nc, timeout=10)
            positions = {p.symbol: p.contracts if p.side == "long" else -p.contracts for p in await venue.fetch_positions()}
            balances = {b.asset: b.total for b in await venue.fetch_balance()}
            return {"commands": commands, "fills": fills, "positions": positions, "balances": balances}
        finally:
            await nc.close()


def command_key(c: PlaceOrder | CancelOrder | CancelAll) -> tuple[Any, ...]:
    if isinstance(c, PlaceOrder):
        return ("place", c.client_order_id, c.side, c.price, c.amount, c.post_only, c.reduce_only, c.ts)
    if isinstance(c, CancelOrder):
        return ("cancel", c.client_order_id, c.ts)
    return ("cancel_all", c.symbol, c.ts)


def fill_key(f: Fill) -> tuple[Any, ...]:
    return (f.client_order_id, f.side, f.price, f.amount, f.fee_cost, f.liquidity, f.ts)


def backtest(workdir: Path, bars: list[Bar], skip_quiet: bool) -> GridSession:
    cfg = load(workdir / "sqt.toml", environ={})
    sim = cfg.sim
    history = CandleFile(sim).history("BTC/USDT:USDT", T1 - sim.tick_ms, sim.history_minutes)  # the live backfill
    _, session = run_grid_backtest(cfg.grid(INSTANCE), sim, bars[1:], history=history, skip_quiet=skip_quiet)
    return session


@pytest.mark.timeout(600)
async def test_a_backtest_makes_the_commands_and_fills_live_trading_made(tmp_path: Path) -> None:
    bars = write_candles(tmp_path / "candles.csv", seed=4)
    config = CONFIG.format(data=tmp_path / "data", csv=tmp_path / "candles.csv", start=T1 - 15_000, instance=INSTANCE, walk="")
    live = await live_run(tmp_path / "live", config)
    places = [c for c in live["commands"] if isinstance(c, PlaceOrder)]
    assert len(places) > 20 and len(live["fills"]) > 10, "the session must trade for the comparison to mean anything"

    for skip_quiet in (False, True):
        session = backtest(tmp_path / "live", bars, skip_quiet)
        assert [command_key(c) for c in session.decided] == [command_key(c) for c in live["commands"]]
        assert [fill_key(f) for f in session.fills] == [fill_key(f) for f in live["fills"]]
        assert session.funding_payments, "funding every five minutes must have been paid"
        acct = session.est.accounts["main"]
        assert {s: p.contracts for s, p in acct.positions.items() if p.contracts} == {s: c for s, c in live["positions"].items() if c}
        assert acct.balances["USDT"] == live["balances"]["USDT"]  # realized PnL, fees and funding, to the last unit
        assert session.venue_position() == session.position
