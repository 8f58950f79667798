"""A backtest agrees with live trading: the same candles traded live through NATS (the simulated
exchange priced from the candle file, the executor and the grid as real processes, driven in
lock-step) and backtested in one process make the same commands and fills, and end with the same
position and money. Any difference is a defect in one of them (docs/adr/0021-backtest.md)."""

from __future__ import annotations

import asyncio
import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backtest.session import GridSession, run_grid_backtest
from bus.connection import connect
from bus.reader import read_stream
from cli.config import load
from cli.main import main
from schemas.account import Fill
from schemas.codec import decode
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from testkit.archive import compare
from testkit.backtest import candles, write_csv
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

[archive]
flush_seconds = 0.5
metrics_port = 0

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
    """A busy half hour: moves of several grid levels a minute, both ways (the first row is the backfill)."""
    bars = candles(CANDLES + 1, seed=seed, vol=0.0007, t0=T1 - MINUTE_MS, volume=(0.5, 4))
    write_csv(path, bars)
    return bars


async def live_run(workdir: Path, config: str) -> dict[str, Any]:
    with Cluster(workdir, config, instance=INSTANCE) as cluster:
        cfg = load(cluster.config, environ={})
        grid = cfg.grid(INSTANCE)
        for name in ("sim", "executor", "grid", "archive"):
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
            root = cfg.archive_dir()
            await eventually(lambda: compare(nc, root, "MARKET"), lambda c: c.equal, timeout=60)  # the archive has the window
            return {"commands": commands, "fills": fills, "positions": positions, "balances": balances, "config": cluster.config}
        finally:
            await nc.close()


async def eventually(probe: Any, ok: Any, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        got = await probe()
        if ok(got) or loop.time() > deadline:
            return got
        await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One live session, shared by the tests below (it takes most of a minute)."""
    tmp = tmp_path_factory.mktemp("agree")
    bars = write_candles(tmp / "candles.csv", seed=4)
    config = CONFIG.format(data=tmp / "data", csv=tmp / "candles.csv", start=T1 - 15_000, instance=INSTANCE, walk="")
    run = asyncio.run(live_run(tmp / "live", config))
    places = [c for c in run["commands"] if isinstance(c, PlaceOrder)]
    assert len(places) > 20 and len(run["fills"]) > 10, "the session must trade for the comparison to mean anything"
    return run | {"bars": bars, "tmp": tmp}


def command_key(c: PlaceOrder | CancelOrder | CancelAll) -> tuple[Any, ...]:
    if isinstance(c, PlaceOrder):
        return ("place", c.client_order_id, c.side, c.price, c.amount, c.post_only, c.reduce_only, c.ts)
    if isinstance(c, CancelOrder):
        return ("cancel", c.client_order_id, c.ts)
    return ("cancel_all", c.symbol, c.ts)


def fill_key(f: Fill) -> tuple[Any, ...]:
    return (f.client_order_id, f.side, f.price, f.amount, f.fee_cost, f.liquidity, f.ts)


def backtest(config: Path, bars: list[Bar], skip_quiet: bool) -> GridSession:
    cfg = load(config, environ={})
    sim = cfg.sim
    history = CandleFile(sim).history("BTC/USDT:USDT", T1 - sim.tick_ms, sim.history_minutes)  # the live backfill
    _, session = run_grid_backtest(cfg.grid(INSTANCE), sim, bars[1:], history=history, skip_quiet=skip_quiet)
    return session


@pytest.mark.timeout(600)
def test_a_backtest_makes_the_commands_and_fills_live_trading_made(live: dict[str, Any]) -> None:
    for skip_quiet in (False, True):
        session = backtest(live["config"], live["bars"], skip_quiet)
        assert [command_key(c) for c in session.decided] == [command_key(c) for c in live["commands"]]
        assert [fill_key(f) for f in session.fills] == [fill_key(f) for f in live["fills"]]
        assert session.funding_payments, "funding every five minutes must have been paid"
        acct = session.est.accounts["main"]
        assert {s: p.contracts for s, p in acct.positions.items() if p.contracts} == {s: c for s, c in live["positions"].items() if c}
        assert acct.balances["USDT"] == live["balances"]["USDT"]  # realized PnL, fees and funding, to the last unit
        assert session.venue_position() == session.position


@pytest.mark.timeout(600)
def test_a_backtest_of_the_recorded_window_does_what_the_live_grid_did(live: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """The window as the bus recorded it: the exchange's closed 1-minute candles, archived,
    imported with `sqt data import --from archive`, backtested with `sqt backtest grid`; its
    trades are the live grid's fills."""
    config, tmp = str(live["config"]), live["tmp"]
    stored = tmp / "recorded.parquet"
    assert (
        main(
            ["--config", config, "data", "import", "--from", "archive", "--venue", "sim", "--symbol", "BTC/USDT:USDT", "--out", str(stored)]
        )
        == 0
    )
    out = tmp / "recorded-backtest"
    # The live grid started on the first traded candle; the recorded backfill before it is context.
    assert (
        main(["--config", config, "backtest", "grid", "--data", str(stored), "--since", str(T1), "--instance", INSTANCE, "--out", str(out)])
        == 0
    )
    capsys.readouterr()
    with (out / "trades.csv").open() as fh:
        trades = [
            (int(r["ts"]), r["client_order_id"], r["side"], Decimal(r["price"]), Decimal(r["amount"]), Decimal(r["fee"]))
            for r in csv.DictReader(fh)
        ]
    last_closed = T1 + (CANDLES - 1) * MINUTE_MS  # the last minute's candle was still open when the run stopped
    want = [(f.ts, f.client_order_id, f.side, f.price, f.amount, f.fee_cost) for f in live["fills"] if f.ts < last_closed]
    assert len(want) > 10
    assert trades == want
