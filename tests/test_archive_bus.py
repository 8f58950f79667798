"""The archive against a real nats-server: thousands of mixed events on every stream, archived
exactly once (compared with the streams message by message), garbage kept as `undecoded`, a
restart that writes nothing twice, and files readable while it writes (docs/adr/0022)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer
from bus.settings import BusSettings
from cli.status import services
from monitors.archive.config import ArchiveConfig
from monitors.archive.consumer import ArchiveConsumer
from monitors.archive.runner import build_archive, run_archive, run_consumers
from monitors.archive.views import open_archive
from testkit.archive import ARCHIVED, GARBAGE, compare, mixed, partial_files, publish
from testkit.bus import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def settled(consumers: list[ArchiveConsumer], nc: Client) -> bool:
    """Every stream's last message is in a committed file."""
    js = nc.jetstream()
    for c in consumers:
        if c.high_water < (await js.stream_info(c.stream)).state.last_seq:
            return False
    return True


async def run_until_settled(bus: Client, root: Path, cfg: ArchiveConfig, timeout: float = 30.0) -> list[ArchiveConsumer]:
    consumers = build_archive(bus, cfg, root)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(consumers, stop))
    try:
        await eventually(lambda: settled(consumers, bus), timeout=timeout, what="every stream archived")
    finally:
        stop.set()
        await task
    return consumers


async def test_every_message_of_every_stream_is_archived_once_with_its_raw_payload(bus: Client, tmp_path: Path) -> None:
    items = mixed(3_000)
    await publish(bus, items)
    root = tmp_path / "archive"
    consumers = await run_until_settled(bus, root, ArchiveConfig(batch_size=500, flush_seconds=0.2, metrics_port=0))
    total = 0
    for stream in ARCHIVED:
        c = await compare(bus, root, stream)
        assert c.equal, str(c)
        assert c.in_stream > 0, stream
        total += c.archived
    assert total == len(items)
    assert not partial_files(root)
    assert sum(c.files for c in consumers) > len(ARCHIVED)  # batches of 500: several files a stream
    # Typed where the codec reads it, `undecoded` (with the exact bytes) where it does not.
    con = open_archive(root)
    assert con.execute("SELECT count(*) FROM tickers").fetchone() == (sum(1 for i in range(3_000) if i % 16 in (0, 1, 2)),)
    kinds = dict(con.execute("SELECT stream, count(*) FROM undecoded GROUP BY 1").fetchall())
    assert set(kinds) == set(ARCHIVED), kinds  # garbage on every stream's subjects, archived
    raw = {bytes(r[0]) for r in con.execute("SELECT raw_bytes FROM undecoded").fetchall()}
    assert set(GARBAGE) - {b""} <= raw


async def test_a_restart_writes_nothing_twice_and_continues(bus: Client, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    cfg = ArchiveConfig(batch_size=300, flush_seconds=0.2, metrics_port=0)
    await publish(bus, mixed(1_000))
    await run_until_settled(bus, root, cfg)
    await publish(bus, mixed(1_000, start=1_000))
    again = await run_until_settled(bus, root, cfg)
    assert sum(c.skipped for c in again) == 0  # recreated just after the high-water mark
    for stream in ARCHIVED:
        c = await compare(bus, root, stream)
        assert c.equal, str(c)


async def test_files_are_readable_while_the_archive_writes(bus: Client, tmp_path: Path) -> None:
    root = tmp_path / "archive"
    consumers = build_archive(bus, ArchiveConfig(batch_size=200, flush_seconds=0.1, metrics_port=0), root)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(consumers, stop))
    reads = []
    try:
        for k in range(5):
            await publish(bus, mixed(400, start=k * 400))
            con = open_archive(root)  # a fresh reader each time, as `sqt query` is
            reads.append(con.execute("SELECT count(*) FROM events").fetchone())
            con.close()
        await eventually(lambda: settled(consumers, bus), timeout=30, what="every stream archived")
    finally:
        stop.set()
        await task
    assert all(r is not None for r in reads)
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM read_parquet('{root}/*/date=*/*.parquet', union_by_name=true)").fetchone() == (2_000,)


async def test_health_status_and_metrics_on_its_port(bus: Client, nats_server: EmbeddedServer, tmp_path: Path) -> None:
    port = free_port()
    root = tmp_path / "archive"
    cfg = ArchiveConfig(batch_size=100, flush_seconds=0.1, metrics_port=port)
    items = mixed(800)
    await publish(bus, items)
    stop = asyncio.Event()
    task = asyncio.create_task(run_archive(BusSettings(nats_url=nats_server.url), cfg, root, stop))
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def status() -> dict[str, Any]:
                try:
                    async with http.get(f"{base}/status") as r:
                        return dict(await r.json())
                except aiohttp.ClientError:
                    return {}

            async def done() -> bool:
                st = await status()
                return bool(st) and sum(s["rows"] for s in st["streams"].values()) == len(items)

            await eventually(done, timeout=30, what="/status to count every row")
            st = await status()
            assert set(st["streams"]) == set(ARCHIVED)
            market = st["streams"]["MARKET"]
            assert market["high_water"] == (await bus.jetstream().stream_info("MARKET")).state.last_seq
            assert market["files"] > 0 and market["bytes"] > 0 and market["lag"] == 0
            assert st["streams"]["DLQ"]["rows_by_type"]["undecoded"] > 0
            async with http.get(f"{base}/health") as r:
                assert r.status == 200, await r.text()
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            for name in (
                "sqt_archive_rows_total",
                "sqt_archive_files_total",
                "sqt_archive_bytes_total",
                "sqt_archive_flush_seconds_bucket",
                "sqt_archive_high_water_seq",
                "sqt_bus_consumer_live",
            ):
                assert name in text, name
            assert 'sqt_archive_rows_total{stream="MARKET",type="ticker"}' in text
        found = [s for s in await services(bus, subject="$SRV.INFO") if s.get("metadata", {}).get("component") == "archive"]
        assert found and found[0]["metadata"]["http"] == f"127.0.0.1:{port}"
    finally:
        stop.set()
        await task


async def test_a_read_that_restarts_on_an_old_position_takes_nothing_twice(bus: Client, tmp_path: Path) -> None:
    """Batches overlapping what the session holds (a read restarted behind it) add only the new."""
    from monitors.archive.batch import Stored
    from monitors.archive.writer import StreamWriter

    c = ArchiveConsumer(bus, "MARKET", StreamWriter(tmp_path, "MARKET"), ArchiveConfig(batch_size=100, metrics_port=0))
    await c.prepare()
    await c.process([Stored(1, "md.x", b"{}"), Stored(2, "md.x", b"{}")])
    await c.process([Stored(2, "md.x", b"{}"), Stored(3, "md.x", b"{}")])
    await c.process([Stored(1, "md.x", b"{}")])
    assert [m.seq for m in c.pending] == [1, 2, 3] and c.skipped == 2
    await c.prepare()  # a rebuilt session: nothing committed, so from the start again
    assert c.pending == [] and c.accepted == 0


async def test_a_failing_write_is_unhealthy_loses_nothing_and_recovers(
    bus: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that fails (a full disk) is never acked: /health says so, and once writing works
    again the same messages are archived, once."""
    from monitors.archive.runner import health_of
    from monitors.archive.writer import StreamWriter

    root = tmp_path / "archive"
    consumers = build_archive(bus, ArchiveConfig(batch_size=100, flush_seconds=0.1, metrics_port=0), root)
    broken = {"on": True}
    real = StreamWriter.commit

    def commit(self: StreamWriter, groups: Any) -> Any:
        if broken["on"] and self.stream == "ACCOUNT":
            raise OSError(28, "No space left on device")
        return real(self, groups)

    monkeypatch.setattr(StreamWriter, "commit", commit)
    await publish(bus, mixed(600))
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(consumers, stop))
    try:
        await eventually(lambda: not health_of(consumers)["ok"], timeout=20, what="/health to say ACCOUNT cannot be written")
        assert "ACCOUNT" in health_of(consumers)["reason"] and "No space" in health_of(consumers)["reason"]
        broken["on"] = False
        await eventually(lambda: settled(consumers, bus), timeout=30, what="every stream archived once writing works")
        assert health_of(consumers)["ok"]
    finally:
        stop.set()
        await task
    for stream in ARCHIVED:
        c = await compare(bus, root, stream)
        assert c.equal, str(c)


async def test_the_archive_goes_on_after_the_nats_server_is_killed_and_restarted(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    """The reads die with the server; the sessions are rebuilt from the files once it is back,
    and what was stored before and after is archived once."""
    root = tmp_path / "archive"
    consumers = build_archive(bus, ArchiveConfig(batch_size=200, flush_seconds=0.1, metrics_port=0), root)
    stop = asyncio.Event()
    task = asyncio.create_task(run_consumers(consumers, stop))
    try:
        await publish(bus, mixed(1_000))
        await eventually(lambda: settled(consumers, bus), timeout=30, what="the first events archived")
        nats_server.kill()
        await eventually(lambda: not bus.is_connected, what="the client to notice the server is gone")
        nats_server.start()
        await eventually(lambda: bus.is_connected, timeout=30, what="the client to reconnect")
        await publish(bus, mixed(1_000, start=1_000))
        await eventually(lambda: settled(consumers, bus), timeout=60, what="the events stored after the restart archived")
        assert all(c.stats.sessions >= 2 for c in consumers)  # each read died with the server
    finally:
        stop.set()
        await task
    for stream in ARCHIVED:
        c = await compare(bus, root, stream)
        assert c.equal, str(c)
