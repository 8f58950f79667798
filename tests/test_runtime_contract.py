"""The consumer runtime keeps its promises where a crash cannot show it breaking them.

Acks leave after the outputs they cover are stored; a recovery folds what was acked without
publishing again; every checkpoint's state is exactly the fold of the inputs up to its sequence.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import msgspec
from nats.aio.client import Client

from bus import checkpoints, streams
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.runtime import ConsumerRuntime
from bus.streams import CHECKPOINTS, OPS
from testkit.bus import eventually
from testkit.cores import SumCore, SumState, fold_all, sum_spec
from testkit.events import ticker


async def publish(nc: Client, prices: list[Decimal], start_ts: int) -> None:
    pub = await Publisher(nc).start()
    await pub.publish_all(ticker(p, ts=start_ts + i, symbol="BTC/USDT") for i, p in enumerate(prices))
    await pub.close()


async def alerts(nc: Client) -> list[str]:
    if (await nc.jetstream().stream_info("OPS")).state.messages == 0:
        return []
    out = []
    async for batch in read_stream(nc, "OPS", subjects=("ops.test.sum.alert",)):
        out += [m.header("Nats-Msg-Id") or "" for m in batch]
    return out


async def ack_floor(nc: Client) -> int:
    return int((await nc.jetstream().consumer_info("MARKET", "sum")).ack_floor.stream_seq or 0)


async def test_inputs_stay_unacked_while_their_outputs_cannot_be_stored_and_every_output_appears_once_they_can(bus: Client) -> None:
    prices = [Decimal(100 + i % 7) for i in range(50)]
    await publish(bus, prices[:20], start_ts=1)
    runtime = ConsumerRuntime(bus, sum_spec(batch=8), SumCore())
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await eventually(lambda: runtime.seq == 20, what="the first twenty inputs")
    assert await alerts(bus) == ["sum:10", "sum:20"]

    await bus.jetstream().delete_stream(OPS.name)  # the output stream refuses every write now
    await publish(bus, prices[20:], start_ts=21)
    await eventually(lambda: "no stream" in runtime.stats.last_error, what="a refused output")
    await asyncio.sleep(0)  # let any ack that was (wrongly) sent reach the server
    floor = await ack_floor(bus)
    assert 20 <= floor < 30, floor  # input 30's output is not stored: it, and all after it, stay unacked

    await streams.apply(bus.jetstream())  # the output stream is back
    await eventually(lambda: runtime.seq == 50, timeout=30, what="the consumer to catch up")
    assert await alerts(bus) == ["sum:30", "sum:40", "sum:50"]  # each output, once
    assert await ack_floor(bus) == 50
    stop.set()
    await task
    assert runtime.state == fold_all(prices)


class CountingPublisher(Publisher):
    def __init__(self, nc: Client) -> None:
        super().__init__(nc)
        self.subjects: list[str] = []

    async def send(self, subject: str, payload: bytes, msg_id: str | None = None, headers: dict[str, str] | None = None) -> Any:
        self.subjects.append(subject)
        return await super().send(subject, payload, msg_id, headers)


async def test_recovery_folds_what_was_acked_without_publishing_any_of_its_outputs(bus: Client) -> None:
    prices = [Decimal(90 + i % 20) for i in range(500)]
    await publish(bus, prices, start_ts=1)
    first = ConsumerRuntime(bus, sum_spec(checkpoint_every=10**9, checkpoint_interval=10**9), SumCore())
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await eventually(lambda: first.seq == 500, what="the first run")

    async def no_checkpoint(force: bool = False) -> None:  # a crash: no checkpoint at the end
        return None

    first.checkpoint = no_checkpoint  # type: ignore[method-assign]
    stop.set()
    await task
    assert await ack_floor(bus) == 500 and await checkpoints.load(bus, "sum", SumState) is None

    publisher = await CountingPublisher(bus).start()
    second = ConsumerRuntime(bus, sum_spec(), SumCore(), publisher)
    await second.recover()
    assert second.stats.replayed == 500 and second.state == fold_all(prices)
    assert [s for s in publisher.subjects if s.startswith("ops.test")] == []  # observed, not deduplicated
    await publisher.close()


async def test_every_checkpoint_holds_the_fold_of_exactly_the_inputs_up_to_its_sequence(bus: Client) -> None:
    prices = [Decimal(80 + (i * 7) % 41) for i in range(400)]
    runtime = ConsumerRuntime(bus, sum_spec(checkpoint_every=37, checkpoint_interval=10**9, batch=16), SumCore())
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    for i in range(0, 400, 50):  # inputs arrive while it runs, so checkpoints fall mid-batch and mid-stream
        await publish(bus, prices[i : i + 50], start_ts=1 + i)
        await eventually(lambda i=i: runtime.seq == i + 50, what=f"input {i + 50}")
    stop.set()
    await task
    kv = await bus.jetstream().key_value(CHECKPOINTS.name)
    history = await kv.history("sum")
    assert len(history) >= 4
    for entry in history:
        cp = msgspec.json.decode(entry.value, type=checkpoints.Checkpoint[SumState])
        assert cp.state == fold_all(prices[: cp.seq]), cp.seq
