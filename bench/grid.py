"""The grid's figures: decision latency, end-to-end latency, replay speed, restart time.

    .venv/bin/python bench/grid.py [--samples 500] [--replay 1000000] [--restart 1000000]

Real processes (`sqt run sim|executor|grid`, the exchange on a lock-step clock so only our
ticks move anything) on one nats-server. Latencies use the server's own store timestamps:
- tick -> command: a ticker stored in MARKET to the place command it causes stored in COMMAND
  (the grid reads its ticks from its sourced input stream, so sourcing is included);
- tick -> resting: the same ticker to the exchange's "open" event for that order in ACCOUNT
  (grid, executor, the exchange's journal and engine, and their publishes).
Replay: 1,000,000 recorded ticks (a random walk at about BTC's volatility at ten ticks a
second, crossing levels now and then) folded through the grid core by the same code
`sqt replay grid` uses, next to nats-py's ordered consumer reading them.
Restart: the grid with 1,000,000 events in its input stream is killed with SIGKILL and
started again: process start to caught up (checkpoint loaded, tail replayed, live).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import gc
import math
import os
import platform
import random
import statistics
import tempfile
import time
from decimal import Decimal
from typing import Any

import msgspec
import nats
import uvloop
from nats.js.api import StreamConfig

from bench.ceilings import ordered_read
from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.process import tune_gc
from bus.publisher import Publisher
from bus.reader import read_stream
from schemas import ids, subjects
from schemas.codec import decode
from schemas.commands import PlaceOrder
from schemas.market import Ticker
from schemas.ops import VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.replay import replay
from testkit.chaos import Cluster
from venues.errors import Transient
from venues.sim.client import SimVenue

SYMBOL = "BTC/USDT:USDT"
INSTANCE = "bench"
CONFIG = f"""
data_dir = "{{data}}"
log_level = "INFO"

[streams.MARKET]
duplicate_window = "10s"   # a million ids in the dedupe window would only measure memory

[sim]
clock = "lockstep"
start_time_ms = 1700000000000
history_minutes = 10

[executor]
rate_limit = 10000         # measure the pipeline, not the rate limiter (20/s by default)
burst = 10000

[[grids]]
instance = "{INSTANCE}"
symbol = "{SYMBOL}"
mode = "long"
levels = 1
spacing = "5"
spacing_type = "arithmetic"
notional = "200"
trail_levels = 0
max_open_orders = 4
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def tick(last: Decimal, bid: Decimal, ask: Decimal, ts: int) -> Ticker:
    return Ticker(id=ids.ticker_id("sim", SYMBOL, ts), venue="sim", symbol=SYMBOL, last=last, bid=bid, ask=ask, ts=ts, ts_local=ts)


async def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("bench: condition not reached")
        await asyncio.sleep(0.002)


async def consumer_caught_up(nc: nats.NATS, stream: str, durable: str) -> bool:
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        last = (await nc.jetstream().stream_info(stream)).state.last_seq
    except Exception:  # noqa: BLE001 - not created yet
        return False
    return info.num_pending == 0 and info.num_ack_pending == 0 and (info.ack_floor.stream_seq or 0) >= last


# ----------------------------------------------------------------------------- latency


async def latencies(nc: nats.NATS, samples: int) -> tuple[list[float], list[float]]:
    """Alternate the ask across the buy level: each tick makes the grid place or cancel once."""
    venue = SimVenue(nc, timeout=10)
    while True:
        try:
            price = (await venue.fetch_ohlcv(SYMBOL, limit=1))[-1].close
            break
        except Transient:
            await asyncio.sleep(0.2)
    pub = await Publisher(nc).start()

    async def grid_ready() -> bool:  # its input stream exists and holds its first-start snapshot
        try:
            await nc.jetstream().get_last_msg(f"IN_GRID_{INSTANCE.upper()}", subjects.ops("grid", INSTANCE, "snapshot"))
        except Exception:  # noqa: BLE001 - not yet
            return False
        return await consumer_caught_up(nc, f"IN_GRID_{INSTANCE.upper()}", f"grid-{INSTANCE}")

    await until(grid_ready, timeout=60)
    level = price - 5  # the buy level below the anchor (the first tick's price)
    eligible = lambda ts: tick(price, price - Decimal("0.1"), price + Decimal("0.1"), ts)  # noqa: E731
    blocked = lambda ts: tick(price, level - Decimal("0.2"), level, ts)  # noqa: E731 - the buy would take the ask
    ts = 1_700_001_000_000
    placed: dict[int, int] = {}  # tick ts -> ticker stored ns
    account = subjects.acct("sim", "main", SYMBOL, "order")
    seen: dict[str, int] = {}

    async def on_order(msg: Any) -> None:
        ev = decode(msg.data)
        seen[f"{ev.client_order_id}:{ev.status}"] = 1

    await nc.subscribe(account, cb=on_order)
    await pub.publish(eligible(ts))  # the anchor
    for i in range(samples * 2 + 1):
        ts += 10
        want = "canceled" if i % 2 == 0 else "open"
        count_before = sum(1 for k in seen if k.endswith(want))  # before the publish: the answer may beat its ack
        ack = await pub.publish(blocked(ts) if i % 2 == 0 else eligible(ts))
        if i % 2 == 1:
            placed[ts] = ack.seq

        async def arrived(want: str = want, before: int = count_before) -> bool:
            return sum(1 for k in seen if k.endswith(want)) > before

        await until(arrived, timeout=10)
        await asyncio.sleep(0.005)
    # Join by the server's store times.
    tick_ns: dict[int, int] = {}
    first = min(placed.values())
    async for batch in read_stream(nc, "MARKET", start_seq=first, subjects=(subjects.md("sim", SYMBOL, "ticker"),)):
        for m in batch:
            ev = decode(m.data)
            if ev.ts in placed:
                tick_ns[ev.ts] = m.ts_ns
    command_ns: dict[int, tuple[str, int]] = {}
    async for batch in read_stream(nc, "COMMAND"):
        for m in batch:
            cmd = decode(m.data)
            if isinstance(cmd, PlaceOrder) and cmd.ts in tick_ns:
                command_ns[cmd.ts] = (cmd.client_order_id, m.ts_ns)
    resting_ns: dict[str, int] = {}
    async for batch in read_stream(nc, "ACCOUNT", subjects=(account,)):
        for m in batch:
            ev = decode(m.data)
            if ev.status == "open" and ev.client_order_id not in resting_ns:
                resting_ns[ev.client_order_id] = m.ts_ns
    to_command = [(command_ns[t][1] - tick_ns[t]) / 1e6 for t in tick_ns if t in command_ns]
    to_resting = [(resting_ns[command_ns[t][0]] - tick_ns[t]) / 1e6 for t in tick_ns if t in command_ns and command_ns[t][0] in resting_ns]
    return to_command, to_resting


# ----------------------------------------------------------------------------- replay


async def publish_walk(nc: nats.NATS, subject: str, n: int, start: Decimal, quiet: bool) -> None:
    pub = await Publisher(nc, max_in_flight=30_000).start()
    rnd = random.Random(5)
    price = float(start)
    ts = 1_700_100_000_000
    for chunk in range(0, n, 20_000):
        futs = []
        for _ in range(min(20_000, n - chunk)):
            ts += 1
            if not quiet:  # about BTC's volatility at ten ticks a second (3% a day)
                price *= 1 + rnd.gauss(0, 0.00003)
            p = Decimal(f"{price:.1f}")
            t = tick(p, p - Decimal("0.1"), p + Decimal("0.1"), ts)
            futs.append(await pub.send(subject, msgspec.json.encode(t), t.id))
        await asyncio.gather(*futs)
    await pub.close()


async def replay_rate(workdir: Path, n: int, price: Decimal) -> tuple[float, float, int]:
    # A server of its own: the ticks are stored under the grid's real ticker subject (a replay
    # checks that the subject is the one the body names), which the cluster's MARKET owns.
    server = EmbeddedServer(store_dir=workdir / "replay-nats", port=ANY_PORT, monitor_port=ANY_PORT)
    server.start()
    try:
        nc = await connect(server.url, attempts=10)
        try:
            return await _replay_rate(nc, n, price)
        finally:
            await nc.close()
    finally:
        server.stop()


async def _replay_rate(nc: nats.NATS, n: int, price: Decimal) -> tuple[float, float, int]:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCH_REPLAY", subjects=["md.>"], duplicate_window=5))
    await publish_walk(nc, subjects.md("sim", SYMBOL, "ticker"), n, price, quiet=False)
    gc.collect()
    from testkit.grid import MARKET

    config = GridConfig(
        instance="replay", symbol=SYMBOL, mode="neutral", levels=5, spacing=Decimal("0.0005"), notional=Decimal(200), max_open_orders=20
    )
    core = GridCore(config, MARKET)
    state = core.initial_state()
    state, _ = core.step(
        state, _inbound(VenueSnapshot(id="s", component="grid", instance="replay", venue="sim", account="main", symbol=SYMBOL, ts=0))
    )
    started = time.perf_counter()
    result = await replay(core, state, read_stream(nc, "BENCH_REPLAY"))
    ours = result.inputs / (time.perf_counter() - started)
    # The ceiling: nats-py's ordered consumer reading and decoding the same messages.
    ceiling = await ordered_read(nc, n, subjects.md("sim", SYMBOL, "ticker"), stream="BENCH_REPLAY")
    await js.delete_stream("BENCH_REPLAY")
    return ours, ceiling, len(result.decisions)


def _inbound(event: Any) -> Any:
    from bus.runtime import Inbound

    return Inbound(0, "bench", event)


# ----------------------------------------------------------------------------- restart


async def restart_time(nc: nats.NATS, cluster: Cluster, n: int, price: Decimal) -> tuple[float, int, list[str]]:
    cluster.stop("executor")  # nothing should trade while we pile up a million quiet ticks
    await publish_walk(nc, subjects.md("sim", SYMBOL, "ticker"), n, price, quiet=True)
    stream, durable = f"IN_GRID_{INSTANCE.upper()}", f"grid-{INSTANCE}"
    await until(lambda: consumer_caught_up(nc, stream, durable), timeout=600)
    held = (await nc.jetstream().stream_info(stream)).state.messages
    before = (await nc.jetstream().consumer_info(stream, durable)).created
    cluster.kill("grid")
    started = time.perf_counter()
    cluster.start("grid")

    async def recovered() -> bool:  # the new process recreates the consumer, then catches up
        try:
            if (await nc.jetstream().consumer_info(stream, durable)).created == before:
                return False
        except Exception:  # noqa: BLE001 - between delete and create
            return False
        return await consumer_caught_up(nc, stream, durable)

    await until(recovered, timeout=120)
    took = time.perf_counter() - started
    log = (cluster.workdir / "grid.log").read_text().splitlines()
    recovery = [line.split(": ", 1)[-1] for line in log if "checkpoint at" in line or "replayed" in line][-2:]
    return took, held, recovery


async def main(samples: int, replay_n: int, restart_n: int) -> None:
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), CONFIG.format(data=Path(tmp) / "data"), instance=INSTANCE)
        with cluster:
            for name in ("sim", "executor", "grid"):
                cluster.start(name)
            nc = await connect(cluster.server.url, attempts=10)
            to_command, to_resting = await latencies(nc, samples)
            price = (await SimVenue(nc).fetch_ohlcv(SYMBOL, limit=1))[-1].close
            ours, ceiling, decisions = await replay_rate(Path(tmp), replay_n, price)
            restart, held, recovery = await restart_time(nc, cluster, restart_n, price)
            await nc.close()
    print(f"bench/grid.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}")
    print(
        f"  tick -> place command stored     p50 {statistics.median(to_command):.2f} ms  p99 {pct(to_command, 0.99):.2f} ms  ({len(to_command)} samples)"
    )
    print(
        f"  tick -> order resting at venue   p50 {statistics.median(to_resting):.2f} ms  p99 {pct(to_resting, 0.99):.2f} ms  ({len(to_resting)} samples)"
    )
    print(
        f"  replay {replay_n:,} ticks through the grid core   {ours:,.0f} events/s  ({ours / ceiling:.2f}x nats-py ordered consumer+decode {ceiling:,.0f}/s; {decisions} decisions)"
    )
    print(f"  restart after SIGKILL, {held:,} events in the input stream: {restart:.2f} s (process start to caught up)")
    for line in recovery:
        print(f"    grid log: {line}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--replay", type=int, default=1_000_000)
    p.add_argument("--restart", type=int, default=1_000_000)
    a = p.parse_args()
    uvloop.run(main(a.samples, a.replay, a.restart))
