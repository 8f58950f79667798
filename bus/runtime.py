"""The consumer runtime: the one implementation of the consumer contract (DESIGN.md "Consumers").

A consumer is declared as data (`ConsumerSpec`) and its logic is a pure core:
`step(state, inbound) -> (state, outputs)`, no clock, no I/O, no randomness. The runtime:

1. creates the JetStream consumer (and, for a strategy, the sourced input stream that gives
   its inputs one total order);
2. decodes each input; an input that does not decode, or that the core rejects by raising,
   is copied to `dlq.<subject>` with the reason, and the consumer goes on;
3. publishes the outputs with their deterministic ids and waits for JetStream's acks
   before it acks the inputs (ack-all on the last input of the batch);
4. checkpoints `(state, seq)` to the checkpoints bucket every N inputs or T seconds.

Start (and every restart after a crash or a broken connection) is one procedure: load the
checkpoint (S), read the consumer's ack floor (A), fold inputs S+1..A through the core with
outputs suppressed (their outputs were acknowledged before those inputs were acked),
recreate the consumer at max(S, A)+1, and go live. Inputs after A may have had their outputs
published before the crash; publishing them again is harmless because JetStream drops the
duplicate ids. See docs/adr/0002.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from bus import checkpoints
from bus.dlq import dead_letter
from bus.publisher import PubAck, Publisher
from bus.pull import ConsumerGone, PullFeed, Stalled
from bus.reader import StoredMsg, _ack_tokens, read_stream
from bus.streams import StreamSpec, apply_stream
from schemas.codec import decoder, encode
from schemas.subjects import subject_of

log = logging.getLogger("bus.runtime")

S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Inbound(Generic[E]):
    """One input as the core sees it: the decoded event and where it sits in the input stream."""

    seq: int
    subject: str
    event: E


class Core(Protocol[S, E]):
    def initial_state(self) -> S: ...

    def step(self, state: S, inbound: Inbound[E]) -> tuple[S, Sequence[Any]]: ...


class InvalidInputHandler(Protocol[S]):
    """Optional on a core: outputs to publish when an input is dead-lettered (say, a rejection
    event for a command that did not decode, so its sender learns why)."""

    def on_invalid(self, state: S, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]: ...


@dataclass(frozen=True)
class ConsumerSpec:
    name: str  # durable consumer name; also the checkpoint key
    stream: str  # the stream it reads
    input_type: Any  # msgspec type (or tagged union) the inputs decode to
    state_type: Any  # msgspec type of the core's state (for checkpoints)
    subjects: tuple[str, ...] = ()  # filter subjects; empty = the whole stream
    outputs: tuple[str, ...] = ()  # subject patterns it may publish (NATS wildcards)
    input_stream: StreamSpec | None = None  # created by the runtime (a sourced stream)
    batch: int = 512
    checkpoint_every: int = 5_000
    checkpoint_interval: float = 2.0
    ack_wait: float = 30.0
    max_ack_pending: int = 20_000


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
    last_error: str = ""
    started: float = field(default_factory=time.time)


class OutputNotDeclared(RuntimeError):
    pass


def _subject_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """NATS wildcard matching (`*` one token, `>` the rest), memoized per subject."""
    compiled = [p.split(".") for p in patterns]
    seen: dict[str, bool] = {}

    def match_one(tokens: list[str], pattern: list[str]) -> bool:
        for i, p in enumerate(pattern):
            if p == ">":
                return len(tokens) > i
            if i >= len(tokens) or (p != "*" and p != tokens[i]):
                return False
        return len(tokens) == len(pattern)

    def matches(subject: str) -> bool:
        hit = seen.get(subject)
        if hit is None:
            tokens = subject.split(".")
            hit = any(match_one(tokens, p) for p in compiled)
            if len(seen) < 100_000:
                seen[subject] = hit
        return hit

    return matches


def apply_input(
    core: Core[S, E],
    state: S,
    seq: int,
    subject: str,
    data: bytes,
    dec: msgspec.json.Decoder,
    declared: Callable[[str], bool],
) -> tuple[S, Sequence[Any], str]:
    """Decode one input and step the core: (new state, outputs, reason).

    A non-empty reason means the input is dead-lettered and the state is unchanged. Live
    processing and every replay go through here, so they cannot disagree about an input.
    """
    try:
        event = dec.decode(data)
    except msgspec.DecodeError as exc:
        return state, (), f"undecodable input: {exc}"
    try:
        new_state, outputs = core.step(state, Inbound(seq, subject, event))
        for out in outputs:
            if not declared(subject_of(out)):
                raise OutputNotDeclared(f"output subject {subject_of(out)} is not declared")
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the consumer
        return state, (), f"rejected by the core: {type(exc).__name__}: {exc}"
    return new_state, outputs, ""


class ConsumerRuntime(Generic[S, E]):
    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        core: Core[S, E],
        publisher: Publisher | None = None,
        *,
        on_state: Callable[[S, int], None] | None = None,
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.spec = spec
        self.core = core
        self.publisher = publisher
        self.stats = RuntimeStats()
        self.state: S = core.initial_state()
        self.seq = 0
        self.caught_up = asyncio.Event()
        self._on_state = on_state
        self._decoder = decoder(spec.input_type)
        self._declared = _subject_matcher(spec.outputs) if spec.outputs else _anything
        self._since_checkpoint = 0
        self._checkpointed_seq = -1
        self._last_checkpoint = time.monotonic()
        self._on_invalid = getattr(core, "on_invalid", None)

    # ----------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; rebuild the session from the log after any failure."""
        await self._ensure_publisher()
        if self.spec.input_stream is not None:
            change = await apply_stream(self.js, self.spec.input_stream)
            if change.kind != "unchanged":
                log.info("%s: input stream %s", self.spec.name, change)
        delay = 0.2
        while not stop.is_set():
            try:
                await self._session(stop)
                return
            except (Stalled, ConsumerGone, OSError, asyncio.TimeoutError, RuntimeError, msgspec.DecodeError) as exc:
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: session ended (%s); rebuilding from the log in %.1fs", self.spec.name, exc, delay)
            except Exception as exc:  # nats errors have no common base we can name narrowly
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: session failed (%r); rebuilding from the log in %.1fs", self.spec.name, exc, delay)
            self.caught_up.clear()
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except asyncio.TimeoutError:
                pass
            delay = min(delay * 2, 5.0)

    async def _session(self, stop: asyncio.Event) -> None:
        self.stats.sessions += 1
        await self.recover()
        await self._recreate_consumer(self.seq + 1)
        feed = PullFeed(self.nc, self.spec.stream, self.spec.name, batch=self.spec.batch)
        await feed.start()
        log.info("%s: live from seq %d", self.spec.name, self.seq + 1)
        try:
            await self._live(feed, stop)
        finally:
            await feed.stop()
        await self.checkpoint(force=True)

    async def _ensure_publisher(self) -> Publisher:
        if self.publisher is None:
            self.publisher = await Publisher(self.nc).start()
        return self.publisher

    async def recover(self) -> None:
        """Load the checkpoint and fold the inputs whose outputs are known to be stored."""
        await self._ensure_publisher()
        cp = await checkpoints.load(self.nc, self.spec.name, self.spec.state_type)
        if cp is None:
            self.state, self.seq = self.core.initial_state(), 0
        else:
            self.state, self.seq = cp.state, cp.seq
        self._checkpointed_seq = self.seq
        ack_floor = await self._ack_floor()
        log.info(
            "%s: %s; consumer ack floor %d",
            self.spec.name,
            f"checkpoint at input seq {self.seq}" if cp else "no checkpoint (fresh state)",
            ack_floor,
        )
        if ack_floor > self.seq:
            started = time.perf_counter()
            before = self.seq
            await self.replay(ack_floor)
            took = time.perf_counter() - started
            log.info(
                "%s: replayed %d..%d (%d inputs) in %.3fs",
                self.spec.name,
                before + 1,
                ack_floor,
                self.stats.replayed,
                took,
            )
            await self.checkpoint(force=True)
        self._publish_state()

    async def replay(self, until_seq: int) -> None:
        """Fold inputs seq+1..until_seq through the core, outputs suppressed."""
        batches = read_stream(
            self.nc, self.spec.stream, start_seq=self.seq + 1, end_seq=until_seq, subjects=self.spec.subjects
        )
        self.state, _, count = await fold_stream(self.core, self.state, batches, self.spec.input_type, self.spec.outputs)
        self.stats.replayed += count
        self.seq = until_seq  # inputs below the ack floor that retention removed are skipped too

    async def _ack_floor(self) -> int:
        try:
            info = await self.js.consumer_info(self.spec.stream, self.spec.name)
        except NotFoundError:
            return 0
        return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0

    async def _recreate_consumer(self, start_seq: int) -> None:
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
        await self.js._jsm.add_consumer(self.spec.stream, config)

    # ----------------------------------------------------------------- live

    async def _live(self, feed: PullFeed, stop: asyncio.Event) -> None:
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                msgs = await feed.next_batch(timeout=0.25)
                if msgs:
                    await self.process(msgs)
                elif not self.caught_up.is_set():
                    self.caught_up.set()
                await self.checkpoint()
        finally:
            stop_wait.cancel()

    async def process(self, msgs: list[Msg]) -> None:
        """Apply a batch of delivered inputs, publish outputs, wait for their acks, then ack."""
        assert self.publisher is not None
        pub = self.publisher
        state, core, dec, declared = self.state, self.core, self._decoder, self._declared
        futures: list[asyncio.Future[PubAck]] = []
        last: Msg | None = None
        terminate: list[Msg] = []
        seq = self.seq
        for msg in msgs:
            meta = _ack_tokens(msg.reply.encode())
            if meta is None:
                continue
            mseq, _dseq, _ts, pending = meta
            last = msg
            self.stats.lag = pending
            if mseq <= seq:  # already folded in (redelivery)
                continue
            state, outputs, reason = apply_input(core, state, mseq, msg.subject, msg.data, dec, declared)
            if reason:
                self.stats.dead_lettered += 1
                log.warning("%s: seq %d on %s dead-lettered: %s", self.spec.name, mseq, msg.subject, reason)
                subject, msg_id, headers = dead_letter(self.spec.name, self.spec.stream, mseq, msg.subject, reason)
                futures.append(await pub.send(subject, msg.data, msg_id, headers))
                if self._on_invalid is not None:
                    outputs = self._on_invalid(state, mseq, msg.subject, msg.data, reason)
                terminate.append(msg)
            for out in outputs:
                futures.append(await pub.send(subject_of(out), encode(out), out.id))
            seq = mseq
        if futures:
            acks = await asyncio.gather(*futures)
            self.stats.outputs += len(acks)
            self.stats.duplicates += sum(1 for a in acks if a.duplicate)
        self.state, self.seq = state, seq
        self.stats.processed += len(msgs)
        self.stats.last_seq = seq
        self._since_checkpoint += len(msgs)
        # Raw protocol acks: nats-py refuses to ack a message it saw terminated, but ack-all on
        # the last input must still cover the ones before it.
        for msg in terminate:
            await self.nc.publish(msg.reply, b"+TERM")
        if last is not None:
            await self.nc.publish(last.reply, b"+ACK")
        self._publish_state()

    def _publish_state(self) -> None:
        if self._on_state is not None:
            self._on_state(self.state, self.seq)

    # ----------------------------------------------------------------- checkpoints

    async def checkpoint(self, force: bool = False) -> None:
        if self.seq == self._checkpointed_seq:
            return
        due = (
            force
            or self._since_checkpoint >= self.spec.checkpoint_every
            or time.monotonic() - self._last_checkpoint >= self.spec.checkpoint_interval
        )
        if not due:
            return
        assert self.publisher is not None
        data = checkpoints.encode(checkpoints.Checkpoint(seq=self.seq, state=self.state))
        await (await self.publisher.send(checkpoints.subject(self.spec.name), data))
        self._checkpointed_seq = self.seq
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self.stats.checkpoints += 1


async def fold_stream(
    core: Core[S, E],
    state: S,
    batches: AsyncIterable[list[StoredMsg]],
    input_type: Any,
    outputs: tuple[str, ...] = (),
    on_step: Callable[[StoredMsg, S, Sequence[Any], str], None] | None = None,
) -> tuple[S, int, int]:
    """Fold stored inputs through a core offline: (state, last seq, inputs folded).

    Used for recovery and for incident replay; `on_step` sees each input with the state
    after it, the outputs it produced and the dead-letter reason, if any.
    """
    dec = decoder(input_type)
    declared = _subject_matcher(outputs) if outputs else _anything
    seq = count = 0
    async for batch in batches:
        for m in batch:
            state, outs, reason = apply_input(core, state, m.seq, m.subject, m.data, dec, declared)
            if on_step is not None:
                on_step(m, state, outs, reason)
            seq = m.seq
        count += len(batch)
    return state, seq, count


def _anything(_subject: str) -> bool:
    return True


__all__ = [
    "ConsumerRuntime",
    "ConsumerSpec",
    "Core",
    "Inbound",
    "InvalidInputHandler",
    "OutputNotDeclared",
    "RuntimeStats",
    "apply_input",
    "fold_stream",
]
