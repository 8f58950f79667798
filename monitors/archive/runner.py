"""`sqt run archive`: one consumer per stream into Parquet files, as its own process.

Each stream has its own consumer (its own lease, durable consumer, batch and writer), so a slow
or failing stream never holds the others up. `/status` says, per stream, the high-water mark,
the rows and files written and the lag; `/metrics` adds the archive's own figures to the bus's.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from nats.aio.client import Client

from bus.connection import connect
from bus.http import address, maybe_serve
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from monitors.archive import metrics
from monitors.archive.config import ArchiveConfig
from monitors.archive.consumer import ArchiveConsumer
from monitors.archive.writer import StreamWriter

INSTANCE = "main"


def build_archive(nc: Client, cfg: ArchiveConfig, root: Path) -> list[ArchiveConsumer]:
    return [ArchiveConsumer(nc, stream, StreamWriter(root, stream, cfg.compression), cfg) for stream in cfg.streams]


def status_of(consumers: list[ArchiveConsumer], root: Path, started: float) -> dict[str, Any]:
    return {
        "component": "archive",
        "instance": INSTANCE,
        "directory": str(root),
        "streams": {c.stream: c.report() for c in consumers},
        "uptime_s": round(time.time() - started, 1),
    }


def health_of(consumers: list[ArchiveConsumer]) -> dict[str, Any]:
    """Unhealthy while a stream's flushes fail (a full disk, a directory it cannot write): the
    bus's own check only sees stalls, and a failing flush keeps rebuilding a live session."""
    failing = {c.stream: c.failing for c in consumers if c.failing}
    if failing:
        return {"ok": False, "reason": "; ".join(f"{s}: writing failed ({why})" for s, why in failing.items())}
    return {"ok": True}


async def run_consumers(consumers: list[ArchiveConsumer], stop: asyncio.Event) -> None:
    tasks = [asyncio.create_task(c.run(stop), name=f"archive-{c.stream}") for c in consumers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()  # a lease held by another process ends this one with its reason
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in consumers:
            c.writer.close()


async def run_archive(settings: BusSettings, cfg: ArchiveConfig, root: Path, stop: asyncio.Event) -> None:
    async with AsyncExitStack() as owned:
        nc = await connect(settings.nats_url, name="sqt-archive", role="archive")
        owned.push_async_callback(nc.close)
        await prepare(nc, settings.streams())
        root.mkdir(parents=True, exist_ok=True)
        consumers = build_archive(nc, cfg, root)
        started = time.time()

        def status() -> dict[str, Any]:
            return status_of(consumers, root, started)

        http = await maybe_serve(cfg.metrics_port, metrics.REGISTRY, status, health=lambda: health_of(consumers))
        if http is not None:
            owned.push_async_callback(http.cleanup)
        what = f"archive of {', '.join(cfg.streams)} into Parquet at {root}"
        service = await register(nc, "archive", INSTANCE, what, status, http=address(http))
        owned.push_async_callback(service.stop)
        await run_consumers(consumers, stop)
