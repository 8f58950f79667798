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
from collections.abc import Callable
from typing import Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import Consumer, ConsumerSpec, RuntimeStats, delivered_again, delivery
from bus.contract import Core, Inbound, Outgoing, apply_input, fold_stream
from bus.errors import ReplayIncomplete, RetryLater
from bus.publisher import PubAck, Publisher
from bus.reader import read_stream

log = logging.getLogger("bus.runtime")

S = TypeVar("S")
E = TypeVar("E")


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
        # An unfiltered input stream must read back without holes (or only deletions); a filtered
        # read cannot check stream sequences and relies on the reader's delivery sequence.
        batches = read_stream(
            self.nc,
            self.spec.stream,
            start_seq=self.seq + 1,
            end_seq=until_seq,
            subjects=self.spec.subjects,
            contiguous=not self.spec.subjects,
        )
        state, last, count = await fold_stream(self.core, self.state, batches, self.rules)
        if last < until_seq:
            # The acked input at `until_seq` is still stored unless retention removed it; a read
            # that ends before it would fold a state that skipped inputs: refuse, and retry.
            first = (await self.js.stream_info(self.spec.stream)).state.first_seq
            if first <= until_seq:
                raise ReplayIncomplete(f"replay of {self.spec.stream} stopped at seq {last}, before {until_seq}")
        self.state, self.seq = state, until_seq
        self.stats.replayed += count
        return count

    # ----------------------------------------------------------------- live

    async def process(self, msgs: list[Msg]) -> None:
        """Apply a batch of delivered inputs, publish outputs, wait for their acks, then ack."""
        state, core, rules = self.state, self.core, self.rules
        futures: list[asyncio.Future[PubAck]] = []
        last: Msg | None = None
        terminate: list[Msg] = []
        seq = self.seq
        first, again = self._first_delivery, 0
        for msg in msgs:
            mseq, stored, pending = delivery(msg)
            last = msg
            self.stats.lag = pending
            if mseq <= seq:  # already folded in (redelivery)
                again += 1
                continue
            if not msg.reply.startswith(first) and delivered_again(msg.reply):
                again += 1
            state, outputs, reason = apply_input(core, state, rules, mseq, msg.subject, msg.data, stored)
            if reason:
                await self.send_dead_letter(msg, mseq, reason, futures)
                terminate.append(msg)
            await self.send_outputs(outputs, futures)
            seq = mseq
        self.stats.redelivered += again
        await self.settle(futures, last, terminate, len(msgs), seq)
        self.state = state
        self._publish_state()

    def snapshot(self) -> S:
        return self.state

    def _publish_state(self) -> None:
        if self._on_state is not None:
            self._on_state(self.state, self.seq)


__all__ = [
    "ConsumerRuntime",
    "ConsumerSpec",
    "Core",
    "Inbound",
    "Outgoing",
    "RetryLater",
    "RuntimeStats",
    "apply_input",
    "fold_stream",
]
