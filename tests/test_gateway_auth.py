"""The gateway with auth on: tokens and JWTs, roles, the origin check, operator controls stored
with who sent them and answered with the outcome, and no secret in anything sent to a browser."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as Nats

from cli.config import env_overrides
from gateway.app import make_app
from gateway.auth import Auth, AuthConfigError, Identity, parse_tokens
from gateway.config import GatewayConfig
from schemas import subjects
from schemas.codec import decode, encode
from schemas.ops import ControlCommand, GridLevel, StrategyState
from testkit.bus import eventually
from testkit.events import candle, order_update

OPERATOR, VIEWER = "operator-token-0123456789", "viewer-token-0123456789ab"
SECRET = "jwt-shared-secret-" + "0123456789abcdef" * 4
ENV = {"SQT_GATEWAY_TOKENS": f"alice=operator:{OPERATOR},bob=viewer:{VIEWER}", "SQT_GATEWAY_JWT_SECRET": SECRET}
MARKET = {"venue": "sim", "symbol": "BTC/USDT:USDT"}


def grid_state(status: str, seq: int) -> StrategyState:
    return StrategyState(
        id=f"state-{seq}",
        component="grid",
        instance="g1",
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        status=status,  # type: ignore[arg-type]
        input_seq=seq,
        levels=[GridLevel(index=0, price=candle().close)],
        ts=seq,
    )


async def store(nc: Nats, *events: Any) -> None:
    for e in events:
        await nc.jetstream().publish(subjects.subject_of(e), encode(e), headers={"Nats-Msg-Id": e.id})


async def serve(bus: Nats, auth: Auth, **config: Any) -> TestClient:
    client = TestClient(TestServer(make_app(bus, GatewayConfig(**config), auth)))
    await client.start_server()

    async def ready() -> bool:
        return bool((await (await client.get("/health")).json())["ok"])

    await eventually(ready, what="the gateway to read the streams back")
    return client


@pytest.fixture
async def gateway(bus: Nats) -> AsyncIterator[TestClient]:
    await store(bus, candle("100"), order_update("a"), grid_state("running", 1))
    client = await serve(bus, Auth.from_env("tokens", ENV), control_wait=3.0)
    yield client
    await client.close()


async def first(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        msg = await ws.receive(timeout=10)
        assert msg.type == WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        if frame["type"] == kind:
            return frame


async def test_without_a_valid_token_nothing_but_the_page_and_health_answers(gateway: TestClient) -> None:
    for path in ("/api/markets", "/status", "/metrics", "/ws", f"/api/orders?venue=sim&symbol=x&token={OPERATOR}x"):
        assert (await gateway.get(path)).status == 401, path
    assert (await gateway.get("/api/markets", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await gateway.get("/health")).status == 200
    assert (await gateway.get("/")).status == 200
    assert (await gateway.get("/api/markets", headers={"Authorization": f"Bearer {VIEWER}"})).status == 200
    ws = await gateway.ws_connect(f"/ws?token={VIEWER}")
    hello = await first(ws, "hello")
    assert hello["data"]["role"] == "viewer"
    await ws.close()


async def test_a_websocket_from_another_origin_is_refused(gateway: TestClient) -> None:
    with pytest.raises(Exception, match="403"):
        await gateway.ws_connect(f"/ws?token={VIEWER}", headers={"Origin": "http://evil.example"})
    ws = await gateway.ws_connect(f"/ws?token={VIEWER}", headers={"Origin": f"http://{gateway.host}:{gateway.port}"})
    assert (await first(ws, "hello"))["data"]["role"] == "viewer"
    await ws.close()


async def test_a_viewers_control_is_refused_and_nothing_is_published(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect(f"/ws?token={VIEWER}")
    await first(ws, "history")
    await ws.send_json({"type": "control", "data": {"action": "pause", **MARKET}})
    error = await first(ws, "error")
    assert error["data"]["code"] == "forbidden" and "bob is a viewer" in error["data"]["message"]
    info = await bus.jetstream().stream_info("OPS", subjects_filter="ops.control.>")
    assert not info.state.subjects
    await ws.close()


async def test_an_operators_pause_is_stored_with_who_sent_it_and_answered_with_what_the_grid_reported(
    gateway: TestClient, bus: Nats
) -> None:
    seen: list[ControlCommand] = []

    async def grid(msg: Any) -> None:  # a grid that does what it is told and says so
        cmd = decode(msg.data)
        seen.append(cmd)
        await store(
            bus, grid_state({"pause": "paused", "halt": "halted", "reset": "running", "resume": "running"}[cmd.action], 10 + len(seen))
        )

    await bus.subscribe(subjects.control("grid", "g1"), cb=grid)
    ws = await gateway.ws_connect(f"/ws?token={OPERATOR}")
    assert (await first(ws, "hello"))["data"]["role"] == "operator"
    await ws.send_json({"type": "control", "data": {"action": "pause", **MARKET}})
    result = (await first(ws, "control_result"))["data"]
    assert (result["ok"], result["statuses"], len(result["stored"])) == (True, {"g1": "paused"}, 1)
    [cmd] = seen
    assert (cmd.target_component, cmd.target_instance, cmd.action, cmd.operator) == ("grid", "g1", "pause", "alice")

    await ws.send_json({"type": "control", "data": {"action": "cancel_all", **MARKET}})  # halts the grid
    assert (await first(ws, "control_result"))["data"]["statuses"] == {"g1": "halted"}
    await ws.send_json({"type": "control", "data": {"action": "resume", **MARKET}})  # a halted grid is reset
    assert (await first(ws, "control_result"))["data"]["ok"] is True
    assert [c.action for c in seen] == ["pause", "halt", "reset"]

    await ws.send_json({"type": "control", "data": {"action": "pause", **MARKET, "instance": "nope"}})
    missing = (await first(ws, "control_result"))["data"]
    assert (missing["ok"], missing["message"]) == (False, "no grid nope on sim BTC/USDT:USDT")
    await ws.close()


async def test_a_control_nobody_answers_says_so_after_the_wait(bus: Nats) -> None:
    await store(bus, candle("100"), grid_state("running", 1))
    client = await serve(bus, Auth.from_env("tokens", ENV), control_wait=0.3)
    try:
        ws = await client.ws_connect(f"/ws?token={OPERATOR}")
        await ws.send_json({"type": "control", "data": {"action": "pause", **MARKET}})
        result = (await first(ws, "control_result"))["data"]
        assert result["ok"] is False and result["message"] == "stored, but not every grid reported paused within 0.3s"
        assert result["statuses"] == {"g1": "running"} and len(result["stored"]) == 1
    finally:
        await client.close()


async def test_jwts_signed_with_the_shared_secret_carry_name_and_role(bus: Nats) -> None:
    await store(bus, candle("100"))
    client = await serve(bus, Auth.from_env("jwt", ENV))
    good = jwt.encode({"sub": "carol", "role": "operator"}, SECRET, algorithm="HS256")
    try:
        ws = await client.ws_connect(f"/ws?token={good}")
        assert (await first(ws, "hello"))["data"]["role"] == "operator"
        await ws.close()
        bad = [
            jwt.encode({"sub": "carol", "role": "operator"}, "another-secret-" + "0123456789abcdef" * 4, algorithm="HS256"),
            jwt.encode({"sub": "carol", "role": "admin"}, SECRET, algorithm="HS256"),
            jwt.encode({"role": "operator"}, SECRET, algorithm="HS256"),
            jwt.encode({"sub": "carol", "role": "operator", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256"),
            jwt.encode({"sub": "carol", "role": "operator"}, SECRET, algorithm="HS512"),
            "not.a.jwt",
        ]
        for token in bad:
            assert (await client.get("/api/markets", headers={"Authorization": f"Bearer {token}"})).status == 401, token
    finally:
        await client.close()


def test_a_bad_token_list_names_the_entry_and_never_the_token() -> None:
    for text, problem in [
        ("alice=operator", "entry 1 is not name=role:token"),
        (f"alice=operator:{OPERATOR},bob=admin:{VIEWER}", "entry 2 (bob): role must be viewer or operator"),
        ("carol=viewer:short", "entry 1 (carol): a token must be at least 16 characters"),
    ]:
        with pytest.raises(AuthConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")) as caught:
            parse_tokens(text)
        assert OPERATOR not in str(caught.value) and VIEWER not in str(caught.value)
    assert parse_tokens(f" alice=operator:{OPERATOR} ,") == {OPERATOR: Identity("alice", "operator")}
    with pytest.raises(AuthConfigError, match="SQT_GATEWAY_TOKENS names none"):
        Auth.from_env("tokens", {})
    with pytest.raises(AuthConfigError, match="SQT_GATEWAY_JWT_SECRET is not set"):
        Auth.from_env("jwt", {})
    assert env_overrides({}, ENV) == {}  # secrets are never config keys (so never in a config dump)


async def test_no_secret_reaches_a_browser(gateway: TestClient, bus: Nats) -> None:
    sent: list[str] = []
    ws = await gateway.ws_connect(f"/ws?token={OPERATOR}")
    await ws.send_json({"type": "resume", "data": {**MARKET, "after": {"ACCOUNT": 0}}})
    await ws.send_json({"type": "control", "data": {"action": "pause", **MARKET}})
    await ws.send_json({"type": "bad"})
    await store(bus, candle("101", open_time=candle().open_time + 60_000))
    while True:
        msg = await ws.receive(timeout=10)
        sent.append(msg.data)
        if json.loads(msg.data)["type"] == "control_result":
            break
    for path in (
        "/api/markets",
        "/api/candles?venue=sim&symbol=BTC/USDT:USDT",
        "/api/orders?venue=sim&symbol=BTC/USDT:USDT",
        "/status",
        "/metrics",
        "/",
    ):
        sent.append(await (await gateway.get(path, headers={"Authorization": f"Bearer {VIEWER}"})).text())
    sent.append(await (await gateway.get("/api/nothing-here")).text())
    await asyncio.sleep(0)
    assert len(sent) > 10
    for secret in (OPERATOR, VIEWER, SECRET):
        assert not any(secret in text for text in sent)


def test_sqt_run_gateway_with_a_bad_token_list_exits_2_naming_the_entry_and_not_the_token(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SQT_")}
    env.update(SQT_GATEWAY_AUTH="tokens", SQT_GATEWAY_TOKENS=f"alice=operator:{OPERATOR},bob=admin:{VIEWER}")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "run", "gateway"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "entry 2 (bob): role must be viewer or operator" in out.stderr and "Traceback" not in out.stderr
    assert OPERATOR not in out.stderr + out.stdout and VIEWER not in out.stderr + out.stdout
