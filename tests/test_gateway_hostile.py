"""Nothing stored on a subject the gateway follows can stop or fool it: for every subject it
reads, generated bad payloads (testkit.hostile.mutations) are stored, then a valid event; the
browser gets the valid event's frame and nothing from the garbage, and the gateway goes on.

The gateway is a read-only follower (no durable consumer, no DLQ of its own): garbage is skipped
and counted in /status, and the consumers that act on those subjects dead-letter it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from bus import streams
from bus.connection import connect
from gateway.app import FEED, make_app
from gateway.config import GatewayConfig
from schemas import ids, subjects
from schemas.account import Balance, Position
from schemas.codec import DecodeError, decode, encode
from schemas.ops import ReconciliationFinding, RiskAlert, StrategyState
from testkit.bus import eventually, start_server
from testkit.events import candle, fill, order_update
from testkit.hostile import mutations
from testkit.loop import Loop

SYMBOL = "BTC/USDT:USDT"
_n = itertools.count(1)


def examples() -> list[Any]:
    """One valid event of every kind the gateway follows (each call: new ids, so none is a duplicate)."""
    n = next(_n)
    return [
        candle(str(100 + n), open_time=1_700_000_000_000 + n * 60_000),
        order_update(f"o{n}", price="99"),
        fill(f"o{n}", trade_id=f"t{n}"),
        Position(id=f"p{n}", venue="sim", account="main", symbol=SYMBOL, side="long", contracts=Decimal(n), ts=n, ts_local=n),
        Balance(
            id=f"b{n}", venue="sim", account="main", asset="USDT", free=Decimal(n), used=Decimal(0), total=Decimal(n), ts=n, ts_local=n
        ),
        StrategyState(
            id=ids.state_id("grid", "g", n),
            component="grid",
            instance="g",
            venue="sim",
            account="main",
            symbol=SYMBOL,
            status="running",
            input_seq=n,
            ts=n,
        ),
        RiskAlert(id=f"r{n}", instance="risk", severity="warning", kind="drawdown", message="m", venue="sim", symbol=SYMBOL, ts=n),
        ReconciliationFinding(
            id=f"f{n}", instance="rec", venue="sim", account="main", symbol=SYMBOL, kind="missing_order", detail="d", action="none", ts=n
        ),
    ]


KINDS = {
    "candle": "kline",
    "order": "orders",
    "fill": "trade_event",
    "position": "position",
    "balance": "account",
    "strategy_state": "grid_state",
}
KINDS.update({"risk_alert": "risk_alert", "reconciliation": "reconciliation"})


def names(payload: bytes, subject: str) -> bool:
    """Does the payload decode as a bus message whose body names this subject?"""
    try:
        return subjects.subject_of(decode(payload)) == subject
    except (DecodeError, ValueError, subjects.SubjectError):
        return False


class Running:
    def __init__(self, workdir: Path) -> None:
        self.loop = Loop()
        self.exits = AsyncExitStack()
        self.loop.run(self._start(workdir))

    async def _start(self, workdir: Path) -> None:
        await self.exits.__aenter__()
        server = start_server(workdir)
        self.exits.callback(server.stop)
        self.nc: Client = await connect(server.url, name="hostile", attempts=3)
        self.exits.push_async_callback(self.nc.close)
        await streams.apply(self.nc.jetstream())
        await self.store(examples()[0])  # a market to watch
        app = make_app(self.nc, GatewayConfig())
        self.feed = app[FEED]
        web = TestServer(app)
        await web.start_server()
        self.exits.push_async_callback(web.close)
        session = ClientSession()
        self.exits.push_async_callback(session.close)
        await eventually(lambda: self.feed.ready, what="the gateway")
        self.ws: ClientWebSocketResponse = await session.ws_connect(web.make_url("/ws"))
        self.exits.push_async_callback(self.ws.close)
        await self.frames_until("history")

    async def store(self, event: Any) -> int:
        ack = await self.nc.jetstream().publish(subjects.subject_of(event), encode(event), headers={"Nats-Msg-Id": event.id})
        return int(ack.seq)

    async def frames_until(self, kind: str, seq: int | None = None) -> list[dict[str, Any]]:
        out = []
        while True:
            msg = await self.ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            out.append(frame)
            if frame["type"] == kind and (seq is None or frame["seq"] == seq):
                return out

    def close(self) -> None:
        self.loop.run(self.exits.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    r = Running(tmp_path_factory.mktemp("gateway-hostile"))
    yield r
    r.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_garbage_on_every_followed_subject_is_skipped_and_the_next_valid_event_is_served(running: Running, data: st.DataObject) -> None:
    valid = examples()
    index = data.draw(st.integers(0, len(valid) - 1), label="kind")
    example = valid[index]
    subject = subjects.subject_of(example)
    garbage = data.draw(st.lists(mutations(subject, example), min_size=1, max_size=4), label="garbage")

    async def go() -> None:
        skipped = running.feed.state.skipped
        js = running.nc.jetstream()
        for payload in garbage:
            await js.publish(subject, payload)
        seq = await running.store(example)
        kind = KINDS[type(example).__struct_config__.tag]
        got = await running.frames_until(kind, seq)  # the valid event is served, after the garbage
        assert [f for f in got if f["type"] == "error"] == []
        assert running.feed.ready and running.feed.view.positions[got[-1]["stream"]] >= seq
        still_valid = sum(1 for payload in garbage if names(payload, subject))  # a mutation may leave an event valid
        assert running.feed.state.skipped - skipped == len(garbage) - still_valid

    running.loop.run(go())
