"""The dashboard shows only what the components export, Prometheus scrapes every component, and
`/health` turns 503 when NATS goes away: the real sim, executor, grid and gateway as processes
against a real nats-server, scraped over HTTP (docs/adr/0015)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bus.connection import connect
from cli.status import services
from testkit.bus import eventually, start_server

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "configs" / "dashboards" / "opensqt.json"
PROMETHEUS = ROOT / "configs" / "prometheus.yml"

# Metrics the monitors export; a name is required of them once their package serves metrics.
# Their ports, reserved in configs/prometheus.yml before their config sections exist.
REAL_VENUE_METRICS = ("sqt_publisher_", "sqt_venue_")  # exported by processes on a ccxt venue
RESERVED_PORTS = {"risk": 9103, "reconciler": 9104, "alerts": 9105, "publisher": 9106}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless", "inf", "nan"}
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, keywords, labels and durations removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = m.group(0), text[m.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an aggregation, not a metric
        names.add(word)
    return names


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (verb, le) (rate(sqt_a_seconds_bucket{x="y"}[5m])))') == {"sqt_a_seconds_bucket"}
    assert metric_names("max by (scope, state) (sqt_risk_breaker_state) == 1") == {"sqt_risk_breaker_state"}
    assert metric_names('sum(increase(sqt_b_total{reason="breaker_open"}[5m])) / on(job) group_left sqt_c') == {"sqt_b_total", "sqt_c"}


def dashboard_names() -> dict[str, str]:
    """Every metric name in every panel's expressions, with the title of a panel that reads it."""
    out: dict[str, str] = {}

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                for name in metric_names(t["expr"]):
                    out.setdefault(name, p["title"])

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return out


def test_the_dashboard_is_a_grafana_dashboard_on_a_templated_prometheus() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["schemaVersion"] >= 36
    assert [v["type"] for v in dash["templating"]["list"]] == ["datasource"]
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    assert all(p["targets"] and all(t["expr"] for t in p["targets"]) for p in panels)


def config_ports() -> dict[str, int]:
    """The port of every component configs/sqt.toml gives one (any `metrics_port`, the gateway's port)."""
    raw = tomllib.loads((ROOT / "configs" / "sqt.toml").read_text())
    ports: dict[str, int] = {}
    for section, table in raw.items():
        if isinstance(table, dict) and table.get("metrics_port"):
            ports[section] = int(table["metrics_port"])
    for section in ("grids", "arbitrages", "executors", "publishers", "sims"):  # lists of tables: one port each
        for i, table in enumerate(raw.get(section, [])):
            if table.get("metrics_port"):
                name = table.get("instance") or f"{table.get('venue')}-{table.get('account', i)}"
                ports[f"{section.rstrip('s')}:{name}"] = int(table["metrics_port"])
    ports["gateway"] = int(raw.get("gateway", {}).get("port", 8081))
    return ports


def prometheus_ports() -> set[int]:
    """The ports of every scrape target (`targets: ["host:port", ...]`; no YAML library needed)."""
    targets = re.findall(r"^\s*-?\s*targets:\s*\[([^\]]*)\]", PROMETHEUS.read_text(), re.M)
    return {int(t.strip().strip("'\"").rsplit(":", 1)[1]) for line in targets for t in line.split(",") if t.strip()}


def test_prometheus_scrapes_every_component_the_config_gives_a_port() -> None:
    ports = config_ports()
    assert {"sim", "executor", "gateway", "grid:btc-neutral"} <= set(ports)
    missing = {name: port for name, port in {**RESERVED_PORTS, **ports}.items() if port not in prometheus_ports()}
    assert not missing, f"configs/prometheus.yml has no target for {missing}"
    assert len(set(ports.values())) == len(ports), f"two components share a port: {ports}"


# ----------------------------------------------------------------------------- live


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CONFIG = """
data_dir = "{data}"
log_level = "INFO"

[nats]
url = "{url}"

[sim]
tick_ms = 100
history_minutes = 5
metrics_port = {sim}

[executor]
metrics_port = {executor}

[gateway]
port = {gateway}

[risk]
metrics_port = {risk}

[reconciler]
metrics_port = {reconciler}

[alerts]
metrics_port = {alerts}

[[grids]]
instance = "dash"
symbol = "BTC/USDT:USDT"
levels = 3
spacing = "0.0002"
notional = "200"
max_open_orders = 12
metrics_port = {grid}
"""


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = start_server(workdir)
        names = ("sim", "executor", "gateway", "grid", "risk", "reconciler", "alerts")
        self.ports = {name: free_port() for name in names}
        self.config = workdir / "sqt.toml"
        self.config.write_text(CONFIG.format(data=workdir / "data", url=self.server.url, **self.ports))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NATS_URL" and not k.startswith("SQT_")}
        for name in self.ports:
            extra = ["--instance", "dash"] if name == "grid" else []
            argv = [sys.executable, "-m", "cli.main", "--config", str(self.config), "run", name, *extra]
            with open(self.workdir / f"{name}.out", "wb") as out:
                self.procs[name] = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.workdir.glob("*.out")))

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.server.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    try:
        yield s
    finally:
        s.stop()


async def get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    try:
        async with session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status, await r.text()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return 0, ""


def exported(text: str) -> set[str]:
    """Names of every family (# TYPE lines, even without samples yet) and sample in an exposition."""
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    names |= {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return names


def served_by(name: str, names: set[str]) -> bool:
    if name in names:
        return True
    return any(name.endswith(s) and name[: -len(s)] in names for s in _SUFFIXES) or any(name + s in names for s in _SUFFIXES)


async def test_every_metric_on_the_dashboard_is_exported_by_a_live_component_and_health_follows_nats(stack: Stack) -> None:
    stack.start()
    async with aiohttp.ClientSession() as session:
        scraped: dict[str, set[str]] = {}

        async def all_scraped() -> bool:
            for name, port in stack.ports.items():
                status, text = await get(session, port, "/metrics")
                if status == 200:
                    scraped[name] = exported(text)
            # wait until the grid has traded through the executor: its latency histogram has samples
            return len(scraped) == len(stack.ports) and "sqt_executor_command_to_venue_seconds_count" in scraped["executor"]

        async def poll(check: Any, timeout: float, what: str) -> None:
            deadline = asyncio.get_running_loop().time() + timeout
            while not await check():
                dead = [n for n, p in stack.procs.items() if p.poll() is not None]
                if dead or asyncio.get_running_loop().time() > deadline:
                    pytest.fail(f"{what} did not happen ({', '.join(dead) or 'all alive'}; {timeout}s)\n{stack.logs()}")
                await asyncio.sleep(0.5)

        await poll(all_scraped, 90, "every component serving /metrics, the executor having placed orders")
        everything = set().union(*scraped.values())
        # Real venues' metrics are checked where they run: tests/test_publisher_cli.py, tests/test_ccxt_end_to_end.py.
        missing = {
            name: title
            for name, title in sorted(dashboard_names().items())
            if not name.startswith(REAL_VENUE_METRICS) and not served_by(name, everything)
        }
        assert not missing, f"dashboard panels query metrics no component exports: {missing}"

        for name, port in stack.ports.items():
            status, body = await get(session, port, "/status")
            assert status == 200 and json.loads(body), name
            status, body = await get(session, port, "/health")
            assert status == 200, f"{name}: {body}"

        # Each says where its HTTP face is in its micro service, so `sqt status` can ask it.
        nc = await connect(stack.server.url, name="dashboard-test")
        try:
            advertised = {s["metadata"].get("component"): s["metadata"].get("http") for s in await services(nc)}
        finally:
            await nc.close()
        assert advertised == {name: f"127.0.0.1:{port}" for name, port in stack.ports.items()}, advertised

        # NATS goes away: every component says so on /health (the gateway, on its own port, too).
        stack.server.stop()

        async def all_unhealthy() -> bool:
            return all([(await get(session, port, "/health"))[0] == 503 for port in stack.ports.values()])

        await poll(all_unhealthy, 30, "/health answering 503 on every component with NATS stopped")
        status, body = await get(session, stack.ports["sim"], "/health")
        assert "down" in json.loads(body)["problems"][0]


async def test_sqt_status_shows_each_component_with_its_micro_service_and_http_health(stack: Stack) -> None:
    stack.start()

    async def listed() -> bool:
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cli.main", "--config", str(stack.config), "status"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        table = out.stdout
        return all(re.search(rf"^{c}\s.*\byes\b.*\bok\b", table, re.M) for c in ("sim", "executor", "gateway", "grid"))

    await eventually(listed, timeout=60, interval=1.0, what="sqt status listing every component, answering, healthy")
