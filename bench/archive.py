"""Archive throughput: stream to durable Parquet, beside the raw read ceiling; `sqt query` times.

    .venv/bin/python bench/archive.py [--events 200000]

One process, one fresh nats-server. The events (testkit/archive.py's mix over every stream,
some garbage included) are published first; then
- the ceiling: the same messages read with the project's fastest reader (bus/reader.py) and
  decoded by the codec, nothing written;
- the archive: `sqt run archive`'s consumers (batch of 5,000, timer 0.5 s) from the first message to
  the last one committed (written, fsynced, renamed) and acked.
Then `sqt query` (a real process, Python start-up included, and in-process) over a generated
archive: a day's fills and a month of 1-minute candles. Figures only; nothing is asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import platform
import subprocess
import tempfile
import time
from decimal import Decimal

import uvloop
from nats.aio.client import Client

from bus import streams
from bus.connection import connect
from bus.contract import StoredMsg
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.process import tune_gc
from bus.reader import read_stream
from monitors.archive.batch import Stored, group
from monitors.archive.config import ArchiveConfig
from monitors.archive.runner import build_archive, run_consumers
from monitors.archive.views import open_archive
from monitors.archive.writer import StreamWriter
from schemas import subjects
from schemas.codec import DecodeError, decode, encode
from testkit import events
from testkit.archive import ARCHIVED, mixed, publish

ROOT = Path(__file__).resolve().parent.parent
DAY_MS = 86_400_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC


async def ceiling(nc: Client, total: int) -> float:
    began = time.perf_counter()
    n = 0
    for stream in ARCHIVED:
        async for batch in read_stream(nc, stream):
            for m in batch:
                try:
                    decode(m.data)
                except DecodeError:
                    pass
                n += 1
    assert n == total, (n, total)
    return time.perf_counter() - began


async def archive(nc: Client, root: Path) -> tuple[float, int, int]:
    js = nc.jetstream()
    last = {s: (await js.stream_info(s)).state.last_seq for s in ARCHIVED}
    # The default batch (5,000); a short timer, so the last partial batches do not wait 5 s each.
    consumers = build_archive(nc, ArchiveConfig(flush_seconds=0.5, metrics_port=0), root)
    stop = asyncio.Event()
    began = time.perf_counter()
    task = asyncio.create_task(run_consumers(consumers, stop))
    while any(c.high_water < last[c.stream] for c in consumers):
        await asyncio.sleep(0.01)  # a benchmark's poll of its own progress
    elapsed = time.perf_counter() - began
    stop.set()
    await task
    return elapsed, sum(c.files for c in consumers), sum(c.bytes for c in consumers)


def generate(root: Path, fills_per_day: int, symbols: int) -> tuple[int, int]:
    """A day of fills and a month of 1-minute candles (closed bars) for `symbols` markets, written
    as the archive writes them (batches of 5,000)."""
    seq = 0
    w = StreamWriter(root, "ACCOUNT")
    w.recover()
    batch: list[StoredMsg] = []
    for i in range(fills_per_day):
        ts = T0 + i * DAY_MS // fills_per_day
        f = events.fill(f"c{i}", f"t{i}", price=str(Decimal(60_000) + i % 1000), amount="0.01", ts=ts)
        seq += 1
        batch.append(Stored(seq, subjects.subject_of(f), encode(f), {"Nats-Msg-Id": f.id}, ts * 1_000_000))
        if len(batch) == 5_000:
            w.commit(group("ACCOUNT", batch))
            batch = []
    w.commit(group("ACCOUNT", batch))
    w = StreamWriter(root, "MARKET")
    w.recover()
    batch, seq, candles = [], 0, 0
    for minute in range(30 * 24 * 60):
        for s in range(symbols):
            open_time = T0 - 30 * DAY_MS + minute * 60_000
            c = events.candle(str(60_000 + minute % 500), open_time=open_time)
            c = type(c)(**{**{f: getattr(c, f) for f in c.__struct_fields__}, "symbol": f"C{s}/USDT:USDT", "id": f"{c.id}-{s}"})
            seq += 1
            candles += 1
            batch.append(Stored(seq, subjects.subject_of(c), encode(c), {"Nats-Msg-Id": c.id}, c.ts * 1_000_000))
            if len(batch) == 5_000:
                w.commit(group("MARKET", batch))
                batch = []
    w.commit(group("MARKET", batch))
    return fills_per_day, candles


def timed_query(root: Path, sql: str) -> tuple[float, float, int]:
    """(seconds as a `sqt query` process, seconds in-process, rows)."""
    began = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "query", "--csv", "--archive", str(root), sql],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    process = time.perf_counter() - began
    began = time.perf_counter()
    rows = open_archive(root).execute(sql).fetchall()
    inproc = time.perf_counter() - began
    assert len(out.stdout.splitlines()) == len(rows) + 1
    return process, inproc, len(rows)


async def main(n: int, fills: int, symbols: int) -> None:
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = EmbeddedServer(store_dir=work / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=work / "nats.log")
        server.start()
        nc = await connect(server.url, name="bench-archive")
        try:
            await streams.apply(nc.jetstream())
            began = time.perf_counter()
            for start in range(0, n, 20_000):
                await publish(nc, mixed(min(20_000, n - start), seed=start, start=start))
            print(f"published {n:,} mixed events on {len(ARCHIVED)} streams in {time.perf_counter() - began:.1f}s")
            raw = await ceiling(nc, n)
            arch, files, size = await archive(nc, work / "archive")
        finally:
            await nc.close()
            server.stop()
        print(f"ceiling: read + decode (bus/reader.py)   {n / raw:>10,.0f} events/s  ({raw:.2f}s)")
        print(
            f"archive: stream -> durable Parquet     {n / arch:>10,.0f} events/s  ({arch:.2f}s, {files} files, {size / 1e6:.1f} MB, "
            f"{size / n:.0f} B/event)"
        )
        print(f"archive / ceiling: {raw / arch:.2f}")
        root = work / "generated"
        began = time.perf_counter()
        n_fills, n_candles = generate(root, fills, symbols)
        print(
            f"\ngenerated {n_fills:,} fills (one day) and {n_candles:,} candles (30 days x {symbols} markets) in {time.perf_counter() - began:.1f}s"
        )
        day = "SELECT date_trunc('hour', ts) AS hour, count(*) AS fills, sum(price * amount) AS notional FROM fills GROUP BY 1 ORDER BY 1"
        month = (
            "SELECT open_time_ms, open, high, low, close, volume FROM candles "
            "WHERE venue = 'sim' AND symbol = 'C0/USDT:USDT' AND closed ORDER BY open_time_ms"
        )
        for what, sql in (("a day's fills, per hour", day), ("a month of 1m candles, one market", month)):
            proc, inproc, rows = timed_query(root, sql)
            print(f"sqt query, {what:34} {proc * 1000:7.0f} ms as a process, {inproc * 1000:6.0f} ms in-process ({rows:,} rows)")
    print(f"\nmachine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, {platform.system()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--fills", type=int, default=50_000, help="fills in the generated day")
    parser.add_argument("--symbols", type=int, default=3, help="markets in the generated month of candles")
    args = parser.parse_args()
    uvloop.run(main(args.events, args.fills, args.symbols))
