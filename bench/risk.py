"""The risk monitor's figures: how fast a tripping event becomes a stored breaker, and how fast
the scope's resting orders are gone from the exchange.

    .venv/bin/python bench/risk.py [--samples 50] [--orders 20]

Real processes (`sqt run sim|executor|risk`, the exchange on a lock-step clock so only our
tickers move prices) on one nats-server. Each sample rests `--orders` orders at the exchange,
publishes a 10% crash ticker (the flash-crash breaker is configured to halt), and reads the
server's own store times (after a pre-roll of calm tickers, as a live feed gives them; the
first crash after start is shown apart: on a cold feed it took ~100 ms, on a live one ~1 ms):
- event -> breaker stored: the crash ticker stored in MARKET to the breaker's value stored in
  the `breakers` bucket (sourcing into the monitor's input stream included);
- event -> orders cancelled: the same ticker to the last of the resting orders' `canceled`
  events stored in ACCOUNT (risk's cancel-all, the executor, the exchange).
Ceilings in the same run: a bare nats-py push consumer that writes a bucket key for each ticker
(the least any monitor could do), and a cancel-all command published straight to COMMAND (the
executor's and the exchange's share, without the monitor). Between samples the price recovers,
the window passes and an operator resets the breaker.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from decimal import Decimal
from typing import Any

import msgspec
import nats
import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy

from bus.connection import connect
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.streams import BREAKERS, STREAMS, apply
from schemas import ids, subjects
from schemas.codec import decode
from schemas.commands import CancelAll
from schemas.market import Ticker
from schemas.ops import BreakerChange, ControlCommand
from testkit.bus import eventually
from testkit.chaos import Cluster
from venues.errors import Transient
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue

SYMBOL = "BTC/USDT:USDT"
SCOPE = "symbol.sim.BTC-USDT-USDT"
CONFIG = f"""
data_dir = "{{data}}"
log_level = "INFO"

[sim]
clock = "lockstep"
history_minutes = 5

[executor]
rate_limit = 10000         # measure the pipeline, not the rate limiter
burst = 10000

[risk]
instance = "bench"
[[risk.watch]]
venue = "sim"
account = "main"
symbols = ["{SYMBOL}"]
[risk.feed_stale]
enabled = false
[risk.flash_crash]
move = "0.05"
window_ms = 300
state = "halted"           # so the scope's orders are cancelled
[risk.latency]
enabled = false
[risk.liquidation]
enabled = false
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ticker(price: Decimal) -> Ticker:
    now = int(time.time() * 1000)
    return Ticker(
        id=ids.ticker_id("sim", SYMBOL, now), venue="sim", symbol=SYMBOL, last=price, bid=price - 1, ask=price + 1, ts=now, ts_local=now
    )


async def until(predicate: Any, timeout: float = 30.0) -> None:
    try:
        await eventually(predicate, timeout=timeout, interval=0.005, what="a benchmark condition")
    except AssertionError as exc:
        raise TimeoutError(str(exc)) from None


class Bench:
    def __init__(self, nc: nats.NATS, orders: int) -> None:
        self.nc = nc
        self.orders = orders
        self.venue = SimVenue(nc, timeout=10)
        self.canceled: dict[str, int] = {}  # client id -> when its canceled event reached us (unused: store times are read later)
        self.state = "ok"

    async def start(self) -> None:
        self.pub = await Publisher(self.nc).start()
        self.kv = await self.nc.jetstream().key_value(BREAKERS.name)

        async def on_order(msg: Any) -> None:
            ev = decode(msg.data)
            if ev.status == "canceled":
                self.canceled[ev.client_order_id] = 1

        await self.nc.subscribe(subjects.acct("sim", "main", SYMBOL, "order"), cb=on_order)

    async def rest(self, tag: str, price: Decimal) -> list[str]:
        cids = [f"{tag}x{k}" for k in range(self.orders)]
        for k, cid in enumerate(cids):
            request = OrderRequest(symbol=SYMBOL, client_order_id=cid, side="buy", amount=Decimal("0.001"),
                                   price=(price * Decimal("0.8")).quantize(Decimal(1)) - k)  # fmt: skip
            await self.venue.create_order(request)
        return cids

    async def bucket(self) -> str:
        try:
            entry = await self.kv.get(SCOPE)
        except Exception:  # noqa: BLE001 - not written yet
            return "ok"
        return msgspec.json.decode(entry.value or b"{}", type=BreakerChange).state

    async def control(self, action: str) -> None:
        fields: dict[str, Any] = dict(
            target_component="risk", target_instance="bench", action=action, operator="bench", ts=int(time.time() * 1000)
        )
        await self.pub.publish(ControlCommand(id=ids.content_id("ctl", fields), **fields))

    async def sample(self, i: int, price: Decimal) -> tuple[int, list[str], int]:
        """One crash: (the crash ticker's MARKET seq, the orders that rested, the breaker's store time)."""
        cids = await self.rest(f"s{i}", price)
        await self.pub.publish(ticker(price))
        await asyncio.sleep(0.05)
        ack = await self.pub.publish(ticker(price * Decimal("0.9")))
        await until(lambda: all(c in self.canceled for c in cids))
        await until(lambda: self._is("halted"))
        revision = (await self.kv.get(SCOPE)).revision or 0
        stored_ns = 0
        async for batch in read_stream(self.nc, f"KV_{BREAKERS.name}", start_seq=revision, end_seq=revision):
            stored_ns = batch[0].ts_ns
        await asyncio.sleep(0.35)  # the crash leaves the window
        await self.pub.publish(ticker(price * Decimal("0.9")))
        await self.pub.publish(ticker(price))  # the price recovers: that is another 11% move
        await asyncio.sleep(0.35)
        await self.pub.publish(ticker(price))
        for _attempt in range(20):  # OPS and MARKET are sourced separately: the reset may overtake the last ticker
            await self.control("reset")
            try:
                await until(lambda: self._is("ok"), timeout=0.5)
                break
            except TimeoutError:
                continue
        else:
            raise RuntimeError(f"sample {i}: the breaker did not close: {(await self.kv.get(SCOPE)).value!r}")
        return ack.seq, cids, stored_ns

    async def _is(self, state: str) -> bool:
        return await self.bucket() == state

    async def direct(self, i: int, price: Decimal) -> tuple[int, list[str]]:
        """The ceiling for cancelling: a cancel-all command straight to COMMAND."""
        cids = await self.rest(f"d{i}", price)
        now = int(time.time() * 1000)
        fields: dict[str, Any] = dict(venue="sim", account="main", symbol=SYMBOL, origin="bench/direct", ts=now)
        ack = await self.pub.publish(CancelAll(id=ids.content_id("direct", {**fields, "i": i}), **fields))
        await until(lambda: all(c in self.canceled for c in cids))
        return ack.seq, cids


async def raw_ceiling(nc: nats.NATS, samples: int) -> list[float]:
    """A bare nats-py push consumer that writes one bucket key per ticker: store to stored, ms."""
    js = nc.jetstream()
    kv = await js.key_value(BREAKERS.name)
    subject = subjects.md("sim", "RAW/USDT", "ticker")
    done: asyncio.Queue[int] = asyncio.Queue()

    async def cb(msg: Any) -> None:
        n = done.qsize() + len(pairs)  # a key per message: the bucket keeps 10 values of each
        await done.put(await kv.put(f"raw.{n}", msg.data))  # the revision is the bucket stream's sequence

    pairs: list[tuple[int, int]] = []
    sub = await js.subscribe(subject, cb=cb, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW))
    for _ in range(samples):
        now = int(time.time() * 1000)
        t = Ticker(id=f"raw{now}{_}", venue="sim", symbol="RAW/USDT", last=Decimal(1), ts=now, ts_local=now)
        ack = await js.publish(subject, msgspec.json.encode(t))
        pairs.append((ack.seq, await asyncio.wait_for(done.get(), 10)))
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    market = await stored_times(nc, "MARKET", (subject,))
    bucket = await stored_times(nc, f"KV_{BREAKERS.name}", ("$KV.breakers.raw.*",))
    return [(bucket[b] - market[m]) / 1e6 for m, b in pairs]


async def stored_times(nc: nats.NATS, stream: str, subjects_: tuple[str, ...]) -> dict[int, int]:
    out: dict[int, int] = {}
    async for batch in read_stream(nc, stream, subjects=subjects_):
        for m in batch:
            out[m.seq] = m.ts_ns
    return out


async def cancel_times(nc: nats.NATS) -> dict[str, int]:
    """client id -> store time of its canceled event."""
    out: dict[str, int] = {}
    async for batch in read_stream(nc, "ACCOUNT", subjects=(subjects.acct("sim", "main", SYMBOL, "order"),)):
        for m in batch:
            ev = decode(m.data)
            if ev.status == "canceled":
                out[ev.client_order_id] = m.ts_ns
    return out


async def main(samples: int, orders: int, preroll: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), CONFIG.format(data=Path(tmp) / "data"), instance="bench")
        with cluster:
            for name in ("sim", "executor", "risk"):
                cluster.start(name)
            nc = await connect(cluster.server.url, attempts=10)
            await apply(nc.jetstream(), STREAMS)
            bench = Bench(nc, orders)
            await bench.start()
            while True:
                try:
                    await bench.venue.step(1)
                    price = (await bench.venue.fetch_ohlcv(SYMBOL, limit=1))[-1].close
                    break
                except Transient:
                    await asyncio.sleep(0.2)
            await until(lambda: _risk_ready(nc), timeout=60)
            for _ in range(preroll):  # calm tickers first, as a live feed gives them
                await bench.pub.publish(ticker(price))
                await asyncio.sleep(0.1)
            crashes = [await bench.sample(i, price) for i in range(samples + 1)]
            directs = [await bench.direct(i, price) for i in range(samples)]
            raw = await raw_ceiling(nc, samples)
            market = await stored_times(nc, "MARKET", (subjects.md("sim", SYMBOL, "ticker"),))
            command = await stored_times(nc, "COMMAND", (subjects.cmd("sim", "main", SYMBOL, "cancel_all"),))
            cancels = await cancel_times(nc)
            await nc.close()
    to_breaker, to_cancel, direct = [], [], []
    for seq, cids, halted in crashes:
        to_breaker.append((halted - market[seq]) / 1e6)
        to_cancel.append((max(cancels[c] for c in cids) - market[seq]) / 1e6)
    for seq, cids in directs:
        direct.append((max(cancels[c] for c in cids) - command[seq]) / 1e6)
    first = (to_breaker.pop(0), to_cancel.pop(0))  # the monitor's first trip since it started: shown apart
    print(
        f"bench/risk.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  {samples} samples, {orders} resting orders"
    )
    line = "  {:<44} p50 {:7.2f} ms  p99 {:7.2f} ms"
    print(line.format("crash ticker stored -> breaker stored", statistics.median(to_breaker), pct(to_breaker, 0.99)))
    print(line.format("  ceiling: bare consumer ticker -> bucket", statistics.median(raw), pct(raw, 0.99)))
    print(f"  {'':<44} ratio p50 {statistics.median(to_breaker) / statistics.median(raw):.2f}x")
    print(line.format(f"crash ticker stored -> {orders} orders cancelled", statistics.median(to_cancel), pct(to_cancel, 0.99)))
    print(line.format("  ceiling: cancel-all command -> cancelled", statistics.median(direct), pct(direct, 0.99)))
    print(f"  {'':<44} ratio p50 {statistics.median(to_cancel) / statistics.median(direct):.2f}x")
    print(f"  the first trip after the monitor started (not in the figures above): breaker {first[0]:.2f} ms, cancelled {first[1]:.2f} ms")


async def _risk_ready(nc: nats.NATS) -> bool:
    try:
        info = await nc.jetstream().consumer_info("IN_RISK_BENCH", "risk-bench")
    except Exception:  # noqa: BLE001 - not yet
        return False
    return info.num_pending == 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--orders", type=int, default=20)
    p.add_argument("--preroll", type=int, default=20, help="calm tickers (every 100 ms) before the first crash; 0 = a cold feed")
    a = p.parse_args()
    uvloop.run(main(a.samples, a.orders, a.preroll))
