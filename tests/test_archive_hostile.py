"""Hostile input for a sink: whatever any NATS client publishes on any archived stream's subjects
(invalid JSON, binary, unknown types, schema violations, huge payloads, empty ones) is archived
as `undecoded` with its exact bytes and the codec's reason, and the archive goes on archiving.

testkit/hostile.py's targets assert that bad input is dead-lettered; a sink of record must not
dead-letter or drop anything, so the archive has its own suite here."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client

from monitors.archive.config import ArchiveConfig
from monitors.archive.runner import build_archive, run_consumers
from monitors.archive.views import open_archive
from schemas import subjects
from schemas.codec import DecodeError, decode, encode
from testkit import events
from testkit.archive import ARCHIVED, GARBAGE, Item, compare, publish
from testkit.bus import eventually

SUBJECTS = {
    "MARKET": (subjects.md("sim", "BTC/USDT:USDT", "ticker"), "md.x.y.z", "md.a"),
    "ACCOUNT": (subjects.acct("sim", "main", "BTC/USDT:USDT", "fill"), "acct.x"),
    "COMMAND": (subjects.cmd("sim", "main", "BTC/USDT:USDT", "place"), "cmd.x"),
    "OPS": (subjects.ops("grid", "g", "state"), "ops.a.b.c"),
    "DLQ": (subjects.dlq(subjects.md("sim", "BTC/USDT:USDT", "ticker")), "dlq.x"),
}
HUGE = b'{"type":"ticker","id":"' + b"x" * 2_000_000 + b'"}'  # 2 MB, a known type, fields missing
HOSTILE: tuple[bytes, ...] = (
    *GARBAGE,
    HUGE,
    b"\x00" * 1_000,
    bytes(range(256)),
    b'{"type": "fill", "id": 1}',
    b'{"type": "candle", "id": "c", "venue": "sim", "symbol": "s", "open_time": 1, "open": "1", "high": "1", "low": "2",'
    b' "close": "1", "volume": "1", "ts": 1, "ts_local": 1}',  # low above high: the schema refuses it
    b'{"type": "ticker", "id": "t", "venue": "sim", "symbol": "s", "last": "NaN", "ts": 1, "ts_local": 1}',
    b'{"type":"ticker"' + b',"a":[' * 5_000,  # deep and unterminated
    '{"type": "ticker", "id": "\u00e9\u2603"}'.encode(),
)


def refused(data: bytes) -> bool:
    try:
        decode(data)
    except DecodeError:
        return True
    return False


async def test_garbage_on_every_stream_is_archived_undecoded_with_its_bytes_and_the_archive_goes_on(bus: Client, tmp_path: Path) -> None:
    assert all(refused(p) for p in HOSTILE)
    items = [
        Item(subject, payload, f"h-{stream}-{i}-{j}")
        for stream in ARCHIVED
        for i, subject in enumerate(SUBJECTS[stream])
        for j, payload in enumerate(HOSTILE)
    ]
    valid = events.ticker("123.4", ts=1_700_000_000_000)
    root = tmp_path / "archive"
    consumers = build_archive(bus, ArchiveConfig(batch_size=50, flush_seconds=0.1, metrics_port=0), root)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(consumers, stop))
    try:
        await publish(bus, items)
        # ... and a valid message after all of it, which must be archived typed.
        await publish(bus, [Item(subjects.subject_of(valid), encode(valid), valid.id)])
        market = next(c for c in consumers if c.stream == "MARKET")

        async def all_archived() -> bool:
            js = bus.jetstream()
            last = {c.stream: (await js.stream_info(c.stream)).state.last_seq for c in consumers}
            return all(c.high_water >= last[c.stream] for c in consumers)

        await eventually(all_archived, timeout=30, what="every hostile payload archived")
        assert all(c.stats.sessions == 1 for c in consumers), "a hostile payload rebuilt a session"
        assert market.stats.last_error == ""
    finally:
        stop.set()
        await task
    con = open_archive(root)
    got = con.execute("SELECT stream, subject, raw_bytes, error FROM undecoded").fetchall()
    assert len(got) == len(items)
    assert {(s, subj, bytes(b)) for s, subj, b, _ in got} == {(s, it.subject, it.data) for it in items for s in [stream_of(it.subject)]}
    assert all(err for *_, err in got)  # the codec's reason, for every one
    assert con.execute("SELECT last FROM tickers").fetchall() == [(valid.last,)]
    for stream in ARCHIVED:
        c = await compare(bus, root, stream)
        assert c.equal, str(c)


def stream_of(subject: str) -> str:
    return {"md": "MARKET", "acct": "ACCOUNT", "cmd": "COMMAND", "ops": "OPS", "dlq": "DLQ"}[subject.split(".")[0]]
