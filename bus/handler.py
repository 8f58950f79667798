"""The runtime for effectful consumers: inputs in, calls to the outside world, events out.

The order executor is the one such consumer: it keeps no state of its own (the venue and
the bus hold it), so there is nothing to checkpoint or replay. After a crash it resumes at the
consumer's ack floor, and the commands it had not acked are handled again; the handler must
make that harmless (the executor does, through client order ids).

Within a batch, inputs with different keys run concurrently and inputs sharing a key run in
order (a cancel never overtakes the place of the same order); an exclusive input (cancel-all)
runs alone, after everything before it. Outputs are published in input
order and acknowledged by JetStream before the inputs are acked. A handler that cannot reach
an answer (the venue is down and the outcome of an order is unknown) raises `RetryLater`:
the batch is not acked and comes back after a backoff, never reported as failed when it may
have succeeded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import Consumer, ConsumerSpec, Inbound, OutputNotDeclared, RetryLater, decode_or_reason, delivery
from bus.publisher import PubAck, Publisher
from schemas.codec import decoder
from schemas.subjects import subject_of

log = logging.getLogger("bus.handler")

E = TypeVar("E")


class Handler(Protocol[E]):
    def key(self, inbound: Inbound[E]) -> str:
        """Inputs with one key are handled in order; different keys may run concurrently."""
        ...

    async def handle(self, inbound: Inbound[E]) -> Sequence[Any]:
        """Do the work; return the events to publish. Raise RetryLater if the outcome is unknown."""
        ...

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        """Events to publish for an input that did not decode (it is dead-lettered anyway)."""
        ...

    def exclusive(self, inbound: Inbound[E]) -> bool:
        """True for an input that must run alone: everything before it first, nothing beside it."""
        ...


class HandlerRuntime(Consumer, Generic[E]):
    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        handler: Handler[E],
        publisher: Publisher | None = None,
        *,
        concurrency: int = 16,
    ) -> None:
        super().__init__(nc, spec, publisher)
        self.handler = handler
        self._decoder = decoder(spec.input_type)
        self._slots = asyncio.Semaphore(concurrency)

    async def prepare(self) -> None:
        # The ack floor says where we are; the checkpoint (the position only) covers the moment
        # between deleting and recreating the consumer, when the ack floor is gone.
        cp = await checkpoints.load(self.nc, self.spec.name, type(None))
        self.seq = max(await self.ack_floor(), cp.seq if cp else 0)
        self._checkpointed_seq = self.seq

    async def process(self, msgs: list[Msg]) -> None:
        results: dict[int, tuple[Sequence[Any], str]] = {}
        segments: list[dict[str, list[tuple[int, Inbound[E]]]]] = [{}]
        ordered: list[tuple[int, Msg]] = []
        for i, msg in enumerate(msgs):
            seq, stored, pending = delivery(msg)
            self.stats.lag = pending
            if seq <= self.seq:
                continue
            ordered.append((i, msg))
            event, reason = decode_or_reason(self._decoder, msg.data)
            if reason:
                results[i] = (self.handler.on_invalid(seq, msg.subject, msg.data, reason), reason)
                continue
            inbound = Inbound(seq, msg.subject, event, stored)
            if self.handler.exclusive(inbound):
                segments += [{"": [(i, inbound)]}, {}]
            else:
                segments[-1].setdefault(self.handler.key(inbound), []).append((i, inbound))

        async def run_group(items: list[tuple[int, Inbound[E]]]) -> None:
            for i, inbound in items:
                async with self._slots:
                    results[i] = await self._handle(inbound)

        for groups in segments:
            # Every group finishes before a RetryLater ends the batch: none keeps calling the
            # venue beside the redelivered copies of its commands.
            outcomes = await asyncio.gather(*(run_group(g) for g in groups.values()), return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome

        futures: list[asyncio.Future[PubAck]] = []
        terminate: list[Msg] = []
        for i, msg in ordered:
            outputs, reason = results[i]
            if reason:
                await self.send_dead_letter(msg, delivery(msg)[0], reason, futures)
                terminate.append(msg)
            await self.send_outputs(outputs, futures)
        last_seq = delivery(ordered[-1][1])[0] if ordered else self.seq
        await self.settle(futures, msgs[-1] if msgs else None, terminate, len(msgs), last_seq)

    async def _handle(self, inbound: Inbound[E]) -> tuple[Sequence[Any], str]:
        try:
            outputs = await self.handler.handle(inbound)
            for out in outputs:
                if not self.declared(subject_of(out)):
                    raise OutputNotDeclared(f"output subject {subject_of(out)} is not declared")
        except RetryLater:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug on one input must not stop the consumer
            log.exception("%s: seq %d failed", self.spec.name, inbound.seq)
            return (), f"handler failed: {type(exc).__name__}: {exc}"
        return outputs, ""
