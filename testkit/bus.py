"""A real nats-server per test, connections to it, and waiting on conditions instead of sleeping.

Register as a pytest plugin (`pytest_plugins = ["testkit.bus"]`) for the fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from bus import streams
from bus.connection import connect
from bus.embedded import ANY_PORT, EmbeddedServer


def start_server(workdir: Path, credentials: Path | None = None) -> EmbeddedServer:
    """A nats-server on ports it chose itself (read back before `url` is used), so no other
    process can take a port between our choosing it and the server binding it. Stopped and
    started again, it keeps those ports: clients reconnect to the same URL. With `credentials`
    (bus/auth.py), its users are on."""
    server = EmbeddedServer(
        store_dir=workdir / "nats", port=ANY_PORT, monitor_port=ANY_PORT, log_file=workdir / "nats.log", credentials=credentials
    )
    server.start()
    return server


def login_url(url: str, credentials: Path, role: str = "admin") -> str:
    """`url` with `role`'s user and password in it (bus/auth.py), for a server `sqt up` started
    with its users on: the password from its credentials file, `<data_dir>/nats-auth.env`."""
    from bus.auth import ROLES, read_credentials

    password = read_credentials(credentials)[ROLES[role].password_variable]
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}:{password}@{rest}"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: EmbeddedServer) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, name="pytest", attempts=3, role="admin")
    yield client
    await client.close()


@pytest.fixture
async def bus(nc: Client) -> AsyncIterator[Client]:
    """A connection to a server with every stream and bucket applied."""
    await streams.apply(nc.jetstream())
    yield nc


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Wait until `predicate()` (sync or async) is true; fail with `what` otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
