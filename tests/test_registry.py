"""The registry on a real nats-server: seeded from the config, compare-and-set, every write on the log, and
a killed writer's event healed."""

from __future__ import annotations

import pytest
from msgspec.structs import replace
from nats.aio.client import Client

from bus.reader import read_stream
from orchestration.registry import Conflict, Registry, grid_config, grid_record
from schemas import subjects
from schemas.codec import decode
from schemas.registry import RegistryChange
from strategies.grid.config import GridConfig


async def _log(bus: Client, instance: str) -> list[RegistryChange]:
    out: list[RegistryChange] = []
    async for batch in read_stream(bus, "OPS", subjects=(subjects.registry("grid", instance),)):
        out += [decode(m.data) for m in batch]
    return out


async def test_the_config_seeds_what_the_registry_never_had_and_a_removed_instance_stays_removed(bus: Client) -> None:
    registry = Registry(bus)
    grids = [GridConfig(instance="a"), GridConfig(instance="b", symbol="ETH/USDT:USDT")]
    assert await registry.seed(grids, "config") == ["a", "b"]
    (a, rev), (b, _) = await registry.records()
    assert (a.source, a.desired, b.symbol) == ("config", "running", "ETH/USDT:USDT")
    assert grid_config(a) == grids[0]  # the whole config rides in the record
    await registry.update(replace(a, desired="removed", policy="cancel", phase="done"), rev, "removed", "op")
    # A later start: the instances it has are the registry's (a changed table changes nothing, a
    # removed one stays removed); a table added to the file since is seeded.
    changed = [GridConfig(instance="a", levels=9), grids[1], GridConfig(instance="c")]
    assert await registry.seed(changed, "config") == ["c"]
    assert {r.instance: r.desired for r, _ in await registry.records()} == {"a": "removed", "b": "running", "c": "running"}
    got = await registry.get("grid", "a")
    assert got is not None and grid_config(got[0]).levels == grids[0].levels
    assert [c.action for c in await _log(bus, "a")] == ["seed", "removed"]


async def test_writes_are_compare_and_set_and_each_is_an_event_with_its_revision(bus: Client) -> None:
    registry = Registry(bus)
    rev = await registry.create(grid_record(GridConfig(instance="a"), "sqt", "alice", 1), "add", "alice")
    with pytest.raises(Conflict, match="already in the registry"):
        await registry.create(grid_record(GridConfig(instance="a"), "sqt", "bob", 2), "add", "bob")
    got = await registry.get("grid", "a")
    assert got is not None
    rec, _ = await registry.update(replace(got[0], desired="paused"), rev, "pause", "bob")
    with pytest.raises(Conflict, match="changed meanwhile"):  # a writer that read before bob's pause
        await registry.update(replace(got[0], desired="removed"), rev, "remove", "carol")
    log = await _log(bus, "a")
    assert [(c.action, c.by, c.record.desired) for c in log] == [("add", "alice", "running"), ("pause", "bob", "paused")]
    assert log[-1].revision == (await registry.get("grid", "a") or (None, 0))[1] and rec.changed_by == "bob"


async def test_a_writer_killed_between_the_bucket_and_the_event_is_healed(bus: Client) -> None:
    registry = Registry(bus)
    await registry.create(grid_record(GridConfig(instance="a"), "sqt", "alice", 1), "add", "alice")
    got = await registry.get("grid", "a")
    assert got is not None
    kv = await registry.bucket()
    # What a writer killed after its bucket write leaves: the record moved on, its event missing.
    from msgspec.json import encode

    await kv.update("instance.grid.a", encode(replace(got[0], desired="paused", changed_by="bob")), last=got[1])
    assert [c.action for c in await _log(bus, "a")] == ["add"]
    assert await registry.heal() == 1
    assert [(c.action, c.by) for c in await _log(bus, "a")] == [("add", "alice"), ("pause", "bob")]
    assert await registry.heal() == 0  # healed once; nothing twice
