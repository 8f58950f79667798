"""Connecting to NATS: forever-reconnecting clients for long-running components.

nats-py gives up after 60 reconnect attempts by default (about two minutes); a market maker
must not. Every disconnect and reconnect is logged here, once, without a traceback.

Reconnects back off exponentially with jitter (nats-py's own wait is a constant 2 s): a
restarted server is found again within a fraction of a second, while a server that stays
down is not hammered by every component at once.

`close()` works while the server is down: nats-py 2.16 flushes what it buffered during the
outage into the socket that broke, which raises under uvloop ("the handler is closed") and
turned every component's stop during an outage into a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Callable

import nats
from nats.aio.client import Client, Server

from bus import metrics
from bus.auth import CREDENTIALS_ENV, client_auth
from bus.embedded import DEFAULT_PORT
from bus.errors import Unreachable
from bus.secrets import redact

log = logging.getLogger("bus.connection")


class Connection(Client):
    """nats-py's client whose `close()` also works while it is reconnecting; it knows its user."""

    user: str | None = None  # the NATS user it offered (bus/auth.py), None without one

    @property
    def logged_in_as(self) -> str | None:
        """The user the server knows it as; None on a server without users (it ignores logins)."""
        if not self._server_info.get("auth_required"):
            return None
        return self.user

    async def close(self) -> None:
        try:
            await super().close()
        except (RuntimeError, OSError) as exc:
            # The flush of the outage's buffer into the dead socket; the client ends closed all
            # the same (its status is set first), and that buffer had nowhere to go.
            log.debug("closed while disconnected from NATS (%s)", exc)


def default_url() -> str:
    return os.environ.get("NATS_URL") or f"nats://127.0.0.1:{DEFAULT_PORT}"


RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0


def reconnect_delay(failed_attempts: int, jitter: float) -> float:
    """Seconds to wait before the next reconnect; `jitter` in [0, 1) spreads clients apart."""
    base = min(RECONNECT_FIRST_S * 2 ** min(failed_attempts, 16), RECONNECT_MAX_S)
    return base * (0.8 + 0.4 * jitter)


def _next_server_hook(level: int) -> Callable[[list[Server], dict], tuple[Server | None, float]]:
    def next_server(servers: list[Server], _info: dict) -> tuple[Server | None, float]:
        """nats-py's reconnect hook: the least-tried server, after a delay grown from its failures."""
        server = min(servers, key=lambda s: s.reconnects)
        if server.reconnects and (server.reconnects & (server.reconnects - 1)) == 0:
            # at 1, 2, 4, 8... failed attempts: enough to see an outage in the log, not a flood
            log.log(level, "NATS %s still unreachable after %d attempts", redact(server.uri.geturl()), server.reconnects)
        return server, reconnect_delay(server.reconnects, random.random())

    return next_server


async def connect(
    url: str | None = None,
    name: str = "sqt",
    *,
    attempts: int | None = None,
    pending_size: int = 64 * 1024 * 1024,
    outage_level: int = logging.WARNING,
    role: str | None = None,
) -> Client:
    """Connect, retrying with capped exponential backoff and jitter.

    `attempts=None` retries forever (components); CLI commands pass a small number and get
    `Unreachable` with a clear message instead of a traceback. `outage_level` is the level of
    the disconnect / still unreachable / reconnect lines (a supervisor that restarts the
    server itself reports the outage once, in its own words, and passes DEBUG). `role` is the
    NATS user to log in as (bus/auth.py); its password comes from the environment or the
    credentials file, and a URL with `user:password@` in it wins over both.
    """
    target = url or default_url()
    login = client_auth(role, url=target)
    tried = 0
    client: list[Client] = []

    async def on_disconnect() -> None:
        if client and (client[0].is_closed or client[0].is_draining):
            return  # our own close(), not a failure
        metrics.DISCONNECTS.labels(name).inc()
        log.log(outage_level, "disconnected from NATS %s; reconnecting", redact(target))

    async def on_reconnect() -> None:
        log.log(outage_level, "reconnected to NATS %s", redact(target))

    async def on_error(exc: Exception) -> None:
        log.debug("nats client error: %s", exc)

    while True:
        tried += 1
        try:
            nc = Connection()
            nc.user = login.user
            await nc.connect(
                user=None if login.in_url else login.user,
                password=None if login.in_url else login.password,
                inbox_prefix=login.inbox_prefix,
                servers=[s.strip() for s in target.split(",")],
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                # With -1 here nats-py would retry the *first* connection silently forever;
                # we retry it ourselves (with a message), then switch to reconnecting forever.
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py says int; it sleeps this many seconds
                reconnect_to_server_handler=_next_server_hook(outage_level),
                ping_interval=10,
                max_outstanding_pings=3,
                pending_size=pending_size,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                error_cb=on_error,
            )
            nc.options["max_reconnect_attempts"] = -1
            client.append(nc)
            metrics.track_client(nc, name)
            return nc
        except (nats.errors.NoServersError, OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
            reason: object = exc or type(exc).__name__
            if isinstance(exc, nats.errors.AuthorizationError) or "authorization violation" in str(exc).lower():
                who = f"as {login.user}" if login.user else "without a user (no credentials found)"
                reason = f"it refused the login {who}: see `sqt auth init` and {CREDENTIALS_ENV}"
                if attempts is not None and tried >= attempts:
                    raise Unreachable(f"NATS at {redact(target)}: {reason}") from None
            if attempts is not None and tried >= attempts:
                raise Unreachable(
                    f"NATS is not reachable at {redact(target)} ({exc or type(exc).__name__}); start it with `sqt up` or set NATS_URL"
                ) from None
            delay = reconnect_delay(tried + 1, random.random())
            log.warning("NATS not reachable at %s (%s); retrying in %.1fs", redact(target), reason, delay)
            await asyncio.sleep(delay)
