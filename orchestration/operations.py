"""The registry's operations as an operator calls them, from `sqt grid` or the live page: add a
grid (validated against the venue's market rules first), pause, resume, remove. Each returns what
happened in one sentence or raises `Refused` naming what is wrong; nothing is written then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec.structs import replace
from nats.aio.client import Client

from bus.settings import BusSettings
from orchestration.registry import Conflict, Registry, grid_record, now_ms
from schemas.registry import Action, Desired, InstanceRecord, RemovePolicy
from strategies.grid.config import GridConfig
from strategies.grid.lattice import check_config, client_prefix
from strategies.grid.runner import GridConfigError, client_ids_fit, market_and_price
from venues.factory import UnsupportedVenue, open_venue

VENUE_WAIT = 10.0  # seconds a venue gets to answer the market-rules check of an add
WRITE_TRIES = 5  # reads again after a concurrent writer, this many times


@dataclass
class Refused(Exception):
    """Nothing was written: `message` says why, naming the field; `usage` is False when the
    request may be right and could not be checked (a venue that does not answer)."""

    message: str
    usage: bool = True

    def __str__(self) -> str:
        return self.message


def grid_from(fields: dict[str, Any]) -> GridConfig:
    """A grid's config from an operator's fields (strings as typed are fine); Refused names the field."""
    try:
        return msgspec.convert(fields, GridConfig, strict=False)
    except msgspec.ValidationError as exc:
        raise Refused(str(exc)) from None


def prefix_overlap(instance: str, others: list[str]) -> str:
    """Why `instance` cannot be used beside `others`: its client order ids would begin like one of
    theirs (a removal finds an instance's orders by that prefix, so it would cancel the other's)."""
    mine = client_prefix(instance)
    for other in others:
        theirs = client_prefix(other)
        if other != instance and (mine.startswith(theirs) or theirs.startswith(mine)):
            return f"its client order ids ({mine}...) would begin like those of {other!r} ({theirs}...)"
    return ""


async def add_grid(nc: Client, settings: BusSettings, registry: Registry, grid: GridConfig, taken: list[str], by: str) -> InstanceRecord:
    """Check `grid` against the registry, the ids in use (`taken`: the config's grids and
    arbitrages) and its venue's market rules, then write it."""
    got = await registry.get("grid", grid.instance)
    if got is not None:
        rec = got[0]
        why = (
            "was removed; an id is not used again (its client order ids would repeat)" if rec.desired == "removed" else f"is {rec.desired}"
        )
        raise Refused(f"instance: grid {grid.instance!r} is already in the registry and {why}")
    overlap = prefix_overlap(grid.instance, [r.instance for r, _ in await registry.records("grid")] + taken)
    if overlap:
        raise Refused(f"instance: {overlap}; choose another id")
    try:
        venue = open_venue(nc, grid.venue, grid.account, settings)
    except UnsupportedVenue as exc:
        raise Refused(f"venue: {exc}") from None
    try:
        found = await asyncio.wait_for(market_and_price(venue, grid, asyncio.Event()), VENUE_WAIT)
    except GridConfigError as exc:
        raise Refused(str(exc)) from None
    except asyncio.TimeoutError:
        raise Refused(
            f"venue {grid.venue} did not answer within {VENUE_WAIT:g}s, so the parameters cannot be checked; is it running?", usage=False
        ) from None
    finally:
        await venue.close()
    assert found is not None
    market, price = found
    problems = check_config(grid, market, price) + client_ids_fit(grid, getattr(venue, "client_id_max", 32))
    if problems:
        raise Refused(f"grid {grid.instance}: " + "; ".join(problems))
    record = grid_record(grid, "sqt", by, now_ms())
    try:
        await registry.create(record, "add", by)
    except Conflict as exc:
        raise Refused(f"instance: {exc}") from None
    return record


Change = Callable[[InstanceRecord], tuple[InstanceRecord | None, Action, str]]


async def _change(registry: Registry, instance: str, by: str, change: Change) -> str:
    """Apply `change` to the instance's record (compare-and-set, read again after another
    writer); its message. A change that returns no record writes nothing."""
    for _ in range(WRITE_TRIES):
        got = await registry.get("grid", instance)
        if got is None:
            raise Refused(f"instance: no grid {instance!r} in the registry")
        rec, rev = got
        new, action, message = change(rec)
        if new is None:
            return message
        try:
            await registry.update(new, rev, action, by)
        except Conflict:
            continue
        return message
    raise Refused(f"grid {instance} kept changing while it was written; try again", usage=False)


async def set_desired(registry: Registry, instance: str, desired: Desired, by: str) -> str:
    """Pause (`paused`) or resume (`running`) an instance; what happened."""
    action: Action = "pause" if desired == "paused" else "resume"

    def change(rec: InstanceRecord) -> tuple[InstanceRecord | None, Action, str]:
        if rec.desired == "removed":
            raise Refused(f"instance: grid {instance} is removed ({rec.phase or 'stopping'})")
        if rec.desired == desired:
            return None, action, f"grid {instance} is already {desired}"
        return replace(rec, desired=desired), action, f"grid {instance}: {desired}"

    return await _change(registry, instance, by, change)


async def request_removal(registry: Registry, instance: str, policy: RemovePolicy, by: str) -> str:
    """Mark an instance removed with `policy` (its host carries the removal out); what happened."""

    def change(rec: InstanceRecord) -> tuple[InstanceRecord | None, Action, str]:
        if rec.desired == "removed":
            done = "removed" if rec.phase == "done" else f"being removed ({rec.phase or 'stopping'})"
            return None, "remove", f"grid {instance} is already {done} with policy {rec.policy}"
        return replace(rec, desired="removed", policy=policy, phase="stopping"), "remove", f"grid {instance}: removing ({policy})"

    return await _change(registry, instance, by, change)
