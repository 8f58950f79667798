"""`sqt run executor`: the executor for one venue account, as its own process."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nats.aio.client import Client

from bus.connection import connect
from bus.consumer import ConsumerSpec
from bus.contract import Inbound
from bus.errors import RetryLater
from bus.handler import HandlerRuntime
from bus.http import address, maybe_serve
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from executors import metrics
from executors.breakers import BreakerView
from executors.config import ExecutorConfig
from executors.executor import VERB, Executor
from schemas import subjects
from schemas.account import OrderUpdate
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


class Observed:
    """The executor as the runtime sees it, measured from outside: decision-to-answer time, the
    order events it reports, and the batches it leaves for later (metrics only; it decides nothing)."""

    def __init__(self, executor: Executor, venue: str) -> None:
        self.executor = executor
        self.venue = venue
        self.latency = {verb: metrics.DECISION_TO_ANSWER.labels(verb) for verb in set(VERB.values())}

    def key(self, inbound: Inbound[Command]) -> str:
        return self.executor.key(inbound)

    def exclusive(self, inbound: Inbound[Command]) -> bool:
        return self.executor.exclusive(inbound)

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        return self._reported(self.executor.on_invalid(seq, subject, data, reason))

    async def handle(self, inbound: Inbound[Command]) -> Sequence[Any]:
        try:
            outputs = await self.executor.handle(inbound)
        except RetryLater:
            metrics.RETRY_LATER.inc()
            raise
        ts = getattr(inbound.event, "ts", 0)
        if ts:
            self.latency[VERB[type(inbound.event)]].observe(max(0.0, time.time() - ts / 1000))
        return self._reported(outputs)

    def _reported(self, outputs: Sequence[Any]) -> Sequence[Any]:
        for event in outputs:
            if isinstance(event, OrderUpdate):
                metrics.ORDER_REPORTS.labels(self.venue, event.status).inc()
                if event.filled:
                    metrics.REPORTED_FILLED.labels(self.venue, event.symbol).inc()
        return outputs


def build_executor(nc: Client, cfg: ExecutorConfig, venue: Venue, breakers: BreakerView) -> HandlerRuntime[Command]:
    """The executor's consumer, ready to run."""
    return HandlerRuntime(nc, executor_spec(cfg), Observed(Executor(venue, breakers, cfg, throttler(cfg)), cfg.venue))


async def run_executor(settings: BusSettings, cfg: ExecutorConfig, stop: asyncio.Event) -> None:
    nc = await connect(settings.nats_url, name=f"sqt-executor-{cfg.venue}-{cfg.account}", role="executor")
    await prepare(nc, settings.streams())
    venue = open_venue(nc, cfg.venue, cfg.account, settings, timeout=cfg.request_timeout)
    breakers = await BreakerView(nc, heartbeat_ms=cfg.risk_heartbeat_ms).start()
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

    http = await maybe_serve(cfg.metrics_port, metrics.REGISTRY, status)
    service = await register(
        nc,
        "executor",
        f"{cfg.venue}-{cfg.account}",
        "order executor: commands -> venue calls",
        status,
        http=address(http),
    )
    try:
        await runtime.run(stop)
    finally:
        await service.stop()
        await breakers.stop()
        if http is not None:
            await http.cleanup()
        await venue.close()
        await nc.close()
