"""`sqt up` on a test's nats-server, with grids added and removed at runtime (`sqt grid ...`),
and what the venue says about an instance's orders and position."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from nats.aio.client import Client

from bus.embedded import free_port
from strategies.grid.lattice import client_prefix
from testkit.processes import ROOT, clean_env
from venues.sim.client import SimVenue

CONFIG = """
data_dir = "{data}"
[nats]
url = "{url}"
[sim]
tick_ms = 100
history_minutes = 5
[gateway]
port = {gateway}
[archive]
metrics_port = 0
{extra}
[[grids]]
instance = "seed-1"
symbol = "BTC/USDT:USDT"
mode = "long"
levels = 3
spacing = "0.0005"
notional = 100
max_open_orders = 10
ttl_ms = 3000
"""


class Up:
    """`sqt up --quiet` as a real process; its table's pids; `sqt` commands on the same config."""

    def __init__(self, workdir: Path, url: str, extra: str = "") -> None:
        self.workdir = workdir
        self.url = url
        self.config = workdir / "sqt.toml"
        self.config.write_text(CONFIG.format(data=workdir / "data", url=url, gateway=free_port(), extra=extra))
        self.out = workdir / "up.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> dict[str, int]:
        self.starts += 1
        mark = len(self.output())
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "--config", str(self.config), "up", "--quiet"],
                cwd=ROOT,
                env=clean_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(r"Ctrl-C stops everything", 60, since=mark)
        return self.pids(since=mark)

    def output(self) -> str:
        return self.out.read_text() if self.out.exists() else ""

    def wait_for(self, pattern: str, timeout: float, since: int = 0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.output()[since:])
            if m:
                return m
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout}s in:\n{self.output()[since:]}")

    def pids(self, since: int = 0) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"^(\S+)\s+(\d+)\s", self.output()[since:], re.M)}

    def sqt(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "cli.main", "--config", str(self.config), *args]
        return subprocess.run(argv, cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=timeout)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def child_pid(up: Up, name: str, timeout: float = 30) -> int:
    """The pid of a child `sqt up` started (or restarted) after the table, from its log lines."""
    m = up.wait_for(rf"{re.escape(name)} (?:added from the registry .*?: started, pid|restarted \(pid) (\d+)", timeout)
    return int(m.group(1))


def latest_pid(up: Up, name: str) -> int:
    """The pid of the newest process `sqt up` runs as `name` (its table, an add, a restart)."""
    found = re.findall(
        rf"^{re.escape(name)}\s+(\d+)\s|{re.escape(name)} (?:added from the registry .*?: started, pid|restarted \(pid) (\d+)",
        up.output(),
        re.M,
    )
    assert found, f"no process {name} in:\n{up.output()}"
    a, b = found[-1]
    return int(a or b)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def orders_of(nc: Client, instance: str, symbol: str) -> list[str]:
    """The client ids of the instance's orders open at the simulated venue."""
    venue = SimVenue(nc, "sim", "main", timeout=5.0)
    prefix = client_prefix(instance)
    return [o.client_order_id for o in await venue.fetch_open_orders(symbol) if o.client_order_id.startswith(prefix)]


async def venue_position(nc: Client, symbol: str) -> Decimal:
    venue = SimVenue(nc, "sim", "main", timeout=5.0)
    out = Decimal(0)
    for p in await venue.fetch_positions([symbol]):
        if p.symbol == symbol:
            out += p.contracts if p.side == "long" else -p.contracts
    return out
