"""The consumer runtime against a real nats-server: outputs before acks, DLQ, checkpoints, replay, kill -9."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from bus import checkpoints
from bus.dlq import CONSUMER, ERROR, SEQ
from bus.embedded import EmbeddedServer
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.runtime import ConsumerRuntime
from testkit.bus import eventually
from testkit.cores import POISON, SumCore, SumState, fold_all, sum_spec
from testkit.events import ticker

ROOT = Path(__file__).resolve().parent.parent


async def publish_prices(nc: Client, prices: list[Decimal], start_ts: int = 1) -> None:
    pub = await Publisher(nc).start()
    await pub.publish_all(ticker(p, ts=start_ts + i, symbol="BTC/USDT") for i, p in enumerate(prices))
    await pub.close()


async def stored(nc: Client, stream: str, subject: str) -> list[tuple[str, bytes]]:
    """(Nats-Msg-Id, payload) of every message on `subject` in `stream`."""
    info = await nc.jetstream().stream_info(stream)
    if info.state.messages == 0:
        return []
    out = []
    async for batch in read_stream(nc, stream, subjects=(subject,)):
        out += [(m.header("Nats-Msg-Id") or "", m.data) for m in batch]
    return out


async def run_until_caught_up(runtime: ConsumerRuntime, stop: asyncio.Event | None = None) -> asyncio.Task[None]:
    stop = stop or asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await asyncio.wait_for(runtime.caught_up.wait(), 20)
    return task


def prices(n: int, seed: int = 1) -> list[Decimal]:
    rnd = random.Random(seed)
    return [Decimal(rnd.randint(90, 110)) for _ in range(n)]


async def test_outputs_are_stored_and_inputs_acked_and_checkpointed(bus: Client) -> None:
    ps = prices(95)
    await publish_prices(bus, ps)
    runtime = ConsumerRuntime(bus, sum_spec(), SumCore())
    stop = asyncio.Event()
    task = await run_until_caught_up(runtime, stop)
    assert runtime.state == fold_all(ps)
    alerts = await stored(bus, "OPS", "ops.test.sum.alert")
    assert [a[0] for a in alerts] == [f"sum:{n}" for n in range(10, 91, 10)]
    info = await bus.jetstream().consumer_info("MARKET", "sum")
    assert info.ack_floor.stream_seq == 95 and info.num_ack_pending == 0
    stop.set()
    await task
    cp = await checkpoints.load(bus, "sum", SumState)
    assert cp is not None and cp.seq == 95 and cp.state == fold_all(ps)


async def test_bad_inputs_go_to_the_dlq_with_the_reason_and_the_consumer_goes_on(bus: Client) -> None:
    await publish_prices(bus, [Decimal(100), Decimal(101)])
    await bus.publish("md.sim.BTC-USDT.ticker", b"{not json")  # undecodable
    await bus.publish(
        "md.sim.BTC-USDT.ticker", b'{"type":"ticker","id":"x","venue":"sim","symbol":"BTC/USDT","last":"abc","ts":1,"ts_local":1}'
    )
    await bus.publish("md.sim.BTC-USDT.ticker", b'{"type":"candle","id":"y"}')  # wrong type
    await bus.flush()
    await publish_prices(bus, [POISON, Decimal(102)], start_ts=10)  # the core raises on 13
    runtime = ConsumerRuntime(bus, sum_spec(), SumCore())
    stop = asyncio.Event()
    task = await run_until_caught_up(runtime, stop)
    assert runtime.state.count == 3 and runtime.state.total == Decimal(303)
    assert runtime.stats.dead_lettered == 4
    js = bus.jetstream()
    dead = []
    async for batch in read_stream(bus, "DLQ"):
        dead += batch
    assert [m.subject for m in dead] == ["dlq.md.sim.BTC-USDT.ticker"] * 4
    reasons = [m.header(ERROR) or "" for m in dead]
    assert "undecodable input" in reasons[0] and "malformed" in reasons[0]
    assert "Invalid decimal string - at `$.last`" in reasons[1]
    assert "Invalid value 'candle'" in reasons[2]
    assert "13 is unlucky" in reasons[3]
    assert {m.header(CONSUMER) for m in dead} == {"sum"}
    assert [int(m.header(SEQ) or 0) for m in dead] == [3, 4, 5, 6]
    assert dead[0].data == b"{not json"  # the original payload, untouched
    info = await js.consumer_info("MARKET", "sum")
    assert info.num_ack_pending == 0 and info.num_pending == 0  # terminated, not redelivered
    # It keeps consuming after dead-lettering.
    await publish_prices(bus, [Decimal(1)], start_ts=100)
    await eventually(lambda: runtime.state.count == 4, what="the next good input")
    stop.set()
    await task


async def test_recovery_replays_from_the_checkpoint_to_the_ack_floor_without_republishing(bus: Client) -> None:
    ps = prices(500, seed=2)
    await publish_prices(bus, ps)
    first = ConsumerRuntime(bus, sum_spec(checkpoint_every=10**9, checkpoint_interval=10**9), SumCore())
    stop = asyncio.Event()
    task = await run_until_caught_up(first, stop)
    # Leave an old checkpoint behind, as a crash between checkpoints would.
    old = msgspec.json.encode(checkpoints.Checkpoint(seq=120, state=fold_all(ps[:120])))
    first.checkpoint = _never  # type: ignore[method-assign]
    stop.set()
    await task
    await bus.jetstream().publish(checkpoints.subject("sum"), old)

    second = ConsumerRuntime(bus, sum_spec(), SumCore())
    await second.recover()
    assert second.stats.replayed == 380  # 121..500, all below the ack floor
    assert second.seq == 500 and second.state == fold_all(ps)
    assert len(await stored(bus, "OPS", "ops.test.sum.alert")) == 50  # nothing published again


async def _never(force: bool = False) -> None:
    return None


async def test_outputs_published_again_after_a_crash_are_dropped_as_duplicates(bus: Client) -> None:
    ps = prices(100, seed=3)
    await publish_prices(bus, ps)
    stop = asyncio.Event()
    first = ConsumerRuntime(bus, sum_spec(), SumCore())
    task = await run_until_caught_up(first, stop)
    stop.set()
    await task
    # The crash we simulate: outputs were stored but neither the acks nor a checkpoint were.
    await checkpoints.delete(bus, "sum")
    js = bus.jetstream()
    await js.delete_consumer("MARKET", "sum")
    await js.add_consumer(
        "MARKET",
        ConsumerConfig(durable_name="sum", deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.ALL, filter_subject="md.sim.*.ticker"),
    )
    second = ConsumerRuntime(bus, sum_spec(), SumCore())
    stop2 = asyncio.Event()
    task2 = await run_until_caught_up(second, stop2)
    stop2.set()
    await task2
    assert second.state == fold_all(ps)
    assert second.stats.outputs == 10 and second.stats.duplicates == 10  # JetStream said: seen these
    assert len(await stored(bus, "OPS", "ops.test.sum.alert")) == 10  # and holds one copy


async def test_undeclared_output_subjects_are_refused(bus: Client) -> None:
    await publish_prices(bus, prices(10))
    spec = replace(sum_spec(), outputs=("ops.other.*.alert",))
    runtime = ConsumerRuntime(bus, spec, SumCore())
    stop = asyncio.Event()
    task = await run_until_caught_up(runtime, stop)
    stop.set()
    await task
    assert runtime.stats.dead_lettered == 1  # the 10th input's output is not declared
    assert runtime.state.count == 9


@pytest.mark.e2e
async def test_sigkill_mid_stream_then_restart_equals_a_run_that_never_stopped(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    ps = prices(30_000, seed=4)
    rnd = random.Random(7)

    async def feed() -> None:  # inputs keep arriving while the consumer is being killed
        for i in range(0, len(ps), 500):
            await publish_prices(bus, ps[i : i + 500], start_ts=1 + i)
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(feed())

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "testkit.sum_consumer", nats_server.url],
            cwd=ROOT,
            stdout=open(tmp_path / "consumer.log", "ab"),
            stderr=subprocess.STDOUT,
        )

    js = bus.jetstream()
    kills = 0
    proc = start()
    try:
        while kills < 6:
            await asyncio.sleep(rnd.uniform(0.3, 0.9))
            try:
                floor = (await js.consumer_info("MARKET", "sum")).ack_floor.stream_seq
            except Exception:  # noqa: BLE001 - not created yet
                floor = 0
            if floor >= len(ps) or (feeding.done() and kills >= 4):
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            proc = start()

        async def done() -> bool:
            info = await js.consumer_info("MARKET", "sum")
            return info.ack_floor.stream_seq == len(ps) and info.num_ack_pending == 0

        await feeding
        await eventually(done, timeout=60, what="the restarted consumer to catch up")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert kills >= 4, "the consumer finished before it could be killed often enough"
    cp = await checkpoints.load(bus, "sum", SumState)
    assert cp is not None and cp.seq == len(ps)
    assert cp.state == fold_all(ps)
    alerts = await stored(bus, "OPS", "ops.test.sum.alert")
    ids = [a[0] for a in alerts]
    assert len(ids) == len(set(ids)) == len(ps) // 10  # every output exactly once
