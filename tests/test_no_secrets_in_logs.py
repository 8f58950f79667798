"""Real components (`sqt run sim`, `executor`, `gateway`, `grid`) with secrets in their
environment, JSON logs at DEBUG: they trade, serve and refuse, and then every line each wrote
to stderr is one JSON object with the fields of bus/log.py, and no byte of any output holds a
secret. One secret is even handed to the executor as a client order id, which it logs when it
refuses the order: the line is there, masked."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.embedded import EmbeddedServer, free_port
from bus.reader import read_stream
from schemas import subjects
from schemas.codec import encode
from strategies.grid.lattice import client_prefix
from testkit.bus import eventually
from testkit.events import place
from testkit.processes import ROOT, clean_env

pytestmark = pytest.mark.e2e

SYMBOL = "BTC/USDT:USDT"
INSTANCE = "logs"
NATS_PASSWORD = "NatsPassw0rdThatMustNotLeak"  # letters and digits: it is also a client order id below
OPERATOR = "operator-token-0123456789abcdef"
VIEWER = "viewer-token-fedcba9876543210xyz"
SECRETS = {
    "SQT_GATEWAY_TOKENS": f"alice=operator:{OPERATOR},bob=viewer:{VIEWER}",
    "SQT_SLACK_WEBHOOK_URL": "https://hooks.example/secret-value-123",
    "SQT_BINANCEUSDM_API_KEY": "K3yThatMustNotLeak0001",
    "SQT_BINANCEUSDM_SECRET": "S3cretThatMustNotLeak0002",
    "SQT_NATS_PASSWORD": NATS_PASSWORD,
}
# Whole values, and the parts one could leak on its own (a token of the list; the webhook's path).
LEAKS = [*SECRETS.values(), OPERATOR, VIEWER, "secret-value-123"]
FIELDS = {"time", "level", "component", "instance", "logger", "event", "ids"}
ORDERS = subjects.acct("sim", "main", SYMBOL, "order")
FILLS = subjects.acct("sim", "main", SYMBOL, "fill")
COMPONENTS = {"sim": ("sim", None), "executor": ("executor", None), "gateway": ("gateway", None), "grid": ("grid", INSTANCE)}

CONFIG = f"""
data_dir = "{{data}}"
log_format = "json"

[nats]
url = "{{url}}"

[sim]
clock = "realtime"
tick_ms = 100
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

[gateway]
port = {{gateway}}
auth = "tokens"

[[grids]]
instance = "{INSTANCE}"
symbol = "{SYMBOL}"
mode = "neutral"
levels = 4
spacing = "0.0005"
notional = "150"
max_open_orders = 12
"""


class Logs:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def err(self, name: str) -> bytes:
        path = self.workdir / f"{name}.err"
        return path.read_bytes() if path.exists() else b""

    def out(self, name: str) -> bytes:
        path = self.workdir / f"{name}.out"
        return path.read_bytes() if path.exists() else b""

    def events(self, name: str) -> list[str]:
        """The events of the complete lines so far (a line being written is not parsed yet)."""
        complete = self.err(name).rpartition(b"\n")[0]
        found = []
        for raw in complete.splitlines():
            try:
                found.append(str(json.loads(raw).get("event", "")))
            except ValueError:
                found.append(raw.decode(errors="replace"))  # the final assertions name it
        return found

    def logged(self, name: str, text: str) -> bool:
        return any(text in event for event in self.events(name))


async def stored(nc: Client, stream: str, subject: str) -> bool:
    try:
        await nc.jetstream(timeout=2.0).get_last_msg(stream, subject)
    except (NotFoundError, asyncio.TimeoutError):
        return False
    return True


async def grid_placed(nc: Client) -> bool:
    """The venue reported an order of the grid's (its client order ids start with its prefix)."""
    if not await stored(nc, "ACCOUNT", ORDERS):
        return False
    async for batch in read_stream(nc, "ACCOUNT", subjects=(ORDERS,)):
        if any(json.loads(msg.data)["client_order_id"].startswith(client_prefix(INSTANCE)) for msg in batch):
            return True
    return False


async def send(nc: Client, client_order_id: str, ts: int, **kw: object) -> None:
    cmd = place(client_order_id=client_order_id, ts=ts, origin=f"grid/{INSTANCE}", **kw)  # type: ignore[arg-type]
    await nc.publish(subjects.cmd("sim", "main", SYMBOL, "place"), encode(cmd), headers={"Nats-Msg-Id": cmd.id})


@pytest.mark.timeout(120)
async def test_components_log_json_lines_and_never_a_secret(bus: Client, nats_server: EmbeddedServer, tmp_path: Path) -> None:
    gateway = free_port()
    url = nats_server.url.replace("nats://", f"nats://sqt:{NATS_PASSWORD}@", 1)  # a URL with credentials in the config
    config = tmp_path / "sqt.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data", url=url, gateway=gateway))
    env = clean_env({**SECRETS, "SQT_LOG_FORMAT": "json", "SQT_LOG_LEVEL": "DEBUG"})
    logs = Logs(tmp_path)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in COMPONENTS:
        argv = [sys.executable, "-m", "cli.main", "--config", str(config), "run", name]
        argv += ["--instance", INSTANCE] if name == "grid" else []
        with open(tmp_path / f"{name}.out", "wb") as out, open(tmp_path / f"{name}.err", "wb") as err:
            procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=err)
    try:
        now = int(time.time() * 1000)
        await send(bus, "market1", now, order_type="market", price=None, amount="0.001", ttl_ms=120_000)  # fills on arrival
        await send(bus, NATS_PASSWORD, 1_700_000_000_000)  # long expired: the executor logs its client order id
        await eventually(lambda: stored(bus, "ACCOUNT", FILLS), 60, 0.1, "a fill")
        await eventually(lambda: logs.logged("executor", "refusing client_id=***: "), 30, 0.1, "the executor's refusal, masked")
        await eventually(lambda: logs.logged("gateway", "gateway: serving"), 30, 0.1, "the gateway")
        async with aiohttp.ClientSession(f"http://127.0.0.1:{gateway}") as http:
            for token in (OPERATOR, VIEWER, "not-a-token-at-all-0000"):
                async with http.get("/api/markets", headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == (401 if token.startswith("not") else 200)
            async with http.ws_connect(f"/ws?token={OPERATOR}") as ws:
                await ws.send_json({"type": "bad"})
                await ws.receive(timeout=10)
        await eventually(lambda: grid_placed(bus), 30, 0.2, "an order of the grid at the venue")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {name: await asyncio.to_thread(proc.wait, 30) for name, proc in procs.items()}

    assert codes == dict.fromkeys(procs, 0), {name: logs.err(name)[-3000:] for name in procs}
    for name, (component, instance) in COMPONENTS.items():
        raw = logs.err(name)
        assert raw.endswith(b"\n"), name
        for line in raw.splitlines():
            record = json.loads(line)  # every line is one JSON object
            assert FIELDS <= set(record), (name, line)
            assert (record["component"], record["instance"]) == (component, instance), (name, line)
            assert isinstance(record["ids"], dict) and isinstance(record["event"], str), (name, line)
            assert record["level"] in ("DEBUG", "INFO", "WARNING"), (name, line)  # nothing went wrong
        for leak in LEAKS:
            assert leak.encode() not in raw, f"{name}'s stderr holds a secret"
            assert leak.encode() not in logs.out(name), f"{name}'s stdout holds a secret"
    refusal = next(json.loads(line) for line in logs.err("executor").splitlines() if b"refusing client_id=" in line)
    assert refusal["ids"] == {"client_id": "***"}  # the id the line is about, masked like the rest
