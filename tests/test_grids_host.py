"""Many grid instances in one process (`sqt run grids --shard N/M`): each keeps its own input
stream, consumer, checkpoint and lease; a flood of hostile inputs on one instance's market, or
an instance that cannot start, leaves the others trading at their pace."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer
from bus.streams import REGISTRY
from orchestration.host import parse_shard, shard_of
from orchestration.registry import Registry, grid_record, now_ms
from schemas import subjects
from schemas.codec import decode, encode
from schemas.ops import StrategyState
from strategies.grid.config import GridConfig
from strategies.grid.runner import input_stream
from testkit.bus import eventually
from testkit.events import ticker
from testkit.processes import Components
from testkit.registry import orders_of

CONFIG = """
data_dir = "{data}"
grids = []
[nats]
url = "{url}"
[sim]
tick_ms = 100
history_minutes = 5
"""
WIDE = ["--set", "levels=2", "--set", "spacing=0.05", "--set", "max_open_orders=10"]
ETH, BTC = "ETH/USDT:USDT", "BTC/USDT:USDT"


def hostile(n: int) -> list[bytes]:
    """What any client could publish on a ticker subject: not JSON, the wrong shape, the wrong
    market, a price out of its band, a huge body; each one unique (no duplicate id drops it)."""
    good = msgspec.to_builtins(ticker("3000", symbol=ETH))
    kinds = [
        lambda i: b"\xff\xfe not json %d" % i,
        lambda i: msgspec.json.encode({**good, "id": f"h{i}", "last": "not a number"}),
        lambda i: msgspec.json.encode({**good, "id": f"h{i}", "symbol": BTC}),  # another market on this subject
        lambda i: msgspec.json.encode({**good, "id": f"h{i}", "type": "place_order"}),
        lambda i: msgspec.json.encode({**good, "id": f"h{i}", "bid": "-1"}),
        lambda i: msgspec.json.encode([i] * 20_000),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


async def _acked(bus: Client, instance: str) -> int:
    name = input_stream(GridConfig(instance=instance)).name
    return (await bus.jetstream().consumer_info(name, f"grid-{instance}")).ack_floor.stream_seq or 0


async def _lag(bus: Client, instance: str) -> int:
    name = input_stream(GridConfig(instance=instance)).name
    last = (await bus.jetstream().stream_info(name)).state.last_seq
    acked = (await bus.jetstream().consumer_info(name, f"grid-{instance}")).ack_floor.stream_seq or 0
    return last - acked


def test_a_shard_is_n_of_m_and_every_instance_lands_in_exactly_one() -> None:
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
    ids = [f"g{i}" for i in range(200)]
    counts = [sum(1 for i in ids if shard_of(i, 4) == n) for n in range(4)]
    assert sum(counts) == 200 and min(counts) > 25, counts  # spread, not all in one
    assert [shard_of(i, 4) for i in ids] == [shard_of(i, 4) for i in ids]


@pytest.mark.e2e
async def test_a_flood_of_hostile_inputs_on_one_instance_leaves_the_others_in_the_process_trading(
    tmp_path: Path, nats_server: EmbeddedServer, bus: Client
) -> None:
    procs = Components(tmp_path)
    procs.config.write_text(CONFIG.format(data=tmp_path / "data", url=nats_server.url))
    try:
        procs.start("sim", "executor", "grids:0/1")
        for instance, symbol in (("a", BTC), ("b", ETH), ("c", BTC)):
            out = procs.sqt("grid", "add", "--instance", instance, "--symbol", symbol, *WIDE)
            assert out.returncode == 0, out.stderr
        # One that cannot start (its market is gone from the venue): written past `sqt grid add`'s check.
        registry = Registry(bus)
        await registry.create(grid_record(GridConfig(instance="d", symbol="GONE/USDT:USDT"), "sqt", "test", now_ms()), "add", "test")
        # Paused the moment it is added, before its host has started it: paused from its start (an
        # order placed on a tick sourced before the pause is canceled with the other openings).
        assert procs.sqt("grid", "add", "--instance", "e", "--symbol", BTC, *WIDE).returncode == 0
        assert procs.sqt("grid", "pause", "e").returncode == 0
        for instance, symbol in (("a", BTC), ("b", ETH), ("c", BTC)):
            await eventually(lambda i=instance, s=symbol: _has(bus, i, s), timeout=60, what=f"{instance}'s orders")
        await eventually(lambda: _status(bus, "e", "paused"), timeout=60, what="e paused from its first start")
        await eventually(lambda: _no_orders(bus, "e", BTC), timeout=30, what="e with no order resting")

        before = {i: await _acked(bus, i) for i in "ac"}
        js = bus.jetstream()
        flood = hostile(600)
        for payload in flood:
            await js.publish(subjects.md("sim", ETH, "ticker"), payload)
        # The others kept taking their inputs while b worked through the flood, and none fell behind.
        for i in "ac":
            await eventually(lambda i=i: _moved_on(bus, i, before[i]), timeout=30, what=f"{i} taking inputs during the flood")
            await eventually(lambda i=i: _caught_up(bus, i), timeout=30, what=f"{i} caught up")
        # b dead-lettered every hostile input and trades on.
        await eventually(lambda: _dlq_count(bus, "b", len(flood)), timeout=60, what="b's hostile inputs in the DLQ")
        await eventually(lambda: _caught_up(bus, "b"), timeout=30, what="b caught up after the flood")
        assert await orders_of(bus, "b", ETH) and await orders_of(bus, "a", BTC)
        last = decode((await js.get_last_msg("OPS", subjects.ops("grid", "b", "state"))).data)
        assert isinstance(last, StrategyState) and last.status == "running" and last.ts > int((time.time() - 30) * 1000)
        assert procs.procs["grids:0/1"].poll() is None  # one process, still up
        log = (tmp_path / "grids:0-1.log").read_text()
        assert "GONE/USDT:USDT" in log, log[-2000:]  # d said why it does not run, and only d
    finally:
        procs.stop()


async def _status(bus: Client, instance: str, status: str) -> bool:
    try:
        msg = await bus.jetstream().get_last_msg("OPS", subjects.ops("grid", instance, "state"))
    except Exception:  # noqa: BLE001 - none yet
        return False
    return decode(msg.data).status == status


async def _moved_on(bus: Client, instance: str, before: int) -> bool:
    return await _acked(bus, instance) > before


async def _no_orders(bus: Client, instance: str, symbol: str) -> bool:
    return not await orders_of(bus, instance, symbol)


async def _has(bus: Client, instance: str, symbol: str) -> bool:
    return bool(await orders_of(bus, instance, symbol))


async def _caught_up(bus: Client, instance: str) -> bool:
    return await _lag(bus, instance) <= 2


async def _dlq_count(bus: Client, instance: str, n: int) -> bool:
    info = await bus.jetstream().stream_info("DLQ", subjects_filter=f"dlq.{subjects.md('sim', ETH, 'ticker')}")
    # Every grid on ETH reads the same subject: b alone here, so b alone dead-letters them.
    return sum((info.state.subjects or {}).values()) >= n


async def test_a_registry_value_no_sqt_wrote_is_skipped_and_the_rest_still_runs(bus: Client) -> None:
    registry = Registry(bus)
    kv = await bus.jetstream().key_value(REGISTRY.name)
    await kv.put("instance.grid.junk", b"{not json")
    other = grid_record(GridConfig(instance="x"), "sqt", "t", 1)
    await kv.put("instance.grid.y", encode(other))  # a record under another instance's key
    fine = grid_record(GridConfig(instance="z"), "sqt", "t", 1)
    await registry.create(fine, "add", "t")
    assert [r.instance for r, _ in await registry.records()] == ["z"]
    assert await registry.get("grid", "junk") is None and await registry.get("grid", "y") is None
