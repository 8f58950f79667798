"""bus/consumer.py and bus/runtime.py exactly: what one batch does (state, stats, acks, outputs,
dead letters), recovery from checkpoint and ack floor, when checkpoints are written, the durable
consumer's configuration and positions, sessions rebuilt with backoff, caught_up, and the lease.

Batches are handed to `process` as JetStream deliveries built here, with reply subjects of a
stream that does not exist: the acks they receive are captured as plain messages, so each test
says exactly which inputs were acked or terminated. Everything else runs on a real nats-server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import types
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import KeyNotFoundError

import bus.consumer as consumer_module
import bus.runtime as runtime_module
from bus import checkpoints
from bus.connection import connect
from bus.consumer import Consumer, ConsumerSpec, RuntimeStats, _either, delivery, max_payload
from bus.contract import DEFAULT_MAX_PAYLOAD, Inbound, InputRejected, Rules, admit
from bus.dlq import dead_letter
from bus.embedded import EmbeddedServer
from bus.errors import LeaseLost, ReplayIncomplete, Stalled
from bus.lease import lease_key
from bus.publisher import Publisher
from bus.reader import read_stream
from bus.runtime import ConsumerRuntime
from bus.streams import REGISTRY, Source, StreamSpec, apply_stream
from schemas.codec import encode
from schemas.market import Ticker
from schemas.ops import RiskAlert
from schemas.subjects import subject_of
from testkit.bus import eventually
from testkit.deliveries import Acks, handmade, stored
from testkit.events import candle, ticker

SUBJECT = "md.sim.BTC-USDT.ticker"
ACK_PREFIX = "$JS.ACK.T.sum"  # the reply subjects of the deliveries built here


# ----------------------------------------------------------------------------- a core


class Keep(msgspec.Struct, frozen=True):
    seqs: tuple[int, ...] = ()
    total: Decimal = Decimal(0)


class KeepCore:
    """Keeps every sequence it folds; an even price answers with an alert named after its input;
    13 is refused, 666 fails."""

    def initial_state(self) -> Keep:
        return Keep()

    def step(self, state: Keep, inbound: Inbound[Ticker]) -> tuple[Keep, Sequence[Any]]:
        last = inbound.event.last
        if last == 13:
            raise InputRejected("13 is unlucky")
        if last == 666:
            raise RuntimeError("the core broke")
        new = Keep((*state.seqs, inbound.seq), state.total + last)
        return new, ([alert(inbound.seq, new.total)] if last % 2 == 0 else [])


def alert(seq: int, total: Decimal) -> RiskAlert:
    return RiskAlert(id=f"keep:{seq}", component="test", instance="sum", severity="info", kind="sum", message=str(total), ts=seq)


def fold(prices: Sequence[int], first_seq: int = 1) -> Keep:
    state = Keep()
    for seq, p in enumerate(prices, start=first_seq):
        if p not in (13, 666):
            state = Keep((*state.seqs, seq), state.total + p)
    return state


def spec(**kw: Any) -> ConsumerSpec:
    base = ConsumerSpec(
        name="sum",
        stream="MARKET",
        input_type=Ticker,
        state_type=Keep,
        subjects=("md.sim.*.ticker",),
        outputs=("ops.test.*.alert",),
        checkpoint_every=10**9,
        checkpoint_interval=10**9,
    )
    return replace(base, **kw)


def tick(price: int, ts: int = 1) -> Ticker:
    return ticker(Decimal(price), ts=ts, symbol="BTC/USDT")


# ----------------------------------------------------------------------------- deliveries and what they receive


def delivered(nc: Client, seq: int, body: Any, *, pending: int = 0, ts_ms: int = 1, subject: str = SUBJECT) -> Msg:
    return handmade(nc, ACK_PREFIX, seq, body, subject, pending=pending, ts_ms=ts_ms)


async def alerts(nc: Client) -> list[tuple[str, bytes]]:
    return [(m.header("Nats-Msg-Id") or "", m.data) for m in await stored(nc, "OPS")]


async def runtime_on(nc: Client, sp: ConsumerSpec | None = None, **kw: Any) -> ConsumerRuntime[Keep, Ticker]:
    rt: ConsumerRuntime[Keep, Ticker] = ConsumerRuntime(nc, sp or spec(), KeepCore(), **kw)
    await rt.ensure_publisher()
    return rt


async def publish(nc: Client, messages: Sequence[Any]) -> None:
    pub = await Publisher(nc).start()
    await pub.publish_all(messages)
    await pub.close()


# ----------------------------------------------------------------------------- pure helpers


def test_a_spec_gives_its_rules_with_the_servers_limit() -> None:
    sp = spec(route=None, max_future_ms=7)
    assert sp.rules(4321) == Rules(Ticker, ("ops.test.*.alert",), None, 7, 4321)
    assert sp.rules() == Rules(Ticker, ("ops.test.*.alert",), None, 7, DEFAULT_MAX_PAYLOAD)
    assert spec().rules(10).route is subject_of


def test_a_delivery_says_its_stream_sequence_store_time_and_pending_count() -> None:
    msg = Msg(_client=None, subject=SUBJECT, reply="$JS.ACK.MARKET.sum.3.41.7.1700000000123456789.12")
    assert delivery(msg) == (41, 1700000000123456789, 12)


def test_a_message_that_is_not_a_jetstream_delivery_is_refused() -> None:
    msg = Msg(_client=None, subject=SUBJECT, reply="_INBOX.abc")
    with pytest.raises(ValueError) as info:
        delivery(msg)
    assert str(info.value) == "not a JetStream delivery: '_INBOX.abc'"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (1234, 1234),
        (1, 1),
        ("2048", 2048),
        (0, DEFAULT_MAX_PAYLOAD),
        (-5, DEFAULT_MAX_PAYLOAD),
        (None, DEFAULT_MAX_PAYLOAD),
        ("lots", DEFAULT_MAX_PAYLOAD),
    ],
)
def test_the_servers_limit_is_used_when_it_is_a_positive_number(limit: Any, expected: int) -> None:
    assert max_payload(types.SimpleNamespace(max_payload=limit)) == expected  # type: ignore[arg-type]


def test_without_a_known_limit_the_embedded_servers_is_assumed() -> None:
    assert max_payload(types.SimpleNamespace()) == DEFAULT_MAX_PAYLOAD  # type: ignore[arg-type]


async def test_either_event_sets_it_and_a_cancelled_watch_sets_nothing() -> None:
    for which in (0, 1):
        a, b = asyncio.Event(), asyncio.Event()
        either = _either(a, b)
        await asyncio.sleep(0)
        assert not either.is_set()
        (a, b)[which].set()
        await eventually(either.is_set, what="either")
        await asyncio.sleep(0)
        assert either._task.done()
    a, b = asyncio.Event(), asyncio.Event()
    either = _either(a, b)
    await asyncio.sleep(0)
    either.cancel_watch()
    await asyncio.sleep(0)
    a.set()
    b.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not either.is_set() and either._task.cancelled()


async def test_a_watch_leaves_no_wait_behind() -> None:
    a, b = asyncio.Event(), asyncio.Event()
    before = asyncio.all_tasks()
    either = _either(a, b)
    await asyncio.sleep(0)
    a.set()
    await eventually(either.is_set, what="either")
    for _ in range(5):
        await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


def test_stats_start_at_zero() -> None:
    stats = RuntimeStats()
    assert (stats.processed, stats.replayed, stats.dead_lettered, stats.outputs, stats.duplicates) == (0, 0, 0, 0, 0)
    assert (stats.checkpoints, stats.sessions, stats.last_seq, stats.lag, stats.last_error) == (0, 0, 0, 0, "")


# ----------------------------------------------------------------------------- a fresh runtime


async def test_a_new_runtime_starts_before_the_first_input_with_the_servers_limit(bus: Client) -> None:
    rt: ConsumerRuntime[Keep, Ticker] = ConsumerRuntime(bus, spec(), KeepCore())
    assert (rt.seq, rt.state, rt.lease, rt.publisher) == (0, Keep(), None, None)
    assert rt.rules == spec().rules(bus.max_payload) and not rt.caught_up.is_set()
    publisher = await rt.ensure_publisher()
    assert publisher is rt.publisher and await rt.ensure_publisher() is publisher
    given = await Publisher(bus).start()
    assert await ConsumerRuntime(bus, spec(), KeepCore(), given).ensure_publisher() is given


# ----------------------------------------------------------------------------- one batch


async def test_a_batch_is_folded_its_outputs_stored_in_order_and_its_last_input_acked(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    seen: list[tuple[Keep, int]] = []
    rt = await runtime_on(bus, on_state=lambda s, q: seen.append((s, q)))
    msgs = [delivered(bus, 1, tick(2), pending=3), delivered(bus, 2, tick(3), pending=2), delivered(bus, 4, tick(4), pending=7)]
    await rt.process(msgs)
    assert rt.state == Keep((1, 2, 4), Decimal(9)) and rt.seq == 4
    assert seen == [(rt.state, 4)]
    s = rt.stats
    assert (s.processed, s.outputs, s.duplicates, s.dead_lettered, s.last_seq, s.lag) == (3, 2, 0, 0, 4, 7)
    assert await alerts(bus) == [("keep:1", encode(alert(1, Decimal(2)))), ("keep:4", encode(alert(4, Decimal(9))))]
    assert await acks.settled(bus, 1) == [(4, b"+ACK")]


async def test_inputs_already_folded_are_skipped_but_counted_and_acked(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await runtime_on(bus)
    await rt.process([])  # nothing to fold, nothing to ack
    assert rt.seq == 0 and rt.stats.processed == 0
    await rt.process([delivered(bus, 5, tick(2))])
    await rt.process([delivered(bus, 4, tick(100)), delivered(bus, 5, tick(200)), delivered(bus, 6, tick(1), pending=1)])
    assert rt.state == Keep((5, 6), Decimal(3)) and rt.seq == 6
    assert (rt.stats.processed, rt.stats.last_seq, rt.stats.lag) == (4, 6, 1)
    await rt.process([delivered(bus, 6, tick(300), pending=0)])  # a batch of redeliveries only
    assert rt.state == Keep((5, 6), Decimal(3)) and rt.seq == 6 and rt.stats.processed == 5 and rt.stats.lag == 0
    assert await acks.settled(bus, 3) == [(5, b"+ACK"), (6, b"+ACK"), (6, b"+ACK")]
    assert [a[0] for a in await alerts(bus)] == ["keep:5"]


async def test_an_output_stored_before_counts_as_a_duplicate(bus: Client) -> None:
    first, second = await runtime_on(bus), await runtime_on(bus)
    batch = [delivered(bus, 1, tick(2)), delivered(bus, 2, tick(4)), delivered(bus, 3, tick(1))]
    await first.process(batch)
    await second.process(batch[1:])
    assert (first.stats.outputs, first.stats.duplicates) == (2, 0)
    assert (second.stats.outputs, second.stats.duplicates) == (1, 1)
    assert [a[0] for a in await alerts(bus)] == ["keep:1", "keep:2"]
    await second.process([delivered(bus, 4, tick(3)), delivered(bus, 5, tick(4))])  # the counts add up
    assert (second.stats.outputs, second.stats.duplicates) == (2, 1)
    await first.process([delivered(bus, 4, tick(3)), delivered(bus, 5, tick(4))])
    assert (first.stats.outputs, first.stats.duplicates) == (3, 1)


async def test_a_runtime_takes_the_limit_its_server_announces(bus: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus, "_max_payload", 65536)  # what nats-py keeps from the server's INFO
    rt: ConsumerRuntime[Keep, Ticker] = ConsumerRuntime(bus, spec(), KeepCore())
    assert rt.rules.max_payload == 65536 == bus.max_payload


async def test_bad_inputs_are_dead_lettered_with_their_reason_and_terminated_and_the_rest_acked(
    bus: Client, caplog: pytest.LogCaptureFixture
) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await runtime_on(bus)
    future = tick(2, ts=10**9)
    msgs = [
        delivered(bus, 1, b"{not json"),
        delivered(bus, 2, tick(2)),
        delivered(bus, 3, tick(13)),
        delivered(bus, 4, future, ts_ms=1),  # stored long before the time it names
        delivered(bus, 5, tick(666), pending=4),
    ]
    await rt.process(msgs)
    assert rt.state == Keep((2,), Decimal(2)) and rt.seq == 5
    assert (rt.stats.dead_lettered, rt.stats.processed, rt.stats.outputs, rt.stats.lag) == (4, 5, 5, 4)
    reasons = {
        1: "undecodable input: JSON is malformed: object keys must be strings (byte 1)",
        3: "rejected by the core: 13 is unlucky",
        4: "dated 999999999 ms after it was stored (at most 5000 ms allowed)",
        5: "rejected by the core: RuntimeError: the core broke",
    }
    dead = await stored(bus, "DLQ")
    assert [m.subject for m in dead] == [f"dlq.{SUBJECT}"] * 4
    assert [(m.headers(), m.data) for m in dead] == [
        (
            {
                "Nats-Msg-Id": f"dlq:sum:MARKET:{seq}",
                "Sqt-Error": reason,
                "Sqt-Consumer": "sum",
                "Sqt-Stream": "MARKET",
                "Sqt-Seq": str(seq),
                "Sqt-Subject": SUBJECT,
            },
            msgs[seq - 1].data,
        )
        for seq, reason in reasons.items()
    ]
    assert await acks.settled(bus, 5) == [(1, b"+TERM"), (3, b"+TERM"), (4, b"+TERM"), (5, b"+TERM"), (5, b"+ACK")]
    warned = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "bus.consumer"]
    assert warned == [(logging.WARNING, f"sum: seq {seq} on {SUBJECT} dead-lettered: {reason}") for seq, reason in reasons.items()]


async def test_a_dead_letter_is_cut_to_the_servers_limit(bus: Client) -> None:
    rt = await runtime_on(bus)
    rt.rules = spec().rules(2048)
    junk = b"x" * 4000
    await rt.process([delivered(bus, 9, junk)])
    reason = admit(spec().rules(), SUBJECT, junk)[1]
    assert reason.startswith("undecodable input: ")
    subject, msg_id, headers, data = dead_letter("sum", "MARKET", 9, SUBJECT, reason, junk, 2048)
    (dead,) = await stored(bus, "DLQ")
    assert (dead.subject, dead.headers(), dead.data) == (subject, {"Nats-Msg-Id": msg_id, **headers}, data)
    assert dead.header("Sqt-Truncated") == "4000" and len(data) < 2048


async def test_a_batch_whose_outputs_cannot_be_stored_changes_nothing_and_acks_nothing(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    seen: list[tuple[Keep, int]] = []
    rt = await runtime_on(bus, on_state=lambda s, q: seen.append((s, q)))
    await rt.process([delivered(bus, 1, tick(1))])
    await bus.jetstream().delete_stream("OPS")
    with pytest.raises(Exception, match="no stream"):
        await rt.process([delivered(bus, 2, tick(1)), delivered(bus, 3, tick(2))])
    assert rt.state == Keep((1,), Decimal(1)) and rt.seq == 1 and rt.stats.processed == 1
    assert seen == [(Keep((1,), Decimal(1)), 1)]
    assert await acks.settled(bus, 1) == [(1, b"+ACK")]


# ----------------------------------------------------------------------------- checkpoints


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


async def latest_checkpoint(nc: Client) -> tuple[int, Keep] | None:
    cp = await checkpoints.load(nc, "sum", Keep)
    return None if cp is None else (cp.seq, cp.state)


async def test_a_checkpoint_is_due_every_n_inputs(bus: Client) -> None:
    rt = await runtime_on(bus, spec(checkpoint_every=3))
    await rt.process([delivered(bus, 1, tick(1)), delivered(bus, 2, tick(1))])
    await rt.checkpoint()
    assert rt.stats.checkpoints == 0 and await latest_checkpoint(bus) is None
    await rt.process([delivered(bus, 3, tick(5))])
    await rt.checkpoint()
    assert rt.stats.checkpoints == 1 and await latest_checkpoint(bus) == (3, Keep((1, 2, 3), Decimal(7)))
    await rt.process([delivered(bus, 4, tick(1)), delivered(bus, 5, tick(1))])
    await rt.checkpoint()  # two since the last one
    assert rt.stats.checkpoints == 1
    await rt.process([delivered(bus, 5, tick(1))])  # a redelivery counts too
    await rt.checkpoint()
    assert rt.stats.checkpoints == 2 and await latest_checkpoint(bus) == (5, Keep((1, 2, 3, 4, 5), Decimal(9)))


async def test_a_checkpoint_is_due_every_t_seconds(bus: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(1000.0)
    monkeypatch.setattr(consumer_module, "time", clock)
    rt = await runtime_on(bus, spec(checkpoint_interval=2.0))
    await rt.process([delivered(bus, 1, tick(1))])
    clock.now = 1001.75
    await rt.checkpoint()
    assert rt.stats.checkpoints == 0
    clock.now = 1002.0
    await rt.checkpoint()
    assert rt.stats.checkpoints == 1 and await latest_checkpoint(bus) == (1, Keep((1,), Decimal(1)))
    await rt.process([delivered(bus, 2, tick(1))])
    clock.now = 1003.5
    await rt.checkpoint()
    assert rt.stats.checkpoints == 1
    clock.now = 1004.0
    await rt.checkpoint()
    assert rt.stats.checkpoints == 2 and await latest_checkpoint(bus) == (2, Keep((1, 2), Decimal(2)))


async def test_a_forced_checkpoint_is_written_unless_nothing_changed(bus: Client) -> None:
    rt = await runtime_on(bus)
    await rt.checkpoint(force=True)  # nothing folded yet, but never checkpointed either
    assert rt.stats.checkpoints == 1 and await latest_checkpoint(bus) == (0, Keep())
    await rt.checkpoint(force=True)
    assert rt.stats.checkpoints == 1
    await rt.process([delivered(bus, 1, tick(2))])
    await rt.finish()
    assert rt.stats.checkpoints == 2 and await latest_checkpoint(bus) == (1, Keep((1,), Decimal(2)))
    await rt.idle()
    assert rt.stats.checkpoints == 2


async def test_a_first_checkpoint_after_some_inputs_is_written(bus: Client) -> None:
    rt = await runtime_on(bus)
    await rt.process([delivered(bus, 1, tick(2))])
    await rt.finish()
    assert rt.stats.checkpoints == 1 and await latest_checkpoint(bus) == (1, Keep((1,), Decimal(2)))


async def test_a_lost_lease_stops_every_checkpoint_a_held_one_does_not(bus: Client) -> None:
    rt = await runtime_on(bus)
    await rt.process([delivered(bus, 1, tick(2))])
    rt.lease = types.SimpleNamespace(lost=asyncio.Event())  # type: ignore[assignment]
    rt.lease.lost.set()
    await rt.checkpoint(force=True)
    assert rt.stats.checkpoints == 0 and await latest_checkpoint(bus) is None
    rt.lease.lost.clear()
    await rt.checkpoint(force=True)
    assert rt.stats.checkpoints == 1 and await latest_checkpoint(bus) == (1, Keep((1,), Decimal(2)))


async def test_no_checkpoint_while_nats_is_unreachable(bus: Client, nats_server: EmbeddedServer, caplog: pytest.LogCaptureFixture) -> None:
    other = await connect(nats_server.url, name="other", attempts=3)
    rt = await runtime_on(other)
    await rt.process([delivered(other, 1, tick(2))])
    await other.close()
    caplog.set_level(logging.INFO, logger="bus.consumer")
    await rt.checkpoint()
    assert [r.getMessage() for r in caplog.records if r.name == "bus.consumer"] == []
    await rt.checkpoint(force=True)
    assert [r.getMessage() for r in caplog.records if r.name == "bus.consumer"] == [
        "sum: NATS is unreachable; the final checkpoint is skipped (the next start replays)"
    ]
    assert rt.stats.checkpoints == 0 and await latest_checkpoint(bus) is None


# ----------------------------------------------------------------------------- recovery


async def consumer_at(nc: Client, start_seq: int, name: str = "sum", subject: str = "md.sim.*.ticker") -> None:
    """A durable consumer as an earlier session left it: inputs before `start_seq` acked."""
    await nc.jetstream().add_consumer(
        "MARKET",
        ConsumerConfig(
            durable_name=name,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start_seq,
            ack_policy=AckPolicy.ALL,
            filter_subject=subject,
        ),
    )


async def save_checkpoint(nc: Client, seq: int, state: Keep) -> None:
    await nc.jetstream().publish(checkpoints.subject("sum"), checkpoints.encode(checkpoints.Checkpoint(seq=seq, state=state)))


PRICES = [2, 4, 1, 6, 3, 8, 5, 10, 7, 12, 9, 14, 11, 16, 15]


async def test_recovery_folds_from_the_checkpoint_to_the_ack_floor_publishing_nothing_and_checkpoints(
    bus: Client, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="bus.runtime")
    clock = iter([100.0, 100.25])
    monkeypatch.setattr(runtime_module, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 12)  # acked through 11
    await save_checkpoint(bus, 4, fold(PRICES[:4]))
    seen: list[tuple[Keep, int]] = []
    rt = await runtime_on(bus, on_state=lambda s, q: seen.append((s, q)))
    await rt.recover()
    assert rt.seq == 11 and rt.state == fold(PRICES[:11])
    assert rt.stats.replayed == 7 and rt.stats.checkpoints == 1 and rt._checkpointed_seq == 11
    assert await latest_checkpoint(bus) == (11, fold(PRICES[:11]))
    assert seen == [(fold(PRICES[:11]), 11)]
    assert await alerts(bus) == []
    said = [r.getMessage() for r in caplog.records if r.name == "bus.runtime"]
    assert said[0] == "sum: checkpoint at input seq 4; consumer ack floor 11"
    assert said[1:] == ["sum: replayed 5..11 (7 inputs) in 0.250s"]


async def test_recovery_without_a_checkpoint_folds_from_the_start(bus: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus.runtime")
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 6)
    rt = await runtime_on(bus)
    await rt.recover()
    assert rt.seq == 5 and rt.state == fold(PRICES[:5]) and rt.stats.replayed == 5
    assert await latest_checkpoint(bus) == (5, fold(PRICES[:5]))
    said = [r.getMessage() for r in caplog.records if r.name == "bus.runtime"]
    assert said[0] == "sum: no checkpoint (fresh state); consumer ack floor 5"
    assert re.fullmatch(r"sum: replayed 1\.\.5 \(5 inputs\) in \d+\.\d{3}s", said[1]), said


async def test_recovery_at_the_ack_floor_folds_nothing_and_writes_nothing(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 8)
    await save_checkpoint(bus, 7, fold(PRICES[:7]))
    seen: list[tuple[Keep, int]] = []
    rt = await runtime_on(bus, on_state=lambda s, q: seen.append((s, q)))
    rt.state = Keep((99,), Decimal(99))  # whatever it held before is replaced
    await rt.recover()
    assert rt.seq == 7 and rt.state == fold(PRICES[:7]) and rt._checkpointed_seq == 7
    assert rt.stats.replayed == 0 and rt.stats.checkpoints == 0
    assert seen == [(fold(PRICES[:7]), 7)]


async def test_recovery_with_nothing_behind_it_starts_fresh(bus: Client) -> None:
    seen: list[tuple[Keep, int]] = []
    rt = await runtime_on(bus, on_state=lambda s, q: seen.append((s, q)))
    rt.state, rt.seq = Keep((99,), Decimal(99)), 42
    await rt.recover()
    assert (rt.seq, rt.state, rt._checkpointed_seq, rt.stats.replayed, rt.stats.checkpoints) == (0, Keep(), 0, 0, 0)
    assert seen == [(Keep(), 0)] and await rt.positions() == (0, 0)


async def test_a_checkpoint_beyond_the_ack_floor_is_where_recovery_resumes(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 3)
    await save_checkpoint(bus, 9, fold(PRICES[:9]))
    rt = await runtime_on(bus)
    await rt.recover()
    assert rt.seq == 9 and rt.state == fold(PRICES[:9]) and rt.stats.replayed == 0


async def test_a_replay_that_cannot_read_the_acked_input_is_refused(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 11)
    await bus.jetstream().delete_msg("MARKET", 10)
    rt = await runtime_on(bus)
    with pytest.raises(ReplayIncomplete) as info:
        await rt.recover()
    assert str(info.value) == "replay of MARKET stopped at seq 9, before 10"
    assert rt.seq == 0 and rt.state == Keep() and rt.stats.replayed == 0


async def test_a_read_that_ends_before_the_acked_input_still_stored_is_refused(bus: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 11)
    await bus.jetstream().purge_stream("MARKET", seq=10)  # input 10, the last one acked, is the first stored
    asked: list[dict[str, Any]] = []

    async def loses_the_last(nc: Client, stream: str, **kw: Any) -> Any:
        asked.append({"stream": stream, **kw})
        async for batch in read_stream(nc, stream, **kw):
            if batch[:-1]:
                yield batch[:-1]

    monkeypatch.setattr(runtime_module, "read_stream", loses_the_last)
    rt = await runtime_on(bus)
    with pytest.raises(ReplayIncomplete) as info:
        await rt.recover()
    assert str(info.value) == "replay of MARKET stopped at seq 0, before 10"
    assert asked == [{"stream": "MARKET", "start_seq": 1, "end_seq": 10, "subjects": ("md.sim.*.ticker",), "contiguous": False}]


async def test_inputs_removed_by_retention_are_not_folded(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    await consumer_at(bus, 7)
    await bus.jetstream().purge_stream("MARKET", seq=7)  # keeps 7.. only
    rt = await runtime_on(bus)
    await rt.recover()
    assert rt.seq == 6 and rt.state == Keep() and rt.stats.replayed == 0


async def test_a_replay_folds_exactly_the_inputs_between_its_position_and_its_end(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    rt = await runtime_on(bus)
    rt.state, rt.seq = fold(PRICES[:3]), 3
    assert await rt.replay(8) == 5
    assert rt.seq == 8 and rt.state == fold(PRICES[:8]) and rt.stats.replayed == 5
    assert await rt.replay(10) == 2
    assert rt.seq == 10 and rt.state == fold(PRICES[:10]) and rt.stats.replayed == 7


IN_SUM = StreamSpec("IN_SUM", (), "test input", 600.0, 60.0, sources=(Source("MARKET", ("md.sim.*.ticker",)),))


async def test_a_replay_of_an_unfiltered_input_stream_reads_it_whole(bus: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    await publish(bus, [tick(2, ts=1), candle("5"), tick(4, ts=2), tick(6, ts=3), tick(8, ts=4)])
    js = bus.jetstream()
    await apply_stream(js, IN_SUM)
    await eventually(lambda: stream_has(bus, "IN_SUM", 4), what="the sourced inputs")
    await js.add_consumer(
        "IN_SUM",
        ConsumerConfig(durable_name="sum", deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=4, ack_policy=AckPolicy.ALL),
    )
    asked: list[dict[str, Any]] = []

    def reads(nc: Client, stream: str, **kw: Any) -> Any:
        asked.append({"stream": stream, **kw})
        return read_stream(nc, stream, **kw)

    monkeypatch.setattr(runtime_module, "read_stream", reads)
    rt = await runtime_on(bus, spec(stream="IN_SUM", subjects=()))
    await rt.recover()
    assert rt.seq == 3 and rt.state == Keep((1, 2, 3), Decimal(12)) and rt.stats.replayed == 3
    assert asked == [{"stream": "IN_SUM", "start_seq": 1, "end_seq": 3, "subjects": (), "contiguous": True}]  # holes refused


async def stream_has(nc: Client, stream: str, n: int) -> bool:
    return (await nc.jetstream().stream_info(stream)).state.messages == n


# ----------------------------------------------------------------------------- the durable consumer


async def test_the_durable_consumer_is_recreated_where_the_runtime_says(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    rt = await runtime_on(bus, spec(ack_wait=12.5, max_ack_pending=77))
    await rt.recreate_consumer(6)
    info = await bus.jetstream().consumer_info("MARKET", "sum")
    c = info.config
    assert (c.durable_name, c.deliver_policy, c.opt_start_seq, c.ack_policy) == ("sum", DeliverPolicy.BY_START_SEQUENCE, 6, AckPolicy.ALL)
    assert (c.ack_wait, c.max_ack_pending, c.max_waiting, c.description) == (12.5, 77, 16, "sqt consumer sum")
    assert (c.filter_subject, c.filter_subjects) == ("md.sim.*.ticker", None)
    assert await rt.positions() == (5, 5) and await rt.ack_floor() == 5
    await rt.recreate_consumer(0)  # replaces it, from the first input
    c = (await bus.jetstream().consumer_info("MARKET", "sum")).config
    assert c.opt_start_seq == 1 and await rt.positions() == (0, 0)


async def test_a_consumer_of_several_subjects_filters_on_all_of_them_and_one_of_none_on_nothing(bus: Client) -> None:
    several = await runtime_on(bus, spec(name="several", subjects=("md.sim.*.ticker", "md.sim.*.trade")))
    await several.recreate_consumer(1)
    c = (await bus.jetstream().consumer_info("MARKET", "several")).config
    assert (c.filter_subject, c.filter_subjects) == (None, ["md.sim.*.ticker", "md.sim.*.trade"])
    whole = await runtime_on(bus, spec(name="whole", subjects=()))
    await whole.recreate_consumer(1)
    c = (await bus.jetstream().consumer_info("MARKET", "whole")).config
    assert (c.filter_subject, c.filter_subjects) == (None, None)


async def test_positions_are_the_ack_floor_and_the_last_delivered_input(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES, start=1)])
    rt = await runtime_on(bus)
    assert await rt.positions() == (0, 0) and await rt.ack_floor() == 0
    await rt.recreate_consumer(3)
    sub = await bus.jetstream().pull_subscribe_bind("sum", "MARKET")
    got = await sub.fetch(4)  # 3..6 delivered
    await bus.publish(got[1].reply, b"+ACK")  # 3 and 4 acked
    await bus.flush()

    async def acked() -> bool:
        return await rt.ack_floor() == 4

    await eventually(acked, what="the ack")
    assert await rt.positions() == (4, 6) and await rt.ack_floor() == 4


# ----------------------------------------------------------------------------- sessions


class FakeFeed:
    """A pull feed that hands out scripted batches, then nothing."""

    made: list[FakeFeed] = []
    script: list[list[Msg]] = []

    def __init__(self, nc: Client, stream: str, consumer: str, *, batch: int) -> None:
        self.args = (stream, consumer, batch)
        self.timeouts: list[float] = []
        self.started = self.stopped = False
        FakeFeed.made.append(self)

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def next_batch(self, timeout: float) -> list[Msg]:
        self.timeouts.append(timeout)
        await asyncio.sleep(0)
        return FakeFeed.script.pop(0) if FakeFeed.script else []


class Scripted(Consumer):
    """Records what its session does; `lags` sets the lag each batch leaves."""

    def __init__(self, nc: Client, sp: ConsumerSpec, lags: list[int], stop: asyncio.Event) -> None:
        super().__init__(nc, sp)
        self.lags = lags
        self.stop = stop
        self.trace: list[str] = []

    async def prepare(self) -> None:
        self.trace.append(f"prepare caught_up={self.caught_up.is_set()}")
        self.seq = 4

    async def process(self, msgs: list[Msg]) -> None:
        self.trace.append(f"process {len(msgs)} caught_up={self.caught_up.is_set()}")
        self.stats.lag = self.lags.pop(0)

    async def idle(self) -> None:
        self.trace.append(f"idle caught_up={self.caught_up.is_set()}")
        if len(self.trace) >= 8:
            self.stop.set()

    async def finish(self) -> None:
        self.trace.append("finish")


@pytest.fixture
def fake_feed(monkeypatch: pytest.MonkeyPatch) -> type[FakeFeed]:
    FakeFeed.made, FakeFeed.script = [], []
    monkeypatch.setattr(consumer_module, "PullFeed", FakeFeed)
    return FakeFeed


async def test_caught_up_comes_with_an_empty_pull_or_a_batch_that_leaves_nothing_pending(bus: Client, fake_feed: type[FakeFeed]) -> None:
    one = [delivered(bus, 5, tick(1))]
    fake_feed.script = [one, one, [], one]
    stop = asyncio.Event()
    c = Scripted(bus, spec(batch=33), [3, 0, 0], stop)
    await c._session(stop)
    assert c.trace == [
        "prepare caught_up=False",
        "process 1 caught_up=False",
        "idle caught_up=False",  # 3 still pending
        "process 1 caught_up=False",
        "idle caught_up=True",  # nothing pending: caught up without an empty pull
        "idle caught_up=True",
        "process 1 caught_up=True",
        "idle caught_up=True",
        "finish",
    ]
    (feed,) = fake_feed.made
    assert feed.args == ("MARKET", "sum", 33) and feed.started and feed.stopped
    assert feed.timeouts == [0.25] * 4
    assert c.stats.sessions == 1
    assert (await bus.jetstream().consumer_info("MARKET", "sum")).config.opt_start_seq == 5


async def test_an_empty_pull_is_caught_up(bus: Client, fake_feed: type[FakeFeed]) -> None:
    stop = asyncio.Event()
    c = Scripted(bus, spec(), [], stop)
    fake_feed.script = [[]]
    c.trace = ["x"] * 5
    await c._session(stop)
    assert c.trace[5:] == ["prepare caught_up=False", "idle caught_up=True", "idle caught_up=True", "finish"]


async def test_a_reconnect_ends_the_session_at_once(bus: Client, fake_feed: type[FakeFeed]) -> None:
    stop = asyncio.Event()
    c = Scripted(bus, spec(), [0], stop)
    fake_feed.script = [[delivered(bus, 5, tick(1))]]
    original = c.idle

    async def reconnect_after_first() -> None:
        await original()
        bus.stats["reconnects"] += 1

    c.idle = reconnect_after_first  # type: ignore[method-assign]
    with pytest.raises(Stalled, match="^reconnected to NATS$"):
        await c._session(stop)
    assert c.trace == ["prepare caught_up=False", "process 1 caught_up=False", "idle caught_up=True"]
    assert fake_feed.made[0].stopped


class Failing(Consumer):
    """Its first sessions fail in prepare; then it runs until stopped."""

    def __init__(self, nc: Client, sp: ConsumerSpec, failures: int) -> None:
        super().__init__(nc, sp)
        self.failures = failures
        self.caught_up_at_prepare: list[bool] = []

    async def prepare(self) -> None:
        self.caught_up_at_prepare.append(self.caught_up.is_set())
        self.caught_up.set()  # as if an earlier session had caught up before it broke
        if self.failures:
            self.failures -= 1
            raise OSError(f"attempt {self.failures} broke")

    async def process(self, msgs: list[Msg]) -> None:
        pass


async def test_a_broken_session_is_rebuilt_after_a_backoff_that_doubles_up_to_five_seconds(
    bus: Client, monkeypatch: pytest.MonkeyPatch, fake_feed: type[FakeFeed], caplog: pytest.LogCaptureFixture
) -> None:
    delays: list[float] = []

    async def no_wait(awaitable: Any, timeout: float) -> None:
        delays.append(timeout)
        awaitable.close()
        raise asyncio.TimeoutError

    proxy = types.SimpleNamespace(**{k: getattr(asyncio, k) for k in dir(asyncio) if not k.startswith("__")})
    proxy.wait_for = no_wait
    monkeypatch.setattr(consumer_module, "asyncio", proxy)
    c = Failing(bus, spec(), failures=7)
    stop = asyncio.Event()
    task = asyncio.create_task(c.run(stop))
    await eventually(lambda: fake_feed.made, what="a session that goes live")
    assert delays == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    warned = [r.getMessage() for r in caplog.records if r.name == "bus.consumer" and r.levelno == logging.WARNING]
    assert warned == [
        f"sum: session ended (OSError: attempt {6 - i} broke); rebuilding from the log in {d:.1f}s" for i, d in enumerate(delays)
    ]
    assert c.stats.sessions == 8 and c.stats.last_error == "OSError: attempt 0 broke"
    assert c.caught_up_at_prepare == [False] * 8  # every rebuilt session starts not caught up
    stop.set()
    await task
    assert c.caught_up.is_set()  # a session that ends because it was told to is not rebuilt


def test_a_session_that_went_live_is_rebuilt_after_the_first_delay_again() -> None:
    """An election ends a live session every few seconds during a cluster's trouble: each must
    be rebuilt at once, not after the backoff earlier failures grew (bench/cluster.py)."""
    assert consumer_module.rebuild_delay(5.0, live_for=60.0) == consumer_module.REBUILD_FIRST_S == 0.2
    assert consumer_module.rebuild_delay(5.0, live_for=5.0) == 0.2
    assert consumer_module.rebuild_delay(3.2, live_for=None) == 3.2  # never went live: the bus is away
    assert consumer_module.rebuild_delay(3.2, live_for=0.5) == 3.2  # something ends every session at once


# ----------------------------------------------------------------------------- run, input stream, lease


async def test_a_run_creates_its_input_stream_goes_live_and_releases_its_lease(bus: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus.consumer")
    await publish(bus, [tick(2, ts=1), tick(3, ts=2)])
    rt = await runtime_on(bus, spec(stream="IN_SUM", subjects=(), input_stream=IN_SUM))
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await eventually(lambda: rt.seq == 2, what="both inputs")
    kv = await bus.jetstream().key_value(REGISTRY.name)
    assert (await kv.get(lease_key("sum"))).value
    stop.set()
    await task
    assert rt.state == Keep((1, 2), Decimal(5))
    assert await stream_has(bus, "IN_SUM", 2)
    with pytest.raises(KeyNotFoundError):
        await kv.get(lease_key("sum"))
    assert await latest_checkpoint(bus) == (2, Keep((1, 2), Decimal(5)))
    said = [r.getMessage() for r in caplog.records if r.name == "bus.consumer"]
    assert said[0] == "sum: input stream created   IN_SUM: MARKET:md.sim.*.ticker; max_age 10m; dedupe 1m", said
    assert said[1:] == ["sum: live from seq 1"]
    rt2 = await runtime_on(bus, spec(stream="IN_SUM", subjects=(), input_stream=IN_SUM))
    caplog.clear()
    stop2 = asyncio.Event()
    task = asyncio.create_task(rt2.run(stop2))
    await eventually(rt2.caught_up.is_set, what="the second run")
    stop2.set()
    await task
    assert [r.getMessage() for r in caplog.records if r.name == "bus.consumer"] == ["sum: live from seq 3"]


async def test_a_runtime_whose_lease_is_taken_stops_writing_and_says_so(bus: Client) -> None:
    await publish(bus, [tick(2, ts=1)])
    rt = await runtime_on(bus)
    task = asyncio.create_task(rt.run(asyncio.Event()))
    await eventually(lambda: rt.seq == 1, what="the input")
    kv = await bus.jetstream().key_value(REGISTRY.name)
    await kv.put(lease_key("sum"), b'{"host":"elsewhere","pid":1,"since":1,"renewed":1,"ttl":5.0,"token":"theirs"}')
    with pytest.raises(LeaseLost) as info:
        await task
    assert str(info.value) == "sum: another process took this consumer's lease; stopped without writing anything more"
    assert rt.stats.checkpoints == 0 and await latest_checkpoint(bus) is None
    assert b"theirs" in (await kv.get(lease_key("sum"))).value  # not ours to delete


async def test_a_runtime_told_to_stop_as_its_lease_is_lost_just_stops(bus: Client) -> None:
    rt = await runtime_on(bus)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await eventually(rt.caught_up.is_set, what="live")
    lease = rt.lease
    assert lease is not None
    lease.lost.set()
    stop.set()
    await task
    kv = await bus.jetstream().key_value(REGISTRY.name)
    assert (await kv.get(lease_key("sum"))).value  # a lost lease is not released
    assert lease._renewer is not None
    lease._renewer.cancel()


async def test_a_live_run_ends_with_a_checkpoint_of_what_it_folded(bus: Client) -> None:
    await publish(bus, [tick(p, ts=i) for i, p in enumerate(PRICES[:6], start=1)])
    rt = await runtime_on(bus)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await eventually(lambda: rt.seq == 6, what="the first inputs")
    await eventually(rt.caught_up.is_set, what="caught up")
    await publish(bus, [candle("1"), tick(3, ts=7)])
    await eventually(lambda: rt.seq == 8, what="the input after a candle")
    stop.set()
    await task
    assert rt.state == Keep((1, 2, 3, 4, 5, 6, 8), Decimal(sum(PRICES[:6]) + 3))
    assert await latest_checkpoint(bus) == (8, rt.state)
    assert rt.stats.checkpoints == 1 and rt.stats.sessions == 1
