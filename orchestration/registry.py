"""The registry bucket's I/O: read, create and change instance records, each write announced
as a `RegistryChange` on `ops.registry.<kind>.<id>` (schemas/registry.py, docs/adr/0025).

Every write is a compare-and-set on the record's revision, so two operators (or an operator
and a removal in progress) never overwrite each other: the loser reads again. The bucket is
written first and the event second, with the revision as the event's id; a writer killed in
between leaves a record whose event is missing, and `heal()` (run by every host and by `sqt
up` at start) publishes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats.errors
from msgspec.structs import replace
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from bus.publisher import Publisher
from bus.streams import REGISTRY, open_bucket
from schemas import subjects
from schemas.codec import decode
from schemas.registry import Action, InstanceRecord, RegistryChange, key
from strategies.grid.config import GridConfig

log = logging.getLogger("registry")

_decoder = msgspec.json.Decoder(InstanceRecord)
Versioned = tuple[InstanceRecord, int]


class Conflict(Exception):
    """The record changed (or appeared) since it was read: read it again."""


def now_ms() -> int:
    return int(time.time() * 1000)


def grid_record(grid: GridConfig, source: str, by: str, ts: int) -> InstanceRecord:
    return InstanceRecord(
        kind="grid",
        instance=grid.instance,
        venue=grid.venue,
        account=grid.account,
        symbol=grid.symbol,
        params=msgspec.to_builtins(grid),
        source=source,
        created_by=by,
        created_ts=ts,
        changed_by=by,
        changed_ts=ts,
    )


def grid_config(record: InstanceRecord) -> GridConfig:
    return msgspec.convert(record.params, GridConfig, strict=False)


class Registry:
    def __init__(self, nc: Client, publisher: Publisher | None = None) -> None:
        self.nc = nc
        self._publisher = publisher
        self._own_publisher = publisher is None
        self._kv: KeyValue | None = None

    async def bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await open_bucket(self.nc.jetstream(), REGISTRY)
        return self._kv

    async def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = await Publisher(self.nc).start()
        return self._publisher

    async def close(self) -> None:
        """Close the publisher it started itself (one it was given belongs to its caller)."""
        if self._publisher is not None and self._own_publisher:
            await self._publisher.close()

    # ------------------------------------------------------------------ reads

    async def get(self, kind: str, instance: str) -> Versioned | None:
        kv = await self.bucket()
        try:
            entry = await kv.get(key(kind, instance))
        except KeyNotFoundError:
            return None
        if not entry.value or entry.revision is None:
            return None
        rec = _readable(entry.key, entry.value)
        return None if rec is None else (rec, entry.revision)

    async def records(self, kind: str = "grid") -> list[Versioned]:
        """Every record of `kind`, removed ones included, in instance order."""
        kv = await self.bucket()
        watcher = await kv.watch(f"instance.{kind}.>", ignore_deletes=True)
        out: dict[str, Versioned] = {}
        try:
            while True:
                entry = await watcher.updates(timeout=5.0)
                if entry is None:  # the initial values are all there
                    break
                if entry.value and entry.revision is not None:
                    rec = _readable(entry.key, entry.value)
                    if rec is not None:
                        out[rec.instance] = (rec, entry.revision)
        finally:
            await watcher.stop()
        return [out[i] for i in sorted(out)]

    async def follow(self, kind: str = "grid") -> AsyncIterator[Versioned]:
        """Every record now, then every change as it is written (a broken watch starts again,
        from every record: a consumer of this must treat a record it already has as a no-op)."""
        kv = await self.bucket()
        while True:
            try:
                watcher = await kv.watch(f"instance.{kind}.>", ignore_deletes=True)
            except Exception as exc:  # the bus is away: it comes back
                log.info("registry watch could not start (%s); again in 1s", exc)
                await asyncio.sleep(1.0)
                continue
            try:
                while True:
                    try:
                        entry = await watcher.updates(timeout=30.0)
                    except nats.errors.TimeoutError:
                        continue  # no change for a while (the watch recovers from a restarted server itself)
                    except Exception:  # the watch broke: start again, from every record
                        break
                    if entry is None or not entry.value or entry.revision is None:
                        continue
                    rec = _readable(entry.key, entry.value)
                    if rec is not None:
                        yield rec, entry.revision
            finally:
                try:
                    await watcher.stop()
                except Exception:
                    pass

    # ------------------------------------------------------------------ writes

    async def create(self, record: InstanceRecord, action: Action, by: str) -> int:
        kv = await self.bucket()
        try:
            revision = await kv.create(key(record.kind, record.instance), msgspec.json.encode(record))
        except KeyWrongLastSequenceError:
            raise Conflict(f"{record.kind} {record.instance} is already in the registry") from None
        await self.announce(record, revision, action, by)
        return revision

    async def update(self, record: InstanceRecord, revision: int, action: Action, by: str) -> Versioned:
        """Write `record` over `revision` (Conflict if it moved on); the record as written."""
        kv = await self.bucket()
        record = replace(record, changed_by=by, changed_ts=now_ms())
        try:
            new = await kv.update(key(record.kind, record.instance), msgspec.json.encode(record), last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(f"{record.kind} {record.instance} changed meanwhile") from None
        await self.announce(record, new, action, by)
        return record, new

    async def announce(self, record: InstanceRecord, revision: int, action: Action, by: str) -> None:
        fields: dict[str, Any] = dict(
            kind=record.kind, instance=record.instance, action=action, by=by, revision=revision, record=record, ts=record.changed_ts
        )
        event = RegistryChange(id=f"registry:{record.kind}:{record.instance}:{revision}", **fields)
        await (await self.publisher()).publish(event)

    async def heal(self, kind: str = "grid") -> int:
        """Announce every record whose event a killed writer did not publish; how many."""
        js = self.nc.jetstream()
        healed = 0
        for record, revision in await self.records(kind):
            try:
                msg = await js.get_last_msg("OPS", subjects.registry(kind, record.instance))
                last = decode(msg.data or b"")
                announced = isinstance(last, RegistryChange) and last.revision >= revision
            except NotFoundError:
                announced = False
            if not announced:
                await self.announce(record, revision, _action_of(record), record.changed_by)
                healed += 1
        return healed

    async def seed(self, grids: list[GridConfig], by: str) -> list[str]:
        """The config's instances the registry has never had: on the first start all of them,
        later a `[[grids]]` table added to the file. An instance already there (running, paused
        or removed) is the registry's: the file no longer changes it, and a removed one stays
        removed. The instances it added."""
        have = {r.instance for r, _ in await self.records("grid")}
        added = []
        ts = now_ms()
        for grid in grids:
            if grid.instance in have:
                continue
            try:
                await self.create(grid_record(grid, "config", by, ts), "seed", by)
                added.append(grid.instance)
            except Conflict:
                pass  # another seeder (a shard starting beside us) wrote it first
        return added


def _readable(name: str, value: bytes) -> InstanceRecord | None:
    """A record, or None (said once in the log) for a value no `sqt grid` wrote: a hand-written
    key must not take every host down with it."""
    try:
        rec = _decoder.decode(value)
    except msgspec.DecodeError as exc:
        log.error("registry key %s does not hold an instance record (%s); ignored until it is rewritten", name, exc)
        return None
    if name != key(rec.kind, rec.instance):
        log.error("registry key %s holds the record of %s %s; ignored", name, rec.kind, rec.instance)
        return None
    return rec


def _action_of(record: InstanceRecord) -> Action:
    if record.desired == "removed":
        return "removed" if record.phase == "done" else "remove"
    if record.desired == "paused":
        return "pause"
    return "seed" if record.source == "config" else "add"
