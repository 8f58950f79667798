"""Paper trading, the shell: the consumer that reads a real venue's trades and journals prints.

A durable consumer (`venue-<venue>-feed`) on the MARKET stream, filtered to the paper venue's
markets (`md.<paper_venue>.<symbol token>.trade` and `.gap`), run by the consumer machinery
every component shares (bus/consumer.py: lease, sessions rebuilt from the log, acks after
outputs, dead letters). Each input is admitted like any consumer's (decodes, its body names
its subject, not dated in the future), then judged (venues/sim/paper.py, market data sanity
from schemas/sanity.py); what is refused goes to `dlq.<subject>` with the reason and moves
nothing. A trade becomes a `Tick` and a `Quote` in the simulated exchange's journal, which the
engine applies like any tick; a gap marker of the feed is republished as the paper venue's own.

It keeps no state of its own: the engine's state, rebuilt from the journal, is the truth. Each
session first waits until the engine applied the whole journal, then resumes after the last
trade it printed (a tick's step is its trade's MARKET sequence), so a trade delivered again
after a crash is never printed twice, and the judge starts from the prices the engine holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import Consumer, ConsumerSpec, delivery
from bus.contract import InputRejected, Outgoing, OutputRefused, address, admit
from bus.publisher import PubAck, Publisher
from bus.streams import MARKET, StreamSpec
from schemas import subjects
from schemas.codec import encode
from venues.sim.config import SimConfig
from venues.sim.journal import Entry, Quote, Tick, journal_id, journal_subject
from venues.sim.paper import PaperInput, PaperPrints, feed_subjects
from venues.sim.state import EngineState

log = logging.getLogger("sim.paper")


class Engine(Protocol):
    """What the feed needs of the simulated exchange (venues/sim/service.py)."""

    journal: StreamSpec

    @property
    def state(self) -> EngineState: ...

    async def wait_applied(self, seq: int, timeout: float = 10.0) -> None: ...


def feed_spec(config: SimConfig) -> ConsumerSpec:
    return ConsumerSpec(
        name=f"venue-{config.venue}-feed",
        stream=MARKET.name,
        input_type=PaperInput,
        subjects=feed_subjects(config),
        outputs=(subjects.everything("md", config.venue),),  # gap markers; ticks go to the journal
        batch=256,
        checkpoint_every=5_000,
        checkpoint_interval=5.0,
    )


class PaperFeed(Consumer):
    def __init__(self, nc: Client, config: SimConfig, engine: Engine, publisher: Publisher | None = None) -> None:
        super().__init__(nc, feed_spec(config), publisher)
        self.config = config
        self.venue = config.venue
        self.engine = engine
        self.prints = PaperPrints(config)
        self.printed = 0  # trades printed by this process (status only)
        self.last_print = 0.0  # monotonic time of the last one (status only)
        self.journaled = 0  # the last journal sequence this consumer wrote (stored)

    async def prepare(self) -> None:
        """Where to resume, and the prices to judge from: both from what the engine applied."""
        last = (await self.js.stream_info(self.engine.journal.name)).state.last_seq
        await self.engine.wait_applied(last, timeout=30.0)
        state = self.engine.state
        self.prints.reset(state)
        printed = max((ms.step for ms in state.markets.values()), default=0)
        cp = await checkpoints.load(self.nc, self.spec.name, type(None))
        acked, _delivered = await self.positions()
        self.seq = max(acked, printed, cp.seq if cp else 0)
        self._checkpointed_seq = cp.seq if cp else -1
        if cp is None and self.seq == 0 and self.config.paper_from == "now":
            # A fresh paper venue trades from now on, not on the days of trades MARKET keeps.
            self.seq = (await self.js.stream_info(MARKET.name)).state.last_seq
        if cp is None:
            await self.checkpoint(force=True)  # the start position survives a crash before the first trade
        log.info("%s: reading %s from MARKET seq %d (clock %d)", self.spec.name, ", ".join(self.spec.subjects), self.seq + 1, state.ts)

    async def process(self, msgs: list[Msg]) -> None:
        assert self.publisher is not None
        outputs: list[asyncio.Future[PubAck]] = []
        journal: list[asyncio.Future[PubAck]] = []
        terminate: list[Msg] = []
        seq = self.seq
        for msg in msgs:
            mseq, stored, pending = delivery(msg)
            self.stats.lag = pending
            if mseq <= seq:  # printed (or refused) already
                self.stats.redelivered += 1
                continue
            seq = mseq
            verdict, reason = self._judge(msg, mseq, stored)
            if reason:
                await self.send_dead_letter(msg, mseq, reason, outputs)
                terminate.append(msg)
            elif isinstance(verdict, Tick):
                # Fills first, then the print's market data (a tick in two halves, ADR 0004).
                for entry in (verdict, Quote(step=verdict.step)):
                    journal.append(await self._journal(entry))
                self.printed += 1
                self.last_print = time.monotonic()
            else:
                # A gap marker, once the prints before it are applied and their market data
                # published, so md.<venue> shows the gap where the feed had it.
                await self._applied(journal)
                await self.send_outputs(verdict, outputs)
        await self.settle(outputs + journal, msgs[-1] if msgs else None, terminate, len(msgs), seq)
        if journal:
            self.journaled = max(self.journaled, max(f.result().seq for f in journal))

    def _judge(self, msg: Msg, seq: int, stored: int) -> tuple[Tick | list[Outgoing], str]:
        """The tick to journal or the gap marker to publish, or the reason to dead-letter."""
        event, reason = admit(self.rules, msg.subject, msg.data, stored)
        if reason:
            return [], reason
        try:
            verdict = self.prints.judge(seq, event)
            return (verdict if isinstance(verdict, Tick) else address(self.rules, [verdict])), ""
        except (InputRejected, OutputRefused) as exc:
            return [], f"rejected by the paper feed: {exc}"
        except Exception as exc:  # noqa: BLE001 - a bad input must not stop the feed (as in apply_input)
            # Raised from here, it would end the session and come back in every next one, for good.
            return [], f"rejected by the paper feed: {type(exc).__name__}: {exc}"

    async def _journal(self, entry: Entry) -> asyncio.Future[PubAck]:
        assert self.publisher is not None
        return await self.publisher.send(journal_subject(self.venue, entry), encode(entry), journal_id(self.venue, entry))

    async def _applied(self, journal: list[asyncio.Future[PubAck]]) -> None:
        """Wait until the engine applied every entry this consumer journaled so far."""
        acks = await asyncio.gather(*journal)
        await self.engine.wait_applied(max([self.journaled, *(a.seq for a in acks)]))

    def status(self) -> dict[str, object]:
        return {
            "source": self.config.paper_venue,
            "input_seq": self.seq,
            "printed": self.printed,
            "dead_lettered": self.stats.dead_lettered,
            "clock": self.prints.clock,
            "silent_s": round(time.monotonic() - self.last_print, 1) if self.last_print else None,
            "last_error": self.stats.last_error,
        }
