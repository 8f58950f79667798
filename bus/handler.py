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
from bus.consumer import Consumer, ConsumerSpec, delivered_again, delivery
from bus.contract import Inbound, Outgoing, OutputRefused, address, admit
from bus.errors import RetryLater
from bus.publisher import PubAck, Publisher

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
        """Events to publish for an input that was not admitted (it is dead-lettered anyway).

        They are addressed like any output: one that cannot be is dropped, and the input goes to
        the DLQ alone, so a hostile input can never make its own answer end the session."""
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
        self._slots = asyncio.Semaphore(concurrency)
        self._delivered_before = 0  # inputs up to here may have been handled by an earlier session

    async def prepare(self) -> None:
        # The ack floor says where we are; the checkpoint (the position only) covers the moment
        # between deleting and recreating the consumer, when the ack floor is gone. What the old
        # consumer had delivered beyond its ack floor may have been handled, not acknowledged.
        cp = await checkpoints.load(self.nc, self.spec.name, type(None))
        acked, delivered = await self.positions()
        self.seq = max(acked, cp.seq if cp else 0)
        self._delivered_before = max(self._delivered_before, delivered)
        self._checkpointed_seq = self.seq

    async def process(self, msgs: list[Msg]) -> None:
        results: dict[int, tuple[list[Outgoing], str]] = {}
        segments: list[dict[str, list[tuple[int, Inbound[E]]]]] = [{}]
        ordered: list[tuple[int, Msg, int]] = []
        first = self._first_delivery
        for i, msg in enumerate(msgs):
            seq, stored, pending = delivery(msg)
            self.stats.lag = pending
            if seq <= self.seq or seq <= self._delivered_before or (not msg.reply.startswith(first) and delivered_again(msg.reply)):
                self.stats.redelivered += 1
            if seq <= self.seq:
                continue
            ordered.append((i, msg, seq))
            event, reason = admit(self.rules, msg.subject, msg.data, stored)
            if reason:
                results[i] = self._answer_invalid(seq, msg, reason)
                continue
            inbound = Inbound(seq, msg.subject, event, stored, 2 if seq <= self._delivered_before else 1)
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
        for i, msg, seq in ordered:
            outputs, reason = results[i]
            if reason:
                await self.send_dead_letter(msg, seq, reason, futures)
                terminate.append(msg)
            await self.send_outputs(outputs, futures)
        last_seq = ordered[-1][2] if ordered else self.seq
        await self.settle(futures, msgs[-1] if msgs else None, terminate, len(msgs), last_seq)

    def _answer_invalid(self, seq: int, msg: Msg, reason: str) -> tuple[list[Outgoing], str]:
        try:
            answer = address(self.rules, self.handler.on_invalid(seq, msg.subject, msg.data, reason))
        except OutputRefused as exc:
            return [], f"{reason}; its answer was dropped: {exc}"
        except Exception as exc:  # noqa: BLE001 - the answer to a bad input must not stop the consumer
            log.exception("%s: seq %d: on_invalid failed", self.spec.name, seq)
            return [], f"{reason}; no answer: {type(exc).__name__}: {exc}"
        return answer, reason

    async def _handle(self, inbound: Inbound[E]) -> tuple[list[Outgoing], str]:
        try:
            outputs = address(self.rules, await self.handler.handle(inbound))
        except RetryLater:
            raise
        except OutputRefused as exc:
            log.error("%s: seq %d: %s", self.spec.name, inbound.seq, exc)
            return [], str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug on one input must not stop the consumer
            log.exception("%s: seq %d failed", self.spec.name, inbound.seq)
            return [], f"handler failed: {type(exc).__name__}: {exc}"
        return outputs, ""
