"""Registration as a NATS micro service, so `nats micro ls` (or any NATS tool) finds and pings it."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service

from bus import metrics
from schemas.subjects import status as status_subject

log = logging.getLogger("bus.service")


def answerable(request: Request | Msg) -> bool:
    """Whether a request's reply address is an inbox. A request that names a stream's subject as
    its reply address would make us, who may publish there, write into that stream (bus/auth.py):
    such a request is logged and not answered."""
    msg: Msg = request if isinstance(request, Msg) else request._msg  # nats micro keeps it private
    if msg.reply.startswith("_INBOX"):
        return True
    log.warning("%s: not answered: the reply address %r is not an inbox", msg.subject, msg.reply[:80])
    return False


def guard_verbs(service: Service) -> Service:
    """NATS micro answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` itself, to whatever reply
    address a request names: the same guard in front of each (its subscriptions are private)."""
    for sub in service._subscriptions.values():
        answer = sub._cb
        assert answer is not None

        async def guarded(msg: Msg, answer: Callable[[Msg], Awaitable[None]] = answer) -> None:
            if answerable(msg):
                await answer(msg)

        sub._cb = guarded
    return service


def package_version() -> str:
    try:
        return version("opensqt")
    except PackageNotFoundError:
        return "0.0.0"


async def register(
    nc: Client,
    component: str,
    instance: str,
    description: str,
    status: Callable[[], dict[str, Any]],
    *,
    http: str | None = None,
) -> Service:
    """A service `sqt-<component>` with a `status` endpoint; its stats carry the status too.

    `http` ("host:port") says where the component serves /health, /status and /metrics; it goes
    into the service's metadata, where `sqt status` finds it."""

    def stats(_endpoint: EndpointStats) -> dict[str, Any]:
        return status()

    service = await add_service(
        nc,
        name=f"sqt-{component}",
        version=package_version(),
        description=description,
        metadata={"instance": instance, "component": component, **({"http": http} if http else {})},
        stats_handler=stats,
    )
    guard_verbs(service)

    async def handle(request: Request) -> None:
        if not answerable(request):
            return
        await request.respond(json.dumps(status(), default=str).encode())

    await service.add_endpoint(name="status", subject=status_subject(component, instance), handler=handle)
    metrics.component(component, instance)
    return service
