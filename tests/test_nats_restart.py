"""The bus dies under a running system: nats-server is killed with SIGKILL and comes back.

`sqt up` restarts its nats-server and trading goes on with no order placed twice, a stop while
the server is down is quiet, and each component, live when the server dies, resumes its work.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.connection import connect
from bus.embedded import EmbeddedServer, free_port
from bus.reader import read_stream
from schemas import subjects
from schemas.codec import encode
from testkit.bus import eventually, login_url
from testkit.events import place, ticker

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "BTC/USDT:USDT"
INSTANCE = "restart"
CONFIG = f"""
data_dir = "{{data}}"

[sim]
clock = "realtime"
tick_ms = {{tick_ms}}
seed = 5
history_minutes = 5

[[sim.markets]]
symbol = "{SYMBOL}"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
volatility = "0.0006"
tick_volume = "0.2"

[executor]
request_timeout = 2.0

[[grids]]
instance = "{INSTANCE}"
symbol = "{SYMBOL}"
mode = "neutral"
levels = 4
spacing = "0.0005"
notional = "150"
trail_levels = 2
max_open_orders = 12
"""
FILLS = subjects.acct("sim", "main", SYMBOL, "fill")
ORDERS = subjects.acct("sim", "main", SYMBOL, "order")
SHIPPED_TICK_MS = 500  # configs/sqt.toml: what `sqt up` runs
BUSY_TICK_MS = 100  # a component test keeps the exchange's journal busy


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def tracebacks(texts: dict[str, str]) -> list[str]:
    return [name for name, text in texts.items() if "Traceback" in text]


async def last_seq(nc: Client, stream: str, subject: str | None = None) -> int:
    """The stream's last sequence, or of its last message on `subject`; 0 if none (or not yet back)."""
    js = nc.jetstream(timeout=2.0)
    try:
        if subject is None:
            return int((await js.stream_info(stream)).state.last_seq)
        return int((await js.get_last_msg(stream, subject)).seq)
    except (NotFoundError, asyncio.TimeoutError):
        return 0
    except Exception:  # noqa: BLE001 - JetStream still recovering its store after the restart
        return 0


async def ack_floor(nc: Client, stream: str, durable: str) -> int:
    try:
        info = await nc.jetstream(timeout=2.0).consumer_info(stream, durable)
    except Exception:  # noqa: BLE001 - not created yet, or being recreated by its session
        return 0
    return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0


async def order_events(nc: Client, after_seq: int = 0) -> list[dict]:
    """The order events in ACCOUNT stored after `after_seq`."""
    if await last_seq(nc, "ACCOUNT") <= after_seq:
        return []
    events = []
    async for batch in read_stream(nc, "ACCOUNT", start_seq=after_seq + 1, subjects=(ORDERS,)):
        events += [json.loads(msg.data) for msg in batch]
    return events


async def orders_by_client_id(nc: Client) -> dict[str, set[str]]:
    """Every order id the venue reported for each client order id."""
    out: dict[str, set[str]] = defaultdict(set)
    for event in await order_events(nc):
        if event.get("order_id"):
            out[event["client_order_id"]].add(event["order_id"])
    return out


async def venue_answers(nc: Client) -> bool:
    """The simulated exchange answers a request (not "recovering", not absent)."""
    try:
        msg = await nc.request(subjects.venue_api("sim", "time"), b"{}", timeout=2)
    except Exception:  # noqa: BLE001 - no responders, timeout: not answering
        return False
    return not (msg.headers or {}).get("Nats-Service-Error-Code")


async def restart_under(server: EmbeddedServer, nc: Client) -> None:
    """SIGKILL the server, start it again on the same ports, wait until `nc` is back."""
    server.kill()
    await eventually(lambda: not nc.is_connected, what="the client to notice the server is gone")
    server.start()
    await eventually(lambda: nc.is_connected, timeout=30, what="the client to reconnect")


# ------------------------------------------------------------------ sqt up


@dataclass
class SqtUp:
    """`sqt up` as an operator runs it, on free ports, its output in a file."""

    workdir: Path
    port: int = field(default_factory=free_port)
    monitor: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def out_path(self) -> Path:
        return self.workdir / "up.out"

    @property
    def url(self) -> str:
        """With the admin's login once `sqt up` has written the passwords (its users are on)."""
        plain = f"nats://127.0.0.1:{self.port}"
        credentials = self.workdir / "data" / "nats-auth.env"
        return login_url(plain, credentials) if credentials.exists() else plain

    def start(self, *flags: str) -> None:
        config = self.workdir / "sqt.toml"
        config.write_text(CONFIG.format(data=self.workdir / "data", tick_ms=SHIPPED_TICK_MS))
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("SQT_")}
        argv = [sys.executable, "-m", "cli.main", "--config", str(config), "up"]
        argv += ["--nats-port", str(self.port), "--nats-monitor-port", str(self.monitor), *flags]
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out_path.read_text()

    async def wait_for(self, pattern: str, timeout: float = 30, after: int = 0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            m = re.compile(pattern, re.M).search(self.output(), after)
            found[:] = [m] if m else []
            return bool(m)

        await eventually(seen, timeout=timeout, interval=0.1, what=f"{pattern!r} in the output of sqt up")
        return found[0]

    def pids(self) -> dict[str, int]:
        """Every process sqt up said it started: the table, then each restart."""
        text = self.output()
        pids = {f"{name}": int(pid) for name, pid in re.findall(r"^(\S+)\s+(\d+)\s", text, re.M)}
        for n, (name, pid) in enumerate(re.findall(r"(\S+) restarted \(pid (\d+)\)", text)):
            pids[f"{name}#{n}"] = int(pid)
        return pids

    def logs(self) -> dict[str, str]:
        logs = {p.name: p.read_text(errors="replace") for p in (self.workdir / "data" / "logs").glob("*.log")}
        return {"sqt up": self.output(), **logs}

    async def interrupt(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return await asyncio.to_thread(self.proc.wait, 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
async def sqt_up(tmp_path: Path) -> AsyncIterator[SqtUp]:
    up = SqtUp(tmp_path)
    yield up
    up.kill()


async def grid_resting_orders(url: str) -> None:
    """Wait until the grid says it runs with orders resting at the exchange: every component is live."""
    nc = await connect(url, name="pytest-grid-state", attempts=10)
    try:
        sub = await nc.subscribe(subjects.ops("grid", INSTANCE, "state"))
        while True:
            state = json.loads((await sub.next_msg(timeout=60)).data)
            if state["status"] == "running" and state["open_orders"] > 0:
                return
    finally:
        await nc.close()


@pytest.mark.e2e
async def test_sqt_up_restarts_a_killed_nats_server_and_trading_goes_on_without_an_order_placed_twice(sqt_up: SqtUp) -> None:
    sqt_up.start()  # with the status line: it must survive the outage too
    await sqt_up.wait_for(r"Ctrl-C stops everything")
    nc = await connect(sqt_up.url, name="pytest", attempts=10)
    try:
        await eventually(lambda: last_seq(nc, "ACCOUNT", FILLS), timeout=120, interval=0.2, what="a first fill")
        fills, commands, account = await last_seq(nc, "ACCOUNT", FILLS), await last_seq(nc, "COMMAND"), await last_seq(nc, "ACCOUNT")

        os.kill(sqt_up.pids()["nats"], signal.SIGKILL)
        exited = await sqt_up.wait_for(r"nats-server exited \(code -9\); restarting")
        await sqt_up.wait_for(r"nats-server restarted \(pid \d+\)", after=exited.end())
        await sqt_up.wait_for(r"^\[\d\d:\d\d:\d\d\] BTC/USDT:USDT .*MARKET [\d,]+", after=exited.end())  # the status line
        await eventually(lambda: nc.is_connected, timeout=30, what="the test's client to reconnect")

        async def trading_again() -> bool:  # the grid decides, the executor places, the exchange fills
            if await last_seq(nc, "ACCOUNT", FILLS) <= fills or await last_seq(nc, "COMMAND") <= commands:
                return False
            return any(e["status"] == "open" for e in await order_events(nc, after_seq=account))

        await eventually(trading_again, timeout=120, interval=0.5, what="new commands, orders and fills after the restart")
        twice = {cid: ids for cid, ids in (await orders_by_client_id(nc)).items() if len(ids) > 1}
        assert not twice, f"client order ids that became two orders: {twice}"
    finally:
        await nc.close()
    assert sqt_up.output().count("nats-server exited") == 1, sqt_up.output()[-3000:]  # said once, not once per check

    pids = sqt_up.pids()
    code = await sqt_up.interrupt()
    assert code == 0, sqt_up.output()[-3000:]
    texts = sqt_up.logs()
    assert not tracebacks(texts), {name: texts[name][-3000:] for name in tracebacks(texts)}
    assert "did not stop within" not in texts["sqt up"]  # nobody needed SIGKILL
    assert not [name for name, pid in pids.items() if alive(pid)], "processes left behind"


@pytest.mark.e2e
async def test_a_stop_while_the_nats_server_is_down_is_quiet_and_leaves_nothing_running(sqt_up: SqtUp) -> None:
    sqt_up.start("--quiet")
    await sqt_up.wait_for(r"Ctrl-C stops everything")
    await grid_resting_orders(sqt_up.url)
    assert sqt_up.proc is not None
    pids = sqt_up.pids()

    # Keep the server down: kill it while sqt up is frozen, and take its monitoring port before
    # sqt up can, so every restart fails with "port in use" while clients find nothing on theirs.
    os.kill(sqt_up.proc.pid, signal.SIGSTOP)
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(pids["nats"], signal.SIGKILL)

        def take_port() -> bool:
            try:
                holder.bind(("127.0.0.1", sqt_up.monitor))
            except OSError:
                return False  # the killed server's socket is not closed yet
            return True

        await eventually(take_port, what="the killed server's monitoring port")
        holder.listen()
        os.kill(sqt_up.proc.pid, signal.SIGCONT)
        await sqt_up.wait_for(r"nats-server could not be restarted \(port \d+ \(monitoring port.* already in use")
        code = await sqt_up.interrupt()
        assert code == 0, sqt_up.output()[-3000:]
    finally:
        holder.close()
    texts = sqt_up.logs()
    assert not tracebacks(texts), {name: texts[name][-3000:] for name in tracebacks(texts)}
    assert "did not stop within" not in texts["sqt up"]  # every component left within the grace period
    assert not [name for name, pid in pids.items() if alive(pid)], "processes left behind"


# ------------------------------------------------------------------ each component on its own


@dataclass
class Case:
    """A component under test: the processes it needs, what keeps it busy, where its progress shows."""

    processes: tuple[str, ...]  # `sqt run <name>` (the last one is the component under test), or the sum consumer
    stream: str
    durable: str
    feed: Callable[[Client, int], Awaitable[None]] | None = None  # publishes input number i
    serves: Callable[[Client], Awaitable[bool]] | None = None  # and it answers requests again


async def feed_ticker(nc: Client, i: int) -> None:
    event = ticker("100", ts=1_700_000_000_000 + i, symbol="BTC/USDT")
    await nc.publish(subjects.md("sim", "BTC/USDT", "ticker"), encode(event), headers={"Nats-Msg-Id": event.id})


async def feed_place(nc: Client, i: int) -> None:
    """A resting buy well below the market, with a client order id of its own."""
    cmd = place(client_order_id=f"restart{i}", price="50000", amount="0.001", ts=int(time.time() * 1000))
    await nc.publish(subjects.cmd("sim", "main", SYMBOL, "place"), encode(cmd), headers={"Nats-Msg-Id": cmd.id})


CASES = {
    "consumer runtime": Case(("sum",), "MARKET", "sum", feed_ticker),
    "simulated exchange": Case(("sim",), "VENUE_SIM", "venue-sim", serves=venue_answers),  # its realtime clock keeps it busy
    "executor": Case(("sim", "executor"), "COMMAND", "executor-sim-main", feed_place),
    "grid": Case(("sim", "executor", "grid"), f"IN_GRID_{INSTANCE.upper()}", f"grid-{INSTANCE}"),  # fed by the exchange
}
PARAMS = list(CASES)  # the exchange ticks faster than every 250 ms: it never sees an empty pull


def start_component(name: str, server: EmbeddedServer, workdir: Path) -> subprocess.Popen[bytes]:
    config = workdir / "sqt.toml"
    if not config.exists():
        config.write_text(CONFIG.format(data=workdir / "data", tick_ms=BUSY_TICK_MS))
    if name == "sum":
        argv = [sys.executable, "-m", "testkit.sum_consumer", server.url]
    else:
        argv = [sys.executable, "-m", "cli.main", "--config", str(config), "run", name]
        argv += ["--instance", INSTANCE] if name == "grid" else []
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SQT_")}, "NATS_URL": server.url}
    with open(workdir / f"{name}.log", "ab") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.e2e
@pytest.mark.parametrize("component", PARAMS)
async def test_a_live_component_keeps_making_progress_after_nats_server_is_killed_and_restarted_under_it(
    component: str, bus: Client, nats_server: EmbeddedServer, tmp_path: Path
) -> None:
    case = CASES[component]
    procs = {name: start_component(name, nats_server, tmp_path) for name in case.processes}

    async def feed() -> None:  # core publishes: buffered by the client while the server is down
        i = 0
        while case.feed is not None:
            i += 1
            await case.feed(bus, i)
            await asyncio.sleep(0.05)  # pacing the input, not waiting for anything

    feeding = asyncio.create_task(feed())
    try:
        await eventually(lambda: ack_floor(bus, case.stream, case.durable), timeout=90, interval=0.2, what=f"{component} to be live")
        await restart_under(nats_server, bus)
        await eventually(lambda: last_seq(bus, case.stream), timeout=30, interval=0.2, what="JetStream back with the input stream")
        stored_after_restart = await last_seq(bus, case.stream)

        async def progressed() -> bool:  # it acked an input that was only stored after the restart
            if await ack_floor(bus, case.stream, case.durable) <= stored_after_restart:
                return False
            return case.serves is None or await case.serves(bus)

        await eventually(progressed, timeout=45, interval=0.2, what=f"{component} to make progress after the restart")
    finally:
        feeding.cancel()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(proc.wait, 30) for name, proc in procs.items()}
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace") for name in procs}
    assert codes == dict.fromkeys(procs, 0), logs
    assert not tracebacks(logs), logs
