"""The bulk reader never skips: a delivery gap resumes after the last message yielded, and a
contiguous read refuses any hole in the stream sequences that the stream cannot explain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from bus import reader
from bus.contiguity import Contiguity
from bus.contract import StoredMsg
from bus.errors import ReplayIncomplete
from bus.publisher import Publisher
from bus.reader import _frames, _Gap, _Wire, read_stream
from testkit.events import ticker

SUBJECT = b"md.sim.BTC-USDT.ticker"


# ------------------------------------------------------------------ a fake wire for _frames


def delivery(seq: int, dseq: int, pending: int = 100, headers: bool = True) -> bytes:
    """One JetStream delivery as the server frames it: HMSG (with headers) or MSG (without)."""
    reply = b"$JS.ACK.MARKET.reader.1.%d.%d.1700000000000000000.%d" % (seq, dseq, pending)
    data = b'{"n":%d}' % seq
    if not headers:
        return b"MSG %s 1 %s %d\r\n%s\r\n" % (SUBJECT, reply, len(data), data)
    hdr = b"NATS/1.0\r\nNats-Msg-Id: m%d\r\n\r\n" % seq
    return b"HMSG %s 1 %s %d %d\r\n%s%s\r\n" % (SUBJECT, reply, len(hdr), len(hdr) + len(data), hdr, data)


class NullWriter:
    """_frames writes only PONGs and flow-control replies; these frames ask for neither."""

    def write(self, data: bytes) -> None:
        raise AssertionError(f"unexpected write {data!r}")

    def close(self) -> None:
        pass


class SilentAfter:
    """A socket that hands out its chunks, then stays silent: the read times out."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, n: int) -> bytes:
        if not self.chunks:
            raise asyncio.TimeoutError  # what wait_for raises after the idle timeout, without the wait
        return self.chunks.pop(0)


def wire_with(*chunks: bytes) -> _Wire:
    stream = asyncio.StreamReader()
    for chunk in chunks:
        stream.feed_data(chunk)
    return _Wire(stream, NullWriter())  # type: ignore[arg-type]


@pytest.mark.parametrize("headers", [True, False], ids=["HMSG fast path", "MSG slow path"])
async def test_frames_yield_the_messages_before_a_gap_in_the_middle_of_a_chunk_then_report_it(headers: bool) -> None:
    # A filtered read: stream sequences step by 2, delivery sequences by 1; delivery 4 is lost.
    chunk = b"".join(delivery(seq, dseq, headers=headers) for seq, dseq in [(10, 1), (12, 2), (14, 3), (18, 5), (20, 6)])
    frames = _frames(wire_with(chunk), end_seq=None, follow=False)
    batch = await anext(frames)
    assert [m.seq for m in batch] == [10, 12, 14]
    assert batch[0].data == b'{"n":10}' and batch[0].subject == SUBJECT.decode()
    with pytest.raises(_Gap) as gap:
        await anext(frames)
    assert gap.value.last_seq == 14  # read_stream resumes at 15: nothing yielded twice, nothing lost


async def test_frames_report_silence_as_a_gap_after_the_last_message_they_yielded() -> None:
    first = b"".join(delivery(seq, seq) for seq in (1, 2, 3))
    frames = _frames(_Wire(SilentAfter(first), NullWriter()), end_seq=None, follow=False)  # type: ignore[arg-type]
    assert [m.seq for m in await anext(frames)] == [1, 2, 3]
    with pytest.raises(_Gap) as gap:
        await anext(frames)
    assert gap.value.last_seq == 3


# ------------------------------------------------------------------ against a real server


async def seed(bus: Client, n: int) -> None:
    pub = await Publisher(bus).start()
    await pub.publish_all(ticker("100", ts=i) for i in range(1, n + 1))


async def collect(*args: Any, **kw: Any) -> list[StoredMsg]:
    out: list[StoredMsg] = []
    async for batch in read_stream(*args, **kw):
        out += batch
    return out


class DropOneDelivery:
    """The first wire's socket: holds deliveries back until `through` has arrived, drops
    delivery `drop`, and hands out the rest as one chunk, so the gap sits mid-chunk."""

    def __init__(self, inner: asyncio.StreamReader, drop: int, through: int) -> None:
        self.inner, self.drop, self.through = inner, drop, through
        self.tampered = False

    async def read(self, n: int) -> bytes:
        if self.tampered:
            return await self.inner.read(n)
        buf = b""
        while True:
            more = await self.inner.read(n)
            assert more, "the server closed the connection"
            buf += more
            frames = {int(m.group(3)): (m.start(), m.end() + int(m.group(7)) + 2) for m in reader._DELIVERY.finditer(buf)}
            if self.through in frames and frames[self.through][1] <= len(buf):
                break
        self.tampered = True
        start, end = frames[self.drop]
        return buf[:start] + buf[end:]


@pytest.mark.parametrize("contiguous", [False, True])
async def test_a_read_that_meets_a_gap_mid_chunk_yields_every_message_once_in_order(
    bus: Client, monkeypatch: pytest.MonkeyPatch, contiguous: bool
) -> None:
    await seed(bus, 200)
    real_open, real_deliveries = _Wire.open, reader._deliveries
    starts: list[int | None] = []

    async def open_tampered_first(url: str, login: tuple[str, str] | None = None) -> _Wire:
        wire = await real_open(url, login)
        if not starts:
            wire.reader = DropOneDelivery(wire.reader, drop=20, through=40)  # type: ignore[assignment]
        return wire

    async def recorded(nc: Client, wire: _Wire, stream: str, start_seq: int | None, *rest: Any) -> AsyncIterator[list[StoredMsg]]:
        starts.append(start_seq)
        async for batch in real_deliveries(nc, wire, stream, start_seq, *rest):
            yield batch

    monkeypatch.setattr(_Wire, "open", open_tampered_first)
    monkeypatch.setattr(reader, "_deliveries", recorded)
    got = await asyncio.wait_for(collect(bus, "MARKET", contiguous=contiguous), 30)
    assert [m.seq for m in got] == list(range(1, 201))
    # The first read handed out 1..19 (the messages before the gap) and the second began at 20.
    assert starts == [None, 20]


async def test_a_contiguous_read_accepts_holes_the_stream_reports_as_deletions(bus: Client) -> None:
    await seed(bus, 30)
    js = bus.jetstream()
    for seq in (1, 7, 8, 15, 30):  # the first, a run inside, one alone, and the last
        await js.delete_msg("MARKET", seq)
    kept = [s for s in range(1, 31) if s not in (1, 7, 8, 15, 30)]
    assert [m.seq for m in await collect(bus, "MARKET", contiguous=True)] == kept
    window = await collect(bus, "MARKET", start_seq=6, end_seq=16, contiguous=True)
    assert [m.seq for m in window] == [6, 9, 10, 11, 12, 13, 14, 16]


async def test_a_contiguous_read_accepts_what_retention_removed_before_it_began(bus: Client) -> None:
    await seed(bus, 20)
    await bus.jetstream().purge_stream("MARKET", seq=11)  # removes 1..10, as limits would
    got = await collect(bus, "MARKET", start_seq=1, contiguous=True)
    assert [m.seq for m in got] == list(range(11, 21))


@pytest.mark.parametrize(
    ("lost", "deleted", "missing"),
    [(1, (), "seq 1"), (7, (), "seq 7"), (30, (), "seq 30"), (13, (12, 14), "seq 13")],
    ids=["the first", "one inside", "the last", "one between deletions"],
)
async def test_a_contiguous_read_refuses_a_message_that_went_missing_without_being_deleted(
    bus: Client, monkeypatch: pytest.MonkeyPatch, lost: int, deleted: tuple[int, ...], missing: str
) -> None:
    await seed(bus, 30)
    for seq in deleted:  # real deletions beside the loss do not excuse it
        await bus.jetstream().delete_msg("MARKET", seq)
    real_read_once = reader._read_once

    async def losing_one(*args: Any) -> AsyncIterator[list[StoredMsg]]:
        # A reader bug that the delivery sequence cannot reveal (the one this check exists for).
        async for batch in real_read_once(*args):
            kept = [m for m in batch if m.seq != lost]
            if kept:
                yield kept

    monkeypatch.setattr(reader, "_read_once", losing_one)
    with pytest.raises(ReplayIncomplete, match=rf"MARKET is missing {missing}:"):
        await collect(bus, "MARKET", contiguous=True)


async def test_a_deletion_made_after_the_first_lookup_still_explains_its_hole(bus: Client) -> None:
    await seed(bus, 10)
    js = bus.jetstream()
    await js.delete_msg("MARKET", 3)
    check = Contiguity(bus, "MARKET", first_seq=1, expected=1)
    await check.batch([StoredMsg(s, "md", b"", b"", 0) for s in (1, 2, 4, 5)])  # looks up the deletions
    await js.delete_msg("MARKET", 6)
    await check.batch([StoredMsg(s, "md", b"", b"", 0) for s in (7, 8)])
    with pytest.raises(ReplayIncomplete, match="MARKET is missing seqs 9..10:"):
        await check.through(10)


async def test_a_filtered_read_cannot_ask_for_contiguous_stream_sequences(bus: Client) -> None:
    with pytest.raises(ValueError, match="unfiltered"):
        await collect(bus, "MARKET", subjects=("md.sim.BTC-USDT-USDT.ticker",), contiguous=True)
