"""bus/handler.py exactly: where a session resumes, which inputs an earlier session may have
handled, what one batch publishes, dead-letters and acks, in which order, and what a
`RetryLater` leaves behind.

Batches are handed to `process` as JetStream deliveries built here, with reply subjects of a
stream that does not exist: the acks they receive are captured as plain messages. The outputs,
dead letters, checkpoints and durable consumers are a real nats-server's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from bus import checkpoints
from bus.consumer import ConsumerSpec
from bus.contract import Inbound
from bus.errors import RetryLater
from bus.handler import HandlerRuntime
from bus.publisher import Publisher
from schemas.codec import encode
from schemas.commands import CancelAll, Command
from schemas.subjects import subject_of
from testkit.bus import eventually
from testkit.deliveries import Acks, handmade, stored
from testkit.events import order_update, place, ticker

BTC, ETH, SOL = "BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"
ACK_PREFIX = "$JS.ACK.T.rec"


def spec() -> ConsumerSpec:
    return ConsumerSpec(name="rec", stream="COMMAND", input_type=Command, subjects=("cmd.sim.main.*.*",), outputs=("acct.sim.main.*.*",))


def answer(cid: str, symbol: str = BTC) -> Any:
    return order_update(client_order_id=cid, status="open", symbol=symbol)


class Script:
    """A handler told by each command's client id what to do: `slow*` yields a while first,
    `retry*` raises RetryLater, `boom*` fails, `stray*` answers on an undeclared subject;
    any other id is answered with its order's update."""

    def __init__(self) -> None:
        self.seen: list[Inbound[Command]] = []
        self.log: list[tuple[str, int]] = []
        self.invalid: list[tuple[int, str, bytes, str]] = []
        self.on_invalid_answer: Any = []
        self.running = self.most = 0

    def key(self, inbound: Inbound[Command]) -> str:
        return inbound.event.symbol

    def exclusive(self, inbound: Inbound[Command]) -> bool:
        return isinstance(inbound.event, CancelAll)

    async def handle(self, inbound: Inbound[Command]) -> Sequence[Any]:
        self.seen.append(inbound)
        self.log.append(("start", inbound.seq))
        self.running += 1
        self.most = max(self.most, self.running)
        cid = getattr(inbound.event, "client_order_id", None) or inbound.event.id
        try:
            for _ in range(30 if cid.startswith("slow") else 2):
                await asyncio.sleep(0)
            if cid.startswith("retry"):
                raise RetryLater("the venue is down")
            if cid.startswith("boom"):
                raise ValueError(f"{cid} went wrong")
            if cid.startswith("stray"):
                return [ticker()]
            return [answer(cid, inbound.event.symbol)]
        finally:
            self.running -= 1
            self.log.append(("end", inbound.seq))

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        self.invalid.append((seq, subject, data, reason))
        if isinstance(self.on_invalid_answer, Exception):
            raise self.on_invalid_answer
        return self.on_invalid_answer


def delivered(nc: Client, seq: int, body: Any, *, pending: int = 0, ts_ms: int = 1_700_000_000_000, subject: str | None = None) -> Msg:
    return handmade(nc, ACK_PREFIX, seq, body, subject or subject_of(body), pending=pending, ts_ms=ts_ms)


async def handler_on(nc: Client, script: Script | None = None, **kw: Any) -> HandlerRuntime[Command]:
    rt = HandlerRuntime(nc, spec(), script or Script(), **kw)
    await rt.ensure_publisher()
    return rt


def script_of(rt: HandlerRuntime[Command]) -> Script:
    assert isinstance(rt.handler, Script)
    return rt.handler


PLACE_SUBJECT = "cmd.sim.main.BTC-USDT-USDT.place"


# ----------------------------------------------------------------------------- one batch


async def test_answers_are_published_in_input_order_whatever_order_they_finish_in(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await handler_on(bus)
    commands = [place("slow1", symbol=BTC), place("e1", symbol=ETH, price="10"), place("b2", symbol=BTC)]
    await rt.process([delivered(bus, 3 + i, c, pending=9 - i) for i, c in enumerate(commands)])
    s = script_of(rt)
    assert s.log.index(("end", 4)) < s.log.index(("end", 3)) < s.log.index(("start", 5))
    account = await stored(bus, "ACCOUNT")
    assert [(m.subject, m.data) for m in account] == [
        (subject_of(answer("slow1")), encode(answer("slow1"))),
        (subject_of(answer("e1", ETH)), encode(answer("e1", ETH))),
        (subject_of(answer("b2")), encode(answer("b2"))),
    ]
    assert [m.header("Nats-Msg-Id") for m in account] == [answer(c).id for c in ("slow1", "e1", "b2")]
    assert rt.seq == 5
    st = rt.stats
    assert (st.processed, st.outputs, st.duplicates, st.dead_lettered, st.last_seq, st.lag) == (3, 3, 0, 0, 5, 7)
    assert await acks.settled(bus, 1) == [(5, b"+ACK")]


async def test_a_handler_runtime_publishes_through_the_publisher_it_is_given(bus: Client) -> None:
    given = await Publisher(bus).start()
    rt = HandlerRuntime(bus, spec(), Script(), given)
    assert rt.publisher is given and await rt.ensure_publisher() is given
    await rt.process([delivered(bus, 1, place("p1"))])
    assert given.published == 1


async def test_a_handler_sees_each_input_where_it_sits_and_when_it_was_stored(bus: Client) -> None:
    rt = await handler_on(bus)
    cmd = place("p1")
    await rt.process([delivered(bus, 8, cmd, ts_ms=1_700_000_000_123)])
    assert script_of(rt).seen == [Inbound(8, PLACE_SUBJECT, cmd, 1_700_000_000_123_000_000, 1)]


async def test_inputs_already_handled_are_skipped_but_acked(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await handler_on(bus)
    await rt.process([delivered(bus, 4, place("a"))])
    await rt.process([delivered(bus, 3, place("b")), delivered(bus, 4, place("c")), delivered(bus, 5, place("d"))])
    assert [i.seq for i in script_of(rt).seen] == [4, 5]
    await rt.process([delivered(bus, 5, place("e"), pending=2)])  # only a redelivery
    assert [i.seq for i in script_of(rt).seen] == [4, 5] and rt.seq == 5
    assert (rt.stats.processed, rt.stats.last_seq, rt.stats.lag, rt.stats.outputs) == (5, 5, 2, 2)
    assert await acks.settled(bus, 3) == [(4, b"+ACK"), (5, b"+ACK"), (5, b"+ACK")]


async def test_an_empty_batch_does_nothing(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await handler_on(bus)
    await rt.process([])
    await rt.process([delivered(bus, 2, place("a"))])
    assert rt.seq == 2 and rt.stats.processed == 1
    assert await acks.settled(bus, 1) == [(2, b"+ACK")]


async def test_more_markets_than_slots_wait_for_a_slot(bus: Client) -> None:
    symbols = [f"C{i}/USDT:USDT" for i in range(20)]
    default = await handler_on(bus)
    await default.process([delivered(bus, i + 1, place(f"slow{i}", symbol=s)) for i, s in enumerate(symbols)])
    assert script_of(default).most == 16 and default.seq == 20
    two = await handler_on(bus, concurrency=2)
    await two.process([delivered(bus, i + 1, place(f"slow{i}", symbol=s)) for i, s in enumerate(symbols[:5])])
    assert script_of(two).most == 2


async def test_an_exclusive_input_runs_alone_between_the_others(bus: Client) -> None:
    rt = await handler_on(bus)
    cmds = [
        place("slow1", symbol=BTC),
        place("e1", symbol=ETH, price="10"),
        CancelAll(id="all", venue="sim", account="main", symbol=SOL, origin="t", ts=1),
        place("s1", symbol=SOL, price="10"),
        place("e2", symbol=ETH, price="10"),
    ]
    await rt.process([delivered(bus, i + 1, c) for i, c in enumerate(cmds)])
    log = script_of(rt).log
    assert max(log.index(("end", 1)), log.index(("end", 2))) < log.index(("start", 3)) < log.index(("end", 3))
    assert log.index(("end", 3)) < min(log.index(("start", 4)), log.index(("start", 5)))
    assert log.index(("start", 5)) < log.index(("end", 4))  # after it, markets run side by side again
    assert script_of(rt).most == 2


# ----------------------------------------------------------------------------- dead letters


async def dead_letters(nc: Client) -> list[tuple[dict[str, str], bytes]]:
    return [(m.headers(), m.data) for m in await stored(nc, "DLQ")]


def dlq_headers(seq: int, reason: str, subject: str = PLACE_SUBJECT) -> dict[str, str]:
    return {
        "Nats-Msg-Id": f"dlq:rec:COMMAND:{seq}",
        "Sqt-Error": reason,
        "Sqt-Consumer": "rec",
        "Sqt-Stream": "COMMAND",
        "Sqt-Seq": str(seq),
        "Sqt-Subject": subject,
    }


async def test_a_failing_handler_dead_letters_its_input_says_so_in_the_log_and_the_batch_goes_on(
    bus: Client, caplog: pytest.LogCaptureFixture
) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await handler_on(bus)
    batch = [delivered(bus, 1, place("boom1")), delivered(bus, 2, place("stray1")), delivered(bus, 3, place("ok1"))]
    await rt.process(batch)
    undeclared = f"output subject {subject_of(ticker())} is not declared"
    assert await dead_letters(bus) == [
        (dlq_headers(1, "handler failed: ValueError: boom1 went wrong"), batch[0].data),
        (dlq_headers(2, undeclared), batch[1].data),
    ]
    assert [m.data for m in await stored(bus, "ACCOUNT")] == [encode(answer("ok1"))]
    assert (rt.stats.dead_lettered, rt.stats.outputs, rt.seq) == (2, 3, 3)
    assert await acks.settled(bus, 3) == [(1, b"+TERM"), (2, b"+TERM"), (3, b"+ACK")]
    records = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "bus.handler"]
    assert records == [(logging.ERROR, "rec: seq 1 failed", True), (logging.ERROR, f"rec: seq 2: {undeclared}", False)]


async def test_an_input_that_is_not_admitted_is_answered_and_dead_lettered(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    script = Script()
    script.on_invalid_answer = [answer("bad1")]
    rt = await handler_on(bus, script)
    future = place("f1", ts=2_000_000_000_000)
    batch = [
        delivered(bus, 1, b"{}", subject=PLACE_SUBJECT),
        delivered(bus, 2, future, ts_ms=1_700_000_000_000),
        delivered(bus, 3, place("ok")),
    ]
    await rt.process(batch)
    r1 = "undecodable input: Object missing required field `type`"
    r2 = "dated 300000000000 ms after it was stored (at most 5000 ms allowed)"
    assert script.invalid == [(1, PLACE_SUBJECT, b"{}", r1), (2, PLACE_SUBJECT, batch[1].data, r2)]
    assert [i.seq for i in script.seen] == [3]
    assert await dead_letters(bus) == [(dlq_headers(1, r1), b"{}"), (dlq_headers(2, r2), batch[1].data)]
    account = await stored(bus, "ACCOUNT")
    assert [m.header("Nats-Msg-Id") for m in account] == [answer("bad1").id, answer("ok").id]  # once: same id
    assert rt.stats.duplicates == 1 and rt.stats.outputs == 5
    assert await acks.settled(bus, 3) == [(1, b"+TERM"), (2, b"+TERM"), (3, b"+ACK")]


async def test_an_answer_to_a_bad_input_that_cannot_be_published_is_dropped(bus: Client) -> None:
    script = Script()
    script.on_invalid_answer = [ticker()]
    rt = await handler_on(bus, script)
    await rt.process([delivered(bus, 1, b"[]", subject=PLACE_SUBJECT)])
    reason = "undecodable input: Expected `object`, got `array`"
    assert await dead_letters(bus) == [
        (dlq_headers(1, f"{reason}; its answer was dropped: output subject {subject_of(ticker())} is not declared"), b"[]")
    ]
    assert await stored(bus, "ACCOUNT") == []


async def test_an_answer_to_a_bad_input_that_fails_is_no_answer(bus: Client, caplog: pytest.LogCaptureFixture) -> None:
    script = Script()
    script.on_invalid_answer = RuntimeError("no answer today")
    rt = await handler_on(bus, script)
    await rt.process([delivered(bus, 7, b"[]", subject=PLACE_SUBJECT)])
    reason = "undecodable input: Expected `object`, got `array`"
    assert await dead_letters(bus) == [(dlq_headers(7, f"{reason}; no answer: RuntimeError: no answer today"), b"[]")]
    records = [(r.levelno, r.getMessage(), r.exc_info is not None) for r in caplog.records if r.name == "bus.handler"]
    assert records == [(logging.ERROR, "rec: seq 7: on_invalid failed", True)]


# ----------------------------------------------------------------------------- retry later


async def test_retry_later_lets_every_market_finish_then_publishes_and_acks_nothing(bus: Client) -> None:
    acks = await Acks(ACK_PREFIX).start(bus)
    rt = await handler_on(bus)
    await rt.process([delivered(bus, 1, place("first"))])
    cmds = [
        place("slow1", symbol=BTC),
        place("retry1", symbol=ETH, price="10"),
        place("b2", symbol=BTC),
        CancelAll(id="all", venue="sim", account="main", symbol=SOL, origin="t", ts=1),
    ]
    with pytest.raises(RetryLater, match="the venue is down"):
        await rt.process([delivered(bus, i + 2, c) for i, c in enumerate(cmds)])
    log = script_of(rt).log
    assert ("end", 2) in log and ("end", 4) in log  # the other market finished its work
    assert ("start", 5) not in log  # the exclusive input after them never started
    assert rt.seq == 1 and rt.stats.processed == 1 and rt.stats.outputs == 1
    assert [m.header("Nats-Msg-Id") for m in await stored(bus, "ACCOUNT")] == [answer("first").id]
    assert await acks.settled(bus, 1) == [(1, b"+ACK")]


# ----------------------------------------------------------------------------- where a session resumes


async def positions_of_an_earlier_session(nc: Client, rt: HandlerRuntime[Command], delivered_through: int, acked_through: int) -> None:
    """Commands 1..7 stored; an earlier session had them delivered and acked this far."""
    js = nc.jetstream()
    for i in range(7):
        await js.publish(PLACE_SUBJECT, encode(place(f"o{i + 1}")))
    await rt.recreate_consumer(1)
    sub = await js.pull_subscribe_bind("rec", "COMMAND")
    got = await sub.fetch(delivered_through)
    await nc.publish(got[acked_through - 1].reply, b"+ACK")
    await nc.flush()

    async def acked() -> bool:
        return await rt.positions() == (acked_through, delivered_through)

    await eventually(acked, what="the earlier session's positions")
    await sub.unsubscribe()


async def test_inputs_delivered_to_an_earlier_session_are_marked_as_maybe_handled(bus: Client) -> None:
    rt = await handler_on(bus)
    await positions_of_an_earlier_session(bus, rt, delivered_through=5, acked_through=2)
    await rt.prepare()
    assert rt.seq == 2
    await rt.process([delivered(bus, seq, place(f"o{seq}")) for seq in range(1, 8)])
    assert [(i.seq, i.delivered) for i in script_of(rt).seen] == [(3, 2), (4, 2), (5, 2), (6, 1), (7, 1)]


async def test_what_an_earlier_session_had_delivered_is_remembered_across_rebuilds(bus: Client) -> None:
    rt = await handler_on(bus)
    await positions_of_an_earlier_session(bus, rt, delivered_through=5, acked_through=2)
    await rt.prepare()
    await rt.recreate_consumer(3)  # what a session does next: the old delivery state is gone
    assert await rt.positions() == (2, 2)
    await rt.prepare()
    await rt.process([delivered(bus, seq, place(f"o{seq}")) for seq in (3, 5, 6)])
    assert [(i.seq, i.delivered) for i in script_of(rt).seen] == [(3, 2), (5, 2), (6, 1)]


async def test_a_checkpoint_beyond_the_ack_floor_is_where_a_session_resumes(bus: Client) -> None:
    rt = await handler_on(bus)
    await positions_of_an_earlier_session(bus, rt, delivered_through=3, acked_through=2)
    await bus.jetstream().publish(checkpoints.subject("rec"), checkpoints.encode(checkpoints.Checkpoint(seq=4, state=None)))
    await rt.prepare()
    assert rt.seq == 4
    await rt.process([delivered(bus, seq, place(f"o{seq}")) for seq in range(3, 7)])
    assert [(i.seq, i.delivered) for i in script_of(rt).seen] == [(5, 1), (6, 1)]


async def test_the_ack_floor_beyond_an_old_checkpoint_is_where_a_session_resumes(bus: Client) -> None:
    rt = await handler_on(bus)
    await positions_of_an_earlier_session(bus, rt, delivered_through=4, acked_through=3)
    await bus.jetstream().publish(checkpoints.subject("rec"), checkpoints.encode(checkpoints.Checkpoint(seq=1, state=None)))
    await rt.prepare()
    assert rt.seq == 3
    await rt.checkpoint(force=True)  # nothing new since the position it resumed at
    assert rt.stats.checkpoints == 0
    cp = await checkpoints.load(bus, "rec", type(None))
    assert cp is not None and cp.seq == 1


async def test_a_first_session_starts_at_the_first_input_and_checkpoints_only_what_it_did(bus: Client) -> None:
    rt = await handler_on(bus)
    await rt.prepare()
    assert rt.seq == 0 and await rt.positions() == (0, 0)
    await rt.finish()
    assert rt.stats.checkpoints == 0 and await checkpoints.load(bus, "rec", type(None)) is None
    await rt.process([delivered(bus, 1, place("a")), delivered(bus, 2, place("b"))])
    assert [(i.seq, i.delivered) for i in script_of(rt).seen] == [(1, 1), (2, 1)]
    await rt.finish()
    cp = await checkpoints.load(bus, "rec", type(None))
    assert cp is not None and (cp.seq, cp.state) == (2, None) and rt.stats.checkpoints == 1


async def test_a_live_session_resumes_after_what_was_acked(bus: Client) -> None:
    rt = await handler_on(bus)
    await positions_of_an_earlier_session(bus, rt, delivered_through=4, acked_through=2)
    stop = asyncio.Event()
    task = asyncio.create_task(rt.run(stop))
    await eventually(lambda: rt.seq == 7, what="every command")
    stop.set()
    await task
    assert [(i.seq, i.delivered) for i in script_of(rt).seen] == [(3, 2), (4, 2), (5, 1), (6, 1), (7, 1)]
    assert (await rt.positions())[0] == 7
