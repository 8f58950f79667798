"""The gateway against a real nats-server, through aiohttp's test client: the first screen, live
frames, resume, REST, health and status, and hostile clients and stored garbage."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as Nats

from gateway.app import make_app
from gateway.config import GatewayConfig
from schemas import subjects
from schemas.codec import encode
from testkit.bus import eventually
from testkit.events import candle, fill, order_update

T0 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000
BTC = {"venue": "sim", "symbol": "BTC/USDT:USDT"}


async def store(nc: Nats, *events: Any) -> list[int]:
    js = nc.jetstream()
    return [(await js.publish(subjects.subject_of(e), encode(e), headers={"Nats-Msg-Id": e.id})).seq for e in events]


@pytest.fixture
async def gateway(bus: Nats) -> AsyncIterator[TestClient]:
    await store(bus, *(candle(str(100 + i), open_time=T0 + i * 60_000) for i in range(120)))
    await store(bus, order_update("a", price="99"), order_update("b", price="98"))
    client = TestClient(TestServer(make_app(bus, GatewayConfig(frames_per_second=50, frame_burst=20))))
    await client.start_server()

    async def ready() -> bool:
        return (await client.get("/health")).status == 200

    await eventually(ready, what="the gateway to read the streams back")
    yield client
    await client.close()


async def frames(ws: Any, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, msg
        out.append(json.loads(msg.data))
    return out


async def test_a_browser_gets_hello_then_its_first_screen_then_live_frames_with_their_sequences(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect("/ws")
    hello, history, orders = await frames(ws, 3)
    assert hello["type"] == "hello" and hello["data"]["market"] == BTC and hello["data"]["markets"] == [BTC]
    assert history["type"] == "history" and len(history["data"]["candles"]) == 100
    assert history["data"]["candles"][-1]["close"] == "219" and (history["stream"], history["seq"]) == (None, None)
    assert orders["type"] == "orders" and orders["data"]["snapshot"] is True
    assert [o["client_order_id"] for o in orders["data"]["orders"]] == ["a", "b"]

    [c] = await store(bus, candle("300", open_time=T0 + 120 * 60_000))
    [kline] = await frames(ws, 1)
    assert (kline["type"], kline["stream"], kline["seq"], kline["data"]["close"]) == ("kline", "MARKET", c, "300")
    o, f = await store(bus, order_update("a", status="closed", filled="0.01"), fill("a", price="99"))
    order, trade = await frames(ws, 2)
    assert (order["type"], order["seq"], order["data"]["orders"][0]["status"]) == ("orders", o, "closed")
    assert (trade["type"], trade["seq"], trade["data"]["price"]) == ("trade_event", f, "99")
    await ws.close()


async def test_a_reconnecting_browser_resumes_with_exactly_the_frames_it_missed(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect("/ws")
    await frames(ws, 3)
    [first] = await store(bus, candle("300", open_time=T0 + 120 * 60_000))
    [seen] = await frames(ws, 1)
    await ws.close()
    missed = await store(bus, candle("301", open_time=T0 + 121 * 60_000), order_update("c", price="97"), fill("b", trade_id="t9"))

    ws = await gateway.ws_connect("/ws")
    await frames(ws, 3)  # hello and the default market's first screen
    account_seq = 2  # the two orders stored before the first connection
    await ws.send_json({"type": "resume", "data": {**BTC, "after": {"MARKET": seen["seq"], "ACCOUNT": account_seq, "OPS": 0}}})
    got = await frames(ws, 3)
    assert [(g["stream"], g["seq"]) for g in got] == [("MARKET", missed[0]), ("ACCOUNT", missed[1]), ("ACCOUNT", missed[2])]
    assert first == seen["seq"]
    [later] = await store(bus, candle("302", open_time=T0 + 122 * 60_000))
    [live] = await frames(ws, 1)
    assert live["seq"] == later  # then live, nothing twice
    await ws.close()


async def test_a_resume_from_frames_no_longer_kept_starts_over_with_history(bus: Nats) -> None:
    await store(bus, *(candle(str(100 + i), open_time=T0 + i * 60_000) for i in range(10)))
    client = TestClient(TestServer(make_app(bus, GatewayConfig(resume_frames=3))))
    await client.start_server()
    try:
        ws = await client.ws_connect("/ws")
        await frames(ws, 3)
        await ws.send_json({"type": "resume", "data": {**BTC, "after": {"MARKET": 2}}})
        [again] = await frames(ws, 1)
        assert again["type"] == "history" and len(again["data"]["candles"]) == 10
    finally:
        await client.close()


async def test_hostile_client_frames_get_errors_and_the_connection_and_its_peers_go_on(gateway: TestClient, bus: Nats) -> None:
    peer = await gateway.ws_connect("/ws")
    await frames(peer, 3)
    ws = await gateway.ws_connect("/ws")
    await frames(ws, 3)
    hostile = [
        "not json",
        "x" * 5000,  # beyond max_frame_bytes
        json.dumps({"type": "subscribe", "data": {"venue": "sim", "symbol": "NOPE/USDT"}}),
        json.dumps({"type": "resume", "data": {**BTC, "after": {"MARKET": -5}}}),
        json.dumps({"type": "control", "data": {"action": "cancel_all"}}),
        json.dumps({"type": "subscribe", "data": {"venue": "sim" * 40, "symbol": "x"}}),
    ]
    for text in hostile:
        await ws.send_str(text)
    await ws.send_bytes(b"\xff\xfe binary garbage")
    errors = await frames(ws, len(hostile) + 1)
    codes = [e["data"]["code"] for e in errors]
    assert all(e["type"] == "error" for e in errors)
    assert codes == ["bad_frame", "too_large", "unknown_market", "bad_frame", "bad_frame", "bad_frame", "bad_frame"]
    for _ in range(30):  # too many frames a second: refused, not served
        await ws.send_json({"type": "ping"})
    answers = await frames(ws, 30)
    assert {a["type"] for a in answers} == {"pong", "error"} and any(a["data"].get("code") == "rate_limited" for a in answers)
    [c] = await store(bus, candle("300", open_time=T0 + 120 * 60_000))
    for sock in (ws, peer):  # both still live
        [kline] = await frames(sock, 1)
        assert kline["seq"] == c
    metrics = await (await gateway.get("/metrics")).text()
    assert 'sqt_gateway_client_frames_refused_total{code="too_large"} 1.0' in metrics


async def test_garbage_stored_on_a_followed_subject_is_skipped_and_the_feed_goes_on(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect("/ws")
    await frames(ws, 3)
    js = bus.jetstream()
    account = subjects.acct("sim", "main", "BTC/USDT:USDT", "order")
    await js.publish(account, b"{not json")
    await js.publish(account, encode(order_update("x", symbol="ETH/USDT:USDT")))  # contradicts its subject
    await js.publish(subjects.md("sim", "BTC/USDT:USDT", "candle1m"), json.dumps({"type": "candle", "close": "NaN"}).encode())
    [c] = await store(bus, candle("300", open_time=T0 + 120 * 60_000))
    [kline] = await frames(ws, 1)
    assert kline["seq"] == c
    body = await (await gateway.get("/status")).json()
    assert body["skipped_events"] == 3 and body["clients"] == 1
    assert body["streams"]["MARKET"]["lag"] == 0 and body["streams"]["ACCOUNT"]["ready"] is True


async def test_rest_answers_from_the_view_and_names_a_bad_parameter(gateway: TestClient, bus: Nats) -> None:
    health = await gateway.get("/health")
    assert health.status == 200 and (await health.json())["ok"] is True
    assert await (await gateway.get("/api/markets")).json() == [BTC]
    q = "venue=sim&symbol=BTC/USDT:USDT"
    bars = await (await gateway.get(f"/api/candles?{q}&tf=1h")).json()
    assert [b["open_time"] for b in bars] == [T0, T0 + 3_600_000]
    assert (bars[0]["open"], bars[0]["close"], bars[0]["volume"]) == ("100", "159", "60")
    window = await (await gateway.get(f"/api/candles?{q}&from={T0 + 60_000}&to={T0 + 180_000}")).json()
    assert [b["close"] for b in window] == ["101", "102", "103"]
    assert [o["client_order_id"] for o in await (await gateway.get(f"/api/orders?{q}")).json()] == ["a", "b"]
    for path, parameter in [
        (f"/api/candles?{q}&tf=2m", "tf"),
        ("/api/candles?venue=sim", "symbol"),
        (f"/api/fills?{q}&limit=abc", "limit"),
        (f"/api/fills?{q}&limit=0", "limit"),
        (f"/api/candles?{q}&from=-1", "from"),
    ]:
        answer = await gateway.get(path)
        assert answer.status == 400 and (await answer.json())["parameter"] == parameter, path
    assert Decimal((await (await gateway.get(f"/api/candles?{q}&tf=1d")).json())[0]["high"]) == Decimal(219)


async def test_status_says_clients_subscriptions_and_each_streams_position(gateway: TestClient) -> None:
    ws = await gateway.ws_connect("/ws")
    await frames(ws, 3)
    body = await (await gateway.get("/status")).json()
    assert body["clients"] == 1 and body["subscriptions"] == {"sim BTC/USDT:USDT": 1}
    assert body["nats"]["connected"] is True
    assert body["streams"]["MARKET"]["position"] == body["streams"]["MARKET"]["last"] == 120
    assert body["streams"]["ACCOUNT"]["position"] == 2
    await ws.close()


async def test_two_gateways_serve_the_same_streams_side_by_side(gateway: TestClient, bus: Nats) -> None:
    other = TestClient(TestServer(make_app(bus, GatewayConfig())))
    await other.start_server()
    try:

        async def ready() -> bool:
            return (await other.get("/health")).status == 200

        await eventually(ready, what="the second gateway")
        sockets = [await gateway.ws_connect("/ws"), await other.ws_connect("/ws")]
        for ws in sockets:
            await frames(ws, 3)
        [c] = await store(bus, candle("300", open_time=T0 + 120 * 60_000))
        for ws in sockets:
            [kline] = await frames(ws, 1)
            assert kline["seq"] == c
        await sockets[0].close()
    finally:
        await other.close()


async def test_a_browser_that_says_nothing_is_closed_after_the_idle_timeout(bus: Nats) -> None:
    client = TestClient(TestServer(make_app(bus, GatewayConfig(idle_timeout=0.5))))
    await client.start_server()
    try:
        ws = await client.ws_connect("/ws", autoping=False)
        while (msg := await ws.receive(timeout=10)).type == WSMsgType.TEXT:
            pass
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED) and ws.close_code == 1001
    finally:
        await client.close()


async def test_a_running_gateway_is_a_micro_service_that_sqt_status_lists(nats_server: Any, bus: Nats) -> None:
    import asyncio

    from bus.settings import BusSettings
    from cli.status import services
    from gateway.runner import run_gateway

    stop = asyncio.Event()
    running = asyncio.create_task(run_gateway(BusSettings(nats_url=nats_server.url), GatewayConfig(port=0), stop))
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        found[:] = [s for s in await services(bus, wait=0.2) if s.get("name") == "sqt-gateway"]
        return bool(found)

    try:
        await eventually(listed, what="the gateway's service")
        instance = found[0]["metadata"]["instance"]
        assert found[0]["metadata"]["component"] == "gateway" and instance.startswith("port-") and instance != "port-0"
        answer = json.loads((await bus.request(subjects.status("gateway", instance), b"", timeout=2)).data)
        assert (answer["clients"], sorted(answer["streams"])) == (0, ["ACCOUNT", "MARKET", "OPS"])
    finally:
        stop.set()
        await running
