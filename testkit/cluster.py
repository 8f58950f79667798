"""A three-node JetStream cluster on loopback for tests and benchmarks (bus/cluster.py).

Client and monitoring ports are the servers' own picks (ANY_PORT, read back from their ports
files); the route ports are chosen free beforehand, since each node's routes name the others'.
Users are on: a credentials file in the work directory, its path in SQT_NATS_CREDENTIALS for
the processes the test starts (each connects as its role).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from bus.auth import CREDENTIALS_ENV, init_credentials
from bus.cluster import LocalCluster, Node
from bus.embedded import ANY_PORT, free_port


def nodes(count: int = 3) -> tuple[Node, ...]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return tuple(Node(f"n{i + 1}", ANY_PORT, port, ANY_PORT) for i, port in enumerate(sorted(ports)))


def credentials(workdir: Path) -> Path:
    path = workdir / "nats-auth.env"
    init_credentials(path)
    return path


@contextlib.contextmanager
def local_cluster(workdir: Path, *, auth: bool = True, count: int = 3) -> Iterator[LocalCluster]:
    """Started, with a meta leader; stopped on the way out."""
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(nodes(count), workdir / "nats", credentials(workdir) if auth else None, log_dir=workdir)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def client_env(cluster: LocalCluster) -> dict[str, str]:
    """The environment of a component process: every node in NATS_URL, the credentials file."""
    env = {**os.environ, "NATS_URL": cluster.url, "PYTHONUNBUFFERED": "1"}
    if cluster.credentials is not None:
        env[CREDENTIALS_ENV] = str(cluster.credentials)
    return env
