"""The three-node JetStream cluster against the single server, and what a node's death costs.

    .venv/bin/python bench/cluster.py [--events 50000] [--rounds 3] [--kills 10] [--rate 20]

1. Throughput, single server and 3-node cluster (every stream with 3 replicas) side by side in
   one run: publishing with acks (bus/publisher.py) and the consumer runtime (bus/runtime.py),
   each the median of the rounds, and the cluster's figure as a ratio of the single server's.
2. The pause in order placement when the node that leads the COMMAND stream is SIGKILLed: the
   simulated exchange and the executor run as processes against the cluster; a driver sends a
   PlaceOrder every 1/rate seconds (resting orders far from the price); the monkey kills
   COMMAND's leader, restarts it two seconds later and waits until every replica is current,
   `--kills` times. The acknowledgements are the executor's order events in ACCOUNT, timed by
   the stream (its store time). For each kill: the longest gap between two successive acks
   around it, and the longest time from a command's send to its ack; p50 and p99 (nearest rank)
   over the kills, beside the same figures for a quiet stretch without a kill.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and `bus` would name this file,
# not the package; put the project root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal

import uvloop
from nats.aio.client import Client

from bench.bus import project_consume, project_publish, tickers
from bus import streams
from bus.auth import CREDENTIALS_ENV
from bus.cluster import placements, wait_all_current, wait_meta_leader
from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.process import tune_gc
from bus.publisher import Publisher
from bus.reader import read_stream
from cli.config import load
from schemas import ids
from schemas.codec import decode
from schemas.commands import PlaceOrder
from testkit.cluster import local_cluster
from testkit.processes import Components
from venues.errors import Transient
from venues.sim.client import SimVenue

CONFIG = """
data_dir = "{data}"
log_level = "INFO"

[nats]
url = "{url}"
credentials = "{credentials}"

[sim]
clock = "realtime"
tick_ms = 500
history_minutes = 5

[sim.accounts.main]
USDT = "100000000"

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
volatility = "0.0001"

[executor]
rate_limit = 200
burst = 200
request_timeout = 2.0
"""
SYMBOL = "BTC/USDT:USDT"


# ----------------------------------------------------------------------------- 1. throughput


async def throughput(nc: Client, n: int, rounds: int) -> tuple[float, float]:
    """(publish with acks /s, consumer runtime /s), medians of the rounds."""
    await streams.apply(nc.jetstream())
    pub = await Publisher(nc).start()
    published, consumed = [], []
    for r in range(rounds):
        events = tickers(n, start=r * n)
        published.append(await project_publish(pub, events))
        del events
        rate, _ = await project_consume(nc, pub, n, f"bench{r}", r * n + 1)
        consumed.append(rate)
    await pub.close()
    return statistics.median(published), statistics.median(consumed)


async def single_server(n: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(store_dir=Path(tmp) / "nats", port=ANY_PORT, monitor_port=ANY_PORT)
        server.start()
        try:
            nc = await connect(server.url, attempts=3)
            try:
                return await throughput(nc, n, rounds)
            finally:
                await nc.close()
        finally:
            server.stop()


async def on_cluster(n: int, rounds: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, local_cluster(Path(tmp)) as cluster:
        assert cluster.credentials is not None
        os.environ[CREDENTIALS_ENV] = str(cluster.credentials)
        nc = await connect(cluster.url, attempts=3, role="admin")
        try:
            return await throughput(nc, n, rounds)
        finally:
            await nc.close()


# ----------------------------------------------------------------------------- 2. pauses


@dataclass
class KillWindow:
    node: str
    led: tuple[str, ...]
    killed: float  # wall clock
    recovered: float  # every replica current again
    flowing: float  # orders acknowledged as they are sent again


def place(i: int, now_ms: int) -> PlaceOrder:
    cid = f"bench{i}"
    return PlaceOrder(
        id=ids.place_id("sim", "main", cid),
        venue="sim",
        account="main",
        symbol=SYMBOL,
        client_order_id=cid,
        side="buy",
        price=Decimal("30000"),
        amount=Decimal("0.001"),
        origin="bench/cluster",
        ts=now_ms,  # the default time-to-live, as a grid's: an outcome left unknown waits for it
    )


async def send_orders(pub: Publisher, rate: float, stop: asyncio.Event, sent: dict[str, float]) -> list[asyncio.Future]:
    futures = []
    i = 0
    next_at = time.monotonic()
    while not stop.is_set():
        i += 1
        order = place(i, int(time.time() * 1000))
        sent[order.client_order_id] = time.time()
        futures.append(await pub.send_message(order))  # not awaited here: the pace goes on through elections
        next_at += 1 / rate
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return futures


async def flowing(nc: Client, sent: dict[str, float], rate: float, timeout: float = 180.0) -> float:
    """Wait until orders are acknowledged as they are sent (the newest order event in ACCOUNT
    is for an order sent less than a second ago); the wall clock then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            last = await nc.jetstream().get_last_msg("ACCOUNT", "acct.sim.main.BTC-USDT-USDT.order")
            newest = int(decode(last.data or b"").client_order_id.removeprefix("bench"))
            if newest >= len(sent) - rate:
                return time.time()
        except Exception:  # noqa: BLE001 - JetStream electing, or nothing acked yet
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError(f"orders not flowing again within {timeout}s")


async def acks(nc: Client) -> dict[str, float]:
    """client order id -> store time (wall clock s) of its first order event in ACCOUNT."""
    out: dict[str, float] = {}
    async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.main.*.order",)):
        for m in batch:
            cid = decode(m.data).client_order_id
            if cid.startswith("bench") and cid not in out:
                out[cid] = m.ts_ns / 1e9
    return out


def pause_around(ack_times: list[float], start: float, end: float) -> float:
    """The longest gap between two successive acks that reaches into [start, end]."""
    gaps = [b - a for a, b in zip(ack_times, ack_times[1:]) if b >= start and a <= end]
    return max(gaps, default=0.0)


def latency_within(sent: dict[str, float], acked: dict[str, float], start: float, end: float) -> float:
    lat = [acked[c] - t for c, t in sent.items() if start <= t <= end and c in acked]
    return max(lat, default=0.0)


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def pauses(
    kills: int, rate: float, workdir: Path
) -> tuple[list[KillWindow], dict[str, float], dict[str, float], tuple[float, float]]:
    with local_cluster(workdir) as cluster:
        assert cluster.credentials is not None
        os.environ[CREDENTIALS_ENV] = str(cluster.credentials)
        procs = Components(workdir)
        procs.config.write_text(CONFIG.format(data=workdir / "data", url=cluster.url, credentials=cluster.credentials))
        config = load(procs.config, environ={})
        nc = await connect(cluster.url, name="bench-cluster", attempts=5, role="admin")
        try:
            await streams.apply(nc.jetstream(), config.declared_streams())
            procs.start("sim", "executor")
            venue = SimVenue(nc, timeout=5)
            while True:
                try:
                    await venue.fetch_open_orders()
                    break
                except Transient:
                    await asyncio.sleep(0.2)
            pub = await Publisher(nc).start()
            stop = asyncio.Event()
            sent: dict[str, float] = {}
            sending = asyncio.create_task(send_orders(pub, rate, stop, sent))
            await asyncio.sleep(3.0)  # warm up
            quiet_from = time.time()
            await asyncio.sleep(8.0)  # a quiet stretch: the baseline
            quiet = (quiet_from, time.time())
            windows = []
            for _ in range(kills):
                await flowing(nc, sent, rate)
                await wait_all_current(nc, 120)
                await asyncio.sleep(2.0)
                leaders = {p.name: p.leader for p in await placements(nc)}
                victim = leaders["COMMAND"]
                killed = time.time()
                cluster.kill(victim)
                await asyncio.sleep(2.0)
                await asyncio.to_thread(cluster.restart, victim)
                await asyncio.to_thread(wait_meta_leader, cluster.live_nodes(), 120)
                await wait_all_current(nc, 120)
                recovered = time.time()
                again = await flowing(nc, sent, rate)
                windows.append(KillWindow(victim, tuple(sorted(s for s, l in leaders.items() if l == victim)), killed, recovered, again))
                print(
                    f"  kill {len(windows)}: {victim}; replicas current after {recovered - killed:.1f}s, orders flowing after {again - killed:.1f}s",
                    flush=True,
                )
            await asyncio.sleep(3.0)
            stop.set()
            futures = await sending
            await asyncio.gather(*futures)  # every command stored (raises if one is not)
            acked: dict[str, float] = {}
            deadline = time.monotonic() + 120
            while len(acked) < len(sent) and time.monotonic() < deadline:
                acked = await acks(nc)
                await asyncio.sleep(1.0)
            missing = set(sent) - set(acked)
            if missing:
                print(f"  {len(missing)} of {len(sent)} commands never acknowledged, e.g. {sorted(missing)[:3]}")
            await pub.close()
            return windows, sent, acked, quiet
        finally:
            procs.stop()
            await nc.close()


async def main(n: int, rounds: int, kills: int, rate: float, keep: Path | None = None, throughput_too: bool = True) -> None:
    tune_gc()
    print(
        f"bench/cluster.py  events={n:,} x {rounds} rounds (medians), kills={kills}, orders {rate:g}/s  "
        f"python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  {nats_version()}"
    )
    if throughput_too:
        single_pub, single_consume = await single_server(n, rounds)
        cluster_pub, cluster_consume = await on_cluster(n, rounds)
        rows = [
            ("publish with acks", single_pub, cluster_pub),
            ("consumer runtime (acks, outputs, checkpoints)", single_consume, cluster_consume),
        ]
        width = max(len(r[0]) for r in rows)
        print(f"  {'':<{width}}  {'single server':>14}  {'3 nodes, R3':>12}  ratio")
        for name, single, three in rows:
            print(f"  {name:<{width}}  {single:>12,.0f}/s  {three:>10,.0f}/s  {three / single:5.2f}x")

    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        windows, sent, acked, quiet = await pauses(kills, rate, keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            windows, sent, acked, quiet = await pauses(kills, rate, Path(tmp))
    times = sorted(acked.values())
    gaps = [pause_around(times, w.killed, w.flowing) for w in windows]
    lats = [latency_within(sent, acked, w.killed - 0.5, w.flowing) for w in windows]
    recov = [w.recovered - w.killed for w in windows]
    for i, (w, g, lat) in enumerate(zip(windows, gaps, lats), 1):
        print(f"    kill {i:2}: {w.node}, leader of {', '.join(w.led)}: longest gap {g:.2f}s, longest command -> ack {lat:.2f}s")
    base_gap, base_lat = pause_around(times, *quiet), latency_within(sent, acked, *quiet)
    print(
        f"  order placement through the executor, {len(windows)} SIGKILLs of COMMAND's leader ({len(acked):,} of {len(sent):,} orders acked):"
    )
    for label, values, base in (
        ("longest gap between two acks", gaps, base_gap),
        ("longest command -> ack", lats, base_lat),
        ("kill -> all replicas current", recov, None),
        ("kill -> orders flowing again", [w.flowing - w.killed for w in windows], None),
    ):
        quiet_txt = f"  (quiet stretch: {base:.2f}s)" if base is not None else ""
        print(
            f"    {label:<30} p50 {statistics.median(values):6.2f}s  p99 {nearest_rank(values, 0.99):6.2f}s  max {max(values):6.2f}s{quiet_txt}"
        )


def nats_version() -> str:
    from bus.embedded import server_binary

    return subprocess.run([server_binary(), "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second the driver sends")
    parser.add_argument("--keep", type=Path, help="run the kills in this directory and keep it (logs, stores)")
    parser.add_argument("--no-throughput", action="store_true", help="the kills only")
    args = parser.parse_args()
    uvloop.run(main(args.events, args.rounds, args.kills, args.rate, args.keep, not args.no_throughput))
