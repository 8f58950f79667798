"""`sqt run alerts`: the alerts monitor as its own process.

SQT_SLACK_WEBHOOK_URL=... SQT_TELEGRAM_BOT_TOKEN=... SQT_TELEGRAM_CHAT_ID=... sqt run alerts
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
from nats.aio.client import Client

from bus.connection import connect
from bus.http import address, maybe_serve
from bus.publisher import Publisher
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from monitors.alerts import metrics
from monitors.alerts.channels import SECRET_VARIABLES, Channel, from_env
from monitors.alerts.config import AlertsConfig
from monitors.alerts.consumer import AlertsConsumer, alerts_spec
from monitors.alerts.outbox import Backoff, Outbox, TokenBucket
from monitors.alerts.pinger import Pinger
from monitors.alerts.sender import Sender
from monitors.alerts.store import Store

log = logging.getLogger("alerts")


class AlertsMonitor:
    """The consumer, one sender per configured channel and the pinger, wired together."""

    def __init__(
        self, nc: Client, cfg: AlertsConfig, channels: list[Channel], publisher: Publisher, store: Store, session: aiohttp.ClientSession
    ) -> None:
        self.cfg = cfg
        self.consumer = AlertsConsumer(nc, alerts_spec(cfg), cfg, publisher)
        self.senders: list[Sender] = []
        now = time.monotonic()
        for channel in channels:
            rate = (cfg.slack_per_minute, cfg.slack_burst) if channel.name == "slack" else (cfg.telegram_per_minute, cfg.telegram_burst)
            sender = Sender(
                channel,
                Outbox(TokenBucket(rate[0], rate[1], now), cfg.group_ms / 1000, cfg.digest_max),
                store,
                session,
                self.consumer.confirmed,
                source=f"sqt alerts {cfg.instance}",
                digest_lines=cfg.digest_lines,
                backoff=Backoff(cfg.backoff_ms / 1000, cfg.backoff_max_ms / 1000),
                timeout_s=cfg.request_timeout_ms / 1000,
            )
            self.senders.append(sender)
            self.consumer.attach(sender)
        self.pinger = Pinger(nc, publisher, store, cfg)
        self.started = time.time()

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(s.run(), name=f"alerts-{s.name}") for s in self.senders]
        tasks.append(asyncio.create_task(self.pinger.run(stop, self.consumer.caught_up), name="alerts-pinger"))
        try:
            await self.consumer.run(stop)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """What /status, `sqt status` and the micro service's stats show (never a secret)."""
        s = self.consumer.stats
        return {
            "component": "alerts",
            "instance": self.cfg.instance,
            "channels": {
                x.name: {"waiting": x.waiting(), "messages_sent": x.sent_messages, "last_error": x.last_error} for x in self.senders
            },
            "alerts": self.consumer.alerted,
            "inputs_waiting": self.consumer.waiting(),
            "processed": s.processed,
            "dead_lettered": s.dead_lettered,
            "last_seq": s.last_seq,
            "lag": s.lag,
            "sessions": s.sessions,
            "last_error": s.last_error,
            "components": dict(self.pinger.presence.states()),
            "uptime_s": round(time.time() - self.started, 1),
        }


async def run_alerts(settings: BusSettings, cfg: AlertsConfig, stop: asyncio.Event, environ: Mapping[str, str] | None = None) -> None:
    channels = from_env(os.environ if environ is None else environ, cfg.telegram_api)  # ChannelConfigError: exit 2
    if channels:
        log.info("alerts go to %s", ", ".join(c.name for c in channels))
    else:
        log.warning(
            "NO ALERT CHANNEL CONFIGURED (set %s, or %s and %s): alerts are only logged here",
            *SECRET_VARIABLES,
        )
    async with AsyncExitStack() as stack:
        nc = await connect(settings.nats_url, name=f"sqt-alerts-{cfg.instance}", role="alerts")
        stack.push_async_callback(nc.close)
        await prepare(nc, settings.streams())
        publisher = await Publisher(nc).start()
        stack.push_async_callback(publisher.close)
        store = await Store(nc, publisher, cfg.confirm_ttl_s).open()
        session = await stack.enter_async_context(aiohttp.ClientSession())
        monitor = AlertsMonitor(nc, cfg, channels, publisher, store, session)
        http = await maybe_serve(cfg.metrics_port, metrics.REGISTRY, monitor.status)
        if http is not None:
            stack.push_async_callback(http.cleanup)
        what = "alerts: breakers, findings, gaps, dead letters, unknown orders -> Slack, Telegram"
        service = await register(nc, "alerts", cfg.instance, what, monitor.status, http=address(http))
        stack.push_async_callback(service.stop)
        await monitor.run(stop)
