"""What every consumer shares: declaration, sessions rebuilt from the log, acks after outputs, DLQ.

Two kinds of consumers build on this (DESIGN.md "Consumers"):
- `bus.runtime.ConsumerRuntime`: a pure core folded over its inputs, with checkpoints and
  replay (strategies, the simulated exchange's engine);
- `bus.handler.HandlerRuntime`: an effectful handler that talks to the outside world and
  keeps no state of its own (the order executor).

Both: a durable JetStream consumer that the runtime (re)creates at the position it knows,
a continuous pull feed, inputs acked (ack-all) only after their outputs are stored, inputs
that do not decode dead-lettered with the reason, and any broken session (stalled pull,
reconnect, publish timeout) rebuilt from the log after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus import checkpoints, metrics
from bus.contract import DEFAULT_MAX_FUTURE_MS, DEFAULT_MAX_PAYLOAD, Outgoing, Rules
from bus.dlq import dead_letter
from bus.errors import LeaseLost, Stalled
from bus.lease import Lease
from bus.publisher import PubAck, Publisher
from bus.pull import PullFeed
from bus.reader import ack_tokens
from bus.streams import StreamSpec, prepare
from schemas.subjects import subject_of

log = logging.getLogger("bus.consumer")


@dataclass(frozen=True)
class ConsumerSpec:
    name: str  # durable consumer name; also the checkpoint key
    stream: str  # the stream it reads
    input_type: Any  # msgspec type (or tagged union) the inputs decode to
    state_type: Any = None  # msgspec type of a core's state (for checkpoints)
    subjects: tuple[str, ...] = ()  # filter subjects; empty = the whole stream
    outputs: tuple[str, ...] = ()  # subject patterns it may publish (NATS wildcards)
    input_stream: StreamSpec | None = None  # created by the runtime (a sourced stream)
    route: Callable[[Any], str] | None = subject_of  # the subject an input must arrive on (None: any)
    max_future_ms: int | None = DEFAULT_MAX_FUTURE_MS  # how far an input's `ts` may be ahead of its store time
    batch: int = 512
    checkpoint_every: int = 5_000
    checkpoint_interval: float = 2.0
    ack_wait: float = 30.0
    max_ack_pending: int = 20_000

    def rules(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> Rules:
        return Rules(self.input_type, self.outputs, self.route, self.max_future_ms, max_payload)


@dataclass
class RuntimeStats:
    processed: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    outputs: int = 0
    duplicates: int = 0
    checkpoints: int = 0
    sessions: int = 0
    last_seq: int = 0
    lag: int = 0
    redelivered: int = 0  # inputs delivered again (delivery count > 1, or seen by an earlier session)
    last_error: str = ""
    started: float = field(default_factory=time.time)


def delivery(msg: Msg) -> tuple[int, int, int]:
    """(stream seq, stored time ns, pending) of a delivered message."""
    meta = ack_tokens(msg.reply.encode())
    if meta is None:
        raise ValueError(f"not a JetStream delivery: {msg.reply!r}")
    seq, _dseq, ts, pending = meta
    return seq, ts, pending


def first_delivery(spec: ConsumerSpec) -> str:
    """The start of a first delivery's reply subject for this consumer (no domain)."""
    return f"$JS.ACK.{spec.stream}.{spec.name}.1."


def delivered_again(reply: str) -> bool:
    """JetStream's delivery count of this delivery is above 1 (a str check, for metrics only)."""
    toks = reply.split(".")
    n = len(toks)
    if n == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>
        return toks[4] != "1"
    if n >= 11:  # $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>...
        return toks[6] != "1"
    return False


REBUILD_FIRST_S = 0.2
REBUILD_MAX_S = 5.0


def rebuild_delay(grown: float, live_for: float | None) -> float:
    """Seconds before rebuilding a session that ended: the grown backoff while rebuilds fail
    before going live (the bus is away) or soon after (something that ends every session);
    the first one again after a session that ran a while (an election or a restarted server
    ended it: the next will most likely run at once). `live_for`: None if it never went live."""
    return REBUILD_FIRST_S if live_for is not None and live_for >= REBUILD_MAX_S else grown


class Consumer:
    """The session machinery; subclasses say how to prepare, process a batch, and finish."""

    def __init__(self, nc: Client, spec: ConsumerSpec, publisher: Publisher | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.spec = spec
        self.publisher = publisher
        self.stats = RuntimeStats()
        self.seq = 0  # last input whose effects are settled
        self.caught_up = asyncio.Event()
        self.rules = spec.rules(max_payload(nc))
        self.lease: Lease | None = None
        self._since_checkpoint = 0
        self._checkpointed_seq = -1
        self._last_checkpoint = time.monotonic()
        # Observability only (bus/metrics.py): read at scrape time, never on the hot path.
        self.running = False  # inside run()
        self.live_feed: PullFeed | None = None  # the pull of the live session, if one is
        self.went_live = False  # the current session reached its live pull (the rebuild backoff resets)
        self.live_since = 0.0
        self._not_live_since = time.monotonic()
        self._first_delivery = first_delivery(spec)
        self._batch_seconds = metrics.BATCH_SECONDS.labels(spec.name)
        metrics.track_consumer(self)

    def progress(self) -> dict[str, Any]:
        """What every consumer's `/status` says of its input: where it is, how far behind, what failed."""
        st = self.stats
        return {
            "input_seq": self.seq,
            "lag": st.lag,
            "sessions": st.sessions,
            "dead_lettered": st.dead_lettered,
            "last_error": st.last_error,
        }

    def health(self) -> str:
        """Empty while live and hearing from the server; otherwise why this consumer is stalled."""
        feed = self.live_feed
        if feed is None:
            down = time.monotonic() - self._not_live_since
            if down > metrics.NOT_LIVE_GRACE_S:
                return f"no live session for {down:.0f}s ({self.stats.last_error or 'still starting'})"
            return ""
        silent = feed.silence()
        if silent > feed.stall_after:
            return f"stalled: nothing from the server for {silent:.1f}s"
        return ""

    # ----------------------------------------------------------------- subclass hooks

    async def prepare(self) -> None:
        """Before going live: set `self.seq` to the last input already dealt with."""

    async def process(self, msgs: list[Msg]) -> None:
        raise NotImplementedError

    def snapshot(self) -> Any:
        """What a checkpoint stores beside the sequence (a core's state; None for a handler)."""
        return None

    async def idle(self) -> None:
        await self.checkpoint()

    async def finish(self) -> None:
        await self.checkpoint(force=True)

    async def checkpoint(self, force: bool = False) -> None:
        """Store (snapshot, seq) every N inputs or T seconds, always after their outputs were stored.

        Never without the lease (a checkpoint written after losing it could overwrite the new
        holder's), and not while NATS is unreachable: the next start folds the log from the last
        checkpoint instead, as after kill -9."""
        if self.seq == self._checkpointed_seq or (self.lease is not None and self.lease.lost.is_set()):
            return
        if not self.nc.is_connected:
            if force:
                log.info("%s: NATS is unreachable; the final checkpoint is skipped (the next start replays)", self.spec.name)
            return
        due = (
            force
            or self._since_checkpoint >= self.spec.checkpoint_every
            or time.monotonic() - self._last_checkpoint >= self.spec.checkpoint_interval
        )
        if not due:
            return
        publisher = await self.ensure_publisher()
        data = checkpoints.encode(checkpoints.Checkpoint(seq=self.seq, state=self.snapshot()))
        await (await publisher.send(checkpoints.subject(self.spec.name), data))
        self._checkpointed_seq = self.seq
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.stats.checkpoints += 1

    # ----------------------------------------------------------------- lifecycle

    async def ensure_publisher(self) -> Publisher:
        if self.publisher is None:
            self.publisher = await Publisher(self.nc).start()
        return self.publisher

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; rebuild the session from the log after any failure."""
        await self.ensure_publisher()
        if self.spec.input_stream is not None:
            for change in await prepare(self.nc, (self.spec.input_stream,), ()):  # the admin's to create (ADR 0026)
                if change.kind != "unchanged":
                    log.info("%s: input stream %s", self.spec.name, change)
        # One process per consumer: a second one exits here, naming the holder (LeaseHeld).
        self.lease = lease = Lease(self.nc, self.spec.name)
        await lease.acquire()
        ended = _either(stop, lease.lost)
        self.running = True
        try:
            await self._sessions(ended)
        finally:
            self.running = False
            if not lease.lost.is_set():
                await lease.release()
            ended.cancel_watch()
        if lease.lost.is_set() and not stop.is_set():
            raise LeaseLost(f"{self.spec.name}: another process took this consumer's lease; stopped without writing anything more")

    async def _sessions(self, ended: _Either) -> None:
        delay = REBUILD_FIRST_S
        while not ended.is_set():
            self.went_live = False
            try:
                await self._session(ended)
                return
            except Exception as exc:  # nats, OS and publish errors share no narrower base
                delay = rebuild_delay(delay, time.monotonic() - self.live_since if self.went_live else None)
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                metrics.SESSION_FAILURES.labels(self.spec.name, type(exc).__name__).inc()
                log.warning("%s: session ended (%s); rebuilding from the log in %.1fs", self.spec.name, self.stats.last_error, delay)
            self.caught_up.clear()
            try:
                await asyncio.wait_for(ended.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, REBUILD_MAX_S)

    async def _session(self, ended: asyncio.Event) -> None:
        self.stats.sessions += 1
        reconnects = self.nc.stats["reconnects"]
        await self.ensure_publisher()
        await self.prepare()
        await self.recreate_consumer(self.seq + 1)
        feed = PullFeed(self.nc, self.spec.stream, self.spec.name, batch=self.spec.batch)
        await feed.start()
        log.info("%s: live from seq %d", self.spec.name, self.seq + 1)
        self.went_live, self.live_since = True, time.monotonic()
        self.live_feed = feed
        observe = self._batch_seconds.observe
        try:
            while not ended.is_set():
                if self.nc.stats["reconnects"] != reconnects:
                    # A restarted server may have lost our pull requests and the consumer's
                    # delivery state: rebuild at once rather than wait for the stall watchdog.
                    raise Stalled("reconnected to NATS")
                msgs = await feed.next_batch(timeout=0.25)
                if msgs:
                    began = time.perf_counter()
                    await self.process(msgs)
                    observe(time.perf_counter() - began)
                    if self.stats.lag == 0 and not self.caught_up.is_set():
                        self.caught_up.set()  # a busy stream may never give an empty pull
                elif not self.caught_up.is_set():
                    self.caught_up.set()
                await self.idle()
        finally:
            self.live_feed = None
            self._not_live_since = time.monotonic()
            await feed.stop()
        await self.finish()

    async def ack_floor(self) -> int:
        return (await self.positions())[0]

    async def positions(self) -> tuple[int, int]:
        """(ack floor, last delivered) stream sequences of the durable consumer (0, 0 if none)."""
        try:
            info = await self.js.consumer_info(self.spec.stream, self.spec.name)
        except NotFoundError:
            return 0, 0
        acked = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        delivered = int(info.delivered.stream_seq or 0) if info.delivered else 0
        return acked, max(acked, delivered)

    async def recreate_consumer(self, start_seq: int) -> None:
        # Delivered-but-unacked inputs would only come back after ack_wait; a fresh consumer at
        # the position we know delivers them now.
        try:
            await self.js.delete_consumer(self.spec.stream, self.spec.name)
        except NotFoundError:
            pass
        config = ConsumerConfig(
            durable_name=self.spec.name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=max(start_seq, 1),
            ack_policy=AckPolicy.ALL,
            ack_wait=self.spec.ack_wait,
            max_ack_pending=self.spec.max_ack_pending,
            max_waiting=16,
            description=f"sqt consumer {self.spec.name}",
        )
        if len(self.spec.subjects) == 1:
            config.filter_subject = self.spec.subjects[0]
        elif self.spec.subjects:
            config.filter_subjects = list(self.spec.subjects)
        await self.js.add_consumer(self.spec.stream, config)

    # ----------------------------------------------------------------- batch helpers

    async def send_outputs(self, outputs: Sequence[Outgoing], futures: list[asyncio.Future[PubAck]]) -> None:
        assert self.publisher is not None
        for out in outputs:
            futures.append(await self.publisher.send(out.subject, out.payload, out.msg_id))

    async def send_dead_letter(self, msg: Msg, seq: int, reason: str, futures: list[asyncio.Future[PubAck]]) -> None:
        assert self.publisher is not None
        self.stats.dead_lettered += 1
        metrics.DEAD_LETTERS.labels(self.spec.name, metrics.reason_category(reason)).inc()
        log.warning("%s: seq %d on %s dead-lettered: %s", self.spec.name, seq, msg.subject, reason)
        subject, msg_id, headers, data = dead_letter(
            self.spec.name, self.spec.stream, seq, msg.subject, reason, msg.data, self.rules.max_payload
        )
        futures.append(await self.publisher.send(subject, data, msg_id, headers))

    async def settle(self, futures: list[asyncio.Future[PubAck]], last: Msg | None, terminate: list[Msg], count: int, seq: int) -> None:
        """Wait for every output's ack, then ack the inputs (ack-all on the last) and advance to `seq`."""
        if futures:
            acks = await asyncio.gather(*futures)
            self.stats.outputs += len(acks)
            self.stats.duplicates += sum(1 for a in acks if a.duplicate)
        self.seq = seq  # only now: whoever waits on `seq` may rely on its outputs being stored
        self.stats.processed += count
        self.stats.last_seq = seq
        self._since_checkpoint += count
        # Raw protocol acks: nats-py refuses to ack a message it saw terminated, but ack-all on
        # the last input must still cover the ones before it.
        for msg in terminate:
            await self.nc.publish(msg.reply, b"+TERM")
        if last is not None:
            await self.nc.publish(last.reply, b"+ACK")


def max_payload(nc: Client) -> int:
    """The server's limit for one message (headers and payload together), once connected."""
    try:
        limit = int(nc.max_payload)
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_MAX_PAYLOAD
    return limit if limit > 0 else DEFAULT_MAX_PAYLOAD


class _Either(asyncio.Event):
    """Set when either of two events is (the caller's stop, or the lease lost)."""

    def __init__(self, a: asyncio.Event, b: asyncio.Event) -> None:
        super().__init__()
        self._task = asyncio.ensure_future(self._watch(a, b))

    async def _watch(self, a: asyncio.Event, b: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            self.set()
        finally:
            for w in waits:
                w.cancel()

    def cancel_watch(self) -> None:
        self._task.cancel()


def _either(a: asyncio.Event, b: asyncio.Event) -> _Either:
    return _Either(a, b)
