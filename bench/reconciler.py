"""The reconciler's figures: one full pass over 1,000 open orders and 50 positions.

    .venv/bin/python bench/reconciler.py [--orders 1000] [--positions 50] [--passes 20]

A nats-server, the simulated exchange (lock-step clock, 50 perpetual markets) and the
reconciler's record (folded from ACCOUNT), all in this process. The account holds `--orders`
resting limit orders and a position in each of `--positions` markets, every one of them in our
record, so a pass finds the account in sync (the common case, and the one that runs every 2 s).
Printed: a pass's time (median, p90) and the venue calls it made, next to the raw ceiling
measured in the same run: the same three venue calls alone (clock, open orders, positions),
without the record barrier, the comparison or the reports. The ratio is the reconciler's own
overhead; absolute times drift 2-3x on these machines, the ratio much less.
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

from bus import streams
from bus.connection import connect
from bus.publisher import Publisher
from monitors.reconciler import metrics
from monitors.reconciler.config import ReconcilerConfig
from monitors.reconciler.runner import build_reconciler
from testkit.bus import eventually, start_server
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue
from venues.sim.config import SimConfig, SimMarket
from venues.sim.service import SimService


def markets(n: int) -> list[SimMarket]:
    return [
        SimMarket(
            symbol=f"C{i}/USDT:USDT",
            tick_size=Decimal("0.1"),
            lot_size=Decimal("0.001"),
            min_amount=Decimal("0.001"),
            start_price=Decimal(1000),
            tick_volume=Decimal(1),
            volatility=Decimal(0),
        )
        for i in range(n)
    ]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp))
        try:
            await run(server.url, args)
        finally:
            server.stop()


async def run(url: str, args: argparse.Namespace) -> None:
    nc = await connect(url, name="bench-reconciler", attempts=5)
    await streams.apply(nc.jetstream())
    stop = asyncio.Event()
    n_markets = max(args.positions, 1)
    config = SimConfig(
        clock="lockstep",
        start_time_ms=1_700_000_000_000,
        history_minutes=1,
        markets=markets(n_markets),
        accounts={"main": {"USDT": Decimal(10**9)}},
        orders_kept=args.orders + 100,
    )
    sim = SimService(nc, config)
    sim_task = asyncio.create_task(sim.run(stop))
    await eventually(lambda: sim.service is not None, timeout=60, what="the simulated exchange")
    venue = SimVenue(nc, timeout=30)
    await venue.step(1)
    symbols = [m.symbol for m in config.markets]
    for i in range(args.positions):  # a taker buy in each market: a position each
        await venue.create_order(
            OrderRequest(symbol=symbols[i], client_order_id=f"pos{i}", side="buy", order_type="market", amount=Decimal("0.01"))
        )
    for i in range(args.orders):  # resting far below the price: they never fill
        request = OrderRequest(
            symbol=symbols[i % n_markets], client_order_id=f"rest{i}", side="buy", amount=Decimal("0.02"), price=Decimal(500)
        )
        await venue.create_order(request)

    publisher = await Publisher(nc).start()
    cfg = ReconcilerConfig(grace_ms=0, record_wait_ms=60_000)
    parts = build_reconciler(nc, cfg, venue, publisher)
    record_task = asyncio.create_task(parts.record.run(stop))
    await asyncio.wait_for(parts.record.caught_up.wait(), 120)
    reconciler = parts.reconciler

    def calls() -> float:
        return sum(
            metrics.VENUE_CALLS.labels(cfg.venue, m)._value.get() for m in ("now_ms", "fetch_open_orders", "fetch_positions", "fetch_order")
        )

    first = await reconciler.check("bench")
    assert first.in_sync and not first.error, (first.findings, first.error)
    passes, raw = [], []
    before = calls()
    for _ in range(args.passes):
        t0 = time.perf_counter()
        await venue.now_ms(fresh=True)
        orders = await venue.fetch_open_orders()
        positions = await venue.fetch_positions()
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        outcome = await reconciler.check("bench")
        passes.append(time.perf_counter() - t0)
        assert not outcome.findings or outcome.findings[0].kind == "in_sync"
    per_pass = (calls() - before) / args.passes
    assert len(orders) == args.orders and len(positions) == args.positions, (len(orders), len(positions))

    def ms(xs: list[float], q: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000

    med, rmed = statistics.median(passes) * 1000, statistics.median(raw) * 1000
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"account: {args.orders} open orders, {args.positions} positions, all in our record ({len(parts.record.state.orders)} orders)")
    print(f"full pass:   median {med:.1f} ms, p90 {ms(passes, 0.9):.1f} ms, {per_pass:.0f} venue calls per pass ({args.passes} passes)")
    print(f"raw ceiling: median {rmed:.1f} ms, p90 {ms(raw, 0.9):.1f} ms (the same 3 venue calls alone)")
    print(f"ratio: {med / rmed:.2f}x the bare venue calls")
    stop.set()
    await asyncio.gather(record_task, sim_task, return_exceptions=True)
    await publisher.close()
    await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--positions", type=int, default=50)
    parser.add_argument("--passes", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
