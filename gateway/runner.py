"""`sqt run gateway`: the app on its port until told to stop."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from aiohttp import web

from bus.connection import connect
from bus.service import register
from bus.settings import BusSettings
from bus.streams import prepare
from gateway.app import make_app, state_of
from gateway.auth import Auth
from gateway.config import GatewayConfig
from gateway.playback import from_file as from_file_records

log = logging.getLogger("gateway")


async def run_gateway(bus: BusSettings, config: GatewayConfig, stop: asyncio.Event, from_file: Path | None = None) -> None:
    record = from_file_records(from_file) if from_file is not None else None  # a bad file stops the start, naming the line
    auth = Auth.from_env(config.auth, os.environ)  # a bad token list stops the start, naming the entry
    nc = await connect(bus.nats_url, name="sqt-gateway", role="gateway")
    try:
        await prepare(nc, bus.streams())
        app = make_app(nc, config, auth, record, bus)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port).start()
            port = runner.addresses[0][1]  # the one bound, when the config said 0
            where = f"{config.host}:{port}"
            service = await register(
                nc,
                "gateway",
                f"port-{port}",
                f"browser gateway: the live page at http://{where}/",
                lambda: state_of(app),
                http=where,  # /health, /status and /metrics are on the gateway's own port
            )
            log.info("gateway: serving http://%s/", where)
            try:
                await stop.wait()
            finally:
                await service.stop()
        finally:
            await runner.cleanup()
    finally:
        await nc.close()
