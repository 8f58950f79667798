"""Grids added, paused, resumed and removed at runtime under `sqt up`, with real processes, and
SIGKILLs of the hosting process and of `sqt up` itself in the middle of an add and a removal:
afterwards the registry, the running processes and the venue agree."""

from __future__ import annotations

import os
import re
import signal
from decimal import Decimal
from pathlib import Path

import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer
from bus.reader import read_stream
from orchestration.registry import Registry, grid_record, now_ms
from schemas import subjects
from schemas.codec import decode
from schemas.registry import RegistryChange
from strategies.grid.config import GridConfig
from testkit.bus import eventually
from testkit.registry import Up, alive, child_pid, latest_pid, orders_of, venue_position
from venues.protocol import OrderRequest
from venues.sim.client import SimVenue

ETH = "ETH/USDT:USDT"
BTC = "BTC/USDT:USDT"
WIDE = ["--set", "levels=2", "--set", "spacing=0.05", "--set", "ttl_ms=3000", "--set", "max_open_orders=10"]


async def _has_orders(bus: Client, instance: str, symbol: str) -> bool:
    return bool(await orders_of(bus, instance, symbol))


async def _no_orders(bus: Client, instance: str, symbol: str) -> bool:
    return not await orders_of(bus, instance, symbol)


async def _changes(bus: Client, instance: str) -> list[RegistryChange]:
    out: list[RegistryChange] = []
    async for batch in read_stream(bus, "OPS", subjects=(subjects.registry("grid", instance),)):
        out += [decode(m.data) for m in batch]
    return out


@pytest.mark.e2e
async def test_add_pause_resume_and_remove_at_runtime_while_nothing_else_restarts(
    tmp_path: Path, nats_server: EmbeddedServer, bus: Client
) -> None:
    up = Up(tmp_path, nats_server.url)
    try:
        pids = up.start()
        assert {"sim", "executor", "risk", "grid:seed-1"} <= set(pids)
        # The config's grid was seeded, and says where it came from.
        listed = up.sqt("grid", "ls")
        assert listed.returncode == 0 and "seed-1" in listed.stdout and "config file" in listed.stdout, listed

        # Bad parameters name the field and write nothing.
        bad = up.sqt("grid", "add", "--instance", "eth-x", "--symbol", ETH, "--set", "levels=0")
        assert bad.returncode == 2 and "levels" in bad.stderr, bad.stderr
        nope = up.sqt("grid", "add", "--instance", "eth-y", "--symbol", "NOPE/USDT:USDT")
        assert nope.returncode == 2 and "symbol" in nope.stderr and "ETH/USDT:USDT" in nope.stderr, nope.stderr
        typo = up.sqt("grid", "add", "--instance", "eth-z", "--symbol", ETH, "--set", "spacin=0.1")
        assert typo.returncode == 2 and "spacin" in typo.stderr, typo.stderr
        tiny = up.sqt("grid", "add", "--instance", "eth-w", "--symbol", ETH, "--set", "notional=0.5")
        assert tiny.returncode == 2 and "notional" in tiny.stderr, tiny.stderr  # below the market's minimums
        assert [r.instance for r, _ in await Registry(bus).records("grid")] == ["seed-1"]

        added = up.sqt("grid", "add", "--instance", "eth-1", "--symbol", ETH, *WIDE)
        assert added.returncode == 0, added.stderr
        again = up.sqt("grid", "add", "--instance", "eth-1", "--symbol", ETH)
        assert again.returncode == 2 and "already in the registry" in again.stderr
        eth = child_pid(up, "grid:eth-1")
        await eventually(lambda: _has_orders(bus, "eth-1", ETH), timeout=60, what="eth-1's orders at the venue")
        status = up.sqt("status").stdout
        assert re.search(r"^grid\s+eth-1\s+yes", status, re.M) and re.search(r"^grid\s+seed-1\s+yes", status, re.M), status

        assert up.sqt("grid", "pause", "eth-1").returncode == 0
        await eventually(lambda: _no_orders(bus, "eth-1", ETH), timeout=30, what="a paused grid's opening orders canceled")
        assert "paused" in up.sqt("grid", "ls").stdout
        assert up.sqt("grid", "resume", "eth-1").returncode == 0
        await eventually(lambda: _has_orders(bus, "eth-1", ETH), timeout=30, what="a resumed grid's orders back")

        removed = up.sqt("grid", "remove", "eth-1", "--policy", "cancel")
        assert removed.returncode == 0 and "removed" in removed.stdout, (removed.stdout, removed.stderr)
        assert await orders_of(bus, "eth-1", ETH) == []
        await eventually(lambda: not alive(eth), timeout=15, what="the removed instance's process gone")
        assert "eth-1" not in up.sqt("grid", "ls").stdout and "removed (cancel, done)" in up.sqt("grid", "ls", "--all").stdout
        reused = up.sqt("grid", "add", "--instance", "eth-1", "--symbol", ETH)
        assert reused.returncode == 2 and "removed" in reused.stderr  # an id never comes back

        # Every change is on the log, with who made it, in order.
        actions = [c.action for c in await _changes(bus, "eth-1")]
        assert actions[:4] == ["add", "pause", "resume", "remove"] and actions[-1] == "removed", actions

        # Nothing else was restarted: the same processes, alive, and no restart was said.
        for name in ("sim", "executor", "risk", "gateway", "grid:seed-1"):
            assert alive(pids[name]), name
        assert "restarted" not in up.output() and "exited" not in up.output(), up.output()
        assert await _has_orders(bus, "seed-1", BTC)

        # An instance that can no longer start (the price left its bounds since it was added: here
        # written past `sqt grid add`'s check) is given up on by `sqt up`, and still removable.
        stuck = GridConfig(instance="btc-x", symbol=BTC, lower=Decimal("900000"), upper=Decimal("1000000"), ttl_ms=3000)
        await Registry(bus).create(grid_record(stuck, "sqt", "test", now_ms()), "add", "test")
        up.wait_for(r"grid:btc-x exited with code 2 .*not restarting it", 60)
        gone = up.sqt("grid", "remove", "btc-x", "--policy", "cancel", "--timeout", "60")
        assert gone.returncode == 0 and "removed" in gone.stdout, (gone.stdout, gone.stderr)
    finally:
        up.stop()


@pytest.mark.e2e
async def test_sigkill_of_the_host_and_of_sqt_up_during_adds_and_removals_leaves_registry_processes_and_venue_agreeing(
    tmp_path: Path, nats_server: EmbeddedServer, bus: Client
) -> None:
    up = Up(tmp_path, nats_server.url)
    try:
        up.start()
        # Kill -9 of the hosting process while it starts an added instance: restarted, it trades.
        assert up.sqt("grid", "add", "--instance", "eth-1", "--symbol", ETH, *WIDE).returncode == 0
        os.kill(child_pid(up, "grid:eth-1"), signal.SIGKILL)
        up.wait_for(r"grid:eth-1 restarted", 30)
        await eventually(lambda: _has_orders(bus, "eth-1", ETH), timeout=60, what="eth-1 trading after its host's SIGKILL")

        # Kill -9 of the hosting process in the middle of a cancel removal: restarted, it finishes.
        assert up.sqt("grid", "remove", "eth-1", "--policy", "cancel", "--no-wait").returncode == 0
        os.kill(latest_pid(up, "grid:eth-1"), signal.SIGKILL)
        await eventually(lambda: _removed(bus, "eth-1"), timeout=90, what="eth-1's removal finished after a SIGKILL in it")
        assert await orders_of(bus, "eth-1", ETH) == []

        # seed-1 holds a position (a long grid with tight levels): flatten it, kill -9 its hosting
        # process in the middle, then `sqt up` itself; a new `sqt up` resumes the removal.
        await eventually(lambda: _long(bus), timeout=120, what="seed-1 to hold a position")
        # Someone else's position on the same market and account: the flattening must leave it.
        theirs = await SimVenue(bus, "sim", "main").create_order(
            OrderRequest(symbol=BTC, client_order_id="manual-1", side="buy", amount=Decimal("0.005"), order_type="market")
        )
        assert theirs.filled == Decimal("0.005")
        assert up.sqt("grid", "remove", "seed-1", "--policy", "flatten", "--no-wait").returncode == 0
        os.kill(latest_pid(up, "grid:seed-1"), signal.SIGKILL)
        up.wait_for(r"grid:seed-1 restarted", 30)
        # And an add just before: the next `sqt up` starts the instance.
        assert up.sqt("grid", "add", "--instance", "eth-2", "--symbol", ETH, *WIDE).returncode == 0
        up.kill9()  # its children die with it (PR_SET_PDEATHSIG)
        table = up.start()
        await eventually(lambda: _removed(bus, "seed-1"), timeout=90, what="seed-1's flatten removal resumed by the next sqt up")
        await eventually(lambda: _has_orders(bus, "eth-2", ETH), timeout=60, what="eth-2 started by the next sqt up")
        assert "grid:eth-2" in table and "grid:eth-1" not in table, table  # seed-1's removal ran in its own
        await eventually(lambda: not alive(table["grid:seed-1"]), timeout=15, what="seed-1's process gone once removed")

        # Kill -9 of `sqt up` during a cancel removal: the next one finishes it.
        assert up.sqt("grid", "add", "--instance", "eth-3", "--symbol", ETH, *WIDE).returncode == 0
        await eventually(lambda: _has_orders(bus, "eth-3", ETH), timeout=60, what="eth-3 trading")
        assert up.sqt("grid", "remove", "eth-2", "--policy", "cancel", "--no-wait").returncode == 0
        up.kill9()
        table = up.start()
        await eventually(lambda: _removed(bus, "eth-2"), timeout=90, what="eth-2's cancel removal resumed by the next sqt up")

        # The invariants: no order of a removed instance rests, the position is closed, every
        # record's last revision is on the log, and exactly the live instances have processes.
        for instance, symbol in (("seed-1", BTC), ("eth-1", ETH), ("eth-2", ETH)):
            assert await orders_of(bus, instance, symbol) == [], instance
        assert await venue_position(bus, BTC) == Decimal("0.005")  # seed-1's closed; the other one's left
        await eventually(lambda: _has_orders(bus, "eth-3", ETH), timeout=60, what="eth-3 trading after the restarts")
        records = {r.instance: (r, rev) for r, rev in await Registry(bus).records("grid")}
        desired = {i: r.desired for i, (r, _) in records.items()}
        assert desired == {"eth-1": "removed", "eth-2": "removed", "eth-3": "running", "seed-1": "removed"}, desired
        for instance, (_rec, rev) in records.items():
            changes = await _changes(bus, instance)
            assert changes and changes[-1].revision == rev, (instance, [c.revision for c in changes], rev)
        assert "grid:eth-3" in table and "grid:seed-1" not in table and "grid:eth-1" not in table, table
        await eventually(lambda: not alive(table["grid:eth-2"]), timeout=15, what="eth-2's process gone once removed")
    finally:
        up.stop()


async def _removed(bus: Client, instance: str) -> bool:
    got = await Registry(bus).get("grid", instance)
    return got is not None and got[0].phase == "done"


async def _long(bus: Client) -> bool:
    return await venue_position(bus, BTC) > 0
