"""Pipelined JetStream publishing with deduplication ids.

nats-py's `publish_async` measured ~30k msgs/s here (one semaphore wait, one future and
one JSON parse through dataclasses per message); this keeps the same semantics (every
message acknowledged by JetStream, or failed) with one ack inbox, a counter token and a
msgspec ack decoder, which roughly doubles the rate. See docs/adr/0003.

Every message carries `Nats-Msg-Id`, so a retried or replayed publish is dropped by the
stream (the ack then says `duplicate`), never stored twice.

Elections (a JetStream cluster, bus/cluster.py): while a stream's leader is being replaced,
a publish gets "503 no responders" (nobody stores the subject for a few seconds) or no ack at
all (it went to the node that died, or into the connection that broke with it). The publisher
sends such a message again, unchanged, until it is acknowledged or `retry_for` seconds have
passed since its first send: a 503 always (nothing stored it), a missing ack only when a second
copy cannot be stored twice (a message id, or a plain key-value put), and every unacknowledged
one of those at once after the connection moved to another server. On a single server a 503
means that no stream captures the subject, which no wait changes: it fails at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from typing import Any, Self

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import metrics
from bus.errors import PublishError, PublishTimeout
from schemas.codec import encode
from schemas.subjects import subject_of

log = logging.getLogger("bus.publisher")

MSG_ID = "Nats-Msg-Id"


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class PubAck(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: ApiError | None = None


_ack_decoder = msgspec.json.Decoder(PubAck)


RETRY_FOR_S = 20.0  # a leader election takes a few seconds (bench/cluster.py measures it)
RESEND_FIRST_S = 0.05  # after a 503, the first resend; doubled up to RESEND_MAX_S
RESEND_MAX_S = 1.0
# JetStream's own "try again" answers (server/errors.json): system temporarily unavailable,
# the cluster cannot handle the request (no leader yet), per-subject sequence not ready.
TRANSIENT_ERR_CODES = frozenset({10008, 10009, 10163})
_EXPECTED = ("Nats-Expected-Last-Sequence", "Nats-Expected-Last-Subject-Sequence", "Nats-Expected-Last-Msg-Id", "Nats-Expected-Stream")


class _Pending:
    __slots__ = ("fut", "deadline", "subject", "payload", "headers", "first", "attempts", "sent_in")

    def __init__(
        self,
        fut: asyncio.Future[PubAck],
        first: float,
        deadline: float,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        sent_in: int,
    ) -> None:
        self.fut = fut
        self.first = first
        self.deadline = deadline
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.attempts = 1
        self.sent_in = sent_in  # the connection's reconnect count when last sent

    @property
    def idempotent(self) -> bool:
        """A second copy is harmless: the stream drops a known id; a key-value put without a
        revision check only stores the same value again. (Asked only of a message whose ack is
        late, so sending stays free of it.)"""
        headers = self.headers
        return bool(headers and MSG_ID in headers) or (
            self.subject.startswith("$KV.") and not (headers and any(h in headers for h in _EXPECTED))
        )


class Publisher:
    def __init__(self, nc: Client, *, max_in_flight: int = 20_000, ack_timeout: float = 5.0, retry_for: float = RETRY_FOR_S) -> None:
        self._nc = nc
        self._max_in_flight = max_in_flight
        self._ack_timeout = ack_timeout  # one send's wait for its ack
        self._retry_for = retry_for  # how long a message is sent again before it fails
        self._pending: dict[str, _Pending] = {}  # in flight; insertion order = deadline order
        self._parked: dict[str, _Pending] = {}  # answered 503: sent again when due (its deadline)
        self._tokens = itertools.count(1)
        self._room = asyncio.Event()
        self._room.set()
        self._prefix = ""
        self._sweeper: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._reconnects = 0
        self.published = 0
        self.duplicates = 0
        self.resent = 0  # sends again of one message (elections, reconnects)
        metrics.track_publisher(self)  # its counts are read when /metrics is scraped

    async def start(self) -> Self:
        self._prefix = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(
            f"{self._prefix}.*",
            cb=self._on_ack,
            pending_msgs_limit=4 * self._max_in_flight,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        self._reconnects = self._reconnect_count()
        self._sweeper = asyncio.create_task(self._sweep(), name="publisher-sweeper")
        return self

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None
        for entry in [*self._pending.values(), *self._parked.values()]:
            if not entry.fut.done():
                entry.fut.set_exception(PublishError("publisher closed"))
        self._pending.clear()
        self._parked.clear()

    @property
    def in_flight(self) -> int:
        return len(self._pending) + len(self._parked)

    def _reconnect_count(self) -> int:
        stats = getattr(self._nc, "stats", None)
        return int(stats.get("reconnects", 0)) if isinstance(stats, dict) else 0

    def _clustered(self) -> bool:
        info = getattr(self._nc, "_server_info", None)
        return bool(info.get("cluster")) if isinstance(info, dict) else False

    async def send(
        self, subject: str, payload: bytes, msg_id: str | None = None, headers: dict[str, str] | None = None
    ) -> asyncio.Future[PubAck]:
        """Publish one message; the future resolves with its ack (or a PublishError)."""
        while self.in_flight >= self._max_in_flight:
            self._room.clear()
            await self._room.wait()
        token = str(next(self._tokens))
        fut: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
        hdrs = dict(headers) if headers else {}
        if msg_id is not None:
            hdrs[MSG_ID] = msg_id
        now = time.monotonic()
        entry = _Pending(fut, now, now + self._ack_timeout, subject, payload, hdrs or None, self._reconnects)
        self._pending[token] = entry
        await self._nc.publish(subject, payload, reply=f"{self._prefix}.{token}", headers=entry.headers)
        return fut

    async def send_message(self, message: Any, headers: dict[str, str] | None = None) -> asyncio.Future[PubAck]:
        return await self.send(subject_of(message), encode(message), message.id, headers)

    async def publish(self, message: Any, headers: dict[str, str] | None = None) -> PubAck:
        """Publish one message and wait for its ack."""
        return await (await self.send_message(message, headers))

    async def publish_all(self, messages: Iterable[Any], retries: int = 3) -> list[PubAck]:
        """Publish many, pipelined; wait for every ack; republish (same ids) after timeouts."""
        todo = list(messages)
        acks: list[PubAck | None] = [None] * len(todo)
        index = list(range(len(todo)))
        for attempt in range(retries + 1):
            futs = [await self.send_message(todo[i]) for i in index]
            results = await asyncio.gather(*futs, return_exceptions=True)
            again = []
            for i, res in zip(index, results):
                if isinstance(res, PublishTimeout) and attempt < retries:
                    again.append(i)
                elif isinstance(res, BaseException):
                    raise res
                else:
                    acks[i] = res
            if not again:
                break
            log.warning("%d publishes timed out; republishing (attempt %d)", len(again), attempt + 1)
            metrics.PUBLISH_RETRIES.inc(len(again))
            index = again
        return [a for a in acks if a is not None]

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._prefix) + 1 :]
        entry = self._pending.pop(token, None)
        if entry is None:
            return  # answered already (a late ack of an earlier send), or parked after a 503
        fut = entry.fut
        if fut.done():
            self._made_room()
            return
        if msg.headers and msg.headers.get("Status") == "503":
            if self._clustered() and self._park(token, entry):
                return
            self._made_room()
            metrics.PUBLISH_ERRORS.inc()
            fut.set_exception(PublishError("no stream captures the subject (503 no responders)"))
            return
        try:
            ack = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            self._made_room()
            metrics.PUBLISH_ERRORS.inc()
            fut.set_exception(PublishError(f"unreadable ack: {exc}"))
            return
        if ack.error is not None:
            if ack.error.err_code in TRANSIENT_ERR_CODES and self._park(token, entry):
                return
            self._made_room()
            metrics.PUBLISH_ERRORS.inc()
            fut.set_exception(PublishError(f"{ack.error.description} (code {ack.error.code}/{ack.error.err_code})"))
            return
        self._made_room()
        self.published += 1
        if ack.duplicate:
            self.duplicates += 1
        fut.set_result(ack)

    def _made_room(self) -> None:
        if self.in_flight < self._max_in_flight:
            self._room.set()

    def _park(self, token: str, entry: _Pending) -> bool:
        """Keep a message that nothing stored to send it again after a backoff; False when its
        time is up."""
        now = time.monotonic()
        if now - entry.first >= self._retry_for:
            return False
        entry.deadline = now + min(RESEND_FIRST_S * 2 ** min(entry.attempts - 1, 8), RESEND_MAX_S)
        self._parked[token] = entry
        return True

    async def _resend(self, token: str, entry: _Pending) -> None:
        entry.attempts += 1
        entry.deadline = time.monotonic() + self._ack_timeout
        entry.sent_in = self._reconnects
        self._pending[token] = entry  # at the end: the latest deadline
        self.resent += 1
        metrics.PUBLISH_RETRIES.inc()
        try:
            await self._nc.publish(entry.subject, entry.payload, reply=f"{self._prefix}.{token}", headers=entry.headers)
        except Exception as exc:  # noqa: BLE001 - a closed connection: the sweeper's timeout decides
            log.debug("resend of %s failed: %s", entry.subject, exc)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(0.05 if self._parked else 0.25)
            now = time.monotonic()
            reconnects = self._reconnect_count()
            moved = reconnects != self._reconnects
            self._reconnects = reconnects
            due: list[tuple[str, _Pending]] = []
            failed: list[_Pending] = []
            for token, entry in self._pending.items():  # insertion order = deadline order
                if entry.deadline >= now and not moved:
                    break
                if entry.deadline >= now and (entry.sent_in == reconnects or not entry.idempotent):
                    continue  # sent on this connection (or not safe to send twice): still waiting
                due.append((token, entry))
            for token, entry in due:
                self._pending.pop(token, None)
                if entry.fut.done():
                    continue
                if entry.idempotent and now - entry.first < self._retry_for:
                    await self._resend(token, entry)  # its ack was lost with a node or a connection
                else:
                    failed.append(entry)
            for token, entry in [(t, e) for t, e in self._parked.items() if e.deadline <= now]:
                del self._parked[token]
                if not entry.fut.done():
                    await self._resend(token, entry)
            for entry in failed:
                if not entry.fut.done():
                    metrics.PUBLISH_TIMEOUTS.inc()
                    waited = f"{now - entry.first:.1f}s ({entry.attempts} sends)" if entry.attempts > 1 else f"{self._ack_timeout}s"
                    entry.fut.set_exception(PublishTimeout(f"no ack within {waited}"))
            if due or failed:
                self._made_room()
