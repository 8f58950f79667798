"""Incident playback: a past window of the streams played to one browser through the live
mapping, from the bus or from an exported file, with pause and step."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as Nats

from bus import export
from bus.reader import read_stream
from gateway.app import make_app
from gateway.config import GatewayConfig
from gateway.frames import Market
from gateway.playback import BadWindow, from_lines, window
from schemas import subjects
from schemas.codec import encode
from testkit.bus import eventually
from testkit.events import candle, fill, order_update

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000


async def store(nc: Nats, *events: Any) -> None:
    for e in events:
        await nc.jetstream().publish(subjects.subject_of(e), encode(e), headers={"Nats-Msg-Id": e.id})


def now_ms() -> int:
    return int(time.time() * 1000)


async def serve(bus: Nats, **kw: Any) -> TestClient:
    client = TestClient(TestServer(make_app(bus, GatewayConfig(), **kw)))
    await client.start_server()

    async def ready() -> bool:
        return bool((await (await client.get("/health")).json())["ok"])

    await eventually(ready, what="the gateway to read the streams back")
    return client


@pytest.fixture
async def recorded(bus: Nats) -> AsyncIterator[tuple[int, int]]:
    """Three candles, then (the window) an order, a fill and a fourth candle, a little apart."""
    await store(bus, *(candle(str(100 + i), open_time=T0 + i * 60_000) for i in range(3)))
    time.sleep(0.02)
    start = now_ms()
    time.sleep(0.02)
    for e in (order_update("a", price="99"), fill("a", price="99"), candle("200", open_time=T0 + 3 * 60_000)):
        await store(bus, e)
        time.sleep(0.05)
    yield start, now_ms()


async def frames_until(ws: Any, kind: str, state: str | None = None) -> list[dict[str, Any]]:
    out = []
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        out.append(frame)
        if frame["type"] == kind and (state is None or frame["data"]["state"] == state):
            return out


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def test_a_window_plays_its_first_screen_as_it_was_then_its_events_in_order(bus: Nats, recorded: tuple[int, int]) -> None:
    start, end = recorded
    client = await serve(bus)
    try:
        await store(bus, candle("999", open_time=T0 + 9 * 60_000))  # after the window: never played
        ws = await client.ws_connect(f"/ws?from={start}&to={end}&speed=50")
        got = await frames_until(ws, "playback", "ended")
        assert kinds(got) == ["hello", "history", "orders", "playback", "orders", "trade_event", "kline", "playback"]
        hello, history, snapshot, playing = got[:4]
        assert hello["data"]["mode"] == "playback" and hello["data"]["market"] == {"venue": "sim", "symbol": "BTC/USDT:USDT"}
        assert [c["close"] for c in history["data"]["candles"]] == ["100", "101", "102"]  # as it was at `from`
        assert snapshot["data"]["orders"] == [] and playing["data"]["state"] == "playing"
        assert got[4]["data"]["orders"][0]["client_order_id"] == "a" and got[6]["data"]["close"] == "200"
        assert [f["seq"] for f in got[4:7]] == [1, 2, 4]  # the stored events' own sequences
    finally:
        await client.close()


async def test_a_paused_playback_plays_one_frame_per_step(bus: Nats, recorded: tuple[int, int]) -> None:
    start, end = recorded
    client = await serve(bus)
    try:
        ws = await client.ws_connect(f"/ws?from={start}&to={end}&speed=0.1")  # a second and more between events
        await frames_until(ws, "playback", "playing")
        await ws.send_json({"type": "playback", "data": {"action": "pause"}})
        assert (await frames_until(ws, "playback"))[-1]["data"]["state"] == "paused"
        await ws.send_json({"type": "playback", "data": {"action": "step"}})
        stepped = await frames_until(ws, "orders")
        assert kinds(stepped) == ["playback", "orders"]
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)  # paused again after one frame
        await ws.send_json({"type": "playback", "data": {"action": "step"}})
        assert kinds(await frames_until(ws, "trade_event"))[-1] == "trade_event"
        await ws.send_json({"type": "subscribe", "data": {"venue": "sim", "symbol": "BTC/USDT:USDT"}})
        assert (await frames_until(ws, "error"))[-1]["data"]["code"] == "playback"
        await ws.send_json({"type": "playback", "data": {"action": "resume"}})
        assert kinds(await frames_until(ws, "playback", "ended"))[-2:] == ["kline", "playback"]
    finally:
        await client.close()


async def test_a_window_from_an_exported_file_plays_the_same(bus: Nats, recorded: tuple[int, int]) -> None:
    start, end = recorded
    lines = []
    for stream in ("MARKET", "ACCOUNT", "OPS", "COMMAND"):
        async for batch in read_stream(bus, stream):
            lines += [export._line_decoder.decode(export.to_line(stream, m)) for m in batch]
    from_bus = await serve(bus)
    from_file = await serve(bus, record=from_lines(lines))
    try:
        plays = []
        for client in (from_bus, from_file):
            ws = await client.ws_connect(f"/ws?from={start}&to={end}&speed=100")
            plays.append(await frames_until(ws, "playback", "ended"))
        strip = lambda fs: [(f["type"], f["stream"], f["seq"], f["data"]) for f in fs if f["type"] not in ("hello", "playback")]  # noqa: E731
        assert strip(plays[0]) == strip(plays[1]) and len(strip(plays[0])) == 5
    finally:
        await from_bus.close()
        await from_file.close()


def test_a_bad_window_says_what_is_wrong() -> None:
    for query, problem in [
        ({}, "`from` is required"),
        ({"from": "yesterday"}, "epoch milliseconds or an ISO 8601 time"),
        ({"from": "2026-11-30T10:00:00", "to": "2026-11-30T09:00:00"}, "`to` must be after `from`"),
        ({"from": "2026-11-01T00:00:00", "to": "2026-11-03T00:00:00"}, "at most 1 day"),
        ({"from": "2026-11-30T10:00:00", "to": "2026-11-30T11:00:00", "speed": "0"}, "between 0.1 and 1000"),
        ({"from": "2026-11-30T10:00:00", "to": "2026-11-30T11:00:00", "speed": "fast"}, "must be a number"),
    ]:
        with pytest.raises(BadWindow, match=problem):
            window(query)
    start, end, speed, market = window({"from": "1700000000000", "to": "2023-11-15T00:00:00+01:00", "venue": "sim", "symbol": "X"})
    assert (start.timestamp(), end.timestamp(), speed, market) == (1_700_000_000, 1_700_002_800, 10.0, Market("sim", "X"))
    assert window({"from": "2026-11-30T10:00:00", "to": "2026-11-30T10:00:01"})[0].tzinfo is not None  # naive means UTC
