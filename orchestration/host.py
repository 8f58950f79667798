"""A process hosting grid instances from the registry: `sqt run grid --instance ID` (one) and
`sqt run grids --shard N/M` (every instance whose id hashes to shard N of M).

The host follows the registry: it starts an instance it is given, sends its pause and resume
as the grid's own operator controls, and carries out its removal (orchestration/workflow.py).
Instances share the host's NATS connection and event loop; each keeps its own input stream,
consumer, checkpoint and lease, and runs in its own task: an exception in one is logged and
that instance alone restarts after a backoff. See docs/adr/0025.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.errors import LeaseHeld
from bus.publisher import Publisher
from bus.settings import BusSettings
from orchestration.registry import Registry, grid_config
from orchestration.workflow import drop_input_stream, remove_instance
from schemas import ids, subjects
from schemas.codec import decode
from schemas.ops import ControlCommand
from schemas.registry import InstanceRecord, RegistryChange
from strategies.grid.config import GridConfig
from strategies.grid.runner import GridConfigError, input_stream, serve_grid

log = logging.getLogger("host")

RESTART_FIRST, RESTART_CAP = 1.0, 30.0


def shard_of(instance: str, shards: int) -> int:
    """Stable across processes and Python runs (not `hash()`, which is salted per process)."""
    return int.from_bytes(hashlib.blake2b(instance.encode(), digest_size=8).digest(), "big") % shards


def parse_shard(text: str) -> tuple[int, int]:
    """`N/M` -> (N, M), 0 <= N < M."""
    n, sep, m = text.partition("/")
    try:
        shard, shards = int(n), int(m)
    except ValueError:
        shard, shards = -1, 0
    if not sep or shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"--shard must be N/M with 0 <= N < M (e.g. 0/2), got {text!r}")
    return shard, shards


async def _back_off(stop: asyncio.Event, delay: float) -> float:
    """Wait `delay` seconds (less if `stop` is set); the next, doubled delay."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except asyncio.TimeoutError:
        pass
    return min(delay * 2, RESTART_CAP)


@dataclass
class Hosted:
    """One instance in this host: its task, the event that stops it, what it runs."""

    record: InstanceRecord
    revision: int
    task: asyncio.Task[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    state: str = "starting"  # starting, running, failed, removing, removed
    error: str = ""
    restarts: int = 0


class Host:
    def __init__(
        self,
        nc: Client,
        settings: BusSettings,
        selects: Callable[[InstanceRecord], bool],
        *,
        fallback: GridConfig | None = None,
        name: str = "grids",
    ) -> None:
        self.nc = nc
        self.settings = settings
        self.selects = selects
        self.fallback = fallback  # `sqt run grid --instance` of a config grid not in the registry
        self.name = name
        self.hosted: dict[str, Hosted] = {}
        self.publisher: Publisher | None = None
        self.registry: Registry | None = None
        self.single = False  # a one-instance host ends with its instance (removed, or a bad config)
        self._done = asyncio.Event()
        self._fatal: BaseException | None = None
        self._controls: dict[str, asyncio.Task[None]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        self.publisher = await Publisher(self.nc).start()
        self.registry = Registry(self.nc, self.publisher)
        await self.registry.heal()
        follower = asyncio.create_task(self._follow())
        if self.fallback is not None and await self.registry.get("grid", self.fallback.instance) is None:
            self._start_plain(self.fallback)
        try:
            waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self._done.wait()), follower}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if follower.done() and not follower.cancelled() and follower.exception() is not None:
                raise follower.exception()  # type: ignore[misc]
            if self._fatal is not None:
                raise self._fatal
        finally:
            follower.cancel()
            for control in list(self._controls.values()):
                control.cancel()
            await self._stop_all()
            await self.publisher.close()

    def status(self) -> dict[str, Any]:
        return {
            "component": "grids",
            "host": self.name,
            "instances": {
                i: {"state": h.state, "desired": h.record.desired, "phase": h.record.phase, "restarts": h.restarts, "error": h.error}
                for i, h in sorted(self.hosted.items())
            },
        }

    # ------------------------------------------------------------------ following

    async def _follow(self) -> None:
        assert self.registry is not None
        async for record, revision in self.registry.follow("grid"):
            if not self.selects(record):
                continue
            try:
                await self.on_record(record, revision)
            except Exception as exc:  # one record never stops the host
                log.error("grid %s: could not apply registry revision %d: %r", record.instance, revision, exc, exc_info=True)

    async def on_record(self, record: InstanceRecord, revision: int) -> None:
        h = self.hosted.get(record.instance)
        if h is not None and revision <= h.revision and h.task is not None and not h.task.done():
            return  # a watch that started again replays what we have
        if h is None:
            h = self.hosted[record.instance] = Hosted(record, revision)
        previous = h.record
        h.record, h.revision = record, revision
        if record.desired == "removed":
            if record.phase == "done":
                await self._stop(h)
                if h.state != "removed":  # a removal killed after its last write left the stream
                    await drop_input_stream(self.nc, grid_config(record))
                h.state = "removed"
                if self.single:
                    self._done.set()
                return
            if h.state != "removing":
                await self._stop(h)
                h.state = "removing"
                h.stop = asyncio.Event()
                h.task = asyncio.create_task(self._remove(h), name=f"remove-{record.instance}")
            return
        if h.task is None or h.task.done():
            h.stop = asyncio.Event()
            h.task = asyncio.create_task(self._serve(h, grid_config(record)), name=f"grid-{record.instance}")
        elif previous.params != record.params:
            log.warning("grid %s: its parameters changed in the registry; they apply at its next start", record.instance)
        # One control at a time per instance: a newer record's supersedes an older one still waiting.
        older = self._controls.pop(record.instance, None)
        if older is not None:
            older.cancel()
        task = self._controls[record.instance] = asyncio.create_task(self._control(record, revision))
        task.add_done_callback(self._control_done)

    # ------------------------------------------------------------------ instances

    def _start_plain(self, grid: GridConfig) -> None:
        """A config grid that was never seeded into a registry (`sqt run grid` on its own)."""
        from orchestration.registry import grid_record

        rec = grid_record(grid, "config", "config", 0)
        h = self.hosted[grid.instance] = Hosted(rec, 0)
        h.task = asyncio.create_task(self._serve(h, grid), name=f"grid-{grid.instance}")

    async def _serve(self, h: Hosted, grid: GridConfig) -> None:
        backoff = RESTART_FIRST
        while not h.stop.is_set():
            h.state, started = "running", time.monotonic()
            try:
                await serve_grid(self.nc, self.settings, grid, h.stop, self.publisher)
                return
            except GridConfigError as exc:  # restarting cannot help: it waits for a registry change
                h.state, h.error = "failed", str(exc)
                if self.single:
                    self._fatal = exc
                    self._done.set()
                else:
                    log.error("%s", exc)
                return
            except LeaseHeld as exc:  # another process runs it (a handover): try again later
                h.state, h.error = "waiting", str(exc)
                log.warning("grid %s: %s", grid.instance, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                h.state, h.error = "failed", repr(exc)
                log.error("grid %s failed: %r; restarting it in %gs", grid.instance, exc, backoff, exc_info=True)
            if time.monotonic() - started > 60:
                backoff = RESTART_FIRST
            h.restarts += 1
            backoff = await _back_off(h.stop, backoff)

    async def _remove(self, h: Hosted) -> None:
        assert self.registry is not None and self.publisher is not None
        backoff = RESTART_FIRST
        while not h.stop.is_set():
            try:
                await remove_instance(self.nc, self.settings, self.registry, self.publisher, h.record.instance, h.stop)
                return
            except LeaseHeld as exc:  # the grid still runs elsewhere (its process is stopping): wait for it
                h.error = str(exc)
                log.info("grid %s: the removal waits: %s", h.record.instance, exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                h.error = repr(exc)
                log.error("grid %s: the removal failed (%r); going on in %gs", h.record.instance, exc, backoff, exc_info=True)
            backoff = await _back_off(h.stop, backoff)

    async def _stop(self, h: Hosted) -> None:
        h.stop.set()
        if h.task is not None:
            try:
                await h.task
            except asyncio.CancelledError:
                pass
            except Exception as exc:
                log.warning("grid %s stopped with %r", h.record.instance, exc)
            h.task = None

    async def _stop_all(self) -> None:
        for h in self.hosted.values():
            h.stop.set()
        tasks = [h.task for h in self.hosted.values() if h.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ pause and resume

    def _control_done(self, task: asyncio.Task[None]) -> None:
        for instance, t in list(self._controls.items()):
            if t is task:
                del self._controls[instance]

    async def _control(self, record: InstanceRecord, revision: int) -> None:
        """A pause or resume in the registry becomes the grid's own operator control, once: not
        if a control was stored after the registry's event (ours, or an operator's since)."""
        if record.desired not in ("paused", "running"):
            return
        js = self.nc.jetstream()
        for _ in range(40):  # the bucket is written before the event: give the event time to land
            try:
                msg = await js.get_last_msg("OPS", subjects.registry("grid", record.instance))
                event = decode(msg.data or b"")
            except NotFoundError:
                event = None
            if isinstance(event, RegistryChange) and event.revision >= revision:
                break
            await asyncio.sleep(0.25)
        else:
            return  # its writer died between the two: heal() announces it, and the host sees it again
        if event.action not in ("pause", "resume") or event.revision != revision:
            return  # a record that was not paused or resumed last
        try:
            last = await js.get_last_msg("OPS", subjects.control("grid", record.instance))
            if (last.seq or 0) > (msg.seq or 0):
                return
        except NotFoundError:
            pass
        # The grid's input stream sources controls from its creation on: a pause sent before it
        # exists (an instance paused before its first start) would never reach the grid.
        name = input_stream(grid_config(record)).name
        for _ in range(240):
            try:
                await js.stream_info(name)
                break
            except NotFoundError:
                await asyncio.sleep(0.5)
        else:
            return  # it never started; its next start sees the record again
        fields: dict[str, Any] = dict(
            target_component="grid",
            target_instance=record.instance,
            action="pause" if record.desired == "paused" else "resume",
            reason=f"registry revision {revision}",
            operator=record.changed_by,
            ts=record.changed_ts,
        )
        assert self.publisher is not None
        await self.publisher.publish(ControlCommand(id=ids.content_id("registry", fields), **fields))
        log.info("grid %s: %s (registry revision %d, by %s)", record.instance, fields["action"], revision, record.changed_by)
