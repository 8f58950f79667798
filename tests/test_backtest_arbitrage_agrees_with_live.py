"""The funding-arbitrage backtest agrees with live trading: the same candles and the same funding
rates traded live through NATS (the simulated exchange priced from the candle file in lock-step,
its spot following its perpetual, and the executor, as real processes; the funding monitor's and
the arbitrage's runtimes as `sqt run` builds them: their input streams, consumers and outputs)
and backtested in one process make the same commands and fills and end with the same wallet. Any
difference is a defect in one of them (backtest/arbitrage.py).

What a lock-step run cannot repeat is the shells' clock: `sqt run funding|arbitrage` put the
wall clock's time into their input streams (bus/clock.py, the arbitrage's every 500 ms, not
configurable), and a core's time is the latest it has seen, so one wall-clock tick among
recorded event times moves every later decision's time. So the two runtimes run here without
their clock task, and the driver puts event time in, as the backtest does: before each print,
both cores' ticks up to that print's time, each settled. The funding rates are pinned through the
exchange's test hook after the print that pays the previous funding time, as the backtest pins
them.
"""

from __future__ import annotations

import asyncio
import contextlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from backtest.arbitrage import run_arbitrage_backtest
from bus.clock import clock_event
from bus.connection import connect
from bus.publisher import Publisher
from bus.reader import read_stream
from cli.config import load
from monitors.funding.runner import CLOCK_COMPONENT, build_funding
from monitors.funding.runner import input_stream as funding_stream
from monitors.funding.state import leg_key
from schemas.account import Fill
from schemas.codec import decode
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from strategies.arbitrage.runner import build_arbitrage
from strategies.arbitrage.runner import input_stream as arb_stream
from testkit.backtest import candles, write_csv
from testkit.chaos import Cluster
from venues import rules
from venues.sim.client import SimVenue
from venues.sim.journal import Bar

pytestmark = pytest.mark.e2e

T1 = 1_767_225_600_000  # 2026-01-01
CANDLES = 8
INSTANCE = "agree"
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
ARB_CLOCK_MS = 5_000  # the driver's tick of the arbitrage's clock (both runs use it)
MONITOR_CLOCK_MS = 5_000
STEP_MS = 15_000  # a 1-minute candle's four prints
INTERVAL_MS = 120_000  # funding every two minutes: a few payments in a short run
RATES = [(T1 + INTERVAL_MS, Decimal("0.0003")), (T1 + 2 * INTERVAL_MS, Decimal("0.0003")), (T1 + 3 * INTERVAL_MS, Decimal("-0.0003"))]

CONFIG = """
data_dir = "{data}"
log_level = "INFO"
grids = []

[sim]
clock = "lockstep"
prices = "csv"
csv_path = "{csv}"
history_minutes = 0
start_time_ms = {start}
tick_ms = 15000
seed = 3
test_hooks = true

[sim.accounts.arb]
USDT = "50000"

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
funding_interval_s = 120
funding_mean = "0.0002"
funding_volatility = "0"

[[sim.markets]]
symbol = "BTC/USDT"
kind = "spot"
tick_size = "0.01"
lot_size = "0.00001"
min_amount = "0.00001"
start_price = "60000"
follows = "BTC/USDT:USDT"

[executor]
venue = "sim"
account = "arb"
request_timeout = 2.0
retries = 3
backoff_ms = 50

[funding]
hold_hours = "720"
clock_ms = 86400000

[[funding.pairs]]
name = "btc"
legs = [{{ venue = "sim", symbol = "BTC/USDT" }}, {{ venue = "sim", symbol = "BTC/USDT:USDT" }}]

[[arbitrages]]
instance = "agree"
pair = "btc"
account = "arb"
amount = "0.05"
entry_apr = "0.12"
entry_hold_ms = 15000          # ends on the second print: the clock tick before it decides, on the first print's book
exit_apr = "0.03"
"""


def write_candles(path: Path, seed: int) -> list[Bar]:
    bars = candles(CANDLES, seed=seed, vol=0.0004, t0=T1, volume=(2, 6))
    write_csv(path, bars)
    return bars


async def _last_id(nc: Client, stream: str, subject: str) -> str | None:
    try:
        msg = await nc.jetstream().get_last_msg(stream, subject)
    except NotFoundError:
        return None
    return (msg.headers or {}).get("Nats-Msg-Id")


async def settled(nc: Client, arb_in: str, funding_in: str) -> bool:
    """Every consumer caught up with nothing delivered and unacked, and both input streams hold
    the last message their origins hold on every subject they source (sourcing is asynchronous)."""
    js = nc.jetstream()
    sourced = [
        (origin, sub, into)
        for into, spec in ((arb_in, arb_stream_spec), (funding_in, funding_stream_spec))
        for origin, subs in spec
        for sub in subs
        if "*" not in sub and ">" not in sub
    ]
    try:
        for origin, subject, into in sourced:
            if await _last_id(nc, origin, subject) != await _last_id(nc, into, subject):
                return False
        for stream, consumer in (
            (funding_in, "funding-main"),
            (arb_in, f"arbitrage-{INSTANCE}"),
            ("COMMAND", "executor-sim-arb"),
            ("VENUE_SIM", "venue-sim"),
        ):
            info = await js.consumer_info(stream, consumer)
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    except Exception:  # noqa: BLE001 - a stream or consumer not declared yet
        return False


arb_stream_spec: list[tuple[str, tuple[str, ...]]] = []
funding_stream_spec: list[tuple[str, tuple[str, ...]]] = []


async def wait_settled(nc: Client, arb_in: str, funding_in: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    while calm < 3:
        if loop.time() > deadline:
            raise TimeoutError("the cluster did not settle")
        calm = calm + 1 if await settled(nc, arb_in, funding_in) else 0
        await asyncio.sleep(0.02)


async def live_run(workdir: Path, config: str) -> dict[str, Any]:
    with Cluster(workdir, config, instance=INSTANCE) as cluster:
        cfg = load(cluster.config, environ={})
        arb = cfg.arbitrage(INSTANCE)
        a_in, f_in = arb_stream(arb), funding_stream(cfg.funding)
        arb_stream_spec[:] = [(s.stream, s.subjects) for s in a_in.sources]
        funding_stream_spec[:] = [(s.stream, s.subjects) for s in f_in.sources]
        for name in ("sim", "executor"):
            cluster.start(name)
        nc = await connect(cluster.server.url, name="agreement-driver", attempts=10)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        try:
            venue = SimVenue(nc, "sim", "arb", timeout=10)
            markets = await rules.market_rules(venue, stop)
            assert markets is not None
            # The monitor's and the arbitrage's runtimes (their input streams, consumers, checkpoints
            # and outputs, as `sqt run` builds them), without the shells' wall-clock ticks.
            monitor = await build_funding(nc, cfg.funding, {leg_key("sim", s): markets[s] for s in (SPOT, PERP)})
            runtime = await build_arbitrage(nc, [venue, venue], arb, stop)
            assert runtime is not None
            tasks = [asyncio.create_task(monitor.run(stop)), asyncio.create_task(runtime.run(stop))]
            publisher = await Publisher(nc).start()
            await wait_settled(nc, a_in.name, f_in.name)
            next_tick = {"monitor": T1, "arbitrage": T1}
            pins = sorted((t - INTERVAL_MS, r) for t, r in RATES)
            for step in range(4 * CANDLES):
                ts = T1 + step * STEP_MS
                while min(next_tick.values()) <= ts:
                    t = min(next_tick.values())
                    if next_tick["monitor"] == t:
                        await publisher.publish(clock_event(CLOCK_COMPONENT, cfg.funding.instance, t))
                        next_tick["monitor"] = t + MONITOR_CLOCK_MS
                    if next_tick["arbitrage"] == t:
                        await publisher.publish(clock_event("arbitrage", INSTANCE, t))
                        next_tick["arbitrage"] = t + ARB_CLOCK_MS
                    await wait_settled(nc, a_in.name, f_in.name)
                for phase in ("match", "quote"):
                    await venue.step(1, phase)
                    await wait_settled(nc, a_in.name, f_in.name)
                while pins and pins[0][0] <= ts:
                    await venue.set_funding(PERP, pins.pop(0)[1])
                    await wait_settled(nc, a_in.name, f_in.name)
            commands: list[Any] = []
            async for batch in read_stream(nc, "COMMAND", subjects=("cmd.sim.arb.>",)):
                commands += [decode(m.data) for m in batch]
            fills: list[Fill] = []
            async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.arb.*.fill",)):
                fills += [decode(m.data) for m in batch]
            positions = {p.symbol: p.contracts if p.side == "long" else -p.contracts for p in await venue.fetch_positions()}
            balances = {b.asset: b.total for b in await venue.fetch_balance()}
            return {"commands": commands, "fills": fills, "positions": positions, "balances": balances}
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 15)
            await nc.close()


def command_key(c: PlaceOrder | CancelOrder | CancelAll) -> tuple[Any, ...]:
    if isinstance(c, PlaceOrder):
        return ("place", c.client_order_id, c.symbol, c.side, c.price, c.amount, c.reduce_only, c.use_margin, c.time_in_force, c.ts)
    if isinstance(c, CancelOrder):
        return ("cancel", c.client_order_id, c.ts)
    return ("cancel_all", c.symbol, c.ts)


def fill_key(f: Fill) -> tuple[Any, ...]:
    return (f.client_order_id, f.symbol, f.side, f.price, f.amount, f.fee_cost, f.liquidity, f.ts)


@pytest.mark.timeout(600)
async def test_an_arbitrage_backtest_makes_the_commands_and_fills_live_trading_made(tmp_path: Path) -> None:
    bars = write_candles(tmp_path / "candles.csv", seed=4)
    config = CONFIG.format(data=tmp_path / "data", csv=tmp_path / "candles.csv", start=T1 - STEP_MS)
    live = await live_run(tmp_path / "live", config)
    places = [c for c in live["commands"] if isinstance(c, PlaceOrder)]
    assert len(places) >= 4 and len(live["fills"]) >= 4, "it must enter and leave for the comparison to mean anything"

    cfg = load(tmp_path / "live" / "sqt.toml", environ={})
    funding = msgspec.structs.replace(cfg.funding, clock_ms=MONITOR_CLOCK_MS)
    _, session = run_arbitrage_backtest(cfg.arbitrage(INSTANCE), funding, cfg.sim, {PERP: bars}, {PERP: RATES}, arb_clock_ms=ARB_CLOCK_MS)
    assert [command_key(c) for c in session.decided] == [command_key(c) for c in live["commands"]]
    assert [fill_key(f) for f in session.fills] == [fill_key(f) for f in live["fills"]]
    assert (session.ast.entries, session.ast.exits) == (1, 1) and len(session.funding_payments) == 2
    acct = session.est.accounts["arb"]
    assert {s: p.contracts for s, p in acct.positions.items() if p.contracts} == {s: c for s, c in live["positions"].items() if c}
    assert acct.balances["USDT"] == live["balances"]["USDT"]  # fees, funding and the legs' cash, to the last unit
    assert acct.balances.get("BTC", Decimal(0)) == live["balances"].get("BTC", Decimal(0))
