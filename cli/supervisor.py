"""What `sqt up` supervises: the embedded nats-server and every component, each its own process.

A process that dies is restarted after a backoff that doubles with each quick death and
resets after a minute of health, and the operator is told once per death, with the log to
read. Two exceptions: a component that exits with code 2 said that restarting cannot help (a
configuration error, or another live process already holds its lease) and stays down; the
nats-server is never given up on: its file store recovers on restart, and every component
(and `sqt up` itself) reconnects on its own.

A stop takes the components first (SIGTERM: they checkpoint and exit within the grace period,
else SIGKILL), then the server. Every child also dies with `sqt up` (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bus.embedded import EmbeddedServer, die_with_parent
from bus.errors import BusError

log = logging.getLogger("sqt.up")

STOP_GRACE = 3.0  # seconds components (then the server) get to exit before SIGKILL
HEALTHY_AFTER = 60.0  # seconds alive after which a death is not "quick" any more
EXIT_DO_NOT_RESTART = 2  # bus/process.py: a configuration error or a lease held elsewhere
NOT_SCHEDULED, GIVEN_UP = 0.0, float("inf")


@dataclass
class Backoff:
    first: float
    cap: float = 30.0
    delay: float = field(init=False)

    def __post_init__(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.delay = self.first


@dataclass
class Child:
    """A component process (`sqt run <component>`), its log file and its restart state."""

    name: str
    argv: list[str]
    log_path: Path
    what: str
    env: dict[str, str] = field(default_factory=dict, repr=False)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = NOT_SCHEDULED
    backoff: Backoff = field(default_factory=lambda: Backoff(first=1.0))

    def launch(self) -> None:
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches `sqt up` only; it stops children in order
                preexec_fn=die_with_parent,
            )
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def exited(self, code: int | None, delay: float) -> str:
        return f"{self.name} exited with code {code}; restarting in {delay:g}s (restart #{self.restarts + 1}); log: {self.log_path}"

    def may_restart(self, code: int | None) -> bool:
        return code != EXIT_DO_NOT_RESTART

    @property
    def label(self) -> str:
        return self.name


@dataclass
class ServerChild(Child):
    """The embedded nats-server as a supervised child: restarted at once, then with backoff."""

    server: EmbeddedServer | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.25, cap=10.0))
    title: str = "nats-server"  # "nats-server n2": one node of a cluster (cli/cluster.py)

    def launch(self) -> None:
        assert self.server is not None
        self.server.launch()  # with the ports it has: clients reconnect to the same URL
        self.proc = self.server.process
        self.started = time.monotonic()

    def exited(self, code: int | None, delay: float) -> str:
        return f"{self.title} exited (code {code}); restarting (restart #{self.restarts + 1}); log: {self.log_path}"

    def may_restart(self, code: int | None) -> bool:
        return True  # the bus is never given up on

    @property
    def label(self) -> str:
        return self.title


def server_child(server: EmbeddedServer, name: str = "nats", title: str = "nats-server") -> ServerChild:
    log_path = server.log_file or server.store_dir / "nats.log"
    return ServerChild(
        name=name, argv=[], log_path=log_path, what="nats-server", proc=server.process, server=server, started=time.monotonic(), title=title
    )


def keep_alive(child: Child, now: float) -> None:
    """One supervision pass over one child: notice a death, schedule the restart, do it when due."""
    if child.alive:
        if now - child.started > HEALTHY_AFTER:
            child.backoff.reset()
        return
    if child.next_start == GIVEN_UP:
        return
    if child.next_start == NOT_SCHEDULED:
        code = child.returncode
        if not child.may_restart(code):
            child.next_start = GIVEN_UP
            log.error(
                "%s exited with code %s (a configuration error, or its consumer runs elsewhere); not restarting it (see %s)",
                child.name,
                code,
                child.log_path,
            )
            return
        delay = child.backoff.next()
        child.next_start = now + delay
        log.warning("%s", child.exited(code, delay))
    elif now >= child.next_start:
        child.restarts += 1
        child.next_start = NOT_SCHEDULED
        try:
            child.launch()
        except (BusError, OSError) as exc:  # a port taken meanwhile, a binary gone: try again later
            delay = child.backoff.next()
            child.next_start = now + delay
            log.warning("%s could not be restarted (%s); trying again in %gs", child.label, exc, delay)
            return
        log.warning("%s restarted (pid %d)", child.label, child.pid or -1)


class Supervisor:
    """The server (if embedded) and the components; `run()` until stop, then `stop()`."""

    def __init__(self, children: list[Child], server: EmbeddedServer | None) -> None:
        self.children = children
        self.server = server_child(server) if server is not None else None
        self._stopping: set[asyncio.Task[None]] = set()

    @property
    def everything(self) -> list[Child]:
        return ([self.server] if self.server else []) + self.children

    def start(self) -> None:
        for child in self.children:
            if child.proc is None:
                child.launch()

    def add(self, child: Child, launch: bool = True) -> None:
        """A component that joins while everything runs (a grid added to the registry)."""
        self.children.append(child)
        if launch:
            child.launch()

    def drop(self, name: str) -> None:
        """Stop one component for good: no longer supervised, and stopped if it runs (SIGTERM,
        then SIGKILL after the grace period, in the background)."""
        gone = [c for c in self.children if c.name == name]
        self.children = [c for c in self.children if c.name != name]
        running = [c for c in gone if c.alive]
        if running:
            task = asyncio.get_running_loop().create_task(_terminate(running))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def run(self, stop: asyncio.Event, every: float = 0.25) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
            except asyncio.TimeoutError:
                pass
            if stop.is_set():
                return
            now = time.monotonic()
            for child in self.everything:
                keep_alive(child, now)

    async def stop(self) -> None:
        """Components first (they checkpoint while the bus is still there), then the server."""
        await _terminate(self.children)
        if self.server is not None:
            await _terminate([self.server])

    def kill(self) -> None:
        """Last resort, synchronous: SIGKILL whatever still runs (an error on the way out)."""
        for child in self.everything:
            if child.alive and child.proc is not None:
                _killpg(child.proc)


async def _terminate(children: list[Child]) -> None:
    running = [c for c in children if c.alive and c.proc is not None]
    for child in running:
        assert child.proc is not None
        child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while any(c.alive for c in running) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # polling the exit of processes we own; no event to wait on
    for child in running:
        if child.alive and child.proc is not None:
            _killpg(child.proc)
            log.warning("%s did not stop within %.0fs; killed", child.name, STOP_GRACE)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
