"""`sqt run executor`: the executor for one venue account, as its own process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client

from bus.connection import connect
from bus.consumer import ConsumerSpec
from bus.handler import HandlerRuntime
from bus.http import serve
from bus.service import register
from bus.settings import BusSettings
from bus.streams import apply
from executors import metrics
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.executor import Executor
from schemas import subjects
from schemas.commands import Command
from venues.factory import open_venue
from venues.protocol import Venue

log = logging.getLogger("executor")


def executor_spec(cfg: ExecutorConfig) -> ConsumerSpec:
    return ConsumerSpec(
        name=f"executor-{cfg.venue}-{cfg.account}",
        stream="COMMAND",
        input_type=Command,
        subjects=(subjects.cmd(cfg.venue, cfg.account, "*", "*"),),
        outputs=(subjects.acct(cfg.venue, cfg.account, "*", "*"),),
        batch=64,
        checkpoint_interval=1.0,  # its position only: a lost consumer re-handles at most a second
    )


def throttler(cfg: ExecutorConfig) -> Callable[[], Awaitable[None]]:
    """ccxt's leaky-bucket rate limiter, full at start so a burst goes out at once."""
    from ccxt.async_support.base.throttler import Throttler  # ccxt is heavy to import: only here

    bucket = Throttler({"refillRate": cfg.rate_limit / 1000, "capacity": float(cfg.burst), "tokens": float(cfg.burst), "delay": 0.001})

    async def take() -> None:
        await bucket(1)

    return take


def build_executor(nc: Client, cfg: ExecutorConfig, venue: Venue, breakers: BreakerView) -> HandlerRuntime[Command]:
    """The executor's consumer, ready to run."""
    return HandlerRuntime(nc, executor_spec(cfg), Executor(venue, breakers, cfg, throttler(cfg)))


async def run_executor(settings: BusSettings, cfg: ExecutorConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-executor-{cfg.venue}-{cfg.account}")
    await apply(nc.jetstream(), settings.streams())
    venue = open_venue(nc, cfg.venue, cfg.account, sim_venue=settings.sim_venue, timeout=cfg.request_timeout)
    breakers = await BreakerView(nc).start()
    runtime = build_executor(nc, cfg, venue, breakers)
    started = time.time()

    def status() -> dict[str, Any]:
        s = runtime.stats
        return {
            "component": "executor",
            "venue": cfg.venue,
            "account": cfg.account,
            "processed": s.processed,
            "dead_lettered": s.dead_lettered,
            "outputs": s.outputs,
            "duplicates": s.duplicates,
            "last_seq": s.last_seq,
            "lag": s.lag,
            "sessions": s.sessions,
            "last_error": s.last_error,
            "uptime_s": round(time.time() - started, 1),
        }

    service = await register(nc, "executor", f"{cfg.venue}-{cfg.account}", "order executor: commands -> venue calls", status)
    http = await serve(cfg.metrics_port, metrics.REGISTRY, status) if cfg.metrics_port else None
    try:
        await runtime.run(stop)
    finally:
        await service.stop()
        await breakers.stop()
        if http is not None:
            await http.cleanup()
        await venue.close()
        await nc.close()
