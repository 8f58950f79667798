"""`sqt cluster`: a three-node JetStream cluster on this machine (bus/cluster.py).

sqt cluster up [--dir data/cluster]   the nodes n1, n2, n3, streams with one replica per node;
                                      prints the NATS_URL to use; restarts a node that dies
sqt cluster status [--monitor URLS]   each node's health, the meta leader, each stream's replicas
sqt cluster init                      the credentials file with the routes' and the system user's
                                      passwords too (copy it to every machine of a cluster)
sqt cluster peer-remove <server>      forget a node that is gone for good (its name cannot join again)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
import urllib.parse
from pathlib import Path

import nats.errors

from bus import log as buslog
from bus.auth import AuthError, init_credentials
from bus.cluster import (
    LocalCluster,
    Node,
    default_nodes,
    ensure_cluster_secrets,
    healthy,
    meta_leader,
    monitor,
    nats_url,
    peer_remove,
    placements,
    wait_all_current,
)
from bus.connection import connect
from bus.embedded import ROUTE_PASSWORD, SYS_PASSWORD
from bus.errors import BusError, PortInUse, ServerFailed, Unreachable
from bus.streams import BUCKETS, Change, apply
from cli.config import Config
from cli.status import text_table
from cli.supervisor import Child, ServerChild, Supervisor, server_child

log = logging.getLogger("sqt.cluster")

APPLY_WITHIN = 30.0  # seconds: a cluster that just elected its leader may refuse the first creates


def add_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser("cluster", help="a three-node JetStream cluster on this machine (bus/cluster.py)")
    actions = cluster.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start n1, n2, n3 and supervise them; streams with one replica per node")
    up.add_argument("--dir", type=Path, help="the nodes' stores (default: <data_dir>/cluster, one directory per node)")
    status_ = actions.add_parser("status", help="each node's health, the meta leader, each stream's leader and replicas")
    status_.add_argument(
        "--monitor", help="the nodes' monitoring URLs, comma-separated (default: the local cluster's, http://<nats.host>:8222-8224)"
    )
    actions.add_parser("init", help="write the credentials file's cluster passwords (routes, system user) if missing")
    remove = actions.add_parser("peer-remove", help="forget a node that is gone for good (nats server raft peer-remove)")
    remove.add_argument("server", help="its server name (n1, n2, n3, ...)")


def cluster_command(config: Config, args: argparse.Namespace) -> int:
    match args.action:
        case "up":
            return up(config, args.dir)
        case "status":
            return asyncio.run(status(config, args.monitor))
        case "init":
            return init(config)
        case "peer-remove":
            return asyncio.run(remove(config, args.server))
    return 2


def nodes_of(config: Config) -> tuple[Node, ...]:
    return default_nodes(config.nats.host)


def client_url(config: Config) -> str:
    """NATS_URL (the config's nats.url) when set, else every node of the local cluster."""
    return config.nats.url or nats_url(nodes_of(config))


# ----------------------------------------------------------------------------- up


def up(config: Config, store: Path | None) -> int:
    from cli.run import credentials

    buslog.setup("sqt-cluster", config.log_level, config.log_format)
    data = Path(config.data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(nodes_of(config), store or data / "cluster", credentials(config), log_dir=data / "logs")
    try:
        cluster.start()
    except (PortInUse, ServerFailed, AuthError) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_up(config, cluster))
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


async def _up(config: Config, cluster: LocalCluster) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        changes = await apply_replicated(config, cluster)
    except (Unreachable, BusError, nats.errors.Error, asyncio.TimeoutError) as exc:
        print(f"sqt: could not set up the streams on the cluster: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    for change in changes:
        if change.kind != "unchanged":
            log.info("stream %s", change)
    children = [server_child(server, name=f"nats-{name}", title=f"nats-server {name}") for name, server in cluster.servers.items()]
    _print_table(cluster, children)
    supervisor = Supervisor(list[Child](children), None)
    await supervisor.run(stop)
    print("stopping the three nodes ...", flush=True)
    await supervisor.stop()
    return 0


async def apply_replicated(config: Config, cluster: LocalCluster) -> list[Change]:
    """The declared streams and the buckets with one replica per node (the config's
    `[streams.<NAME>] replicas` wins; bus/streams.py), once JetStream takes them."""
    streams, buckets = config.declared_streams(), BUCKETS
    nc = await connect(cluster.url, name="sqt-cluster", attempts=10, role="admin")
    try:
        deadline = time.monotonic() + APPLY_WITHIN
        while True:
            try:
                changes = await apply(nc.jetstream(), streams, buckets)
                break
            except (nats.errors.Error, asyncio.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("JetStream not ready for the streams yet (%s); trying again", exc or type(exc).__name__)
                await asyncio.sleep(1.0)
        await wait_all_current(nc, timeout=APPLY_WITHIN)
    finally:
        await nc.close()
    return changes


def _print_table(cluster: LocalCluster, children: list[ServerChild]) -> None:
    rows = []
    for child in children:
        assert child.server is not None
        node = cluster.node(child.server.name)
        rows.append((node.name, str(child.pid or "-"), node.url, f"{node.host}:{node.cluster_port}", node.monitor_url, str(child.log_path)))
    print(text_table(("node", "pid", "clients", "routes", "monitoring", "log"), rows))
    print()
    print(f"JetStream cluster `sqt`, meta leader {meta_leader(cluster.live_nodes()) or '(electing)'}; every stream on every node.")
    print("Point every component and sqt command at all three nodes:")
    print()
    print(f"  export NATS_URL={cluster.url}")
    print()
    print("Ctrl-C stops the three nodes; a node that dies is restarted on its ports with its store.", flush=True)


# ----------------------------------------------------------------------------- status


def init(config: Config) -> int:
    path = config.credentials_path
    if init_credentials(path):
        print(f"wrote a password for every role to {path} (mode 0600; never commit it)")
    if ensure_cluster_secrets(path):
        print(f"added {ROUTE_PASSWORD} and {SYS_PASSWORD} to {path}")
    else:
        print(f"{path} has every password a cluster node needs")
    return 0


def monitored(config: Config, urls: str | None) -> tuple[Node, ...]:
    """The nodes `status` asks: the local cluster's, or one per monitoring URL given."""
    if not urls:
        return nodes_of(config)
    out = []
    for i, url in enumerate(u.strip() for u in urls.split(",") if u.strip()):
        parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        out.append(Node(f"#{i + 1}", 0, 0, parsed.port or 8222, parsed.hostname or "127.0.0.1"))
    return tuple(out)


async def status(config: Config, monitor_urls: str | None = None) -> int:
    nodes = monitored(config, monitor_urls)
    rows, ok = [], True
    for node in nodes:
        good, why = await asyncio.to_thread(healthy, node)
        jsz = await asyncio.to_thread(monitor, node, "/jsz") or {}
        meta = jsz.get("meta_cluster") or {}
        ok = ok and good
        varz = await asyncio.to_thread(monitor, node, "/varz") or {}
        name = str(varz.get("server_name") or node.name)
        rows.append(
            (name, node.monitor_url, "ok" if good else f"DOWN: {why}", meta.get("leader") or "-", str(meta.get("cluster_size") or "-"))
        )
    print(text_table(("node", "monitoring", "health", "meta leader", "cluster size"), rows))
    print()
    try:
        nc = await connect(client_url(config), name="sqt-cluster-status", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        found = await placements(nc)
    except (nats.errors.Error, asyncio.TimeoutError) as exc:
        print(f"sqt: JetStream does not answer ({exc or type(exc).__name__}): an election in progress, or no quorum", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    streams = []
    for p in found:
        followers = ", ".join(f"{r.name} ({'offline' if r.offline else 'current' if r.current else f'behind {r.lag}'})" for r in p.replicas)
        ok = ok and p.all_current
        streams.append((p.name, p.leader or "NONE", str(p.size), followers or "-", f"{p.messages:,}", str(p.last_seq)))
    print(text_table(("stream", "leader", "replicas", "followers", "messages", "last seq"), streams or [("-",) * 6]))
    return 0 if ok else 1


# ----------------------------------------------------------------------------- peer-remove


async def remove(config: Config, server: str) -> int:
    try:
        answer = await peer_remove(client_url(config), server, config.credentials_path)
    except (AuthError, ServerFailed) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 2
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as exc:
        print(
            f"sqt: no answer from the JetStream meta leader ({exc or type(exc).__name__}); is a majority of the nodes up?", file=sys.stderr
        )
        return 1
    if answer.get("success"):
        print(
            f"{server} is no longer a member of the JetStream cluster. Its streams run on the other nodes and get their "
            f"missing replica on the next node that joins; that node needs a new name ({server} cannot join again)."
        )
        return 0
    error = answer.get("error") or {}
    print(f"sqt: {error.get('description') or answer} (code {error.get('err_code', '?')})", file=sys.stderr)
    return 1
