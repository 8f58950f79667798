"""The registry's grids' input streams, created and deleted by the admin (docs/adr/0026).

A grid reads one sourced input stream of its own (`IN_GRID_<id>`). Its user may not create
streams: a user that may create one may create a stream that republishes into any subject it
can name, ACCOUNT's included. So the admin's connection makes them: `sqt up` (following the
registry), `sqt streams apply`, and `sqt grid add` when the admin's password is at hand. A
grid whose stream is not there yet waits for it (bus.streams.prepare). The stream of a grid
whose removal is done goes with it.
"""

from __future__ import annotations

import logging

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.streams import Change, apply_stream
from orchestration.registry import Registry, grid_config
from schemas.registry import InstanceRecord
from strategies.grid.runner import input_stream

log = logging.getLogger("orchestration.provision")


def finished(record: InstanceRecord) -> bool:
    return record.desired == "removed" and record.phase == "done"


async def provision(nc: Client, record: InstanceRecord) -> Change:
    """The record's input stream made to exist, or gone once its removal is done."""
    spec = input_stream(grid_config(record))
    if not finished(record):
        return await apply_stream(nc.jetstream(), spec)
    try:
        await nc.jetstream().delete_stream(spec.name)
    except NotFoundError:
        return Change("unchanged", spec.name)
    return Change("deleted", spec.name, ["its grid's removal is done"])


async def provision_all(nc: Client, registry: Registry) -> list[Change]:
    return [await provision(nc, record) for record, _rev in await registry.records("grid")]


async def follow(nc: Client, registry: Registry) -> None:
    """Keep every registry grid's input stream as its record says, until cancelled."""
    async for record, _rev in registry.follow("grid"):
        try:
            change = await provision(nc, record)
        except Exception as exc:  # noqa: BLE001 - the next change, or the next start, tries again
            log.error("grid %s: its input stream could not be provisioned: %s", record.instance, exc)
            continue
        if change.kind != "unchanged":
            log.info("grid %s: input stream %s", record.instance, change)
