"""`sqt backup` / `sqt restore` against real nats-servers: every stream and bucket filled (headers,
message ids, a deleted message, KV history with a delete and a purge), backed up, restored into
a second, fresh server and compared message by message (subject, data, headers, sequence,
time), bucket by bucket and config by config; refusals name what is wrong and change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError

from bus.backup import DATA_FILE, MANIFEST, META_FILE, BackupFailed, Refused, backup, restore
from bus.connection import connect
from bus.embedded import EmbeddedServer
from bus.streams import BUCKETS, STREAMS
from testkit.bus import start_server

ROOT = Path(__file__).resolve().parent.parent
ALL = [s.name for s in STREAMS] + [f"KV_{b.name}" for b in BUCKETS]
PER_STREAM = 25
GAP = 7  # the sequence deleted in every stream


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    workdir = tmp_path / "second"
    workdir.mkdir()
    server = start_server(workdir)
    yield server
    server.stop()


@pytest.fixture
async def fresh(second_server: EmbeddedServer) -> AsyncIterator[Client]:
    """A connection to a second server with no streams at all."""
    client = await connect(second_server.url, name="pytest-fresh", attempts=3)
    yield client
    await client.close()


async def fill(nc: Client) -> None:
    """Messages with headers and ids on every stream (one id sent twice, one message deleted);
    keys with history and deletes in every bucket (which refuse purges: a purge is a rollup,
    bus/streams.py)."""
    js = nc.jetstream()
    for spec in STREAMS:
        prefix = spec.subjects[0].rstrip(">")
        for i in range(PER_STREAM):
            headers = {"Nats-Msg-Id": f"{spec.name}-{i}", "X-Reason": f"why {i}"} if i % 4 else None
            payload = bytes([i, 0, 255]) + f"{spec.name} {i}".encode() if i % 5 else b""
            await js.publish(f"{prefix}sim.k{i % 3}", payload, headers=headers)
        again = await js.publish(f"{prefix}sim.k1", b"again", headers={"Nats-Msg-Id": f"{spec.name}-1"})
        assert again.duplicate
        await js.delete_msg(spec.name, GAP)
    for b in BUCKETS:
        kv = await js.key_value(b.name)
        for rev in range(3):
            await kv.put("kept", f"{b.name} v{rev}".encode())
        await kv.put("deleted", b"soon gone")
        await kv.delete("deleted")
        await kv.put("rewritten", b"x")
        await kv.put("rewritten", b"y")
        await kv.delete("rewritten")
        await kv.put("other.key", b"\x00binary\xff")


async def messages(nc: Client, stream: str) -> list[tuple[Any, ...]]:
    """Every sequence of the stream: (seq, subject, data, headers, time), or (seq,) for a gap."""
    js = nc.jetstream()
    last = (await js.stream_info(stream)).state.last_seq
    out: list[tuple[Any, ...]] = []
    for seq in range(1, last + 1):
        try:
            m = await js.get_msg(stream, seq)
        except NotFoundError:
            out.append((seq,))
            continue
        out.append((m.seq, m.subject, m.data, m.headers, m.time))
    return out


async def kv_view(nc: Client, bucket: str) -> dict[str, list[tuple[Any, ...]]]:
    kv = await nc.jetstream().key_value(bucket)
    view = {}
    for key in ("kept", "deleted", "rewritten", "other.key"):
        view[key] = [(e.revision, e.value, e.operation, e.delta) for e in await history(kv, key)]
    return view


async def history(kv: Any, key: str) -> list[Any]:
    """nats-py's `history`, asked again when it says "no keys": its watcher sometimes ends
    before the first entry arrives (about one run in six here). A key truly without history
    still fails, after a few tries."""
    for _ in range(20):
        try:
            return list(await kv.history(key))
        except NoKeysError:
            await asyncio.sleep(0.05)
    return list(await kv.history(key))


async def test_a_restore_into_a_fresh_server_has_every_message_header_sequence_time_and_gap(
    bus: Client, fresh: Client, tmp_path: Path
) -> None:
    await fill(bus)
    directory = tmp_path / "backup"
    said: list[str] = []
    made = await backup(bus, directory, say=said.append)
    assert [s.stream for s in made] == sorted(ALL)
    assert len(said) == len(ALL) and any(line.startswith("kv:checkpoints") for line in said)

    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["method"] == "jetstream-snapshot" and manifest["server_version"].startswith("2.")
    js = bus.jetstream()
    for entry in manifest["streams"]:
        info = await js.stream_info(entry["stream"])
        assert entry["config"]["name"] == entry["stream"]
        assert entry["config"]["subjects"] == info.config.subjects
        assert (entry["state"]["first_seq"], entry["state"]["last_seq"], entry["state"]["messages"]) == (
            info.state.first_seq,
            info.state.last_seq,
            info.state.messages,
        )
        assert (directory / entry["stream"] / DATA_FILE).stat().st_size == entry["size"] > 0
        assert json.loads((directory / entry["stream"] / META_FILE).read_text())["config"] == entry["config"]

    assert await fresh.jetstream().streams_info() == []
    restored = await restore(fresh, directory)
    assert [(s.stream, s.messages, s.first_seq, s.last_seq) for s in restored] == [
        (s.stream, s.messages, s.first_seq, s.last_seq) for s in made
    ]

    fjs = fresh.jetstream()
    for stream in ALL:
        before, after = await messages(bus, stream), await messages(fresh, stream)
        assert after == before, stream
        assert (await fjs.stream_info(stream)).config == (await js.stream_info(stream)).config, stream
        assert (await fjs.stream_info(stream)).state.num_deleted == (await js.stream_info(stream)).state.num_deleted
    for spec in STREAMS:
        got = await messages(fresh, spec.name)
        assert len(got) == PER_STREAM and got[GAP - 1] == (GAP,)  # the gap is still a gap
        assert got[1][3] == {"Nats-Msg-Id": f"{spec.name}-1", "X-Reason": "why 1"}
    for b in BUCKETS:
        assert await kv_view(fresh, b.name) == await kv_view(bus, b.name)
        kv = await fjs.key_value(b.name)
        assert (await kv.get("kept")).value == f"{b.name} v2".encode()
        with pytest.raises(KeyNotFoundError):
            await kv.get("deleted")
    fresh_one = await fjs.publish("acct.sim.k1", b"new", headers={"Nats-Msg-Id": "ACCOUNT-new"})
    assert fresh_one.seq == PER_STREAM + 1  # the next sequence after the backup's last


async def test_the_dedupe_window_holds_the_restored_ids_once_the_server_restarts(
    bus: Client, fresh: Client, second_server: EmbeddedServer, tmp_path: Path
) -> None:
    """nats-server 2.15 does not fill a restored stream's dedupe window until it loads the stream
    again (a restart); from then on a retry of a message stored before the backup is dropped."""
    await fill(bus)
    await backup(bus, tmp_path / "b", ["ACCOUNT"])
    await restore(fresh, tmp_path / "b")
    await fresh.close()
    second_server.stop()
    second_server.start()
    again = await connect(second_server.url, name="pytest-again", attempts=3)
    try:
        retry = await again.jetstream().publish("acct.sim.k1", b"retry", headers={"Nats-Msg-Id": "ACCOUNT-1"})
        assert retry.duplicate and retry.seq == 2
    finally:
        await again.close()


async def test_a_stream_many_flow_control_windows_long_is_backed_up_whole(bus: Client, fresh: Client, tmp_path: Path) -> None:
    """1 MB that s2 cannot shrink, sent in 4 KiB chunks with a 16 KiB window: the server waits for
    our answer dozens of times (a backup that does not answer stalls and fails)."""
    rng = random.Random(7)
    js = bus.jetstream()
    for i in range(1000):
        await js.publish(f"md.sim.k{i % 7}", rng.randbytes(1000), headers={"Nats-Msg-Id": f"big-{i}"})
    await js.delete_msg("MARKET", 500)
    made = await backup(bus, tmp_path / "b", ["MARKET"], chunk_size=4096, window_size=16384)
    assert made[0].messages == 999 and made[0].file_bytes > 1_000_000
    await restore(fresh, tmp_path / "b")
    assert await messages(fresh, "MARKET") == await messages(bus, "MARKET")


async def test_sequences_go_on_after_a_purge_or_a_deleted_last_message(bus: Client, fresh: Client, tmp_path: Path) -> None:
    js = bus.jetstream()
    for _ in range(5):
        await js.publish("acct.sim.k", b"1")
        await js.publish("ops.sim.k", b"1")
    await js.purge_stream("ACCOUNT")
    await js.delete_msg("OPS", 5)
    made = await backup(bus, tmp_path / "b", ["ACCOUNT", "OPS"])
    assert made[0].line().split()[1:] == [
        "0",
        "msgs",
        "0",
        "bytes",
        "empty,",
        "last",
        "seq",
        "5",
        f"({made[0].file_bytes}",
        "bytes",
        "on",
        "disk)",
    ]
    await restore(fresh, tmp_path / "b")
    fjs = fresh.jetstream()
    assert (await fjs.publish("acct.sim.k", b"2")).seq == 6
    assert (await fjs.publish("ops.sim.k", b"2")).seq == 6


async def test_named_streams_and_buckets_only(bus: Client, fresh: Client, tmp_path: Path) -> None:
    await fill(bus)
    directory = tmp_path / "b"
    made = await backup(bus, directory, ["ACCOUNT", "checkpoints", "ACCOUNT"])
    assert [s.stream for s in made] == ["ACCOUNT", "KV_checkpoints"]
    assert sorted(p.name for p in directory.iterdir()) == ["ACCOUNT", "KV_checkpoints", MANIFEST]
    restored = await restore(fresh, directory, ["KV_checkpoints"])
    assert [s.stream for s in restored] == ["KV_checkpoints"]
    assert sorted(i.config.name or "" for i in await fresh.jetstream().streams_info()) == ["KV_checkpoints"]
    with pytest.raises(Refused, match="'MARKET' in"):
        await restore(fresh, directory, ["MARKET"])
    with pytest.raises(Refused, match="stream KV_checkpoints already exists on"):
        await restore(fresh, directory)


async def test_a_stream_that_is_not_there_is_named_and_nothing_is_written(bus: Client, tmp_path: Path) -> None:
    directory = tmp_path / "b"
    with pytest.raises(Refused, match="no stream or bucket named 'NOPE' on the server"):
        await backup(bus, directory, ["ACCOUNT", "NOPE"])
    assert not directory.exists()


async def test_a_directory_that_is_not_empty_needs_force(bus: Client, tmp_path: Path) -> None:
    directory = tmp_path / "b"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    with pytest.raises(Refused, match="is not empty"):
        await backup(bus, directory)
    assert [p.name for p in directory.iterdir()] == ["notes.txt"]
    made = await backup(bus, directory, force=True)
    assert len(made) == len(ALL) and (directory / "notes.txt").read_text() == "mine"


async def test_restore_refuses_a_stream_that_exists_and_replace_replaces_it(bus: Client, tmp_path: Path) -> None:
    await fill(bus)
    directory = tmp_path / "b"
    await backup(bus, directory)
    before = await messages(bus, "ACCOUNT")
    js = bus.jetstream()
    await js.publish("acct.sim.later", b"after the backup")
    with pytest.raises(Refused, match="stream ACCOUNT already exists"):
        await restore(bus, directory, ["ACCOUNT"])
    with pytest.raises(Refused, match=f"streams {', '.join(sorted(ALL))} already exist"):
        await restore(bus, directory)
    assert len(await messages(bus, "ACCOUNT")) == PER_STREAM + 1  # untouched
    said: list[str] = []
    await restore(bus, directory, ["ACCOUNT"], replace=True, say=said.append)
    assert said[0].startswith(f"replacing ACCOUNT: {PER_STREAM} msgs, seq 1..{PER_STREAM + 1}")
    assert await messages(bus, "ACCOUNT") == before


async def test_a_damaged_or_unfinished_backup_is_refused_before_anything_changes(bus: Client, fresh: Client, tmp_path: Path) -> None:
    await fill(bus)
    directory = tmp_path / "b"
    await backup(bus, directory, ["MARKET", "OPS"])
    data = directory / "OPS" / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(BackupFailed, match="OPS/stream.tar.s2 is damaged"):
        await restore(fresh, directory)
    assert await fresh.jetstream().streams_info() == []  # MARKET was not restored either
    (directory / MANIFEST).unlink()
    with pytest.raises(Refused, match="not a backup, or one that did not finish"):
        await restore(fresh, directory)


async def sqt(*args: str, url: str, tmp_path: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "sqt"),
        *args,
        cwd=ROOT,
        env={**os.environ, "NATS_URL": url, "SQT_DATA_DIR": str(tmp_path / "data")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_cli_round_trip(
    bus: Client, nats_server: EmbeddedServer, fresh: Client, second_server: EmbeddedServer, tmp_path: Path
) -> None:
    await fill(bus)
    directory = tmp_path / "b"
    code, out, err = await sqt("backup", str(directory), url=nats_server.url, tmp_path=tmp_path)
    assert code == 0, out + err
    account = next(line.split() for line in out.splitlines() if line.startswith("ACCOUNT "))
    assert account[1:3] == [str(PER_STREAM - 1), "msgs"] and f"1..{PER_STREAM}" in account, out
    assert out.strip().splitlines()[-1].startswith(f"backed up {len(ALL)} streams:")

    code, out, err = await sqt("backup", str(directory), url=nats_server.url, tmp_path=tmp_path)
    assert (code, out) == (2, "") and err.strip().endswith("is not empty (--force writes into it anyway)"), err
    code, out, err = await sqt("backup", str(tmp_path / "c"), "--streams", "MARKET,nope", url=nats_server.url, tmp_path=tmp_path)
    assert code == 2 and err.strip() == "sqt: no stream or bucket named 'nope' on the server", err

    code, out, err = await sqt("restore", str(directory), url=second_server.url, tmp_path=tmp_path)
    assert code == 0, out + err
    assert out.strip().splitlines()[-1].startswith(f"restored {len(ALL)} streams:")
    for stream in ALL:
        assert await messages(fresh, stream) == await messages(bus, stream), stream

    code, out, err = await sqt("restore", str(directory), "--streams", "OPS", url=second_server.url, tmp_path=tmp_path)
    assert code == 2 and err.strip() == "sqt: stream OPS already exists on the server (--replace deletes it first)", err
    code, out, err = await sqt("restore", str(directory), "--streams", "OPS", "--replace", url=second_server.url, tmp_path=tmp_path)
    assert code == 0 and out.startswith("replacing OPS:"), out + err
    assert "Traceback" not in err
