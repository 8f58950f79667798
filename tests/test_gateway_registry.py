"""The live page's operators change the instance registry through the same operations as
`sqt grid`: an add checked against the venue's market rules, pause, resume and remove, each
written with who sent it; a viewer's, or a bad one, writes nothing and says why."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from nats.aio.client import Client as Nats

from bus.reader import read_stream
from gateway.auth import Auth
from orchestration.registry import Registry
from schemas import subjects
from schemas.codec import decode
from schemas.registry import RegistryChange
from testkit.events import candle
from tests.test_gateway_auth import ENV, OPERATOR, VIEWER, first, grid_state, serve, store
from venues.sim.config import SimConfig
from venues.sim.service import SimService

ETH = "ETH/USDT:USDT"


@pytest.fixture
async def gateway(bus: Nats) -> AsyncIterator[TestClient]:
    """The gateway with tokens on, and a simulated exchange to answer the market rules."""
    sim = SimService(bus, SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5))
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(stop))
    await store(bus, candle("100"), grid_state("running", 1))
    client = await serve(bus, Auth.from_env("tokens", ENV))
    yield client
    await client.close()
    stop.set()
    await task


async def _send(ws: Any, **data: Any) -> dict[str, Any]:
    await ws.send_json({"type": "registry", "data": data})
    return dict((await first(ws, "registry_result"))["data"])


async def _log(bus: Nats, instance: str) -> list[RegistryChange]:
    out: list[RegistryChange] = []
    async for batch in read_stream(bus, "OPS", subjects=(subjects.registry("grid", instance),)):
        out += [decode(m.data) for m in batch]
    return out


async def test_an_operator_adds_pauses_resumes_and_removes_a_grid_and_each_write_names_them(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect(f"/ws?token={OPERATOR}")
    await first(ws, "hello")
    added = await _send(ws, op="add", instance="eth-1", symbol=ETH, params={"levels": "3", "spacing": "0.002"})
    assert added == {"op": "add", "instance": "eth-1", "ok": True, "message": f"added grid eth-1 on sim/main {ETH}"}, added
    got = await Registry(bus).get("grid", "eth-1")
    assert got is not None and (got[0].params["levels"], got[0].created_by, got[0].source) == (3, "alice", "sqt")

    assert (await _send(ws, op="pause", instance="eth-1"))["message"] == "grid eth-1: paused"
    assert (await _send(ws, op="resume", instance="eth-1"))["message"] == "grid eth-1: running"
    removed = await _send(ws, op="remove", instance="eth-1", policy="flatten")
    assert (removed["ok"], removed["message"]) == (True, "grid eth-1: removing (flatten)")
    log = await _log(bus, "eth-1")
    assert [(c.action, c.by) for c in log] == [("add", "alice"), ("pause", "alice"), ("resume", "alice"), ("remove", "alice")]
    assert log[-1].record.policy == "flatten"
    await ws.close()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"op": "add", "instance": "x1", "symbol": ETH, "params": {"levels": "0"}}, "`levels` must be at least 1"),
        ({"op": "add", "instance": "x1", "symbol": ETH, "params": {"spacin": "0.1"}}, "spacin"),
        ({"op": "add", "instance": "x1", "symbol": "NOPE/USDT:USDT"}, "has no market NOPE/USDT:USDT"),
        ({"op": "add", "instance": "x1", "symbol": ETH, "params": {"notional": "0.5"}}, "notional"),
        ({"op": "add", "instance": "x1", "symbol": ETH, "venue": "mars"}, "venue 'mars' is not configured"),
        ({"op": "add", "instance": "Not An Id", "symbol": ETH}, "instance"),
        ({"op": "pause", "instance": "ghost"}, "no grid 'ghost' in the registry"),
        ({"op": "remove", "instance": "ghost", "policy": "cancel"}, "no grid 'ghost' in the registry"),
    ],
)
async def test_a_bad_change_names_what_is_wrong_and_writes_nothing(gateway: TestClient, bus: Nats, data: dict[str, Any], says: str) -> None:
    ws = await gateway.ws_connect(f"/ws?token={OPERATOR}")
    await first(ws, "hello")
    result = await _send(ws, **data)
    assert result["ok"] is False and says in result["message"], result
    assert await Registry(bus).records("grid") == []
    await ws.close()


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"op": "add", "instance": "x1"}, "`symbol` is needed"),
        ({"op": "remove", "instance": "x1"}, "`policy` (cancel or flatten) is needed"),
        ({"op": "add", "instance": "x1", "symbol": ETH, "params": {"instance": "other"}}, "may not set instance"),
        ({"op": "drop", "instance": "x1"}, "op"),
        ({"op": "add", "instance": "x1", "symbol": ETH, "params": {"levels": 3}}, "params"),  # values are text, as typed
    ],
)
async def test_a_malformed_registry_frame_is_an_error_frame(gateway: TestClient, bus: Nats, data: dict[str, Any], says: str) -> None:
    ws = await gateway.ws_connect(f"/ws?token={OPERATOR}")
    await first(ws, "hello")
    await ws.send_json({"type": "registry", "data": data})
    error = (await first(ws, "error"))["data"]
    assert error["code"] == "bad_frame" and says in error["message"], error
    assert await Registry(bus).records("grid") == []
    await ws.close()


async def test_a_viewers_change_is_refused_and_nothing_is_written(gateway: TestClient, bus: Nats) -> None:
    ws = await gateway.ws_connect(f"/ws?token={VIEWER}")
    await first(ws, "hello")
    await ws.send_json({"type": "registry", "data": {"op": "add", "instance": "x1", "symbol": ETH}})
    error = (await first(ws, "error"))["data"]
    assert error["code"] == "forbidden" and "bob is a viewer" in error["message"]
    assert await Registry(bus).records("grid") == []
    await ws.close()
