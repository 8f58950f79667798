"""`sqt run publisher` as a real process: a venue's market data on the bus from the command line,
against the local Binance USD-M (testkit/binance_stream.py) through ccxt's real clients."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Sized
from pathlib import Path

import aiohttp
import pytest
from nats.aio.client import Client

from bus.embedded import EmbeddedServer, free_port
from bus.reader import read_stream
from schemas.codec import decode
from schemas.market import Candle
from testkit.binance_stream import SYMBOL, FakeBinance
from testkit.bus import eventually
from testkit.processes import ROOT, clean_env
from tests.test_dashboard import dashboard_names, exported, get, served_by

pytestmark = pytest.mark.e2e

CONFIG = """
data_dir = "{data}"
[nats]
url = "{url}"
[venues.binanceusdm]
rest_url = "{rest}"
ws_url = "{ws}"
markets_file = "{markets}"
[[publishers]]
venue = "binanceusdm"
symbols = ["BTC/USDT:USDT"]
metrics_port = {port}
"""


@pytest.fixture
async def venue() -> AsyncIterator[FakeBinance]:
    server = FakeBinance(minute_s=0.2)
    await server.start()
    yield server
    await server.stop()


def sqt(config: Path, *args: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "cli.main", "--config", str(config), "run", "publisher", *args]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=ROOT, env=clean_env(), stdout=out, stderr=subprocess.STDOUT)


async def closed_candles(nc: Client) -> list[Candle]:
    out: list[Candle] = []
    async for batch in read_stream(nc, "MARKET", subjects=("md.binanceusdm.>",)):
        out += [e for e in (decode(m.data) for m in batch) if isinstance(e, Candle) and e.closed]
    return out


async def test_sqt_run_publisher_puts_a_venues_candles_on_the_bus_and_stops_cleanly(
    bus: Client, venue: FakeBinance, tmp_path: Path, nats_server: EmbeddedServer
) -> None:
    cfg = venue.venue_config()
    config = tmp_path / "sqt.toml"
    port = free_port()
    config.write_text(
        CONFIG.format(data=tmp_path / "data", url=nats_server.url, rest=cfg.rest_url, ws=cfg.ws_url, markets=cfg.markets_file, port=port)
    )
    log = tmp_path / "publisher.log"
    proc = sqt(config, "--venue", "binanceusdm", log=log)  # the configured publisher
    try:
        await eventually(lambda: _at_least(closed_candles(bus), 5), timeout=60, what="closed candles from the publisher")
        minutes = [c.open_time for c in await closed_candles(bus)]
        assert minutes == sorted(set(minutes))  # each minute once, in order
        # Every publisher metric the dashboard reads is one this publisher exports.
        async with aiohttp.ClientSession() as session:
            status, text = await get(session, port, "/metrics")
        assert status == 200
        names = exported(text)
        wanted = {n: t for n, t in dashboard_names().items() if n.startswith("sqt_publisher_")}
        assert wanted and not {n: t for n, t in wanted.items() if not served_by(n, names)}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]
    assert "no API key" not in log.read_text()  # public data asks for no key


async def _at_least(candles: Awaitable[Sized], n: int) -> bool:
    return len(await candles) >= n


def test_a_symbol_the_venue_does_not_list_stops_the_publisher_with_exit_2(tmp_path: Path, nats_server: EmbeddedServer) -> None:
    config = tmp_path / "sqt.toml"
    markets = FakeBinance().venue_config().markets_file
    config.write_text(f'[nats]\nurl = "{nats_server.url}"\n[venues.binanceusdm]\nmarkets_file = "{markets}"\n')
    log = tmp_path / "publisher.log"
    proc = sqt(config, "--venue", "binanceusdm", "--symbols", "NOPE/USDT:USDT", log=log)
    assert proc.wait(timeout=60) == 2
    assert "NOPE/USDT:USDT" in log.read_text()


def test_a_publisher_without_a_venue_or_markets_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "sqt.toml"
    config.write_text("")
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "--config", str(config), "run", "publisher", "--venue", "kraken", "--symbols", "BTC/USDT"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "kraken" in out.stderr and "binanceusdm" in out.stderr


async def test_a_venue_unreachable_at_start_is_waited_for_and_said_not_a_crash(tmp_path: Path, nats_server: EmbeddedServer) -> None:
    config = tmp_path / "sqt.toml"
    config.write_text(f'[nats]\nurl = "{nats_server.url}"\n[venues.binanceusdm]\nrest_url = "http://127.0.0.1:9"\ntimeout_ms = 500\n')
    log = tmp_path / "publisher.log"
    proc = sqt(config, "--venue", "binanceusdm", "--symbols", SYMBOL, log=log)
    try:
        await eventually(lambda: "cannot be loaded yet" in log.read_text(), timeout=60, what="the publisher saying it waits for the venue")
        assert proc.poll() is None  # still running, waiting
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()[-2000:]
