"""The gateway's descriptions are the code's: the OpenAPI document names exactly the REST routes
the app serves, with their parameters, and answers decode as the types it documents; the frames'
JSON Schema in docs/ is the one the code generates, for every frame type."""

from __future__ import annotations

import typing
from collections.abc import AsyncIterator
from decimal import Decimal as D
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as Nats

from gateway import frames
from gateway.app import make_app
from gateway.config import GatewayConfig
from gateway.openapi import FRAME_DATA, ROUTES, SCHEMA_FILE, render
from schemas import subjects
from schemas.account import Balance, Position
from schemas.codec import encode
from schemas.ops import StrategyState
from testkit.bus import eventually
from testkit.events import candle, fill, order_update


@pytest.fixture
async def gateway(bus: Nats) -> AsyncIterator[TestClient]:
    position = Position(id="p1", venue="sim", account="main", symbol="BTC/USDT:USDT", side="long", contracts=D(1), ts=1, ts_local=1)
    balance = Balance(id="b1", venue="sim", account="main", asset="USDT", free=D(5), used=D(0), total=D(5), ts=1, ts_local=1)
    state = StrategyState(
        id="s1", component="grid", instance="g", venue="sim", account="main", symbol="BTC/USDT:USDT", status="running", input_seq=1, ts=1
    )
    for e in (candle("100"), order_update("a"), fill("a"), position, balance, state):
        await bus.jetstream().publish(subjects.subject_of(e), encode(e))
    client = TestClient(TestServer(make_app(bus, GatewayConfig())))
    await client.start_server()

    async def ready() -> bool:
        return bool((await (await client.get("/health")).json())["ok"])

    await eventually(ready, what="the gateway")
    yield client
    await client.close()


async def test_the_openapi_document_names_exactly_the_rest_routes_and_their_answers_decode_as_documented(gateway: TestClient) -> None:
    document = await (await gateway.get("/api/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    served = {r.resource.canonical for r in gateway.app.router.routes() if r.resource and r.resource.canonical.startswith("/api/")}
    assert set(document["paths"]) == served - {"/api/openapi.json"} == set(ROUTES)
    for path, (_summary, parameters, item) in ROUTES.items():
        required = {p["name"]: "sim" if p["name"] == "venue" else "BTC/USDT:USDT" for p in parameters if p["required"]}
        answer = await gateway.get(path, params=required)
        assert answer.status == 200, path
        items = msgspec.json.decode(await answer.read(), type=list[item])  # type: ignore[valid-type]  # raises if not as documented
        assert items, f"{path} answered nothing: the check would be empty"
        for p in parameters:  # every documented parameter is read: a bad value is refused naming it
            bad = "x" if p["schema"].get("type") == "integer" or "enum" in p["schema"] else ""
            refused = await gateway.get(path, params={**required, p["name"]: bad})
            assert refused.status == 400 and (await refused.json())["parameter"] == p["name"], (path, p["name"])


def test_every_frame_type_has_its_schema_and_the_docs_file_is_the_generated_one() -> None:
    frame_types = set(typing.get_args(frames.FrameType))
    assert set(FRAME_DATA) == frame_types
    assert SCHEMA_FILE.read_text() == render(), "run: .venv/bin/python -m gateway.openapi"


def test_a_frame_the_code_sends_validates_against_its_documented_type() -> None:
    routed = frames.to_frame("ACCOUNT", 3, order_update("a"))
    assert routed is not None
    body: dict[str, Any] = msgspec.json.decode(frames.encode(routed.frame))
    msgspec.convert(body["data"], FRAME_DATA[body["type"]])
