"""One process per consumer: the lease in the registry bucket, against a real nats-server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from bus.embedded import EmbeddedServer
from bus.errors import LeaseHeld
from bus.lease import Holder, Lease, lease_key
from bus.streams import REGISTRY
from testkit.bus import eventually

ROOT = Path(__file__).resolve().parent.parent
NAME = "grid-lease-test"

# A component that takes a lease and keeps it: `python holder.py URL NAME TTL`.
HOLDER = """
import asyncio, sys
from bus import process
from bus.connection import connect
from bus.lease import Lease

async def main(stop):
    nc = await connect(sys.argv[1], name="lease-holder")
    lease = Lease(nc, sys.argv[2], ttl=float(sys.argv[3]), renew_every=0.2)
    await lease.acquire()
    print("acquired", flush=True)
    await stop.wait()
    await lease.release()
    await nc.close()

sys.exit(process.run("holder", main))
"""


async def registry(nc: Client) -> KeyValue:
    return await nc.jetstream().key_value(REGISTRY.name)


async def stored_holder(nc: Client, name: str = NAME) -> tuple[Holder, int]:
    entry = await (await registry(nc)).get(lease_key(name))
    assert entry.value
    return msgspec.json.decode(entry.value, type=Holder), entry.revision


async def plant(nc: Client, host: str, pid: int, ttl: float, name: str = NAME) -> int:
    """A lease written by a holder elsewhere (that will never renew it unless the test does)."""
    now = int(time.time() * 1000)
    value = msgspec.json.encode(Holder(host=host, pid=pid, since=now, renewed=now, ttl=ttl))
    return await (await registry(nc)).put(lease_key(name), value)


def start_holder(tmp_path: Path, url: str, ttl: float) -> subprocess.Popen[str]:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return subprocess.Popen(
        [sys.executable, str(script), url, NAME, str(ttl)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_a_second_acquire_of_a_held_lease_is_refused_naming_the_holders_host_and_pid(bus: Client) -> None:
    first = Lease(bus, NAME, ttl=2.0, renew_every=0.2)
    await first.acquire()
    try:
        with pytest.raises(LeaseHeld) as refused:
            await Lease(bus, NAME, ttl=2.0, renew_every=0.2).acquire()
        text = str(refused.value)
        assert f"host {socket.gethostname()} pid {os.getpid()}" in text and NAME in text
        holder, _ = await stored_holder(bus)
        assert holder.token and not first.lost.is_set()  # the holder kept it
    finally:
        await first.release()


async def test_a_live_holder_on_another_host_is_refused_while_it_renews(bus: Client) -> None:
    revision = await plant(bus, "elsewhere", 4242, ttl=1.0)
    kv = await registry(bus)

    async def renew_elsewhere() -> None:
        nonlocal revision
        while True:
            await asyncio.sleep(0.1)
            now = int(time.time() * 1000)
            value = msgspec.json.encode(Holder(host="elsewhere", pid=4242, since=now, renewed=now, ttl=1.0))
            revision = await kv.update(lease_key(NAME), value, last=revision)

    renewing = asyncio.create_task(renew_elsewhere())
    try:
        with pytest.raises(LeaseHeld, match="held by host elsewhere pid 4242"):
            await Lease(bus, NAME).acquire()
    finally:
        renewing.cancel()


async def test_a_holder_on_another_host_that_stops_renewing_is_taken_over_after_its_ttl(
    bus: Client, caplog: pytest.LogCaptureFixture
) -> None:
    await plant(bus, "elsewhere", 4242, ttl=0.5)  # crashed: it will never renew
    lease = Lease(bus, NAME, ttl=2.0, renew_every=0.2)
    with caplog.at_level(logging.INFO, logger="bus.lease"):
        await lease.acquire()
    try:
        holder, _ = await stored_holder(bus)
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
        assert "did not renew it for 0.5s" in caplog.text
    finally:
        await lease.release()


@pytest.mark.e2e
async def test_a_holder_killed_on_this_host_is_taken_over_at_once_not_after_its_ttl(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = start_holder(tmp_path, nats_server.url, ttl=3600)  # waiting out this ttl would be an hour
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "acquired"
        holder, _ = await stored_holder(bus)
        assert holder.pid == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        lease = Lease(bus, NAME, ttl=2.0, renew_every=0.2)
        with caplog.at_level(logging.INFO, logger="bus.lease"):
            await lease.acquire()
        assert f"its holder (pid {proc.pid} on this host) is gone" in caplog.text
        assert (await stored_holder(bus))[0].pid == os.getpid()
        await lease.release()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_release_deletes_the_lease_so_the_next_acquire_needs_no_wait(bus: Client, caplog: pytest.LogCaptureFixture) -> None:
    first = Lease(bus, NAME, ttl=3600, renew_every=0.2)  # unreleased, this would hold for an hour
    await first.acquire()
    await first.release()
    with pytest.raises(KeyNotFoundError):
        await (await registry(bus)).get(lease_key(NAME))
    second = Lease(bus, NAME, ttl=2.0, renew_every=0.2)
    with caplog.at_level(logging.INFO, logger="bus.lease"):
        await second.acquire()
    assert "taken over" not in caplog.text  # it was free, not waited out
    await second.release()


async def test_a_holder_whose_lease_was_taken_learns_it_lost_and_does_not_delete_the_new_holders_lease(bus: Client) -> None:
    lease = Lease(bus, NAME, ttl=2.0, renew_every=0.1)
    await lease.acquire()
    await plant(bus, "elsewhere", 4242, ttl=2.0)  # e.g. taken over while we were cut off
    await eventually(lease.lost.is_set, what="the holder to notice it lost its lease")
    await lease.release()
    holder, _ = await stored_holder(bus)
    assert (holder.host, holder.pid) == ("elsewhere", 4242)


async def test_of_two_contenders_for_an_expired_lease_exactly_one_wins(bus: Client) -> None:
    await plant(bus, "elsewhere", 4242, ttl=0.5)
    contenders = [Lease(bus, NAME, ttl=2.0, renew_every=0.2) for _ in range(2)]
    results = await asyncio.gather(*(c.acquire() for c in contenders), return_exceptions=True)
    try:
        refused = [r for r in results if isinstance(r, LeaseHeld)]
        assert results.count(None) == 1 and len(refused) == 1, results
        assert [c.held for c in contenders].count(True) == 1
        holder, _ = await stored_holder(bus)
        assert (holder.host, holder.pid) == (socket.gethostname(), os.getpid())
    finally:
        for c in contenders:
            await c.release()


async def test_renewals_fail_quietly_through_an_outage_longer_than_the_ttl_and_resume_after_it(
    nats_server: EmbeddedServer, bus: Client, caplog: pytest.LogCaptureFixture
) -> None:
    lease = Lease(bus, NAME, ttl=1.0, renew_every=0.2)
    await lease.acquire()
    try:
        _, before = await stored_holder(bus)
        with caplog.at_level(logging.WARNING, logger="bus.connection"):
            nats_server.kill()
            # Down through several renewal periods and past the ttl: the reconnect attempts say so.
            await eventually(lambda: "still unreachable after 4 attempts" in caplog.text, timeout=30, what="a long outage")
        nats_server.start()
        await eventually(lambda: bus.is_connected, timeout=20, what="the client to reconnect")

        async def renewed() -> bool:
            try:
                return (await stored_holder(bus))[1] > before
            except Exception:  # noqa: BLE001 - JetStream may still be recovering its store
                return False

        await eventually(renewed, timeout=20, what="a renewal after the restart")
        assert not lease.lost.is_set() and lease.held  # nobody took it meanwhile: still ours
    finally:
        await lease.release()


@pytest.mark.e2e
async def test_a_component_that_cannot_take_its_lease_exits_2_with_one_line_naming_the_holder(
    bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    lease = Lease(bus, NAME, ttl=2.0, renew_every=0.2)
    await lease.acquire()
    try:
        proc = start_holder(tmp_path, nats_server.url, ttl=2.0)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        await lease.release()
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"held by host {socket.gethostname()} pid {os.getpid()}" in errors[0], out
    assert "Traceback" not in out
