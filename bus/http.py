"""A component's small HTTP face: `/metrics` (Prometheus), `/health` (liveness), `/status` (details)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


async def serve(port: int, registry: CollectorRegistry, status: Callable[[], dict[str, Any]], host: str = "127.0.0.1") -> web.AppRunner:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def details(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(status(), default=str), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/status", details)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
