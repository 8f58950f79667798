"""One channel's loop: take what its outbox allows, leave out what the channel confirmed before,
send with retries, store the confirmation, then report the alerts done.

It runs beside the consumer, never inside it: a channel that waits (429, an outage) holds its
own alerts only; the consumer keeps reading, and the other channel keeps sending.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp

from monitors.alerts import metrics, render
from monitors.alerts.alerts import Alert
from monitors.alerts.channels import Channel
from monitors.alerts.outbox import Backoff, Outbox
from monitors.alerts.store import Store

log = logging.getLogger("alerts")

T = TypeVar("T")
Confirmed = Callable[[str, list[Alert]], None]


class Sender:
    def __init__(
        self,
        channel: Channel,
        outbox: Outbox,
        store: Store,
        session: aiohttp.ClientSession,
        on_confirmed: Confirmed,
        *,
        source: str,
        digest_lines: int,
        backoff: Backoff,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.channel = channel
        self.outbox = outbox
        self.store = store
        self.session = session
        self.on_confirmed = on_confirmed
        self.source = source
        self.digest_lines = digest_lines
        self.backoff = backoff
        self.timeout_s = timeout_s
        self.clock = clock
        self.rand = rand
        self.wake = asyncio.Event()
        self.in_flight = 0
        self.last_error = ""  # redacted
        self.sent_messages = 0
        self.waiting_gauge = metrics.WAITING.labels(channel.name)
        self._arrived: dict[str, float] = {}  # alert key -> when it was queued (for the delay metric)

    @property
    def name(self) -> str:
        return self.channel.name

    def add(self, alert: Alert) -> None:
        now = self.clock()
        self._arrived.setdefault(alert.key, now)
        self.outbox.add(alert, now)
        self.waiting_gauge.inc()
        self.wake.set()

    def waiting(self) -> int:
        return len(self.outbox.waiting) + self.in_flight

    async def run(self) -> None:
        while True:
            batch = self.outbox.take(self.clock())
            if not batch:
                self.wake.clear()
                wait = self.outbox.due(self.clock())
                if wait > 0:
                    try:
                        await asyncio.wait_for(self.wake.wait(), min(wait, 1.0))
                    except asyncio.TimeoutError:
                        pass
                continue
            self.in_flight = len(batch)
            try:
                await self._deliver(batch)
            finally:
                self.in_flight = 0

    async def _deliver(self, batch: list[Alert]) -> None:
        keys = [a.key for a in batch]
        before = await self._persist(lambda: self.store.sent(self.name, keys), "read confirmations")
        fresh = [a for a in batch if a.key not in before]
        if len(fresh) < len(batch):
            metrics.ALREADY_SENT.labels(self.name).inc(len(batch) - len(fresh))
            log.info("%s: %d alert(s) confirmed before a restart; not sent again", self.name, len(batch) - len(fresh))
        if fresh:
            await self._send(render.text(fresh, self.source, self.digest_lines), len(fresh))
            now_ms = int(time.time() * 1000)
            await self._persist(lambda: self.store.confirm(self.name, [a.key for a in fresh], now_ms), "store confirmations")
        now = self.clock()
        for alert in fresh:
            metrics.DELIVERED.labels(self.name, alert.kind).inc()
            metrics.DELIVERY_SECONDS.labels(self.name).observe(now - self._arrived.get(alert.key, now))
        for key in keys:
            self._arrived.pop(key, None)
        self.waiting_gauge.dec(len(batch))
        self.on_confirmed(self.name, batch)

    async def _send(self, text: str, count: int) -> None:
        """Send until the channel accepts it (the token of the first attempt is already taken)."""
        attempt = 0
        while True:
            began = self.clock()
            outcome = await self.channel.send(self.session, text, self.timeout_s)
            metrics.REQUEST_SECONDS.labels(self.name).observe(self.clock() - began)
            metrics.ATTEMPTS.labels(self.name, outcome.result).inc()
            if outcome.result == "ok":
                self.sent_messages += 1
                self.last_error = ""
                metrics.MESSAGES.labels(self.name, "single" if count == 1 else "digest").inc()
                log.info("%s: sent %s", self.name, "1 alert" if count == 1 else f"a digest of {count} alerts")
                return
            attempt += 1
            self.last_error = f"{outcome.result}: {outcome.detail}"
            if outcome.result == "rate_limited":
                self.outbox.rate_limited(self.clock(), outcome.retry_after)
                log.warning("%s: rate limited; retrying in %.1f s as told", self.name, outcome.retry_after)
            else:
                delay = self.backoff.delay(attempt, self.rand)
                level = logging.ERROR if outcome.result == "permanent" else logging.WARNING
                log.log(level, "%s: not sent (%s); attempt %d, retrying in %.1f s", self.name, self.last_error, attempt, delay)
                await asyncio.sleep(delay)
            while (wait := self.outbox.attempt(self.clock())) > 0:
                await asyncio.sleep(wait)

    async def _persist(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """A bucket call, retried while NATS is unreachable (the alert waits; it is never dropped)."""
        attempt = 0
        while True:
            try:
                return await call()
            except Exception as exc:  # noqa: BLE001 - nats, timeouts and OS errors share no narrower base
                attempt += 1
                delay = self.backoff.delay(attempt, self.rand)
                log.warning("%s: could not %s (%s: %s); retrying in %.1f s", self.name, what, type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
