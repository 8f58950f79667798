"""Nothing a client publishes can stop, stall or fool a consumer (DESIGN.md rule 6, for real).

For every consumer declared in testkit/hostile.py, against a real nats-server with the real
consumer running: generated bad payloads on every subject it reads, then a valid input. The
valid input's outputs must appear, the durable consumer's ack floor must pass the bad ones, the
DLQ must hold each of them with its reason, and no session may have been rebuilt because of
them. The consumer and its server live for the whole test; hypothesis draws the payloads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.dlq import CONSUMER, ERROR, SEQ, TRUNCATED
from bus.reader import read_stream
from testkit import hostile
from testkit.bus import eventually
from testkit.loop import Loop

T = TypeVar("T")


class Running:
    def __init__(self, target: hostile.Target, workdir: Path) -> None:
        self.target = target
        self.loop = Loop()
        self.exits = AsyncExitStack()
        self.stop = asyncio.Event()
        self.stack = self.loop.run(self._start(workdir))
        self.sessions = self.stack.consumer.stats.sessions

    async def _start(self, workdir: Path) -> hostile.Stack:
        await self.exits.__aenter__()
        return await hostile.start(self.target, workdir, self.exits, self.stop)

    def close(self) -> None:
        self.loop.run(self._close())
        self.loop.close()

    async def _close(self) -> None:
        self.stop.set()  # the consumers end their sessions; then the stack unwinds
        await self.exits.aclose()
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in leftovers:  # nats-py's and the publishers' background tasks
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


@pytest.fixture(params=hostile.TARGETS, ids=lambda t: t.name)
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    r = Running(request.param, tmp_path)
    yield r
    r.close()


@pytest.fixture(params=[t for t in hostile.TARGETS if t.semantic()], ids=lambda t: t.name)
def folding_market_data(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Running]:
    r = Running(request.param, tmp_path)
    yield r
    r.close()


async def dead_letters(s: hostile.Stack, after: int) -> list[Any]:
    if (await s.nc.jetstream().stream_info("DLQ")).state.last_seq <= after:
        return []
    out = []
    async for batch in read_stream(s.nc, "DLQ", start_seq=after + 1):
        out += [m for m in batch if m.header(CONSUMER) == s.consumer.spec.name]
    return out


async def publish_raw(s: hostile.Stack, payloads: list[tuple[str, bytes]]) -> None:
    js = s.nc.jetstream()
    for subject, payload in payloads:
        await js.publish(subject, payload)  # stored as sent: no project code on the way


async def bad_then_valid(r: Running, payloads: list[tuple[str, bytes]]) -> None:
    s = r.stack
    dlq_before = await hostile.last_seq(s.nc, "DLQ")
    stored_before = await hostile.last_seq(s.nc, s.stream)
    await publish_raw(s, payloads)
    # In the consumer's input stream before the valid input: a sourced stream copies each source
    # on its own, so a valid input from another source could otherwise overtake them.
    await eventually(lambda: _stored_past(s, stored_before + len(payloads)), timeout=20, what="the bad payloads in the input stream")
    await r.target.valid(s)  # the valid input behind them is processed normally
    input_last = await hostile.last_seq(s.nc, s.stream)
    await hostile.settled_past(s, input_last)
    # The ack floor passed the poison (acks travel on the consumer's connection after it handled
    # the input, so the server may count them a moment after `settled_past`).
    await eventually(lambda: _acked_past(s, input_last), timeout=20, what=f"the ack floor past {input_last}")
    dead = await dead_letters(s, dlq_before)
    assert len(dead) == len(payloads), [m.header(ERROR) for m in dead]
    assert all(m.header(ERROR) and m.header(SEQ) for m in dead)
    assert s.consumer.stats.sessions == r.sessions, s.consumer.stats.last_error  # never restarted by it


async def _acked_past(s: hostile.Stack, seq: int) -> bool:
    info = await s.nc.jetstream().consumer_info(s.stream, s.consumer.spec.name)
    return info.ack_floor.stream_seq >= seq


async def _stored_past(s: hostile.Stack, seq: int) -> bool:
    return await hostile.last_seq(s.nc, s.stream) >= seq


@st.composite
def bad_batch(draw: st.DrawFn, target: hostile.Target) -> list[tuple[str, bytes]]:
    inputs = target.inputs()
    batch = []
    for _ in range(draw(st.integers(1, 4))):
        subject, example = draw(st.sampled_from(inputs))
        batch.append((subject, draw(hostile.mutations(subject, example))))
    return batch


def test_bad_payloads_on_every_subject_are_dead_lettered_and_the_consumer_goes_on(running: Running) -> None:
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    @given(batch=bad_batch(running.target))
    def check(batch: list[tuple[str, bytes]]) -> None:
        running.loop.run(bad_then_valid(running, batch))

    check()


def test_garbage_that_decodes_is_refused_by_the_one_market_data_guard(folding_market_data: Running) -> None:
    r = folding_market_data
    r.loop.run(bad_then_valid(r, r.target.semantic()))


def test_a_payload_at_the_servers_limit_is_dead_lettered_truncated_and_kept_whole_in_its_stream(running: Running) -> None:
    s = running.stack
    limit = int(s.nc.max_payload)
    subject = running.target.inputs()[0][0]
    huge = b"{" + b"x" * (limit - 200) + b"}"  # the stream's copy fits; ours plus DLQ headers would not

    async def scenario() -> None:
        before = await hostile.last_seq(s.nc, "DLQ")
        await bad_then_valid(running, [(subject, huge)])
        [dead] = await dead_letters(s, before)
        assert dead.header(TRUNCATED) == str(len(huge)) and len(dead.data) < len(huge)
        assert s.nc.is_connected  # the server did not close the connection

    running.loop.run(scenario())


@pytest.mark.parametrize("name", ["arbitrage", "funding"])
def test_every_subject_a_consumer_sources_has_a_hostile_example(name: str) -> None:
    """The declared inputs are the input stream's sources, all of them (a subject left out of the
    target would never be thrown garbage at)."""
    from bus.streams import StreamSpec
    from monitors.funding.runner import input_stream as funding_stream
    from monitors.funding.testing import HOSTILE
    from schemas.subjects import matches
    from strategies.arbitrage.runner import input_stream as arbitrage_stream

    stream: StreamSpec = arbitrage_stream(hostile._arb()) if name == "arbitrage" else funding_stream(HOSTILE)
    [target] = [t for t in hostile.TARGETS if t.name == name]
    examples = [subject for subject, _ in target.inputs()]
    patterns = [p for source in stream.sources for p in source.subjects]
    assert [p for p in patterns if not any(matches(s, p) for s in examples)] == []
    assert [s for s in examples if not any(matches(s, p) for p in patterns)] == []
