"""The consumer runtime for pure cores (DESIGN.md "Consumers", rules 1-6).

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
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import (
    Consumer,
    ConsumerSpec,
    Inbound,
    OutputNotDeclared,
    RetryLater,
    RuntimeStats,
    decode_or_reason,
    delivery,
    subject_matcher,
)
from bus.publisher import PubAck, Publisher
from bus.reader import StoredMsg, read_stream
from schemas.codec import decoder
from schemas.subjects import subject_of

log = logging.getLogger("bus.runtime")

S = TypeVar("S")
E = TypeVar("E")


class Core(Protocol[S, E]):
    def initial_state(self) -> S: ...

    def step(self, state: S, inbound: Inbound[E]) -> tuple[S, Sequence[Any]]: ...


def apply_input(
    core: Core[S, E],
    state: S,
    seq: int,
    subject: str,
    data: bytes,
    dec: msgspec.json.Decoder,
    declared: Callable[[str], bool],
    stored_ns: int = 0,
) -> tuple[S, Sequence[Any], str]:
    """Decode one input and step the core: (new state, outputs, reason).

    A non-empty reason means the input is dead-lettered and the state is unchanged. Live
    processing and every replay go through here, so they cannot disagree about an input.
    """
    event, reason = decode_or_reason(dec, data)
    if reason:
        return state, (), reason
    try:
        new_state, outputs = core.step(state, Inbound(seq, subject, event, stored_ns))
        for out in outputs:
            if not declared(subject_of(out)):
                raise OutputNotDeclared(f"output subject {subject_of(out)} is not declared")
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the consumer
        return state, (), f"rejected by the core: {type(exc).__name__}: {exc}"
    return new_state, outputs, ""


class ConsumerRuntime(Consumer, Generic[S, E]):
    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        core: Core[S, E],
        publisher: Publisher | None = None,
        *,
        on_state: Callable[[S, int], None] | None = None,
    ) -> None:
        super().__init__(nc, spec, publisher)
        self.core = core
        self.state: S = core.initial_state()
        self._on_state = on_state
        self._decoder = decoder(spec.input_type)

    # ----------------------------------------------------------------- recovery

    async def prepare(self) -> None:
        await self.recover()

    async def recover(self) -> None:
        """Load the checkpoint and fold the inputs whose outputs are known to be stored."""
        await self.ensure_publisher()
        cp = await checkpoints.load(self.nc, self.spec.name, self.spec.state_type)
        if cp is None:
            self.state, self.seq = self.core.initial_state(), 0
        else:
            self.state, self.seq = cp.state, cp.seq
        self._checkpointed_seq = self.seq
        ack_floor = await self.ack_floor()
        log.info(
            "%s: %s; consumer ack floor %d",
            self.spec.name,
            f"checkpoint at input seq {self.seq}" if cp else "no checkpoint (fresh state)",
            ack_floor,
        )
        if ack_floor > self.seq:
            started = time.perf_counter()
            before = self.seq
            count = await self.replay(ack_floor)
            log.info(
                "%s: replayed %d..%d (%d inputs) in %.3fs",
                self.spec.name,
                before + 1,
                ack_floor,
                count,
                time.perf_counter() - started,
            )
            await self.checkpoint(force=True)
        self._publish_state()

    async def replay(self, until_seq: int) -> int:
        """Fold inputs seq+1..until_seq through the core, outputs suppressed; how many were folded."""
        batches = read_stream(self.nc, self.spec.stream, start_seq=self.seq + 1, end_seq=until_seq, subjects=self.spec.subjects)
        state, last, count = await fold_stream(self.core, self.state, batches, self.spec.input_type, self.spec.outputs)
        if last < until_seq:
            # The acked input at `until_seq` is still stored unless retention removed it; a read
            # that ends before it would fold a state that skipped inputs: refuse, and retry.
            first = (await self.js.stream_info(self.spec.stream)).state.first_seq
            if first <= until_seq:
                raise RuntimeError(f"replay of {self.spec.stream} stopped at seq {last}, before {until_seq}")
        self.state, self.seq = state, until_seq
        self.stats.replayed += count
        return count

    # ----------------------------------------------------------------- live

    async def process(self, msgs: list[Msg]) -> None:
        """Apply a batch of delivered inputs, publish outputs, wait for their acks, then ack."""
        state, core, dec, declared = self.state, self.core, self._decoder, self.declared
        futures: list[asyncio.Future[PubAck]] = []
        last: Msg | None = None
        terminate: list[Msg] = []
        seq = self.seq
        for msg in msgs:
            mseq, stored, pending = delivery(msg)
            last = msg
            self.stats.lag = pending
            if mseq <= seq:  # already folded in (redelivery)
                continue
            state, outputs, reason = apply_input(core, state, mseq, msg.subject, msg.data, dec, declared, stored)
            if reason:
                await self.send_dead_letter(msg, mseq, reason, futures)
                terminate.append(msg)
            await self.send_outputs(outputs, futures)
            seq = mseq
        await self.settle(futures, last, terminate, len(msgs), seq)
        self.state = state
        self._publish_state()

    def snapshot(self) -> S:
        return self.state

    def _publish_state(self) -> None:
        if self._on_state is not None:
            self._on_state(self.state, self.seq)


async def fold_stream(
    core: Core[S, E],
    state: S,
    batches: AsyncIterable[list[StoredMsg]],
    input_type: Any,
    outputs: tuple[str, ...] = (),
    on_step: Callable[[StoredMsg, S, Sequence[Any], str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[S, int, int]:
    """Fold stored inputs through a core offline: (state, last seq, inputs folded).

    Used for recovery and for incident replay; `on_step` sees each input that produced outputs
    or was dead-lettered (with the state after it), `on_batch` the running count.
    """
    dec = decoder(input_type)
    declared = subject_matcher(outputs)
    seq = count = 0
    async for batch in batches:
        for m in batch:
            state, outs, reason = apply_input(core, state, m.seq, m.subject, m.data, dec, declared, m.ts_ns)
            if (outs or reason) and on_step is not None:
                on_step(m, state, outs, reason)
        seq = batch[-1].seq
        count += len(batch)
        if on_batch is not None:
            on_batch(count)
    return state, seq, count


__all__ = [
    "ConsumerRuntime",
    "ConsumerSpec",
    "Core",
    "Inbound",
    "OutputNotDeclared",
    "RetryLater",
    "RuntimeStats",
    "apply_input",
    "fold_stream",
]
