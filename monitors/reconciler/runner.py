"""`sqt run reconciler`: one reconciler per (venue, account), as its own process.

Three parts in one process, each with its own lease (ADR 0010):
- the record: a pure core (`RecordCore`) folding this account's order, fill, position and gap
  events straight from ACCOUNT under the consumer runtime, with checkpoints (ADR 0014 says why
  not a sourced stream or a read-back on every start);
- the gap watch: a handler over MARKET's gap markers of this venue that asks for a check at once;
- the passes (`Reconciler`), against the venue opened like the executor opens it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.connection import connect
from bus.consumer import ConsumerSpec
from bus.contract import Inbound
from bus.handler import HandlerRuntime
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.runtime import ConsumerRuntime
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from monitors.reconciler import metrics
from monitors.reconciler.config import ReconcilerConfig
from monitors.reconciler.reconciler import Reconciler
from monitors.reconciler.record import Record, RecordCore, RecordInput
from schemas import subjects
from schemas.market import GapMarker
from venues.factory import open_venue
from venues.protocol import Venue

log = logging.getLogger("reconciler")


def record_spec(cfg: ReconcilerConfig) -> ConsumerSpec:
    v, a = cfg.venue, cfg.account
    return ConsumerSpec(
        name=f"reconciler-{cfg.name}",
        stream="ACCOUNT",
        input_type=RecordInput,
        state_type=Record,
        subjects=tuple(subjects.acct(v, a, "*", kind) for kind in ("order", "fill", "position", "gap")),
        outputs=(),  # the record publishes nothing; the passes do
        checkpoint_every=2_000,
        checkpoint_interval=2.0,
    )


def gaps_spec(cfg: ReconcilerConfig) -> ConsumerSpec:
    return ConsumerSpec(
        name=f"reconciler-{cfg.name}-gaps",
        stream="MARKET",
        input_type=GapMarker,
        subjects=(subjects.md(cfg.venue, "*", "gap"),),
        outputs=(),
        batch=64,
        checkpoint_interval=1.0,
    )


class GapWatch:
    """Handler[GapMarker]: a market data gap of this venue asks for a check at once. Gaps stored
    before this process started do not (the first pass covers them)."""

    def __init__(self, reconciler: Reconciler, started_ns: int) -> None:
        self.reconciler = reconciler
        self.started_ns = started_ns
        self.seen = 0

    def key(self, inbound: Inbound[GapMarker]) -> str:
        return "gap"

    def exclusive(self, inbound: Inbound[GapMarker]) -> bool:
        return False

    async def handle(self, inbound: Inbound[GapMarker]) -> Sequence[Any]:
        self.seen += 1
        if inbound.stored_ns >= self.started_ns:
            self.reconciler.trigger("gap")
        return []

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        return []


@dataclass
class Parts:
    record: ConsumerRuntime[Record, RecordInput]
    gaps: HandlerRuntime[GapMarker]
    reconciler: Reconciler


def build_reconciler(nc: Client, cfg: ReconcilerConfig, venue: Venue, publisher: Publisher, **injected: Any) -> Parts:
    """The record, the gap watch and the passes, wired; nothing runs yet."""
    triggers_seen: list[int] = []

    def on_state(state: Record, _seq: int) -> None:
        # An `unknown` outcome or an account gap folded into the record asks for a check at once
        # (the first call, after recovery, only notes where the count stands).
        if triggers_seen and state.triggers != triggers_seen[0]:
            reconciler.trigger("account")
        triggers_seen[:] = [state.triggers]

    record = ConsumerRuntime(nc, record_spec(cfg), RecordCore(cfg.keep_ended), publisher, on_state=on_state)
    js = nc.jetstream()

    async def caught_up() -> bool:
        """True once the record holds every event of ours ACCOUNT stored before this call."""
        try:
            info = await js.consumer_info("ACCOUNT", record.spec.name)
        except NotFoundError:
            return False  # the runtime is rebuilding its session
        if info.num_pending:
            return False
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        return record.seq >= delivered

    reconciler = Reconciler(venue, cfg, publisher, lambda: record.state, caught_up, **injected)
    gaps = HandlerRuntime(nc, gaps_spec(cfg), GapWatch(reconciler, time.time_ns()), publisher)
    return Parts(record, gaps, reconciler)


async def run_parts(parts: Parts, stop: asyncio.Event) -> None:
    """Run the record and the gap watch; start the passes once the record has caught up."""

    async def passes() -> None:
        waiter = asyncio.ensure_future(parts.record.caught_up.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        if not stop.is_set():
            await parts.reconciler.run(stop)

    tasks = [
        asyncio.create_task(parts.record.run(stop), name="reconciler-record"),
        asyncio.create_task(parts.gaps.run(stop), name="reconciler-gaps"),
        asyncio.create_task(passes(), name="reconciler-passes"),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a lease lost or held ends the process with its reason
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_reconciler(settings: BusSettings, cfg: ReconcilerConfig, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as owned:
        nc = await connect(settings.nats_url, name=f"sqt-reconciler-{cfg.name}", role="reconciler")
        owned.push_async_callback(nc.close)
        await prepare(nc, settings.streams())
        venue = open_venue(nc, cfg.venue, cfg.account, settings, timeout=cfg.request_timeout)
        owned.push_async_callback(venue.close)
        publisher = await Publisher(nc).start()
        owned.push_async_callback(publisher.close)
        parts = build_reconciler(nc, cfg, venue, publisher)
        started = time.time()

        def status() -> dict[str, Any]:
            record = parts.record.state
            return {
                "component": "reconciler",
                "instance": cfg.name,
                "venue": cfg.venue,
                "account": cfg.account,
                "policy": cfg.policy,
                **parts.reconciler.status(),
                "record_orders": len(record.orders),
                "record_positions": len(record.positions),
                "record_seq": parts.record.seq,
                "dead_lettered": parts.record.stats.dead_lettered + parts.gaps.stats.dead_lettered,
                "uptime_s": round(time.time() - started, 1),
            }

        http = await maybe_serve(cfg.metrics_port, metrics.REGISTRY, status)
        if http is not None:
            owned.push_async_callback(http.cleanup)
        what = f"reconciler of {cfg.venue}/{cfg.account}: our record vs the venue"
        service = await register(nc, "reconciler", cfg.name, what, status, http=address(http))
        owned.push_async_callback(service.stop)
        await run_parts(parts, stop)
