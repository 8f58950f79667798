"""Continuous pull from a durable JetStream consumer, with heartbeats and a stall watchdog.

One or two pull requests are always outstanding on the server, so a new message is pushed
to us as soon as it is stored (no polling delay), and batches form naturally under load.
nats-py's `fetch()` has been reported to stall for its whole timeout (nats.py #933, #986)
and pull subscriptions to stop after a server restart (#504); here silence longer than a
few heartbeats raises `Stalled`, and the runtime rebuilds the session from the log.
"""

from __future__ import annotations

import asyncio
import json
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus.errors import ConsumerGone, Stalled
from schemas.subjects import pull_next


class PullFeed:
    def __init__(
        self,
        nc: Client,
        stream: str,
        consumer: str,
        *,
        batch: int = 512,
        heartbeat: float = 1.0,
        expires: float = 30.0,
    ) -> None:
        self._nc = nc
        self._api = pull_next(stream, consumer)
        self._batch = batch
        self._heartbeat = heartbeat
        self.stall_after = 4 * heartbeat + 1.0  # silence beyond this raises Stalled
        self._request_body = json.dumps({"batch": batch, "expires": int(expires * 1e9), "idle_heartbeat": int(heartbeat * 1e9)}).encode()
        self._outstanding = 0
        self._buffer: list[Msg] = []
        self._ready = asyncio.Event()
        self._last_activity = time.monotonic()
        self._sub: Subscription | None = None
        self._inbox = ""
        self._error: Exception | None = None

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            self._inbox, cb=self._on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=512 * 1024 * 1024
        )
        await self._top_up()

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:  # noqa: BLE001 - closing a connection that is already gone
                pass
            self._sub = None

    async def _top_up(self) -> None:
        if self._outstanding < self._batch // 2 + 1:
            self._outstanding += self._batch
            await self._nc.publish(self._api, self._request_body, reply=self._inbox)

    async def _on_msg(self, msg: Msg) -> None:
        self._last_activity = time.monotonic()
        if msg.reply and msg.reply.startswith("$JS.ACK."):
            self._outstanding -= 1
            self._buffer.append(msg)
            self._ready.set()
        else:
            headers = msg.headers or {}
            status = headers.get("Status", "")
            if status in ("408", "409", "404"):
                # The request ended; it will deliver no more of what it asked for.
                unfilled = int(headers.get("Nats-Pending-Messages", "0") or 0)
                self._outstanding = max(0, self._outstanding - unfilled)
                description = headers.get("Description", "")
                if status == "409" and "Consumer Deleted" in description:
                    self._error = ConsumerGone(description)
                    self._ready.set()
                    return
            # status 100 is an idle heartbeat: only proof of life
        if self._sub is not None:
            await self._top_up()

    def silence(self) -> float:
        """Seconds since the server last sent anything on this pull (a message or a heartbeat)."""
        return time.monotonic() - self._last_activity

    async def next_batch(self, timeout: float) -> list[Msg]:
        """Whatever has arrived (waiting up to `timeout` for the first message)."""
        if not self._buffer:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        if self._error is not None:
            raise self._error
        if not self._buffer:
            silent = time.monotonic() - self._last_activity
            if silent > self.stall_after:
                raise Stalled(f"no message or heartbeat for {silent:.1f}s")
            return []
        out, self._buffer = self._buffer, []
        return out
