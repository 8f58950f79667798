"""`sqt up` and friends as a user runs them: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from bus.embedded import ANY_PORT, EmbeddedServer, free_port
from cli.supervisor import GIVEN_UP, Child, Supervisor, keep_alive
from testkit.bus import eventually, login_url
from venues.sim.config import SimConfig
from venues.sim.service import SimService

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(text_source, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(pattern, text_source())
        if m:
            return m
        time.sleep(0.1)
    raise AssertionError(f"no {pattern!r} within {timeout}s in:\n{text_source()}")


@pytest.mark.e2e
def test_sqt_up_runs_everything_shows_market_data_restarts_the_dead_and_stops_clean(tmp_path: Path) -> None:
    port, monitor = free_port(), free_port()
    out_path = tmp_path / "up.out"
    env = {**os.environ, "SQT_DATA_DIR": str(tmp_path / "data"), "SQT_SIM_HISTORY_MINUTES": "30"}
    env.pop("NATS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--nats-port", str(port), "--nats-monitor-port", str(monitor), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=open(out_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        output = lambda: out_path.read_text()  # noqa: E731
        _wait_for(output, r"Ctrl-C stops everything", 30)
        pids = {name: int(pid) for name, pid in re.findall(r"^(\S+)\s+(\d+)\s", output(), re.M)}
        assert {"nats", "sim", "executor", "grid:btc-neutral"} <= set(pids), output()

        async def first_ticker() -> dict:
            nc = await nats.connect(login_url(f"nats://127.0.0.1:{port}", tmp_path / "data" / "nats-auth.env", "operator"))
            sub = await nc.subscribe("md.sim.BTC-USDT-USDT.ticker")
            msg = await sub.next_msg(timeout=15)
            await nc.close()
            return json.loads(msg.data)

        tick = asyncio.run(first_ticker())
        assert tick["type"] == "ticker" and tick["symbol"] == "BTC/USDT:USDT" and float(tick["last"]) > 0

        async def grid_trading() -> dict:
            nc = await nats.connect(login_url(f"nats://127.0.0.1:{port}", tmp_path / "data" / "nats-auth.env", "operator"))
            sub = await nc.subscribe("ops.grid.btc-neutral.state")
            try:
                full, resting = None, False
                while full is None or not resting:  # the grid's own state: running, with orders resting at the exchange
                    state = json.loads((await sub.next_msg(timeout=30)).data)
                    if state["status"] == "running":
                        resting = resting or state["open_orders"] > 0
                        # the whole state rides along on a status change and once a minute (ADR 0024)
                        full = state if state.get("state") else full
                return full
            finally:
                await nc.close()

        state = asyncio.run(grid_trading())
        assert state["state"]["anchor"] and state["levels"]  # the grid's whole state rides along (ADR 0007)

        os.kill(pids["sim"], signal.SIGKILL)  # a component dies: it is restarted, and we are told
        _wait_for(output, r"sim exited with code -9; restarting", 10)
        restarted = _wait_for(output, r"sim restarted \(pid (\d+)\)", 10)
        pids["sim-2"] = int(restarted.group(1))
        asyncio.run(first_ticker())  # market data flows again

        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert time.monotonic() - started < 5.0
        for name, pid in pids.items():
            assert not _alive(pid), f"{name} (pid {pid}) was left behind"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_unreachable_nats_is_a_clear_message_not_a_traceback() -> None:
    env = {**os.environ, "NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    out = subprocess.run([sys.executable, "-m", "cli.main", "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "NATS is not reachable" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.e2e
def test_nothing_outlives_a_kill_9_of_sqt_up(tmp_path: Path) -> None:
    port, monitor = free_port(), free_port()
    out_path = tmp_path / "up.out"
    env = {**os.environ, "SQT_DATA_DIR": str(tmp_path / "data"), "SQT_SIM_HISTORY_MINUTES": "5"}
    env.pop("NATS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "up", "--nats-port", str(port), "--nats-monitor-port", str(monitor), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=open(out_path, "wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(lambda: out_path.read_text(), r"Ctrl-C stops everything", 30)
        pids = [int(pid) for _name, pid in re.findall(r"^(\S+)\s+(\d+)\s", out_path.read_text(), re.M)]
        assert len(pids) >= 4
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "children outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.e2e
async def test_a_grid_too_small_for_the_market_exits_2_naming_the_key(bus: Client, nats_server: EmbeddedServer, tmp_path: Path) -> None:
    """The market minimums are only known from the venue: the check runs at start, against it."""
    service = SimService(bus, SimConfig(clock="lockstep", start_time_ms=1_700_000_000_000, history_minutes=5, seed=3))
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await eventually(lambda: service.service is not None, what="the simulated exchange to register")
        config = tmp_path / "grid.toml"
        config.write_text(
            "[[grids]]\ninstance = 'tiny'\nvenue = 'sim'\nsymbol = 'BTC/USDT:USDT'\nmode = 'neutral'\n"
            "levels = 3\nspacing = '0.001'\nnotional = '1'\nmax_open_orders = 6\n"
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "--config",
            str(config),
            "run",
            "grid",
            cwd=ROOT,
            env={**os.environ, "NATS_URL": nats_server.url, "SQT_DATA_DIR": str(tmp_path / "data")},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        text = out.decode()
        assert proc.returncode == 2, text
        assert "notional 1 buys less than the market minimum" in text and "Traceback" not in text
    finally:
        stop.set()
        await task


def test_the_supervisor_restarts_a_dead_nats_server_on_the_same_ports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=tmp_path / "nats.log")
    server.start()
    supervisor = Supervisor([], server)
    assert supervisor.server is not None
    try:
        first, port = server.process.pid if server.process else 0, server.port
        server.kill()
        now = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="sqt.up"):
            keep_alive(supervisor.server, now)  # notices the death, schedules the restart
            keep_alive(supervisor.server, now + 60)  # the restart is due
        assert server.alive and server.process is not None and server.process.pid != first and server.port == port
        assert "nats-server exited (code -9); restarting" in caplog.text
        assert f"nats-server restarted (pid {server.process.pid})" in caplog.text
        assert supervisor.server.may_restart(2)  # unlike a component: the bus is never given up on
    finally:
        server.stop()


def test_a_component_that_exits_2_is_not_restarted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    child = Child("grid:x", [sys.executable, "-c", "raise SystemExit(2)"], tmp_path / "grid.log", "a grid", env=dict(os.environ))
    child.launch()
    assert child.proc is not None and child.proc.wait(30) == 2
    with caplog.at_level(logging.ERROR, logger="sqt.up"):
        keep_alive(child, time.monotonic())
        keep_alive(child, time.monotonic() + 3600)
    assert child.next_start == GIVEN_UP and child.restarts == 0
    assert "grid:x exited with code 2" in caplog.text and "not restarting it" in caplog.text
