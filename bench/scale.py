"""Many grids on one small machine: 100 instances on 100 simulated markets at 2 ticks/s each.

    .venv/bin/python bench/scale.py [--instances 100] [--seconds 60] [--shards 2] [--no-per-process]

Two runs, one after the other, each on a fresh nats-server with the simulated exchange (100
template markets, `tick_ms = 500`) and one order executor, as real processes (`sqt run ...`):
1. hosted: the instances in `--shards` processes (`sqt run grids --shard N/M`), as the registry
   seeds them from the config;
2. one process per instance (`sqt run grid --instance ID`), as `sqt up` runs them by default.
For each, once every instance has published a running state: tick -> place command stored
(a ticker's store time in MARKET to the store time in COMMAND of the place command it caused,
joined by market and event time; sourcing into the instance's input stream included), p50/p99
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


async def run(workdir: Path, n: int, seconds: float, shards: int) -> Figures:
    """One stack: `shards` > 0 hosts the grids in that many processes, 0 one process per grid."""
    workdir.mkdir(parents=True)
    server = EmbeddedServer(store_dir=workdir / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=workdir / "nats.log")
    server.start()
    config = workdir / "sqt.toml"
    config.write_text(
        CONFIG.format(data=workdir / "data", shards=max(shards, 0), tick_ms=TICK_MS, n=n) + "".join(GRID.format(i=i) for i in range(n))
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
        ops_from = (await js.stream_info("OPS")).state.last_seq + 1
        cpu0, t0 = sum(cpu_ticks(p) for p in pids), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = sum(cpu_ticks(p) for p in pids), time.monotonic()
        rss = sum(rss_kb(p) for p in pids) / 1024
        cores = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
        market_to = (await js.stream_info("MARKET")).state.last_seq
        command_to = (await js.stream_info("COMMAND")).state.last_seq
        ops_to = (await js.stream_info("OPS")).state.last_seq

        ticks: dict[tuple[str, int], int] = {}
        async for batch in read_stream(nc, "MARKET", start_seq=market_from, end_seq=market_to):
            for m in batch:
                if m.subject.endswith(".ticker"):
                    ev = decode(m.data)
                    if isinstance(ev, Ticker):
                        ticks[(ev.symbol, ev.ts)] = m.ts_ns
        to_command: list[float] = []
        async for batch in read_stream(nc, "COMMAND", start_seq=command_from, end_seq=command_to):
            for m in batch:
                cmd = decode(m.data)
                if isinstance(cmd, PlaceOrder) and (cmd.symbol, cmd.ts) in ticks:
                    to_command.append((m.ts_ns - ticks[(cmd.symbol, cmd.ts)]) / 1e6)
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
        f"  p99 {pct(f.to_command, 0.99):6.2f} ms ({len(f.to_command)} samples)"
        f"  memory {f.rss_mb:,.0f} MB in {f.processes} processes  CPU {f.cores:.2f} cores"
        f"  state {f.state_per_day_mb:.1f} MB/instance/day ({f.full_share:.0%} full)  all running after {f.started_s:.0f} s"
    )


async def main(n: int, seconds: float, shards: int, per_process: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hosted = await run(Path(tmp) / "hosted", n, seconds, shards)
        alone = await run(Path(tmp) / "alone", n, seconds, 0) if per_process else None
    print(
        f"bench/scale.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  {n} grids, {n} markets at {1000 // TICK_MS} ticks/s"
    )
    print(line(f"{shards} hosting processes", hosted))
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
    p.add_argument("--no-per-process", action="store_true", help="skip the run with one process per grid")
    a = p.parse_args()
    uvloop.run(main(a.instances, a.seconds, a.shards, not a.no_per_process))
