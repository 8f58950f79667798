"""Kill -9 the grid, the executor and the simulated exchange at random moments; compare with a
run that never stopped. Shared by tests/test_chaos.py (a few dozen kills) and bench/chaos.py
(hundreds).

Both runs use real processes (`sqt run sim|executor|grid`) on their own nats-server, with the
exchange's clock in lock-step: the driver advances it one tick at a time and waits until every
consumer has settled before the next, so both runs see the same events. The chaos run kills a
random component at a random instant while a tick is in flight and restarts it at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus import checkpoints
from bus.connection import connect
from bus.contract import fold_stream
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.reader import read_stream
from schemas import subjects
from schemas.codec import decode
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.runner import grid_spec
from strategies.grid.state import GridState
from venues.errors import Transient
from venues.sim.client import SimVenue

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = "chaos"
CONFIG = f"""
data_dir = "{{data}}"
log_level = "INFO"

[sim]
clock = "lockstep"
seed = {{seed}}
start_time_ms = 1700000000000
history_minutes = 30
tick_ms = 500

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
volatility = "0.0006"
tick_volume = "0.2"

[executor]
request_timeout = 2.0
retries = 3
backoff_ms = 50

[[grids]]
instance = "{INSTANCE}"
symbol = "BTC/USDT:USDT"
mode = "neutral"
levels = 4
spacing = "0.0005"
notional = "150"
trail_levels = 2
max_open_orders = 12
"""
COMPONENTS = ("sim", "executor", "grid")
CLIENT_NAMES = {"sim": "sqt-sim-sim", "executor": "sqt-executor-sim-main", "grid": f"sqt-grid-{INSTANCE}"}
PATTERNS = ("one", "two at once", "while recovering")


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


@dataclass
class Outcome:
    state: GridState
    replayed: GridState  # the grid's whole input folded from seq 1 with a fresh core
    kills: dict[str, int] = field(default_factory=dict)
    patterns: dict[str, int] = field(default_factory=dict)
    shown: dict[str, int] = field(default_factory=dict)  # kill points that did what their pattern says
    hits: int = 0  # processes the cluster really killed
    mid_tick: int = 0  # kills that landed while the exchange's tick was in flight
    missed: int = 0  # kills that found their process already dead (must stay 0)
    orders_by_cid: dict[str, set[str]] = field(default_factory=dict)
    venue_position: Decimal = Decimal(0)
    venue_fills: int = 0
    venue_open: set[str] = field(default_factory=set)


class Cluster:
    """One nats-server and components as real processes (`sqt run ...`), with one config file."""

    def __init__(self, workdir: Path, config: str, instance: str = INSTANCE) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedServer(store_dir=workdir / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=workdir / "nats.log")
        self.config = workdir / "sqt.toml"
        self.config.write_text(config)
        self.instance = instance
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.hits = 0  # SIGKILLs that found their process alive, counted where they are sent

    def start(self, name: str) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-m", "cli.main", "--config", str(self.config), "run", name]
        if name in ("grid", "arbitrage"):
            args += ["--instance", self.instance]
        env = {**os.environ, "NATS_URL": self.server.url}
        log = open(self.workdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self.procs[name]

    def kill(self, name: str) -> bool:
        """SIGKILL a component; True if it was alive (a kill that hit something)."""
        proc = self.procs[name]
        alive = proc.poll() is None
        if alive:
            os.kill(proc.pid, signal.SIGKILL)
            self.hits += 1
        proc.wait()
        return alive

    async def connections(self, name: str) -> set[int]:
        """The server's ids of the connections a component has open now."""
        url = f"http://{self.server.host}:{self.server.monitor_port}/connz?limit=1024"
        body = await asyncio.to_thread(_fetch, url)
        return {int(c["cid"]) for c in json.loads(body).get("connections", []) if c.get("name") == CLIENT_NAMES[name]}

    async def connected(self, name: str, besides: set[int], timeout: float = 30.0) -> None:
        """Wait until a restarted component has a new connection to NATS (not one of `besides`):
        from then on it is recovering (loading its checkpoint, folding its log)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if await self.connections(name) - besides:
                return
            await asyncio.sleep(0.01)
        raise TimeoutError(f"{name} did not connect within {timeout}s")

    def stop(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Cluster:
        self.server.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        for name in list(self.procs):  # every component started, not only the chaos run's three
            self.stop(name)
        self.server.stop()


async def _last_id(nc: Client, stream: str, subject: str) -> str | None:
    try:
        msg = await nc.jetstream().get_last_msg(stream, subject)
    except NotFoundError:
        return None
    return (msg.headers or {}).get("Nats-Msg-Id")


async def settled(nc: Client, grid: GridConfig) -> bool:
    """Every consumer caught up with nothing delivered and unacked, and the grid's input stream
    holds the last ticker and order event its origins hold (sourcing is asynchronous)."""
    js = nc.jetstream()
    spec = grid_spec(grid)
    try:
        for origin, subject in (
            ("MARKET", subjects.md(grid.venue, grid.symbol, "ticker")),
            ("ACCOUNT", subjects.acct(grid.venue, grid.account, grid.symbol, "order")),
        ):
            if await _last_id(nc, origin, subject) != await _last_id(nc, spec.stream, subject):
                return False
        for stream, consumer in ((spec.stream, spec.name), ("COMMAND", "executor-sim-main"), ("VENUE_SIM", "venue-sim")):
            info = await js.consumer_info(stream, consumer)
            if info.num_pending or info.num_ack_pending:
                return False
        return True
    except (NotFoundError, asyncio.TimeoutError, Exception):  # noqa: BLE001 - a component is restarting
        return False


async def wait_settled(nc: Client, grid: GridConfig, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    calm = 0
    while calm < 3:  # three calm looks in a row: a reply in flight makes one look calm
        if loop.time() > deadline:
            raise TimeoutError("the cluster did not settle")
        calm = calm + 1 if await settled(nc, grid) else 0
        await asyncio.sleep(0.03)


async def clock(venue: SimVenue) -> tuple[int, bool]:
    """(ticks matched so far, whether the last one still owes its market data)."""
    while True:
        try:
            t = await venue.time()
            return t.step, t.unquoted
        except Transient:
            await asyncio.sleep(0.1)


@dataclass
class Kills:
    counts: dict[str, int] = field(default_factory=lambda: {name: 0 for name in COMPONENTS})
    patterns: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PATTERNS})
    # What was seen at the moment of the kills, so a test can tell a pattern from its name:
    shown: dict[str, int] = field(default_factory=lambda: {p: 0 for p in PATTERNS})  # every kill of it hit, the 2nd as meant
    mid_tick: int = 0  # kills that landed while the exchange's tick was still in flight
    missed: int = 0


async def drive(
    cluster: Cluster,
    nc: Client,
    grid: GridConfig,
    steps: int,
    kill_at: set[int] | None = None,
    rng: random.Random | None = None,
    on_kill: Callable[[int, str], None] | None = None,
) -> Kills:
    """Tick the lock-step exchange `steps` times, settling after each half (fills, then market
    data). At the halves in `kill_at`, mid-cascade, SIGKILL one component, or two at once, or one
    and then another while the first is recovering (connected again, folding its log); every
    victim is restarted at once."""
    kill_at = kill_at or set()
    rng = rng or random.Random(0)
    kills = Kills()
    venue = SimVenue(nc, timeout=10)
    await clock(venue)
    await wait_settled(nc, grid)
    step, unquoted = await clock(venue)
    half = 0

    def kill(victim: str) -> bool:
        hit = cluster.kill(victim)
        kills.missed += not hit
        kills.counts[victim] += 1
        if on_kill is not None:
            on_kill(step, victim)
        cluster.start(victim)
        return hit

    while step < steps or unquoted:
        phase = "quote" if unquoted else "match"
        half += 1
        if half in kill_at:
            pattern = PATTERNS[len([h for h in kill_at if h < half]) % len(PATTERNS)]  # every pattern, in turn
            kills.patterns[pattern] += 1
            ticking = asyncio.create_task(venue.step(1, phase))
            await asyncio.sleep(rng.uniform(0, 0.03))  # somewhere inside the tick's cascade
            first, second = rng.sample(COMPONENTS, 2)
            before = await cluster.connections(first) if pattern == "while recovering" else set()
            kills.mid_tick += not ticking.done()
            shown = kill(first)
            if pattern == "two at once":
                shown = kill(second) and shown
            elif pattern == "while recovering":
                await cluster.connected(first, besides=before)
                recovering = bool(await cluster.connections(first) - before)
                shown = kill(rng.choice((first, second))) and recovering and shown
            kills.shown[pattern] += shown
            try:
                await ticking
            except Transient:
                pass  # the exchange itself died mid-tick: the tick was journaled or not
        else:
            await venue.step(1, phase)
        await wait_settled(nc, grid)
        step, unquoted = await clock(venue)
    return kills


async def run(
    workdir: Path,
    seed: int,
    steps: int,
    kills: int,
    on_kill: Callable[[int, str], None] | None = None,
) -> Outcome:
    rng = random.Random(seed * 7919 + kills)
    # Each tick has two halves (fills, then market data): a kill lands in one of them.
    halves = 2 * steps
    kill_at = set(rng.sample(range(4, halves), min(kills, halves - 4))) if kills else set()
    with Cluster(workdir, CONFIG.format(data=workdir / "data", seed=seed)) as cluster:
        from cli.config import load

        grid = load(cluster.config, environ={}).grid(INSTANCE)
        for name in COMPONENTS:
            cluster.start(name)
        nc = await connect(cluster.server.url, name="chaos-driver", attempts=10, role="admin")
        try:
            kills_done = await drive(cluster, nc, grid, steps, kill_at, rng, on_kill)
            cluster.stop("grid")  # a graceful stop writes the final checkpoint
            cp = await checkpoints.load(nc, f"grid-{INSTANCE}", GridState)
            assert cp is not None
            outcome = Outcome(
                state=cp.state,
                replayed=await replay_all(nc, grid, cp.state),
                kills=kills_done.counts,
                patterns=kills_done.patterns,
                shown=kills_done.shown,
                hits=cluster.hits,
                mid_tick=kills_done.mid_tick,
                missed=kills_done.missed,
            )
            await venue_facts(nc, SimVenue(nc, timeout=10), outcome)
            return outcome
        finally:
            await nc.close()


async def replay_all(nc: Client, grid: GridConfig, state: GridState) -> GridState:
    """DESIGN rule 4(a): a fresh fold of the grid's whole input from its first sequence."""
    core = GridCore(grid, state.market)
    spec = grid_spec(grid)
    final, _, _ = await fold_stream(core, core.initial_state(), read_stream(nc, spec.stream), spec.rules())
    return final


async def venue_facts(nc: Client, venue: SimVenue, outcome: Outcome) -> None:
    async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.main.*.order",)):
        for m in batch:
            ev = decode(m.data)
            if ev.order_id:
                outcome.orders_by_cid.setdefault(ev.client_order_id, set()).add(ev.order_id)
    async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.main.*.fill",)):
        outcome.venue_fills += len(batch)
    for p in await venue.fetch_positions():
        outcome.venue_position = p.contracts if p.side == "long" else -p.contracts
    outcome.venue_open = {o.client_order_id for o in await venue.fetch_open_orders()}
