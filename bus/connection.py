"""Connecting to NATS: forever-reconnecting clients for long-running components.

nats-py gives up after 60 reconnect attempts by default (about two minutes); a market maker
must not. Every disconnect and reconnect is logged here, once, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

import nats
from nats.aio.client import Client

from bus.embedded import DEFAULT_PORT

log = logging.getLogger("bus.connection")


class Unreachable(RuntimeError):
    """NATS could not be reached within the allowed attempts."""


def default_url() -> str:
    return os.environ.get("NATS_URL") or f"nats://127.0.0.1:{DEFAULT_PORT}"


def redact(url: str) -> str:
    """A URL fit for a log line: credentials removed."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


async def connect(
    url: str | None = None,
    name: str = "sqt",
    *,
    attempts: int | None = None,
    pending_size: int = 64 * 1024 * 1024,
) -> Client:
    """Connect, retrying with capped exponential backoff and jitter.

    `attempts=None` retries forever (components); CLI commands pass a small number and get
    `Unreachable` with a clear message instead of a traceback.
    """
    target = url or default_url()
    delay = 0.2
    tried = 0
    client: list[Client] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close(), not a failure
        log.warning("disconnected from NATS %s; reconnecting", redact(target))

    async def on_reconnect() -> None:
        log.warning("reconnected to NATS %s", redact(target))

    async def on_error(exc: Exception) -> None:
        log.debug("nats client error: %s", exc)

    while True:
        tried += 1
        try:
            nc = await nats.connect(
                servers=[s.strip() for s in target.split(",")],
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                # With -1 here nats-py would retry the *first* connection silently forever;
                # we retry it ourselves (with a message), then switch to reconnecting forever.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=pending_size,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            )
            nc.options["max_reconnect_attempts"] = -1
            client.append(nc)
            return nc
        except (nats.errors.NoServersError, OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            if attempts is not None and tried >= attempts:
                raise Unreachable(
                    f"NATS is not reachable at {redact(target)} ({exc or type(exc).__name__}); "
                    "start it with `sqt up` or set NATS_URL"
                ) from None
            log.warning("NATS not reachable at %s (%s); retrying in %.1fs", redact(target), exc or type(exc).__name__, delay)
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)
