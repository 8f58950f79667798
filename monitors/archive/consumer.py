"""One stream into the archive: read from just after the high-water mark, commit, repeat.

The files are the archive's checkpoint (ADR 0022): at every session start the stream's directory
is recovered (writer.py) and the high-water mark read from the file names; the stream is then
read from the mark + 1 with the project's fastest reader (bus/reader.py: raw NATS frames, a
flow-controlled ephemeral consumer, a delivery that skips a message restarted after the last
one yielded). No durable consumer and no acks: nothing but the files says how far the archive
got, so a restart after SIGKILL neither writes a message twice nor skips one.

It runs under the bus's consumer runtime for everything else (bus/consumer.py): the lease (one
process per stream), sessions rebuilt after any failure with backoff, `/health`, the
per-consumer metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from nats.aio.client import Client

from bus import metrics as bus_metrics
from bus.consumer import Consumer, ConsumerSpec
from bus.contract import StoredMsg
from bus.errors import LeaseLost, Stalled
from bus.reader import read_stream
from monitors.archive import metrics
from monitors.archive.batch import group
from monitors.archive.config import ArchiveConfig
from monitors.archive.writer import StreamWriter, Written
from schemas.codec import AnyMessage

log = logging.getLogger("archive")

QUEUED_BATCHES = 8  # batches read ahead while a commit runs (each at most ~1 MB of frames)
LAG_EVERY = 1.0  # seconds between two looks at the stream's last sequence (for `lag`)


class ArchiveAhead(Exception):
    """The archive holds sequences the stream never had (the stream was recreated)."""


def archive_spec(stream: str) -> ConsumerSpec:
    # The runtime's lease, sessions and metrics key on the name; no JetStream durable is made.
    return ConsumerSpec(name=f"archive-{stream.lower()}", stream=stream, input_type=AnyMessage, outputs=(), route=None)


class Reading:
    """What the bus's metrics and health read of a live session (a PullFeed's two figures)."""

    def __init__(self) -> None:
        self.stall_after = float("inf")  # the reader restarts a silent read itself (bus/reader.py)

    def silence(self) -> float:
        return 0.0


class ArchiveConsumer(Consumer):
    def __init__(self, nc: Client, stream: str, writer: StreamWriter, cfg: ArchiveConfig) -> None:
        super().__init__(nc, archive_spec(stream))
        self.stream = stream
        self.writer = writer
        self.batch_size = cfg.batch_size
        self.flush_seconds = cfg.flush_seconds
        self.pending: list[StoredMsg] = []
        self.pending_since = 0.0
        self.accepted = 0  # the highest sequence held (committed, in flight or pending) in this session
        self.high_water = 0
        self.rows: Counter[str] = Counter()
        self.files = 0
        self.bytes = 0
        self.flushes = 0
        self.skipped = 0
        self.last_flush_s = 0.0
        self.stream_last = 0
        self.failing = ""  # why the last flush failed; empty once one succeeds
        self._lag_checked = 0.0
        # The commit in flight: (its job, its batch's last sequence, its size, when it began).
        self._inflight: tuple[asyncio.Future[tuple[list[Written], list[tuple[str, int]]]], int, int, float] | None = None
        self._metrics = (metrics.HIGH_WATER.labels(stream), metrics.LAG.labels(stream), metrics.FLUSH_SECONDS.labels(stream))

    # ------------------------------------------------------------------ sessions

    async def _session(self, ended: asyncio.Event) -> None:
        """Recover, then read from the mark + 1 until stopped; any failure ends the session and the
        runtime starts another (from the files again)."""
        self.stats.sessions += 1
        await self.prepare()
        queue: asyncio.Queue[list[StoredMsg]] = asyncio.Queue(maxsize=QUEUED_BATCHES)
        reader = asyncio.create_task(self._read(queue, self.high_water + 1), name=f"archive-read-{self.stream}")
        log.info("%s: archiving from seq %d", self.stream, self.high_water + 1)
        self.live_feed = Reading()  # type: ignore[assignment]  # duck-typed for bus/metrics.py
        try:
            while not ended.is_set():
                if reader.done() and queue.empty():
                    reader.result()  # the read's error ends the session
                    raise Stalled("the read of the stream ended")
                try:
                    batch: list[StoredMsg] | None = await asyncio.wait_for(queue.get(), 0.25)
                except asyncio.TimeoutError:
                    batch = None
                if batch:
                    began = time.perf_counter()
                    await self.process(batch)
                    self._batch_seconds.observe(time.perf_counter() - began)
                elif not self.caught_up.is_set():
                    self.caught_up.set()
                await self.idle()
        finally:
            self.live_feed = None
            self._not_live_since = time.monotonic()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        await self.finish()

    async def _read(self, queue: asyncio.Queue[list[StoredMsg]], start: int) -> None:
        async for batch in read_stream(self.nc, self.stream, start_seq=start, follow=True):
            await queue.put(batch)  # waits while QUEUED_BATCHES are unprocessed: flow control does the rest

    async def prepare(self) -> None:
        await self._abandon()  # a commit of the failed session still running: let it end first
        held = await asyncio.to_thread(self.writer.recover)
        if not self.flushes:  # the first session: what the directory held before this process
            self.files, self.bytes = held.files, held.bytes
        self.high_water = self.seq = self.accepted = held.high_water
        self.stats.last_seq = held.high_water
        self.pending = []
        self._metrics[0].set(self.high_water)
        state = (await self.js.stream_info(self.stream)).state
        self.stream_last = state.last_seq
        self.stats.lag = max(0, state.last_seq - self.high_water)
        if state.last_seq < self.high_water:
            raise ArchiveAhead(
                f"{self.stream} ends at seq {state.last_seq} but the archive holds up to {self.high_water}: the stream was "
                f"recreated. Move {self.writer.dir} aside (it stays readable) and restart"
            )
        if state.first_seq > self.high_water + 1 and state.messages:
            missed = state.first_seq - self.high_water - 1
            metrics.ERRORS.labels(self.stream, "aged_out").inc(missed)
            log.warning(
                "%s: seqs %d..%d left the stream (its retention) before they were archived",
                self.stream,
                self.high_water + 1,
                state.first_seq - 1,
            )

    def health(self) -> str:
        if self.live_feed is None:
            down = time.monotonic() - self._not_live_since
            if down > bus_metrics.NOT_LIVE_GRACE_S:
                return f"no live session for {down:.0f}s ({self.stats.last_error or 'still starting'})"
        return ""

    # ------------------------------------------------------------------ inputs

    async def process(self, msgs: list[Any]) -> None:
        """Take a batch of stored messages (in stream order) into the pending batch."""
        if msgs[0].seq > self.accepted:
            fresh = msgs  # the common case: a read never repeats itself
        else:  # a read restarted on an old position: what is already held is not taken twice
            fresh = [m for m in msgs if m.seq > self.accepted]
            self.skipped += len(msgs) - len(fresh)
            metrics.SKIPPED.labels(self.stream).inc(len(msgs) - len(fresh))
        if not fresh:
            return
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.extend(fresh)
        self.accepted = fresh[-1].seq
        if len(self.pending) >= self.batch_size:
            await self.flush(wait=False)

    async def idle(self) -> None:
        if self._inflight is not None and self._inflight[0].done():
            await self._settle()
        if self.pending and time.monotonic() - self.pending_since >= self.flush_seconds:
            await self.flush(wait=False)
        now = time.monotonic()
        if now - self._lag_checked >= LAG_EVERY:
            self._lag_checked = now
            with contextlib.suppress(Exception):  # a figure for /status; never a reason to fail
                self.stream_last = (await self.js.stream_info(self.stream)).state.last_seq
            self.stats.lag = max(0, self.stream_last - self.high_water)
            self._metrics[1].set(self.stats.lag)

    async def finish(self) -> None:
        if self.lease is None or not self.lease.lost.is_set():
            await self.flush()
        else:
            await self._abandon()

    async def checkpoint(self, force: bool = False) -> None:
        """The files are the checkpoint: nothing goes to the checkpoints bucket."""

    # ------------------------------------------------------------------ the flush

    async def flush(self, wait: bool = True) -> None:
        """Commit the pending batch to its files.

        One commit is in flight at a time, so batches commit in sequence order (what makes the
        highest name the high-water mark); while it runs in its thread, the next batch is read
        (`wait=False`): DuckDB writes while the event loop reads."""
        await self._settle()
        if not self.pending:
            return
        if self.lease is not None and self.lease.lost.is_set():
            # Another process holds this stream now (it recovers from the files): writing here
            # could commit the same sequences twice. The batch is its to write.
            raise LeaseLost(f"{self.spec.name}: lease lost; {len(self.pending)} messages left to the new holder")
        batch = self.pending
        self.pending = []
        job = asyncio.ensure_future(asyncio.to_thread(self._commit, batch))
        self._inflight = (job, batch[-1].seq, len(batch), time.perf_counter())
        if wait:
            await self._settle()

    async def _settle(self) -> None:
        """Wait for the commit in flight, and account for it."""
        if self._inflight is None:
            return
        job, last, count, began = self._inflight
        try:
            written, counted = await job
        except Exception as exc:
            self._inflight = None
            metrics.ERRORS.labels(self.stream, "flush").inc()
            self.failing = f"{type(exc).__name__}: {exc}"
            raise  # the session is rebuilt from the files: the batch is read again
        self._inflight = None
        self.failing = ""
        self.seq = self.high_water = last
        for type_, n in counted:
            self.rows[type_] += n
            metrics.ROWS.labels(self.stream, type_).inc(n)
        self.stats.processed += count
        self.stats.last_seq = last
        self.stats.lag = max(0, self.stream_last - last)
        self.flushes += 1
        elapsed = time.perf_counter() - began
        self.last_flush_s = elapsed
        self._metrics[0].set(last)
        self._metrics[2].observe(elapsed)
        for w in written:
            self.files += 1
            self.bytes += w.bytes
            metrics.FILES.labels(self.stream).inc()
            metrics.BYTES.labels(self.stream).inc(w.bytes)

    async def _abandon(self) -> None:
        """Let a commit in flight end (it happened or not: the files say which)."""
        if self._inflight is not None:
            job = self._inflight[0]
            self._inflight = None
            with contextlib.suppress(Exception):
                await job

    def _commit(self, batch: list[StoredMsg]) -> tuple[list[Written], list[tuple[str, int]]]:
        """In a thread: the batch's files, committed; the rows per type are counted by `_settle`,
        with the high-water mark, so /status never shows rows its mark does not cover yet."""
        groups = group(self.stream, batch)
        return self.writer.commit(groups), [(g.type, len(g.lines)) for g in groups]

    def report(self) -> dict[str, Any]:
        """This stream's part of `/status`."""
        in_flight = self._inflight[2] if self._inflight else 0
        return {
            "high_water": self.high_water,
            "stream_last_seq": self.stream_last,
            "lag": max(0, self.stream_last - self.high_water),
            "rows": sum(self.rows.values()),
            "rows_by_type": dict(sorted(self.rows.items())),
            "files": self.files,
            "bytes": self.bytes,
            "pending": len(self.pending) + in_flight,
            "skipped": self.skipped,
            "flushes": self.flushes,
            "last_flush_s": round(self.last_flush_s, 4),
            "sessions": self.stats.sessions,
            "last_error": self.stats.last_error,
            "failing": self.failing,
        }
