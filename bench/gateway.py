"""The gateway's fan-out: event stored -> frame at the browser, for 100 and 1,000 browsers.

    .venv/bin/python bench/gateway.py [--seconds 7] [--rounds 3] [--clients 100,1000] [--rate 2]

The gateway is a real process (`sqt run gateway`, fresh for every run) on its own nats-server;
the browsers are raw WebSocket clients in other processes (`--drivers`; asyncio protocols, so a
frame's receive time is taken when its bytes reach the client) offering permessage-deflate as
browsers do (`--no-deflate`: not). The feed: 1m candle updates of one market at the simulated
exchange's full rate (one a tick, 1000 / SimConfig.tick_ms a second) and order events of that
market in the same ticks, published to the streams for `--seconds`; every figure is the median
of `--rounds` runs, interleaved with the others.
- Latency: the event's JetStream store time (read back afterwards, joined on the frame's
  `stream` and `seq`) to the frame received; p50/p99 over every (client, frame) of a run.
  Targets on 2 cores: p99 < 10 ms at 100 clients, < 50 ms at 1,000.
- Gateway CPU (utime+stime while publishing) and RSS growth (from before the clients came).
- The same with 5% of the clients never reading after the handshake (not even the socket: a
  dead peer; aiohttp's heartbeat would close it after 30 s): how far the reading clients' p99
  moves (target: at most +20%).
- Ceiling: a plain nats-server with a WebSocket listener, the same client processes speaking
  NATS over WebSocket (SUB to the same subjects), core NATS publishes of the same frames at the
  same rate; latency from publish (time in the payload) to receive. Ratio: our p99 / its p99.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import base64
import gc
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from typing import Any

import nats
import uvloop

from bus import streams
from bus.connection import connect
from bus.embedded import die_with_parent, free_port, server_binary
from bus.process import tune_gc
from bus.publisher import Publisher
from bus.reader import read_stream
from gateway.frames import encode, to_frame
from schemas import ids
from schemas.account import OrderUpdate
from schemas.base import OrderStatus
from schemas.market import Candle
from schemas.subjects import subject_of
from testkit.chaos import Cluster
from venues.sim.config import SimConfig

VENUE, ACCOUNT, SYMBOL = "sim", "main", "BTC/USDT:USDT"
TAIL = b"\x00\x00\xff\xff"  # permessage-deflate strips it from every message
STAMP = re.compile(rb'\{"t":(\d+),"f"')
Sample = tuple[str, int, int]  # (stream, seq, received ns); stream "": seq is the publish time, ns
Run = dict[str, Any]


# ----------------------------------------------------------------------------- clients (driver processes)


class Peer(asyncio.Protocol):
    """One browser: the WebSocket handshake by hand, then frames parsed as their bytes arrive."""

    def __init__(self, port: int, path: str, deflate: bool, reading: bool, first: bytes, marker: bytes) -> None:
        self.port, self.path, self.deflate, self.reading, self.first, self.marker = port, path, deflate, reading, first, marker
        self.buf, self.upgraded, self.inflate = bytearray(), False, zlib.decompressobj(-15)
        self.transport: Any = None
        self.got: list[tuple[bytes, int]] = []
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: int | None = None  # the close code received (-1: connection lost)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        ext = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if self.deflate else ""
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n".encode()
        )

    def send(self, opcode: int, payload: bytes) -> None:  # client frames are masked (a zero mask is a mask)
        n = len(payload)
        head = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0xFE]) + n.to_bytes(2, "big")
        self.transport.write(head + b"\0\0\0\0" + payload)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).lower()
            del buf[: end + 4]
            if not head.startswith(b"http/1.1 101"):
                return self.ready.set_exception(RuntimeError(head.decode(errors="replace")[:200]))
            self.upgraded = True
            if self.first:
                self.send(2, self.first)
            if not self.reading:  # a dead peer: its kernel buffers fill, then TCP's window closes
                self.transport.pause_reading()
                return self.ready.set_result(None)
        i, size = 0, len(buf)
        while size - i >= 2:
            b0, n, h = buf[i], buf[i + 1] & 0x7F, 2
            if n == 126:
                n, h = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif n == 127:
                n, h = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if size - i < h + n:
                break
            payload, op = bytes(buf[i + h : i + h + n]), b0 & 0x0F
            i += h + n
            if op in (1, 2):
                if b0 & 0x40:
                    payload = self.inflate.decompress(payload + TAIL)
                if self.ready.done():
                    self.got.append((payload if len(payload) < 4096 else payload[-64:], now))
                elif self.marker in payload:
                    self.ready.set_result(None)
            elif op == 9:
                self.send(0xA, payload)
            elif op == 8:
                self.closed = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        del buf[:i]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = -1 if self.closed is None else self.closed

    def samples(self) -> list[Sample]:
        out: list[Sample] = []
        for payload, ns in self.got:
            if self.first:  # NATS over WebSocket: the MSGs carry their publish time
                out += [("", int(t), ns) for t in STAMP.findall(payload)]
            elif (at := payload.rfind(b'"stream":"')) >= 0:  # the gateway: ..."stream":"MARKET","seq":48213}
                tail = payload[at + 10 :]
                out.append((tail[: tail.index(b'"')].decode(), int(tail[tail.rindex(b":") + 1 : tail.rindex(b"}")]), ns))
        return out


def driver(conn: Connection, mode: str, port: int, n: int, stalled: int, deflate: bool, subjects: list[str]) -> None:
    async def drive() -> None:
        loop = asyncio.get_running_loop()
        subs = "".join(f"SUB {s} {i + 1}\r\n" for i, s in enumerate(subjects))
        first = f'CONNECT {{"verbose":false,"pedantic":false,"protocol":1}}\r\n{subs}PING\r\n'.encode() if mode == "nats" else b""
        marker, path = (b"PONG", "/") if mode == "nats" else (b'"type":"hello"', "/ws")
        peers = [Peer(port, path, deflate, i >= stalled, first, marker) for i in range(n)]
        for at in range(0, n, 50):  # in waves: the listen backlog is 128
            batch = peers[at : at + 50]
            await asyncio.gather(*(loop.create_connection(lambda p=p: p, "127.0.0.1", port) for p in batch))  # type: ignore[misc]
            await asyncio.wait_for(asyncio.gather(*(p.ready for p in batch)), 30)
        gc.collect()
        gc.disable()  # no collector pauses in the receive times (a run keeps every frame it gets)
        conn.send("ready")
        await asyncio.to_thread(conn.recv)  # "stop"
        closed = Counter(str(p.closed) for p in peers if p.closed is not None)
        conn.send(([s for p in peers if p.reading for s in p.samples()], dict(closed)))
        for p in peers:
            p.transport.abort()

    uvloop.run(drive())


class Drivers:
    """Client processes (spawned: clean interpreters), the clients split among them."""

    def __init__(self, count: int, mode: str, port: int, n: int, stalled: int, deflate: bool, subjects: list[str]) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[SpawnProcess] = []
        for k in range(count):
            mine, theirs = ctx.Pipe()
            share, stall = n // count + (k < n % count), stalled // count + (k < stalled % count)
            self.procs.append(ctx.Process(target=driver, args=(theirs, mode, port, share, stall, deflate, subjects), daemon=True))
            self.procs[-1].start()
            self.conns.append(mine)
        self.pids = [p.pid or 0 for p in self.procs]

    async def ready(self) -> None:
        for c in self.conns:
            if not await asyncio.to_thread(c.poll, 120):
                raise TimeoutError("bench: the clients did not connect")
            c.recv()

    async def stop(self) -> tuple[list[Sample], Counter[str]]:
        for c in self.conns:
            c.send("stop")
        got = [await asyncio.to_thread(c.recv) for c in self.conns]
        for p in self.procs:
            p.join(10)
        return [s for samples, _ in got for s in samples], sum((Counter(closed) for _, closed in got), Counter())


# ----------------------------------------------------------------------------- the feed


class Feed:
    """Candle updates of one market (one a tick) and order events of it (open, then canceled)."""

    def __init__(self) -> None:
        self.price, self.k, self.ts = Decimal(60000), 0, 0

    def stamp(self) -> int:
        self.ts = max(self.ts + 1, time.time_ns() // 1_000_000)
        return self.ts

    def candle(self, closed: bool = False, open_time: int | None = None) -> Candle:
        ts = self.stamp()
        self.price += Decimal(random.randint(-20, 20)) / 10
        t0, p = open_time if open_time is not None else ts - ts % 60_000, self.price
        return Candle(
            id=ids.candle_id(VENUE, SYMBOL, "1m", t0, ts, closed), venue=VENUE, symbol=SYMBOL, open_time=t0, open=p, high=p + 5,
            low=p - 5, close=p, volume=Decimal(3), closed=closed, ts=ts, ts_local=ts,
        )  # fmt: skip

    def order(self) -> OrderUpdate:
        ts, self.k = self.stamp(), self.k + 1
        status: OrderStatus = "open" if self.k % 2 else "canceled"
        cid, amount = f"bench-{(self.k + 1) // 2}", Decimal("0.01")
        return OrderUpdate(
            id=ids.order_event_id(VENUE, ACCOUNT, cid, status, Decimal(0)), venue=VENUE, account=ACCOUNT, symbol=SYMBOL,
            order_id=f"o-{cid}", client_order_id=cid, side="buy", price=self.price.quantize(Decimal(1)) - 50, amount=amount,
            remaining=amount, status=status, ts=ts, ts_local=ts,
        )  # fmt: skip


async def pace(a: argparse.Namespace, feed: Feed, emit: Callable[[Any], Awaitable[None]]) -> int:
    """Candles at `--rate`/s and orders at `--orders`/s for `--seconds`; an order event comes in the
    same tick as a candle update, as the sim publishes a tick's fills with its market data."""
    loop = asyncio.get_running_loop()
    end = loop.time() + a.seconds

    async def every(per_s: float, make: Callable[[], Any]) -> int:
        sent, start = 0, loop.time()
        while per_s > 0 and (due := start + sent / per_s) < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await emit(make())
            sent += 1
        return sent

    return sum(await asyncio.gather(every(a.rate, feed.candle), every(a.orders, feed.order)))


# ----------------------------------------------------------------------------- measuring


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def rss(pid: int) -> int:
    return int(next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmRSS:")).split()[1]) * 1024


def http(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def counter(metrics: str, name: str) -> int:
    return int(sum(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(name)))


async def gateway_run(cluster: Cluster, nc: nats.NATS, pub: Publisher, feed: Feed, n: int, stalled: int, a: argparse.Namespace) -> Run:
    port = free_port()
    cluster.config.write_text(f'data_dir = "{cluster.workdir / "data"}"\nlog_level = "WARNING"\n\n[gateway]\nport = {port}\n')
    proc = cluster.start("gateway")
    try:
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(http, f"http://127.0.0.1:{port}/health"))[0] != 200:
            if time.monotonic() > deadline or proc.poll() is not None:
                log = (cluster.workdir / "gateway.log").read_text()[-2000:]
                raise RuntimeError(f"the gateway did not become healthy:\n{log}")
            await asyncio.sleep(0.1)
        rss0, js = rss(proc.pid), nc.jetstream()
        drivers = Drivers(a.drivers, "gateway", port, n, stalled, a.deflate, [])
        await drivers.ready()
        first = {s: (await js.stream_info(s)).state.last_seq + 1 for s in ("MARKET", "ACCOUNT")}
        cpu0, dcpu0, t0 = cpu_s(proc.pid), sum(map(cpu_s, drivers.pids)), time.monotonic()
        acks: list[asyncio.Future[Any]] = []

        async def emit(event: Any) -> None:
            acks.append(await pub.send_message(event))

        events = await pace(a, feed, emit)
        await asyncio.gather(*acks)
        await asyncio.sleep(1.0)  # the last frames' way out
        took = time.monotonic() - t0
        cpu, dcpu, grown = cpu_s(proc.pid) - cpu0, sum(map(cpu_s, drivers.pids)) - dcpu0, rss(proc.pid) - rss0
        samples, closed = await drivers.stop()
        metrics = (await asyncio.to_thread(http, f"http://127.0.0.1:{port}/metrics"))[1]
    finally:
        cluster.stop("gateway")
    stored: dict[tuple[str, int], int] = {}
    for stream, seq in first.items():
        async for batch in read_stream(nc, stream, start_seq=seq):
            stored.update(((stream, m.seq), m.ts_ns) for m in batch)
    lat = [(ns - stored[(s, q)]) / 1e6 for s, q, ns in samples if (s, q) in stored]
    return {
        "lat": lat, "expected": events * (n - stalled), "cpu": cpu / took, "dcpu": dcpu / took, "rss": grown / n, "closed": closed,
        "conflated": counter(metrics, "sqt_gateway_frames_conflated_total"), "dropped": counter(metrics, "sqt_gateway_clients_too_slow_total"),
    }  # fmt: skip


async def ceiling_run(nc: nats.NATS, ws_port: int, feed: Feed, subjects: list[str], n: int, a: argparse.Namespace) -> Run:
    drivers = Drivers(a.drivers, "nats", ws_port, n, 0, a.deflate, subjects)
    await drivers.ready()

    async def emit(event: Any) -> None:  # the frame the gateway would send, stamped at publish
        routed = to_frame("MARKET" if isinstance(event, Candle) else "ACCOUNT", feed.k, event)
        assert routed is not None
        await nc.publish(subject_of(event), b'{"t":%d,"f":%s}' % (time.time_ns(), encode(routed.frame).encode()))

    events = await pace(a, feed, emit)
    await asyncio.sleep(1.0)
    samples, closed = await drivers.stop()
    return {"lat": [(ns - t) / 1e6 for _, t, ns in samples], "expected": events * n, "closed": closed}


def ws_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    """A plain nats-server with a WebSocket listener (compression as the clients ask); its ports its own choice."""
    ports, conf = workdir / "ports", workdir / "ws.conf"
    ports.mkdir(parents=True)
    listen = "host: 127.0.0.1, port: -1"  # the server picks the ports and writes them to its ports file
    conf.write_text(f'{listen}\nports_file_dir: "{ports}"\nwebsocket {{ {listen}, no_tls: true, compression: true }}\n')
    proc = subprocess.Popen(
        [server_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent
    )
    deadline = time.monotonic() + 15
    while not (found := list(ports.glob(f"*_{proc.pid}.ports"))) or not found[0].read_text().strip():
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the WebSocket nats-server did not start")
        time.sleep(0.05)
    info = json.loads(found[0].read_text())
    return proc, info["nats"][0], int(info["websocket"][0].rsplit(":", 1)[1])


def pooled(runs: list[Run]) -> Run:
    """Latencies: the median of the rounds' (the machine is noisy); the rest: sums and means."""
    out: Run = {"p50": statistics.median(pct(r["lat"], 0.5) for r in runs), "p99s": [pct(r["lat"], 0.99) for r in runs]}
    out.update(
        p99=statistics.median(out["p99s"]), frames=sum(len(r["lat"]) for r in runs), closed=sum((r["closed"] for r in runs), Counter())
    )
    out.update({k: sum(r.get(k, 0) for r in runs) for k in ("expected", "conflated", "dropped")})
    return out | {k: sum(r.get(k, 0) for r in runs) / len(runs) for k in ("cpu", "dcpu", "rss")}


async def main(a: argparse.Namespace) -> None:
    tune_gc()  # as every component does (bus/process.py)
    started, feed = time.monotonic(), Feed()
    runs: dict[tuple[str, int], list[Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with Cluster(Path(tmp) / "gw", "") as cluster:
            nc = await connect(cluster.server.url, attempts=10)
            await streams.apply(nc.jetstream())
            pub = await Publisher(nc).start()
            now = time.time_ns() // 1_000_000
            await pub.publish_all([feed.candle(True, now - now % 60_000 - (100 - i) * 60_000) for i in range(100)] + [feed.order()])
            for _ in range(a.rounds):  # interleaved: drift in the machine's load hits every figure alike
                for n in a.clients:
                    for kind, stalled in (("all", 0), ("stalled", max(1, n * a.stalled_pct // 100))):
                        runs.setdefault((kind, n), []).append(await gateway_run(cluster, nc, pub, feed, n, stalled, a))
            version = str(nc._server_info.get("version"))
            await nc.close()
        proc, url, ws_port = ws_server(Path(tmp) / "ws")
        try:
            nc = await nats.connect(url)
            subjects = [subject_of(feed.candle()), subject_of(feed.order())]
            for _ in range(a.rounds):
                for n in a.clients:
                    runs.setdefault(("ceiling", n), []).append(await ceiling_run(nc, ws_port, feed, subjects, n, a))
            await nc.close()
        finally:
            proc.terminate()
            proc.wait()
    report(a, {key: pooled(r) for key, r in runs.items()}, version, time.monotonic() - started)


def report(a: argparse.Namespace, figures: dict[tuple[str, int], Run], version: str, took: float) -> None:
    print(
        f"bench/gateway.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  nats-server {version}\n"
        f"  feed: {a.rate:g} candle updates/s (the sim's tick) + {a.orders:g} order events/s on {VENUE} {SYMBOL}; figures: median of "
        f"{a.rounds} runs of {a.seconds:g} s; clients in {a.drivers} processes, permessage-deflate {'offered' if a.deflate else 'off'}"
    )
    for n in a.clients:
        base, slow, ceil = (figures[(k, n)] for k in ("all", "stalled", "ceiling"))
        stalled, target = max(1, n * a.stalled_pct // 100), {100: 10.0, 1000: 50.0}.get(n)
        print(f"  {n:,} clients on one symbol")
        for name, r in (("gateway, all reading", base), (f"gateway, {stalled} never reading", slow), ("raw nats-server ws", ceil)):
            extra = f"  closed {dict(r['closed'])}" if r["closed"] else ""
            if name.startswith("gateway"):
                extra = (
                    f"  cpu {r['cpu']:.1%} of a core = {r['cpu'] / n * 1e6:,.0f} us/s per client, rss +{r['rss'] / 1024:,.0f} KiB per client"
                    f"  (clients' cpu {r['dcpu']:.1%}; conflated {r['conflated']}, closed too slow {r['dropped']}){extra}"
                )
            rounds = " ".join(f"{x:.1f}" for x in r["p99s"])
            print(
                f"    {name:<25} p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms [{rounds}]  {r['frames']:,}/{r['expected']:,} frames{extra}"
            )
        goal = f"; target < {target:g} ms: {'met' if base['p99'] < target else 'MISSED'}" if target else ""
        print(f"    p99 = {base['p99'] / ceil['p99']:.2f}x the raw nats-server ws ceiling{goal}")
        moved, ok = slow["p99"] / base["p99"] - 1, "met" if slow["p99"] <= 1.2 * base["p99"] else "MISSED"
        print(f"    reading clients' p99 with {stalled} never reading: {moved:+.0%} (target at most +20%: {ok})")
    print(f"  run time {took:.0f} s")


if __name__ == "__main__":
    sim_rate = 1000 / SimConfig().tick_ms
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=7.0, help="publishing time of one run")
    p.add_argument("--rounds", type=int, default=3, help="runs per figure (interleaved)")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    p.add_argument("--rate", type=float, default=sim_rate, help=f"candle updates a second (default: the sim's, {sim_rate:g})")
    p.add_argument("--orders", type=float, default=1.0, help="order events a second")
    p.add_argument("--stalled-pct", type=int, default=5, help="share of the clients that never read, in %%")
    p.add_argument("--drivers", type=int, default=2, help="client processes")
    p.add_argument("--no-deflate", dest="deflate", action="store_false", help="clients do not offer permessage-deflate")
    uvloop.run(main(p.parse_args()))
