"""Proof that a read of an unfiltered stream skipped nothing (bus/reader.py `contiguous=True`).

Every message's sequence must follow the last one's, unless the missing sequences are
deletions the stream reports or were removed by retention before the read began. Anything
else is a hole, and a replay that folded across it would reach a state that skipped an input.
"""

from __future__ import annotations

import json
from bisect import bisect_left, bisect_right

from nats.aio.client import Client

from bus.contract import StoredMsg
from bus.errors import ReaderError, ReplayIncomplete
from schemas.subjects import stream_info_api


class Contiguity:
    """Proves a read's stream sequences have no hole the stream cannot explain."""

    def __init__(self, nc: Client, stream: str, first_seq: int, expected: int | None) -> None:
        self.nc = nc
        self.stream = stream
        self.first_seq = first_seq  # the stream's first sequence when the read began
        self.expected = expected  # the sequence the next message must have (None: not known yet)
        self.deleted: list[int] | None = None  # sorted; fetched on the first hole only

    async def batch(self, batch: list[StoredMsg]) -> None:
        first, last = batch[0].seq, batch[-1].seq
        expected = self.expected if self.expected is not None else first
        # Sequences within a read only increase (one consumer, stream order, no redelivery
        # with ack none), so this O(1) test proves a batch gapless without walking it.
        if first == expected and last - first + 1 == len(batch):
            self.expected = last + 1
            return
        for msg in batch:
            if msg.seq != expected:
                await self.explain(expected, msg.seq - 1)
            expected = msg.seq + 1
        self.expected = expected

    async def through(self, end_seq: int) -> None:
        """The read ended: the sequences after the last message, up to `end_seq`, must be explained."""
        if self.expected is not None and self.expected <= end_seq:
            await self.explain(self.expected, end_seq)

    async def explain(self, lo: int, hi: int) -> None:
        """Accept the hole lo..hi if retention or deletions explain it; raise ReplayIncomplete otherwise."""
        if hi < lo:  # the fast path's premise (sequences only increase) broke: say so, never guess
            raise ReaderError(f"read of {self.stream} went back to seq {hi + 1} after {lo - 1}")
        lo = max(lo, self.first_seq)
        if lo > hi or (self.deleted is not None and self.covers(lo, hi)):
            return
        # The first hole, or a deletion made since the last fetch: ask the stream (again).
        self.deleted = await deleted_seqs(self.nc, self.stream)
        if self.covers(lo, hi):
            return
        deleted = self.deleted
        i, j = bisect_left(deleted, lo), bisect_right(deleted, hi) - 1
        while deleted[i : i + 1] == [lo]:  # name only what is missing: trim deletions off both ends
            lo, i = lo + 1, i + 1
        while j >= 0 and deleted[j] == hi:
            hi, j = hi - 1, j - 1
        missing = f"seq {lo}" if lo == hi else f"seqs {lo}..{hi}"
        raise ReplayIncomplete(f"read of {self.stream} is missing {missing}: neither deleted nor removed by retention before the read")

    def covers(self, lo: int, hi: int) -> bool:
        deleted = self.deleted or []
        # Sorted and free of repeats: lo..hi is all deleted iff the list holds hi-lo+1 entries in it.
        return bisect_right(deleted, hi) - bisect_left(deleted, lo) == hi - lo + 1


async def deleted_seqs(nc: Client, stream: str) -> list[int]:
    """The sequences deleted from inside `stream` (between its first and last), sorted.

    nats-py's `stream_info` cannot ask for them, so this sends JetStream's stream info request
    itself with `deleted_details`."""
    reply = await nc.request(stream_info_api(stream), json.dumps({"deleted_details": True}).encode(), timeout=10)
    info = json.loads(reply.data)
    if "error" in info:
        raise ReaderError(f"stream info for {stream}: {info['error'].get('description', info['error'])}")
    return sorted(set(info.get("state", {}).get("deleted") or ()))
