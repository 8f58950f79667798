"""Handing a publisher's events to the bus: pipelined, acknowledged off the hot path, retried."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from bus.errors import PublishTimeout
from bus.publisher import PubAck, Publisher
from publishers.ccxt import metrics

log = logging.getLogger("publisher.ccxt")


class Outbox:
    """Hands events to the bus without waiting for each ack on the hot path.

    Every event goes out at once (pipelined, in order); a drainer waits for the acks in order and
    publishes again, with the same id, what timed out. What JetStream refuses outright, or what
    never gets an ack, is counted and logged: a publisher cannot hold market data back for long.
    """

    def __init__(self, publisher: Publisher, venue: str, *, retries: int = 3) -> None:
        self.publisher = publisher
        self.venue = venue
        self.retries = retries
        self.pending: deque[tuple[Any, asyncio.Future[PubAck], int]] = deque()
        self._more = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self._drainer: asyncio.Task[None] | None = None
        self._kinds: dict[type, Any] = {}
        self.failed = 0

    def start(self) -> None:
        self._drainer = asyncio.create_task(self._drain(), name=f"publisher-{self.venue}-acks")

    async def put(self, events: Sequence[Any]) -> None:
        for event in events:
            fut = await self.publisher.send_message(event)
            self.pending.append((event, fut, 0))
            counter = self._kinds.get(type(event))
            if counter is None:
                counter = self._kinds[type(event)] = metrics.EVENTS.labels(self.venue, type(event).__name__.lower())
            counter.inc()
        if events:
            self._empty.clear()
            self._more.set()

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event handed over so far is acknowledged (or given up)."""
        if self.pending:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._empty.wait(), timeout)

    async def close(self) -> None:
        await self.flush(5.0)
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)

    async def _drain(self) -> None:
        while True:
            if not self.pending:
                self._empty.set()
                self._more.clear()
                await self._more.wait()
                continue
            event, fut, tries = self.pending[0]
            try:
                await fut
            except PublishTimeout:
                if tries < self.retries:
                    try:
                        self.pending[0] = (event, await self.publisher.send_message(event), tries + 1)
                    except Exception as exc:  # NATS reconnecting, its buffer full: try again shortly
                        log.warning("event %s: resend failed (%s); again in 1 s", getattr(event, "id", "?"), exc)
                        self.pending[0] = (event, _failed_future(exc), tries + 1)
                        await asyncio.sleep(1.0)
                    continue
                self._lost(event, "no ack after retries")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PublishError and anything else: the drainer must never die
                self._lost(event, f"{type(exc).__name__}: {exc}")
            self.pending.popleft()

    def _lost(self, event: Any, why: str) -> None:
        self.failed += 1
        metrics.PUBLISH_FAILURES.labels(self.venue).inc()
        log.error("event %s not stored (%s)", getattr(event, "id", "?"), why)


def _failed_future(exc: BaseException) -> asyncio.Future[Any]:
    """A resend that could not even be sent counts as a timed-out one (retried, then lost)."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_exception(PublishTimeout(f"resend failed: {exc}"))
    return fut
