"""Bus throughput and latency: the project's paths side by side with raw nats-py ceilings.

    .venv/bin/python bench/bus.py [--events 100000]

Everything runs in one process against one fresh nats-server, so the ratios compare like
with like on a noisy machine. Ceilings are plain nats-py doing the same work without the
project: `publish_async` + gather for publishing; an ordered push consumer + msgspec decode
for reading; pull `fetch(1000)` + decode + ack-all for a durable consumer.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and `bus` would name this file,
# not the package; put the project root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import asyncio
import gc
import platform
import statistics
import tempfile
import time
from decimal import Decimal

import msgspec
import nats
import uvloop
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from bench.ceilings import ordered_read
from bus import checkpoints, streams
from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer
from bus.process import tune_gc
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime, ConsumerSpec, Inbound
from schemas import ids
from schemas.codec import encode
from schemas.market import Ticker
from schemas.ops import RiskAlert

SYMBOL = "BTC/USDT:USDT"


class SumState(msgspec.Struct, frozen=True):
    count: int = 0
    total: Decimal = Decimal(0)


class SumCore:
    """A light core: a running sum, an output every 100th event (outputs are awaited before acks)."""

    def __init__(self) -> None:
        self.seen_at: dict[int, int] = {}

    def initial_state(self) -> SumState:
        return SumState()

    def step(self, state: SumState, inbound: Inbound[Ticker]) -> tuple[SumState, list[RiskAlert]]:
        new = SumState(state.count + 1, state.total + inbound.event.last)
        if new.count % 100:
            return new, []
        return new, [
            RiskAlert(
                id=f"bench:{new.count}", component="bench", instance="sum", severity="info", kind="sum", message="", ts=inbound.event.ts
            )
        ]


class LatencyCore(SumCore):
    def step(self, state: SumState, inbound: Inbound[Ticker]) -> tuple[SumState, list[RiskAlert]]:
        self.seen_at[inbound.event.ts] = time.perf_counter_ns()
        return super().step(state, inbound)


def tickers(n: int, start: int = 0, symbol: str = SYMBOL) -> list[Ticker]:
    out = []
    for i in range(start, start + n):
        last = Decimal(60000 + i % 100) / 10
        out.append(Ticker(id=ids.ticker_id("sim", symbol, i), venue="sim", symbol=symbol, bid=last, ask=last, last=last, ts=i, ts_local=i))
    return out


def spec(name: str, subject: str) -> ConsumerSpec:
    return ConsumerSpec(
        name=name,
        stream="MARKET",
        input_type=Ticker,
        state_type=SumState,
        subjects=(subject,),
        outputs=("ops.bench.*.alert",),
        checkpoint_every=5_000,
        checkpoint_interval=2.0,
    )


async def raw_publish(nc: nats.NATS, events: list[Ticker], subject: str) -> float:
    js = nc.jetstream(publish_async_max_pending=20_000)
    payloads = [(e.id, encode(e)) for e in events]
    t = time.perf_counter()
    futs = [await js.publish_async(subject, p, headers={"Nats-Msg-Id": i}) for i, p in payloads]
    await asyncio.gather(*futs)
    return len(events) / (time.perf_counter() - t)


async def raw_pull(nc: nats.NATS, n: int, subject: str, durable: str) -> float:
    js = nc.jetstream()
    dec = msgspec.json.Decoder(Ticker)
    sub = await js.pull_subscribe(subject, durable=durable, config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=100_000))
    got = 0
    t = time.perf_counter()
    while got < n:
        msgs = await sub.fetch(1000, timeout=2)
        for m in msgs:
            dec.decode(m.data)
        await msgs[-1].ack()
        got += len(msgs)
    return got / (time.perf_counter() - t)


async def project_publish(pub: Publisher, events: list[Ticker]) -> float:
    t = time.perf_counter()
    await pub.publish_all(events)
    return len(events) / (time.perf_counter() - t)


async def start_at(nc: nats.NATS, name: str, seq: int) -> None:
    """A checkpoint that makes consumer `name` begin after stream sequence `seq`."""
    await nc.jetstream().publish(checkpoints.subject(name), checkpoints.encode(checkpoints.Checkpoint(seq=seq, state=SumState())))


async def project_consume(nc: nats.NATS, pub: Publisher, n: int, name: str, first_seq: int) -> tuple[float, ConsumerRuntime]:
    await start_at(nc, name, first_seq - 1)
    runtime = ConsumerRuntime(nc, spec(name, "md.sim.BTC-USDT-USDT.ticker"), SumCore(), pub)
    stop = asyncio.Event()
    t = time.perf_counter()
    task = asyncio.create_task(runtime.run(stop))
    while runtime.stats.processed < n:
        await asyncio.sleep(0.005)
    rate = runtime.stats.processed / (time.perf_counter() - t)
    stop.set()
    await task
    return rate, runtime


async def project_replay(nc: nats.NATS, pub: Publisher, n: int, name: str, first_seq: int) -> float:
    """Restart from a checkpoint n inputs behind the ack floor: a pure replay of n inputs."""
    await start_at(nc, name, first_seq - 1)
    runtime = ConsumerRuntime(nc, spec(name, "md.sim.BTC-USDT-USDT.ticker"), SumCore(), pub)
    t = time.perf_counter()
    await runtime.recover()
    took = time.perf_counter() - t
    assert runtime.stats.replayed == n, (runtime.stats, n)
    return n / took


async def latency(nc: nats.NATS, pub: Publisher, samples: int) -> tuple[float, float]:
    core = LatencyCore()
    symbol = "ETH/USDT:USDT"
    runtime = ConsumerRuntime(nc, spec("latency", "md.sim.ETH-USDT-USDT.ticker"), core, pub)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await runtime.caught_up.wait()
    sent: dict[int, int] = {}
    for i, event in enumerate(tickers(samples, start=10_000_000, symbol=symbol)):
        sent[event.ts] = time.perf_counter_ns()
        await pub.send_message(event)
        while event.ts not in core.seen_at:
            await asyncio.sleep(0)
        if i % 50 == 0:
            await asyncio.sleep(0.001)
    stop.set()
    await task
    lat = sorted((core.seen_at[k] - v) / 1000 for k, v in sent.items())
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1]


async def main(n: int, rounds: int) -> None:
    tune_gc()  # as every component does (bus/process.py)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedServer(store_dir=Path(tmp) / "nats", port=ANY_PORT, monitor_port=ANY_PORT)
        server.start()
        try:
            nc = await connect(server.url, attempts=3)
            await streams.apply(nc.jetstream())
            await nc.jetstream().add_stream(StreamConfig(name="RAW", subjects=["raw.>"], duplicate_window=120))
            pub = await Publisher(nc).start()
            ceil_pub, ours_pub, ceil_read, ceil_pull, ours_consume, ours_replay = ([] for _ in range(6))
            for r in range(rounds):  # the machine is noisy: every figure is the median of the rounds
                events = tickers(n, start=r * n)
                ceil_pub.append(await raw_publish(nc, events, f"raw.pub{r}"))
                ours_pub.append(await project_publish(pub, events))
                del events  # a consumer process holds no 100k-event list: keep the GC's view realistic
                gc.collect()
                ceil_read.append(await ordered_read(nc, n, f"raw.pub{r}"))
                ceil_pull.append(await raw_pull(nc, n, f"raw.pub{r}", f"rawpull{r}"))
                first = r * n + 1  # this round's events in MARKET
                rate, _ = await project_consume(nc, pub, n, f"bench{r}", first)
                ours_consume.append(rate)
                ours_replay.append(await project_replay(nc, pub, n, f"bench{r}", first))
            med = statistics.median
            ceiling_pub, ceiling_read, ceiling_pull = med(ceil_pub), med(ceil_read), med(ceil_pull)
            ours_pub_m, ours_consume_m, ours_replay_m = med(ours_pub), med(ours_consume), med(ours_replay)
            p50, p99 = await latency(nc, pub, 2_000)

            results = [
                ("publish with acks", f"{ours_pub_m:,.0f}/s", ours_pub_m / ceiling_pub, f"nats-py publish_async {ceiling_pub:,.0f}/s"),
                (
                    "consumer runtime (acks, outputs, checkpoints)",
                    f"{ours_consume_m:,.0f}/s",
                    ours_consume_m / ceiling_pull,
                    f"nats-py pull fetch+decode+ack {ceiling_pull:,.0f}/s",
                ),
                (
                    "replay from a checkpoint",
                    f"{ours_replay_m:,.0f}/s",
                    ours_replay_m / ceiling_read,
                    f"nats-py ordered consumer+decode {ceiling_read:,.0f}/s",
                ),
                ("publish -> consumer core latency", f"p50 {p50:,.0f} us / p99 {p99:,.0f} us", None, "one event at a time"),
            ]
            print(
                f"bench/bus.py  events={n:,} x {rounds} rounds (medians)  python {platform.python_version()}  {platform.machine()}  "
                f"cpus={__import__('os').cpu_count()}  nats-server {nc._server_info.get('version')}"
            )
            width = max(len(r[0]) for r in results)
            for name, figure, ratio, ceiling in results:
                rtxt = f"{ratio:5.2f}x ceiling" if ratio is not None else " " * 13
                print(f"  {name:<{width}}  {figure:>28}  {rtxt}  ({ceiling})")
            await nc.close()
        finally:
            server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    uvloop.run(main(args.events, args.rounds))
