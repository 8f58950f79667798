"""A three-node JetStream cluster on loopback for tests and benchmarks (bus/cluster.py).

Client and monitoring ports are the servers' own picks (ANY_PORT, read back from their ports
files); the route ports are chosen free beforehand, since each node's routes name the others'.
Users are on: a credentials file in the work directory, its path in SQT_NATS_CREDENTIALS for
the processes the test starts (each connects as its role).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client

from bus.auth import init_credentials
from bus.cluster import LocalCluster, Node, StreamPlacement, placements, stream_states, wait_all_current, wait_meta_leader
from bus.embedded import ANY_PORT, free_port
from bus.reader import read_stream
from schemas import subjects
from venues.errors import Transient
from venues.sim.client import SimVenue
from venues.sim.journal import Place


def nodes(count: int = 3) -> tuple[Node, ...]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return tuple(Node(f"n{i + 1}", ANY_PORT, port, ANY_PORT) for i, port in enumerate(sorted(ports)))


def credentials(workdir: Path) -> Path:
    path = workdir / "nats-auth.env"
    init_credentials(path)
    return path


@contextlib.contextmanager
def local_cluster(workdir: Path, *, auth: bool = True, count: int = 3) -> Iterator[LocalCluster]:
    """Started, with a meta leader; stopped on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(nodes(count), workdir / "nats", credentials(workdir) if auth else None, log_dir=workdir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# ----------------------------------------------------------------------------- chaos: nodes killed under a trading system
# tests/test_cluster_chaos.py: the simulated exchange (lock-step clock, ticked by the driver at a
# steady pace), the executor, a grid, the risk monitor and the archive as real processes
# against the three nodes, while a monkey SIGKILLs one node at a time and restarts it.

CHAOS_INSTANCE = "cluster-chaos"
CHAOS_CONFIG = """
data_dir = "{data}"
log_level = "INFO"

[nats]
url = "{url}"
credentials = "{credentials}"

[sim]
clock = "lockstep"
seed = {seed}
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

[risk]
instance = "chaos"
clock_ms = 250
heartbeat_ms = 1000
[[risk.watch]]
venue = "sim"
account = "main"
symbols = ["BTC/USDT:USDT"]
[risk.feed_stale]
enabled = false            # the driver's pace, not the market, decides how often prices come
[risk.latency]
enabled = false            # answers wait out elections on purpose here
[risk.rejects]
enabled = false

[archive]
batch_size = 200
flush_seconds = 0.3
metrics_port = 0

[[grids]]
instance = "{instance}"
symbol = "BTC/USDT:USDT"
mode = "neutral"
levels = 4
spacing = "0.0005"
notional = "150"
trail_levels = 2
max_open_orders = 12
"""
CHAOS_COMPONENTS = ("sim", "executor", "risk", "grid", "archive")


@dataclass
class Kill:
    node: str
    led: tuple[str, ...]  # the streams it led when it died
    at: float  # seconds into the chaos
    wiped: bool = False  # came back with an empty store (its disk lost), under the same name


@dataclass
class Monkey:
    """SIGKILLs one node at a time: it waits until JetStream has a meta leader and every stream's
    replicas are current, lets the system run a moment, kills a random node, and restarts it a
    moment later (never two down at once). Every `wipe_every`-th victim loses its store as well
    (a disk replaced): once the other two are current with each other, it starts empty under the
    same name and must get every stream back from them (what one replica per stream could not)."""

    cluster: LocalCluster
    nc: Client
    rng: random.Random
    run_for: float = 2.0  # seconds (at most) between recovery and the next kill
    down_for: float = 3.0  # seconds (at most) a node stays dead
    wipe_every: int = 3  # 0: never
    kills: list[Kill] = field(default_factory=list)
    recoveries: list[float] = field(default_factory=list)  # seconds from each kill to all replicas current

    async def run(self, stop: asyncio.Event) -> None:
        began = time.monotonic()
        while not stop.is_set():
            await self.recovered()
            if await _sleep_or_stop(stop, self.rng.uniform(0.5, self.run_for)):
                return
            victim = self.rng.choice(self.cluster.names)
            by_leader = {p.name: p.leader for p in await _placements_or_empty(self.nc)}
            led = tuple(sorted(name for name, leader in by_leader.items() if leader == victim))
            wipe = bool(self.wipe_every) and len(self.kills) % self.wipe_every == self.wipe_every - 1
            killed_at = time.monotonic()
            self.cluster.kill(victim)
            self.kills.append(Kill(victim, led, killed_at - began, wipe))
            await asyncio.sleep(self.rng.uniform(0.5, self.down_for))
            if wipe:
                await survivors_current(self.nc, victim)
                shutil.rmtree(self.cluster.servers[victim].store_dir / "jetstream", ignore_errors=True)
            await asyncio.to_thread(self.cluster.restart, victim)
            await self.recovered()
            self.recoveries.append(time.monotonic() - killed_at)

    async def recovered(self, timeout: float = 120.0) -> None:
        await asyncio.to_thread(wait_meta_leader, self.cluster.live_nodes(), timeout)
        await wait_all_current(self.nc, timeout)


async def survivors_current(nc: Client, down: str, timeout: float = 120.0) -> None:
    """Wait until every stream has a leader and every replica but `down`'s is current."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await _placements_or_empty(nc)
        if found and all(p.leader and p.leader != down and all(r.current for r in p.replicas if r.name != down) for p in found):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the nodes besides {down} did not agree within {timeout}s")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


async def _placements_or_empty(nc: Client) -> list[StreamPlacement]:
    try:
        return await placements(nc)
    except Exception:  # noqa: BLE001 - JetStream busy electing: the kill goes ahead regardless
        return []


async def tick(venue: SimVenue, stop: asyncio.Event, pace: float) -> int:
    """Advance the lock-step exchange one tick every `pace` seconds until `stop`; the ticks done.
    A tick that times out (its journal append waiting out an election) is asked for again: a
    tick is a tick, whichever one it is."""
    done = 0
    while not stop.is_set():
        try:
            await venue.step(1)
            done += 1
        except Transient:
            await asyncio.sleep(0.2)
        await _sleep_or_stop(stop, pace)
    return done


async def consumers_caught_up(nc: Client, timeout: float = 120.0) -> dict[str, int]:
    """Wait until every durable consumer of every stream has been seen with nothing pending and
    nothing unacknowledged (each at some look: a monitor's clock keeps its own input moving);
    {stream/consumer: ack floor}."""
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: dict[str, int] = {}
    behind: dict[str, int] = {}
    while True:
        try:
            for info in await js.streams_info():
                name = info.config.name or ""
                for ci in await js.consumers_info(name):
                    if not ci.config.durable_name:
                        continue
                    key = f"{name}/{ci.name}"
                    if ci.num_pending == 0 and ci.num_ack_pending == 0:
                        seen[key] = int(ci.ack_floor.stream_seq if ci.ack_floor else 0)
                        behind.pop(key, None)
                    elif key not in seen:
                        behind[key] = int(ci.num_pending or 0) + int(ci.num_ack_pending or 0)
            if seen and not behind:
                return seen
        except Exception:  # noqa: BLE001 - an answer lost to a node restart: look again
            pass
        if loop.time() > deadline:
            raise TimeoutError(f"consumers still behind after {timeout}s: {behind}")
        await asyncio.sleep(0.2)


def replica_states(cluster: LocalCluster) -> dict[str, list[dict[str, Any]]]:
    """{stream: [its state on each node]} from each node's own store (`/jsz`)."""
    views = [stream_states(node) for node in cluster.live_nodes()]
    names = set().union(*(v.keys() for v in views))
    return {name: [v.get(name, {}) for v in views] for name in sorted(names)}


def disagreements(cluster: LocalCluster) -> dict[str, list[tuple[int, int, int]]]:
    """The streams whose replicas differ (messages, first seq, last seq) from node to node."""
    out = {}
    for name, states in replica_states(cluster).items():
        views = [(int(s.get("messages", -1)), int(s.get("first_seq", -1)), int(s.get("last_seq", -1))) for s in states]
        if len(states) != len(cluster.nodes) or len(set(views)) != 1:
            out[name] = views
    return out


async def journal_places(nc: Client, venue: str = "sim") -> list[str]:
    """The client order id of every order the simulated exchange journaled (in its VENUE_ stream)."""
    cids: list[str] = []
    async for batch in read_stream(nc, f"VENUE_{venue.upper()}", subjects=(subjects.journal(venue, "place"),)):
        cids += [msgspec.json.decode(m.data, type=Place).order.client_order_id for m in batch]
    return cids
