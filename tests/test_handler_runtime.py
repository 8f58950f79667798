"""The handler runtime: one market's commands in decision order, cancel-all alone, and an answer
that cannot be addressed never ends a session. With a recording handler over a real bus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from nats.aio.client import Client

from bus.consumer import ConsumerSpec
from bus.contract import Inbound
from bus.dlq import CONSUMER, ERROR
from bus.handler import HandlerRuntime
from bus.publisher import Publisher
from bus.reader import read_stream
from schemas.account import OrderUpdate
from schemas.commands import CancelAll, CancelOrder, Command
from testkit.bus import eventually
from testkit.events import place

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


class Recorder:
    """Handles commands slowly or quickly as told, and records when each started and ended."""

    def __init__(self, slow: set[str]) -> None:
        self.slow = slow
        self.log: list[tuple[str, str]] = []  # ("start" | "end", command id)
        self.running = 0
        self.overlapped_exclusive = False
        self.exclusive_running = False
        self.answer_invalid: list[Any] = []

    def key(self, inbound: Inbound[Command]) -> str:
        return inbound.event.symbol

    def exclusive(self, inbound: Inbound[Command]) -> bool:
        return isinstance(inbound.event, CancelAll)

    async def handle(self, inbound: Inbound[Command]) -> Sequence[Any]:
        cmd = inbound.event
        alone = isinstance(cmd, CancelAll)
        if self.exclusive_running or (alone and self.running):
            self.overlapped_exclusive = True
        self.running += 1
        self.exclusive_running = alone
        self.log.append(("start", cmd.id))
        # A slow venue call: the event loop runs everything else that may run meanwhile.
        for _ in range(20 if cmd.id in self.slow else 1):
            await asyncio.sleep(0)
        self.log.append(("end", cmd.id))
        self.running -= 1
        self.exclusive_running = False
        return []

    def on_invalid(self, seq: int, subject: str, data: bytes, reason: str) -> Sequence[Any]:
        return self.answer_invalid

    def when(self, what: str, cid: str) -> int:
        return self.log.index((what, cid))


def spec() -> ConsumerSpec:
    return ConsumerSpec(name="rec", stream="COMMAND", input_type=Command, subjects=("cmd.sim.main.*.*",), outputs=("acct.sim.main.*.*",))


def cancel(cid: str, symbol: str = BTC) -> CancelOrder:
    return CancelOrder(id=f"c{cid}", venue="sim", account="main", symbol=symbol, client_order_id=cid, origin="t", ts=1)


def cancel_all(name: str, symbol: str = BTC) -> CancelAll:
    return CancelAll(id=name, venue="sim", account="main", symbol=symbol, origin="t", ts=1)


async def run_batch(bus: Client, recorder: Recorder, commands: list[Any]) -> HandlerRuntime[Command]:
    pub = await Publisher(bus).start()
    await pub.publish_all(commands)  # stored before the consumer starts: they arrive as one batch
    await pub.close()
    last = (await bus.jetstream().stream_info("COMMAND")).state.last_seq
    runtime = HandlerRuntime(bus, spec(), recorder)
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    await eventually(lambda: runtime.seq >= last, what="every command handled")
    stop.set()
    await task
    return runtime


async def test_a_cancel_never_overtakes_the_place_of_its_market_but_other_markets_run_beside_it(bus: Client) -> None:
    concurrent = []
    # Markets run beside each other within one delivered batch; a loaded server may hand the three
    # commands over in two pulls, so the overlap must show in one of three tries (never in none).
    for attempt in range(3):
        slow_place = place(f"p{attempt}", symbol=BTC)
        commands = [slow_place, cancel(f"p{attempt}"), place(f"e{attempt}", symbol=ETH, price="10")]
        recorder = Recorder(slow={slow_place.id})
        await run_batch(bus, recorder, commands)
        assert recorder.when("start", f"cp{attempt}") > recorder.when("end", slow_place.id)  # in decision order, always
        concurrent.append(recorder.when("start", commands[2].id) < recorder.when("end", slow_place.id))
        if concurrent[-1]:
            break
    assert any(concurrent), concurrent


async def test_cancel_all_runs_alone_after_everything_before_it_and_before_everything_after_it(bus: Client) -> None:
    before = [place("b1", symbol=BTC), place("b2", symbol=ETH, price="10")]
    after = [place("a1", symbol=ETH, price="10"), place("a2", symbol=BTC)]
    commands = [*before, cancel_all("all1", symbol=ETH), *after]
    recorder = Recorder(slow={c.id for c in before} | {"all1"})
    await run_batch(bus, recorder, commands)
    start = recorder.when("start", "all1")
    end = recorder.when("end", "all1")
    assert all(recorder.when("end", c.id) < start for c in before)
    assert all(recorder.when("start", c.id) > end for c in after)
    assert not recorder.overlapped_exclusive


async def test_an_answer_to_a_bad_input_that_cannot_be_addressed_goes_nowhere_and_the_session_goes_on(bus: Client) -> None:
    recorder = Recorder(slow=set())
    unaddressable = OrderUpdate(  # a symbol no subject can carry, taken from a hostile body
        id="x", venue="sim", account="main", symbol="BTCUSDT", client_order_id="bad1", side="buy",
        amount=Decimal(1), remaining=Decimal(1), status="rejected", ts=1, ts_local=1,
    )  # fmt: skip
    recorder.answer_invalid = [unaddressable]
    js = bus.jetstream()
    await js.publish("cmd.sim.main.BTC-USDT-USDT.place", b'{"type":"place_order","symbol":"BTCUSDT","amount":"-1"}')
    good = place("g1")
    runtime = await run_batch(bus, recorder, [good])
    assert runtime.stats.sessions == 1, runtime.stats.last_error
    assert ("end", good.id) in recorder.log
    dead = [m async for batch in read_stream(bus, "DLQ") for m in batch]
    assert [m.header(CONSUMER) for m in dead] == ["rec"]
    assert "its answer was dropped" in (dead[0].header(ERROR) or "")
    acct = await js.stream_info("ACCOUNT")
    assert acct.state.messages == 0  # nothing published under the hostile body's names
