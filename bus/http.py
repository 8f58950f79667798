"""A component's small HTTP face: `/metrics` (Prometheus), `/health` (liveness), `/status` (details).

`/metrics` serves the component's own registry and the bus's process-wide one (bus/metrics.py:
consumers, NATS connection, publishing) in one exposition. `/health` answers 200 while the
component is healthy and 503 when it is not: by default, when one of the process's NATS
connections is down or one of its consumers has stalled (`bus.metrics.process_health`); a
component may pass its own check, which is added to that one. See docs/adr/0015.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bus import metrics as bus_metrics

log = logging.getLogger("bus.http")

Health = Callable[[], dict[str, Any]]  # {"ok": bool, ...anything else worth showing}


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition of `registry` and of the bus's registry (once, if they are the same)."""
    body = generate_latest(registry)
    if registry is not bus_metrics.REGISTRY:
        body += generate_latest(bus_metrics.REGISTRY)
    return body


def health_of(check: Health | None = None) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body): the process's bus health, and the component's own check if any."""
    verdict = bus_metrics.process_health()
    if check is not None:
        own = check()
        verdict["component"] = own
        if not own.get("ok", True):
            verdict["ok"] = False
            verdict["problems"].append(str(own.get("reason") or "the component says it is unhealthy"))
    verdict["status"] = "ok" if verdict["ok"] else "unhealthy"
    return (200 if verdict["ok"] else 503), verdict


def routes(app: web.Application, registry: CollectorRegistry, status: Callable[[], dict[str, Any]], health: Health | None = None) -> None:
    """Add `/metrics`, `/health` and `/status` to an app."""

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=exposition(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthy(_request: web.Request) -> web.Response:
        code, body = health_of(health)
        return web.Response(text=json.dumps(body, default=str), status=code, content_type="application/json")

    async def details(_request: web.Request) -> web.Response:
        return web.Response(text=json.dumps(status(), default=str), content_type="application/json")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", healthy)
    app.router.add_get("/status", details)


async def serve(
    port: int,
    registry: CollectorRegistry,
    status: Callable[[], dict[str, Any]],
    host: str = "127.0.0.1",
    *,
    health: Health | None = None,
) -> web.AppRunner:
    """Serve the three routes on `host:port` (0: a free port, see `bound_port`) until cleaned up."""
    app = web.Application()
    routes(app, registry, status, health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner listens on (the one chosen, when asked for 0)."""
    return int(runner.addresses[0][1])


async def maybe_serve(
    port: int,
    registry: CollectorRegistry,
    status: Callable[[], dict[str, Any]],
    host: str | None = None,
    *,
    health: Health | None = None,
) -> web.AppRunner | None:
    """`serve`, unless `port` is 0 (off); a port that cannot be bound is logged, not fatal: a
    component keeps trading without its metrics rather than stop over them. The host is
    SQT_METRICS_HOST, else loopback: in a container, 0.0.0.0 lets Prometheus scrape it."""
    if not port:
        return None
    host = host or os.environ.get("SQT_METRICS_HOST") or "127.0.0.1"
    try:
        return await serve(port, registry, status, host, health=health)
    except OSError as exc:
        log.error("cannot serve /health, /status and /metrics on %s:%d (%s); running without them", host, port, exc)
        return None


def address(runner: web.AppRunner | None, host: str = "127.0.0.1") -> str | None:
    """ "host:port" of a served runner, for a micro service's metadata (None when not served)."""
    return None if runner is None else f"{host}:{bound_port(runner)}"
