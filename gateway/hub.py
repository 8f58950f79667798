"""Fan-out: every frame is encoded once and queued for each client that gets it.

Each client has a bounded queue and its own writer task, so a slow browser never delays the
others. Past half of its queue a client's klines are conflated (the newest candle of the market
replaces the one still waiting); at the limit it is closed with 1013 ("too slow").
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Protocol

from gateway.frames import Market, Routed
from gateway.metrics import GatewayMetrics

TOO_SLOW = 1013  # "try again later": the browser reconnects and resumes


class Socket(Protocol):
    async def send_str(self, data: str) -> None: ...
    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


class Client:
    def __init__(self, ws: Socket, limit: int, metrics: GatewayMetrics) -> None:
        self.ws = ws
        self.limit = limit
        self.market: Market | None = None
        self.queue: deque[list[object]] = deque()  # [type, text, market, stored_ns]
        self._kline: list[object] | None = None  # the last kline still waiting, for conflation
        self._wake = asyncio.Event()
        self._metrics = metrics
        self.closing = False

    def offer(self, kind: str, text: str, stored_ns: int = 0) -> bool:
        """Queue a frame; False when the client is too far behind to keep."""
        if self.closing:
            return True
        if kind == "kline" and self._kline is not None and len(self.queue) >= self.limit // 2:
            self._kline[1], self._kline[3] = text, stored_ns
            self._metrics.conflated.inc()
            return True
        if len(self.queue) >= self.limit:
            return False
        entry: list[object] = [kind, text, self.market, stored_ns]
        self.queue.append(entry)
        if kind == "kline":
            self._kline = entry
        self._wake.set()
        return True

    def restart(self) -> None:
        """Forget the market frames still waiting (the client switched markets); the others
        (hello, pong, errors) still go out."""
        self.queue = deque(e for e in self.queue if e[2] is None)
        self._kline = None

    async def pump(self) -> None:
        """Write queued frames until the socket fails or the task is cancelled."""
        sent, latency = self._metrics.sent_by_type, self._metrics.latency
        while True:
            while not self.queue:
                self._wake.clear()
                await self._wake.wait()
            entry = self.queue.popleft()
            if entry is self._kline:
                self._kline = None
            kind, text, _, stored_ns = entry
            await self.ws.send_str(text)  # type: ignore[arg-type]
            sent(kind).inc()
            if stored_ns:
                latency.observe((time.time_ns() - stored_ns) / 1e9)  # type: ignore[operator]


class Hub:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.clients: set[Client] = set()
        self.by_market: dict[Market, set[Client]] = {}

    def add(self, client: Client) -> None:
        self.clients.add(client)
        self.metrics.clients.set(len(self.clients))

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self.watch(client, None)
        self.metrics.clients.set(len(self.clients))

    def watch(self, client: Client, market: Market | None) -> None:
        if client.market is not None:
            self.by_market.get(client.market, set()).discard(client)
        client.market = market
        if market is not None:
            self.by_market.setdefault(market, set()).add(client)

    def publish(self, routed: Routed, text: str, stored_ns: int = 0) -> None:
        kind = routed.frame.type
        if routed.market is not None:
            audience: list[Client] = list(self.by_market.get(routed.market, ()))
        else:
            audience = [c for c in self.clients if c.market is not None and routed.venue in (None, c.market.venue)]
        for client in audience:
            if not client.offer(kind, text, stored_ns):
                self.metrics.dropped.inc()
                self.close(client, TOO_SLOW, "too slow: frames waiting beyond the limit")

    def close(self, client: Client, code: int, reason: str) -> None:
        if client.closing:
            return
        client.closing = True
        client.restart()
        self.remove(client)
        task = asyncio.get_running_loop().create_task(client.ws.close(code=code, message=reason.encode()))
        task.add_done_callback(_quiet)


def _quiet(task: asyncio.Task[bool]) -> None:
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
