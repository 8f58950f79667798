"""Many grids on one small machine: 100 instances on 100 simulated markets at 2 ticks/s each.

    .venv/bin/python bench/scale.py [--instances 100] [--seconds 60] [--shards 2] [--no-per-process]

Three runs, one after the other, each on a fresh nats-server with the simulated exchange (100
template markets, `tick_ms = 500`, printing in `--phases` groups spread over each tick, as real
venues' tickers are not in step) and one order executor, as real processes (`sqt run ...`):
1. hosted: the instances in `--shards` processes (`sqt run grids --shard N/M`), as the registry
   seeds them from the config;
2. the same with every market ticking at the same instant (`tick_phases = 1`): the worst burst;
3. one process per instance (`sqt run grid --instance ID`), as `sqt up` runs them by default.
For each, once every instance has published a running state: tick -> place command stored
(the event that caused a place command, a ticker in MARKET or an order update in ACCOUNT, from
its store time there to the command's in COMMAND: the cause is the input the grid was processing,
the last one stored in its input stream before the command; sourcing into that stream included
and also given apart), p50/p99
over all instances; the memory (resident set) and CPU (cores busy over the window) of the whole
stack (nats-server, exchange, executor, grid processes); and the grid state events' bytes per
instance per day (ADR 0024), from what the OPS stream stored over the window.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import bisect
import datetime as dt
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass

import uvloop

from bench.state_size import StateBytes
from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.reader import read_stream
from schemas import subjects
from schemas.account import OrderUpdate
from schemas.codec import decode
from schemas.commands import PlaceOrder
from schemas.market import Ticker

ROOT = Path(__file__).resolve().parent.parent
TICK_MS = 500  # 2 ticks/s per market

CONFIG = """
data_dir = "{data}"
log_level = "WARNING"
[hosting]
grid_shards = {shards}
[executor]
rate_limit = 10000
burst = 10000
[sim]
tick_ms = {tick_ms}
tick_phases = {phases}
history_minutes = 5
markets = []
[sim.market_template]
count = {n}
symbol = "S{{n:03d}}/USDT:USDT"
kind = "swap"
tick_size = "0.01"
lot_size = "0.001"
min_amount = "0.001"
min_notional = "5"
start_price = "100"
start_price_spread = "0.5"
volatility = "0.0005"
"""
GRID = """
[[grids]]
instance = "g{i:03d}"
symbol = "S{i:03d}/USDT:USDT"
levels = 3
spacing = "0.002"
notional = "20"
max_open_orders = 10
"""


@dataclass
class Figures:
    to_command: list[float]
    sourced: list[float]  # the same ticks' first input stored in the grid's input stream
    rss_mb: float
    cores: float
    processes: int
    state_per_day_mb: float
    full_share: float
    started_s: float


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except OSError:
        return 0


async def run(workdir: Path, n: int, seconds: float, shards: int, phases: int) -> Figures:
    """One stack: `shards` > 0 hosts the grids in that many processes, 0 one process per grid."""
    workdir.mkdir(parents=True)
    server = EmbeddedServer(store_dir=workdir / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=workdir / "nats.log")
    server.start()
    config = workdir / "sqt.toml"
    config.write_text(
        CONFIG.format(data=workdir / "data", shards=max(shards, 0), tick_ms=TICK_MS, phases=phases, n=n)
        + "".join(GRID.format(i=i) for i in range(n))
    )
    env = {**os.environ, "NATS_URL": server.url}
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> None:
        argv = [sys.executable, "-m", "cli.main", "--config", str(config), "run", *args]
        log = open(workdir / f"{'-'.join(args).replace('/', '-')}.log", "ab")
        procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        start("sim")
        start("executor")
        began = time.monotonic()
        if shards:
            for k in range(shards):
                start("grids", "--shard", f"{k}/{shards}")
        else:
            for i in range(n):
                start("grid", "--instance", f"g{i:03d}")
        nc = await connect(server.url, attempts=20)
        js = nc.jetstream()

        async def running() -> int:
            count = 0
            for i in range(n):
                try:
                    msg = await js.get_last_msg("OPS", subjects.ops("grid", f"g{i:03d}", "state"))
                except Exception:  # noqa: BLE001 - none yet
                    continue
                if decode(msg.data or b"").status == "running":
                    count += 1
            return count

        deadline = time.monotonic() + 600
        while await running() < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {await running()} of {n} grids running after 600 s")
            await asyncio.sleep(2)
        started_s = time.monotonic() - began
        await asyncio.sleep(10)  # past the start-up's bursts

        pids = [server.process.pid] + [p.pid for p in procs] if server.process else [p.pid for p in procs]
        market_from = (await js.stream_info("MARKET")).state.last_seq + 1
        command_from = (await js.stream_info("COMMAND")).state.last_seq + 1
        account_from = (await js.stream_info("ACCOUNT")).state.last_seq + 1
        ops_from = (await js.stream_info("OPS")).state.last_seq + 1
        cpu0, t0, window_start = sum(cpu_ticks(p) for p in pids), time.monotonic(), time.time()
        await asyncio.sleep(seconds)
        cpu1, t1 = sum(cpu_ticks(p) for p in pids), time.monotonic()
        rss = sum(rss_kb(p) for p in pids) / 1024
        cores = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
        market_to = (await js.stream_info("MARKET")).state.last_seq
        command_to = (await js.stream_info("COMMAND")).state.last_seq
        ops_to = (await js.stream_info("OPS")).state.last_seq

        # Each event's store time where it was published (MARKET, ACCOUNT), by id.
        stored: dict[str, int] = {}
        account_to = (await js.stream_info("ACCOUNT")).state.last_seq
        for stream, first, last in (("MARKET", market_from, market_to), ("ACCOUNT", account_from, account_to)):
            async for batch in read_stream(nc, stream, start_seq=first, end_seq=last):
                for m in batch:
                    ev = decode(m.data)
                    if isinstance(ev, (Ticker, OrderUpdate)):
                        stored[ev.id] = m.ts_ns
        # Each grid's inputs in the order it saw them; a command is caused by the input the grid
        # was processing: the last one stored in its input stream before the command.
        since = dt.datetime.fromtimestamp(window_start, dt.timezone.utc)
        inputs: dict[str, list[tuple[int, str]]] = {}
        for i in range(n):
            rows = inputs[f"grid/g{i:03d}"] = []
            async for batch in read_stream(nc, f"IN_GRID_G{i:03d}", start_time=since):
                rows += [(m.ts_ns, decode(m.data).id) for m in batch]
        to_command: list[float] = []
        sourced: list[float] = []
        async for batch in read_stream(nc, "COMMAND", start_seq=command_from, end_seq=command_to):
            for m in batch:
                cmd = decode(m.data)
                seen = inputs.get(cmd.origin) if isinstance(cmd, PlaceOrder) else None
                if not seen:
                    continue
                k = bisect.bisect_right(seen, (m.ts_ns, "~")) - 1
                if k < 0 or seen[k][1] not in stored:
                    continue  # caused by something that is neither a ticker nor an order update
                at, cause = seen[k]
                to_command.append((m.ts_ns - stored[cause]) / 1e6)
                sourced.append((at - stored[cause]) / 1e6)
        # The state events stored over the window (start-up left out), per instance, per day.
        states: dict[str, StateBytes] = {}
        async for batch in read_stream(nc, "OPS", start_seq=ops_from, end_seq=ops_to, subjects=(subjects.ops("grid", "*", "state"),)):
            for m in batch:
                states.setdefault(m.subject.split(".")[2], StateBytes()).add(m.subject, m.data)
        await nc.close()
        span_ms = (t1 - t0) * 1000
        total = sum(s.stored for s in states.values())
        full = sum(s.full for s in states.values())
        events = sum(s.events for s in states.values())
        return Figures(
            to_command=to_command,
            sourced=sourced,
            rss_mb=rss,
            cores=cores,
            processes=len(pids),
            state_per_day_mb=total / n / span_ms * 86_400_000 / 1e6,
            full_share=full / max(events, 1),
            started_s=started_s,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()


def line(name: str, f: Figures) -> str:
    return (
        f"  {name:<22} tick -> place stored p50 {statistics.median(f.to_command) if f.to_command else float('nan'):6.2f} ms"
        f"  p99 {pct(f.to_command, 0.99):6.2f} ms ({len(f.to_command)} samples;"
        f" of which sourcing into the input stream p50 {statistics.median(f.sourced) if f.sourced else float('nan'):.2f} p99 {pct(f.sourced, 0.99):.2f} ms)"
        f"  memory {f.rss_mb:,.0f} MB in {f.processes} processes  CPU {f.cores:.2f} cores"
        f"  state {f.state_per_day_mb:.1f} MB/instance/day ({f.full_share:.0%} full)  all running after {f.started_s:.0f} s"
    )


async def main(n: int, seconds: float, shards: int, phases: int, per_process: bool, in_step: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hosted = await run(Path(tmp) / "hosted", n, seconds, shards, phases)
        burst = await run(Path(tmp) / "in-step", n, seconds, shards, 1) if in_step and phases > 1 else None
        alone = await run(Path(tmp) / "alone", n, seconds, 0, phases) if per_process else None
    print(
        f"bench/scale.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  "
        f"{n} grids, {n} markets at {1000 // TICK_MS} ticks/s each, in {phases} phases"
    )
    print(line(f"{shards} hosting processes", hosted))
    if burst is not None:
        print(line("  markets in step", burst) + "  (every market ticks at the same instant)")
    if alone is not None:
        print(line("a process per grid", alone))
        p99 = pct(alone.to_command, 0.99) / pct(hosted.to_command, 0.99)
        print(
            f"  hosting buys: {alone.rss_mb / hosted.rss_mb:.1f}x less memory, {alone.cores / hosted.cores:.1f}x less CPU,"
            f" p99 {p99:.1f}x lower (a process per grid / hosted)"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=100)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--phases", type=int, default=100, help="the exchange's tick_phases: markets print in this many groups per tick")
    p.add_argument("--no-per-process", action="store_true", help="skip the run with one process per grid")
    p.add_argument("--no-in-step", action="store_true", help="skip the run with every market ticking at once")
    a = p.parse_args()
    uvloop.run(main(a.instances, a.seconds, a.shards, a.phases, not a.no_per_process, not a.no_in_step))
