"""A three-node JetStream cluster: its nodes, their configs, running them, and looking at them.

Three nodes n1, n2, n3 of the cluster `sqt` (ports 4222/4223/4224 for clients, 6222/6223/6224
for the routes between them, 8222/8223/8224 for monitoring), each with its own store under
data/cluster/. `configs/cluster/node-{1,2,3}.conf` are `node_config()` of the defaults (a test
keeps them equal); `sqt cluster up` runs the same three on loopback (`LocalCluster`).

The nodes authenticate to each other as the user `route` and the system account has one user,
`sys` (JetStream's server removal answers it alone); both passwords live in the same
credentials file as the roles' (`ensure_cluster_secrets` adds them to what `sqt auth init`
wrote). The config names them as environment variables, never the passwords themselves.

Streams and buckets get one replica per node (`bus.streams` AUTO replicas, with the size from
`cluster_size`), so losing any one node loses nothing and stops nothing for longer than an
election.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.auth import new_passwords, read_credentials, write_private
from bus.embedded import (
    DEFAULT_CLUSTER_PORT,
    DEFAULT_MONITOR_PORT,
    DEFAULT_PORT,
    ROUTE_PASSWORD,
    SYS_PASSWORD,
    SYS_USER,
    ClusterSettings,
    EmbeddedServer,
    Route,
    server_config,
)
from bus.errors import ServerFailed

CLUSTER_NAME = "sqt"
STORE_ROOT = "data/cluster"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "cluster"


@dataclass(frozen=True)
class Node:
    name: str
    client_port: int
    cluster_port: int
    monitor_port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    def route(self) -> Route:
        return Route(self.name, self.host, self.cluster_port)


def default_nodes(host: str = "127.0.0.1") -> tuple[Node, ...]:
    return tuple(Node(f"n{i + 1}", DEFAULT_PORT + i, DEFAULT_CLUSTER_PORT + i, DEFAULT_MONITOR_PORT + i, host) for i in range(3))


def nats_url(nodes: Iterable[Node]) -> str:
    """What clients put in NATS_URL: every node (they move to another when theirs goes away)."""
    return ",".join(n.url for n in nodes)


def settings_of(node: Node, nodes: Sequence[Node], name: str = CLUSTER_NAME) -> ClusterSettings:
    return ClusterSettings(routes=tuple(n.route() for n in nodes if n.name != node.name), name=name, port=node.cluster_port)


def node_config(node: Node, nodes: Sequence[Node], store_root: str = STORE_ROOT, auth: bool = True) -> str:
    """One node's nats-server config (what `configs/cluster/node-N.conf` holds for the defaults)."""
    return server_config(
        store_dir=f"{store_root}/{node.name}",
        host=node.host,
        port=node.client_port,
        monitor_port=node.monitor_port,
        server_name=node.name,
        auth=auth,
        cluster=settings_of(node, nodes),
    )


def rendered_configs(nodes: Sequence[Node] | None = None) -> dict[str, str]:
    """{file name: text} of configs/cluster/."""
    nodes = nodes or default_nodes()
    return {f"node-{i + 1}.conf": node_config(n, nodes) for i, n in enumerate(nodes)}


def write_configs(directory: Path = CONFIG_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in rendered_configs().items():
        (directory / name).write_text(text)


def ensure_cluster_secrets(path: Path) -> bool:
    """Add the route and system users' passwords to a credentials file that lacks them (`sqt
    auth init` writes only the roles'); True if it wrote any. The file must exist."""
    have = read_credentials(path)
    missing = [v for v in (ROUTE_PASSWORD, SYS_PASSWORD) if not have.get(v)]
    if not missing:
        return False
    text = path.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    write_private(path, text + new_passwords(missing))
    return True


# ----------------------------------------------------------------------------- running it


@dataclass
class LocalCluster:
    """The nodes as processes on this machine, each an EmbeddedServer with its own store.

    `nodes` with client and monitoring port ANY_PORT are resolved when started (tests); the
    route ports must be known before (each node's routes name the others')."""

    nodes: tuple[Node, ...]
    store_root: Path
    credentials: Path | None = None
    log_dir: Path | None = None
    servers: dict[str, EmbeddedServer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node in self.nodes:
            self.servers[node.name] = EmbeddedServer(
                store_dir=self.store_root / node.name,
                host=node.host,
                port=node.client_port,
                monitor_port=node.monitor_port,
                log_file=(self.log_dir / f"nats-{node.name}.log") if self.log_dir else None,
                credentials=self.credentials,
                name=node.name,
                cluster=settings_of(node, self.nodes),
            )

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def node(self, name: str) -> Node:
        """The node with the ports its server bound (ANY_PORT resolved once started)."""
        node = next(n for n in self.nodes if n.name == name)
        server = self.servers[name]
        return replace(node, client_port=server.port, monitor_port=server.monitor_port)

    def live_nodes(self) -> list[Node]:
        return [self.node(n) for n in self.names if self.servers[n].alive]

    @property
    def url(self) -> str:
        return nats_url(self.node(n) for n in self.names)

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until JetStream has a meta leader that all of them know."""
        if self.credentials is not None:
            ensure_cluster_secrets(self.credentials)
        for name in self.names:
            self.servers[name].launch()
        try:
            for name in self.names:
                self.servers[name].wait_ready(timeout)
            wait_meta_leader(self.live_nodes(), timeout)
        except BaseException:
            self.stop()
            raise

    def kill(self, name: str) -> None:
        self.servers[name].kill()

    def restart(self, name: str, timeout: float = 30.0) -> None:
        """Start a stopped node again, on the same ports (it keeps those it bound), with its
        store as it was left."""
        self.servers[name].start(timeout)

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- looking at it


def monitor(node: Node, path: str, timeout: float = 1.0, **params: Any) -> dict[str, Any] | None:
    """A monitoring endpoint's JSON (`/jsz`, `/healthz`, ...); None if the node does not answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    try:
        with urllib.request.urlopen(f"{node.monitor_url}{path}{query}", timeout=timeout) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:  # /healthz answers 503 with a body that says why
        try:
            return dict(json.loads(exc.read()))
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


def healthy(node: Node) -> tuple[bool, str]:
    """(healthy, why not) from the node's `/healthz` (JetStream included)."""
    body = monitor(node, "/healthz")
    if body is None:
        return False, "unreachable"
    if body.get("status") == "ok":
        return True, ""
    return False, str(body.get("error") or body.get("status") or body)


def meta_leader(nodes: Iterable[Node]) -> str | None:
    """The JetStream meta leader that every reachable node names (None while they disagree or
    none is elected)."""
    leaders = set()
    for node in nodes:
        jsz = monitor(node, "/jsz")
        if jsz is None:
            continue
        leaders.add((jsz.get("meta_cluster") or {}).get("leader") or "")
    if len(leaders) != 1:
        return None
    (leader,) = leaders
    return leader or None


def wait_meta_leader(nodes: Sequence[Node], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = meta_leader(nodes)
        if leader:
            return leader
        time.sleep(0.1)
    raise ServerFailed(f"no JetStream meta leader within {timeout}s")


def stream_states(node: Node) -> dict[str, dict[str, Any]]:
    """Each stream this node holds a replica of: {name: its state} (messages, bytes, first_seq,
    last_seq, ...), from the node's own store (`/jsz?streams=true`)."""
    jsz = monitor(node, "/jsz", timeout=3.0, streams="true", config="true", accounts="true")
    out: dict[str, dict[str, Any]] = {}
    for account in (jsz or {}).get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            out[stream["name"]] = stream.get("state") or {}
    return out


async def cluster_size(nc: Client) -> int:
    """How many nodes the server `nc` is connected to belongs with (1: not a cluster).

    A client sees no meta group; it counts the servers its server tells it of (`connect_urls`,
    its own included) and the peers of every existing stream (which stay listed while down),
    so a node down at this moment does not make it smaller once streams exist."""
    info = getattr(nc, "_server_info", {}) or {}
    if not info.get("cluster"):
        return 1
    urls = {u for u in info.get("connect_urls") or []}
    peers: set[str] = set()
    try:
        for stream in await nc.jetstream().streams_info():
            c = stream.cluster
            if c is None:
                continue
            if c.leader:
                peers.add(c.leader)
            peers.update(r.name for r in c.replicas or [] if r.name)
    except (NotFoundError, asyncio.TimeoutError):
        pass
    return max(len(urls), len(peers), 1)


@dataclass(frozen=True)
class Replica:
    name: str
    current: bool
    lag: int = 0
    active: float = 0.0  # seconds since heard from
    offline: bool = False


@dataclass(frozen=True)
class StreamPlacement:
    name: str
    leader: str
    replicas: tuple[Replica, ...]  # the followers
    messages: int = 0
    last_seq: int = 0

    @property
    def size(self) -> int:
        return 1 + len(self.replicas) if self.leader else len(self.replicas)

    @property
    def all_current(self) -> bool:
        return bool(self.leader) and all(r.current and not r.offline for r in self.replicas)


async def placements(nc: Client, names: Iterable[str] | None = None) -> list[StreamPlacement]:
    """Each stream's leader and replicas (`$JS.API.STREAM.INFO`'s cluster), sorted by name."""
    js = nc.jetstream()
    out = []
    infos = [await js.stream_info(n) for n in names] if names is not None else await js.streams_info()
    for info in infos:
        c = info.cluster
        replicas = tuple(
            Replica(r.name or "", bool(r.current), int(r.lag or 0), float(r.active or 0) / 1e9, bool(r.offline))
            for r in (c.replicas if c else None) or []
        )
        out.append(
            StreamPlacement(info.config.name or "", (c.leader if c else None) or "", replicas, info.state.messages, info.state.last_seq)
        )
    return sorted(out, key=lambda p: p.name)


async def wait_all_current(nc: Client, timeout: float = 60.0) -> list[StreamPlacement]:
    """Wait until every stream has a leader and every replica is current; the placements then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: list[StreamPlacement] | str = "nothing yet"
    while loop.time() < deadline:
        try:
            found = await placements(nc)
            if all(p.all_current for p in found):
                return found
            last = found
        except Exception as exc:  # noqa: BLE001 - an election in progress: JetStream answers nothing, or an error
            last = f"{type(exc).__name__}: {exc}"
        await asyncio.sleep(0.2)
    raise TimeoutError(f"stream replicas not all current within {timeout}s: {last}")


async def peer_remove(url: str, server: str, credentials: Path, timeout: float = 5.0) -> dict[str, Any]:
    """Remove a node that is gone for good from the JetStream meta group (natscli's `nats
    server raft peer-remove`): `$JS.API.SERVER.REMOVE` with {"peer": name}, which only the
    system account may ask. The streams it held a replica of are then placed on the other
    nodes, or on a new node once one joins. The server's answer, as JSON."""
    import nats

    password = read_credentials(credentials).get(SYS_PASSWORD)
    if not password:
        raise ServerFailed(f"{credentials} has no {SYS_PASSWORD}: was the cluster started by `sqt cluster up`?")
    nc = await nats.connect(
        servers=[s.strip() for s in url.split(",")], user=SYS_USER, password=password, connect_timeout=2, max_reconnect_attempts=2
    )
    try:
        msg = await nc.request("$JS.API.SERVER.REMOVE", json.dumps({"peer": server}).encode(), timeout=timeout)
        return dict(json.loads(msg.data))
    finally:
        await nc.close()
