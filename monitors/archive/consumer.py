"""One stream into the archive: a consumer that acks its inputs only once their file is committed.

It runs under the bus's consumer runtime (bus/consumer.py: the lease, sessions rebuilt after a
failure, the stall watchdog, the per-consumer metrics), with its own idea of a checkpoint: the
files. At every session start it recovers the stream's directory (writer.py) and reads the
high-water mark from the file names, and the durable JetStream consumer is recreated just
after it, so a restart neither writes a message twice nor skips one (ADR 0022).

Within a session, deliveries must be gapless in the consumer's delivery sequence (a delivery
lost on the way would otherwise be skipped for good); a message at or below what the session
already holds is a redelivery (its ack wait ran out during a long flush) and is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from bus.consumer import Consumer, ConsumerSpec
from bus.errors import LeaseLost, Stalled
from bus.reader import ack_tokens
from monitors.archive import metrics
from monitors.archive.batch import Stored, group
from monitors.archive.config import ArchiveConfig
from monitors.archive.writer import StreamWriter, Written
from schemas.codec import AnyMessage

log = logging.getLogger("archive")


class ArchiveAhead(Exception):
    """The archive holds sequences the stream never had (the stream was recreated)."""


def archive_spec(stream: str, cfg: ArchiveConfig) -> ConsumerSpec:
    return ConsumerSpec(
        name=f"archive-{stream.lower()}",
        stream=stream,
        input_type=AnyMessage,  # unused: the archive decodes (and keeps) every payload itself
        outputs=(),
        route=None,
        batch=1_024,
        # Acks come after a flush: leave room for a whole batch (and the next one arriving) ...
        max_ack_pending=max(20_000, 4 * cfg.batch_size),
        # ... and for the time it waits (a redelivery before then would only be skipped).
        ack_wait=max(30.0, 6 * cfg.flush_seconds),
    )


class ArchiveConsumer(Consumer):
    def __init__(self, nc: Client, stream: str, writer: StreamWriter, cfg: ArchiveConfig) -> None:
        super().__init__(nc, archive_spec(stream, cfg))
        self.stream = stream
        self.writer = writer
        self.batch_size = cfg.batch_size
        self.flush_seconds = cfg.flush_seconds
        self.pending: list[Stored] = []
        self.pending_since = 0.0
        self.last_reply = ""  # of the last message taken into `pending`
        self.accepted = 0  # the highest sequence held (committed or pending) in this session
        self.last_dseq = 0
        self.high_water = 0
        self.rows: Counter[str] = Counter()
        self.files = 0
        self.bytes = 0
        self.flushes = 0
        self.skipped = 0
        self.last_flush_s = 0.0
        self.stream_last = 0
        self.failing = ""  # why the last flush failed; empty once one succeeds
        self._metrics = (metrics.HIGH_WATER.labels(stream), metrics.LAG.labels(stream), metrics.FLUSH_SECONDS.labels(stream))

    # ------------------------------------------------------------------ runtime hooks

    async def prepare(self) -> None:
        held = await asyncio.to_thread(self.writer.recover)
        if not self.flushes:  # the first session: what the directory held before this process
            self.files, self.bytes = held.files, held.bytes
        self.high_water = self.seq = self.accepted = held.high_water
        self.pending = []
        self.last_dseq = 0
        self.last_reply = ""
        self._metrics[0].set(self.high_water)
        state = (await self.js.stream_info(self.stream)).state
        self.stream_last = state.last_seq
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

    async def process(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            meta = ack_tokens(msg.reply.encode())
            if meta is None:
                raise Stalled(f"not a JetStream delivery: {msg.reply!r}")
            seq, dseq, stored_ns, pending = meta
            if dseq != self.last_dseq + 1:
                # A delivery never reached us: rebuild from the files rather than skip it.
                raise Stalled(f"delivery {self.last_dseq + 1} is missing (got {dseq})")
            self.last_dseq = dseq
            self.stats.lag = pending
            if seq <= self.accepted:
                self.skipped += 1
                metrics.SKIPPED.labels(self.stream).inc()
                continue
            self.accepted = seq
            if not self.pending:
                self.pending_since = time.monotonic()
            self.pending.append(Stored(seq, msg.subject, msg.data, msg.headers, stored_ns))
            self.last_reply = msg.reply
        self._metrics[1].set(self.stats.lag + len(self.pending))
        if len(self.pending) >= self.batch_size:
            await self.flush()

    async def idle(self) -> None:
        if self.pending and time.monotonic() - self.pending_since >= self.flush_seconds:
            await self.flush()

    async def finish(self) -> None:
        if self.lease is None or not self.lease.lost.is_set():
            await self.flush()

    async def checkpoint(self, force: bool = False) -> None:
        """The files are the checkpoint: nothing goes to the checkpoints bucket."""

    # ------------------------------------------------------------------ the flush

    async def flush(self) -> None:
        """Commit the pending batch to its files, then ack it (never the other way round)."""
        if not self.pending:
            return
        if self.lease is not None and self.lease.lost.is_set():
            # Another process holds this stream now (it recovers from the files): writing here
            # could commit the same sequences twice. The batch, never acked, is its to write.
            raise LeaseLost(f"{self.spec.name}: lease lost; {len(self.pending)} messages left to the new holder")
        batch, reply = self.pending, self.last_reply
        began = time.perf_counter()
        try:
            written = await asyncio.to_thread(self._commit, batch)
        except Exception as exc:
            metrics.ERRORS.labels(self.stream, "flush").inc()
            self.failing = f"{type(exc).__name__}: {exc}"
            raise  # the session is rebuilt from the files; the batch, never acked, comes again
        self.failing = ""
        self.pending = []
        await self.nc.publish(reply, b"+ACK")  # ack-all: every input up to the batch's last
        last = batch[-1].seq
        self.seq = self.high_water = last
        self.stats.processed += len(batch)
        self.stats.last_seq = last
        self.flushes += 1
        elapsed = time.perf_counter() - began
        self.last_flush_s = elapsed
        self._metrics[0].set(last)
        self._metrics[1].set(self.stats.lag)
        self._metrics[2].observe(elapsed)
        for w in written:
            self.files += 1
            self.bytes += w.bytes
            metrics.FILES.labels(self.stream).inc()
            metrics.BYTES.labels(self.stream).inc(w.bytes)

    def _commit(self, batch: list[Stored]) -> list[Written]:
        groups = group(self.stream, batch)
        written = self.writer.commit(groups)
        for g in groups:
            self.rows[g.type] += len(g.rows)
            metrics.ROWS.labels(self.stream, g.type).inc(len(g.rows))
        return written

    def report(self) -> dict[str, Any]:
        """This stream's part of `/status`."""
        return {
            "high_water": self.high_water,
            "rows": sum(self.rows.values()),
            "rows_by_type": dict(sorted(self.rows.items())),
            "files": self.files,
            "bytes": self.bytes,
            "pending": len(self.pending),
            "lag": self.stats.lag + len(self.pending),
            "redelivered_skipped": self.skipped,
            "flushes": self.flushes,
            "last_flush_s": round(self.last_flush_s, 4),
            "sessions": self.stats.sessions,
            "last_error": self.stats.last_error,
            "failing": self.failing,
        }
