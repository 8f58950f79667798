"""`sqt up`: the embedded NATS server, streams, and every component as its own process.

Prints what runs and where, restarts a component that dies (with backoff, and says so),
shows a status line with live market data, and on Ctrl-C stops everything within five
seconds: components first (SIGTERM, so they checkpoint), then the server; nothing is left
behind (children also die with their parent, through PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from bus import log as buslog
from bus.connection import Unreachable, connect, redact
from bus.embedded import EmbeddedServer, die_with_parent
from bus.streams import STREAMS, apply, with_retention
from cli.config import Config
from cli.run import start_embedded
from schemas import subjects

log = logging.getLogger("sqt.up")

STOP_GRACE = 3.0  # seconds components get to checkpoint and exit before SIGKILL


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    what: str
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    next_start: float = 0.0
    backoff: float = 1.0
    log_file: object = field(default=None, repr=False)

    def start(self, env: dict[str, str]) -> None:
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log_file,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches `sqt up` only; it stops children in order
            preexec_fn=die_with_parent,
        )
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def components(config: Config, config_path: str | None) -> list[tuple[str, list[str], str]]:
    """(name, argv, description) of every component `sqt up` runs."""
    base = [sys.executable, "-m", "cli.main"] + (["--config", config_path] if config_path else [])
    out = [
        ("sim", base + ["run", "sim"], f"simulated exchange {config.sim.venue!r} ({config.sim.clock} clock)"),
        ("executor", base + ["run", "executor"], f"order executor for {config.executor.venue}/{config.executor.account}"),
    ]
    for grid in config.grids:
        out.append(
            (
                f"grid:{grid.instance}",
                base + ["run", "grid", "--instance", grid.instance],
                f"{grid.mode} grid on {grid.symbol} ({grid.levels} levels each side)",
            )
        )
    return out


def up(config: Config, args: argparse.Namespace) -> int:
    buslog.setup("sqt-up", config.log_level)
    data = Path(config.data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    server = start_embedded(config) if config.embedded else None
    url = server.url if server else config.nats_url
    env = dict(os.environ, NATS_URL=url, PYTHONUNBUFFERED="1")
    children = [
        Child(name, argv, data / "logs" / f"{name.replace(':', '-')}.log", what) for name, argv, what in components(config, args.config)
    ]
    try:
        return asyncio.run(_supervise(config, url, server, children, env, quiet=args.quiet))
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_children(children)
        if server is not None:
            server.stop(timeout=STOP_GRACE)


async def _supervise(
    config: Config, url: str, server: EmbeddedServer | None, children: list[Child], env: dict[str, str], quiet: bool
) -> int:
    try:
        nc = await connect(url, name="sqt-up", attempts=10)
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    changes = await apply(nc.jetstream(), with_retention(STREAMS, config.retention()))
    for change in changes:
        if change.kind != "unchanged":
            log.info("stream %s", change)
    for child in children:
        child.start(env)
    _print_table(config, url, server, children)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch = _Watch(config)
    await watch.start(nc)
    last_line = time.monotonic()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except asyncio.TimeoutError:
            pass
        now = time.monotonic()
        for child in children:
            _keep_alive(child, env, now)
        if server is not None and server.process is not None and server.process.poll() is not None:
            log.error("nats-server exited (code %s); see %s", server.process.returncode, server.log_file)
            stop.set()
        if not quiet and now - last_line >= 5.0:
            last_line = now
            print(await watch.line(nc), flush=True)
    print("stopping: components first, then nats-server ...", flush=True)
    await nc.close()
    return 0


def _keep_alive(child: Child, env: dict[str, str], now: float) -> None:
    if child.alive:
        if now - child.started > 60:
            child.backoff = 1.0  # a minute of health resets the backoff
        return
    if child.next_start == float("inf"):
        return
    if child.next_start == 0.0:
        code = child.proc.returncode if child.proc else None
        if code == 2:  # a configuration error: restarting cannot help
            child.next_start = float("inf")
            log.error("%s stopped on a configuration error; not restarting it (see %s)", child.name, child.log_path)
            return
        child.next_start = now + child.backoff
        log.warning(
            "%s exited with code %s; restarting in %.0fs (restart #%d); log: %s",
            child.name,
            code,
            child.backoff,
            child.restarts + 1,
            child.log_path,
        )
        child.backoff = min(child.backoff * 2, 30.0)
    elif now >= child.next_start:
        child.restarts += 1
        child.next_start = 0.0
        child.start(env)
        log.warning("%s restarted (pid %d)", child.name, child.proc.pid if child.proc else -1)


def _stop_children(children: list[Child]) -> None:
    for child in children:
        if child.alive and child.proc is not None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()
            log.warning("%s did not stop within %.0fs; killed", child.name, STOP_GRACE)


def _print_table(config: Config, url: str, server: EmbeddedServer | None, children: list[Child]) -> None:
    rows = []
    if server is not None and server.process is not None:
        rows.append(
            (
                "nats",
                str(server.process.pid),
                f"nats-server + JetStream at {url}, monitoring http://{server.host}:{server.monitor_port}",
                str(server.log_file),
            )
        )
    else:
        rows.append(("nats", "-", f"external server at {redact(url)}", "-"))
    for c in children:
        rows.append((c.name, str(c.proc.pid if c.proc else "-"), c.what, str(c.log_path)))
    widths = [max(len(r[i]) for r in rows + [("component", "pid", "what", "log")]) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(("component", "pid", "what", "log"), widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    primary = config.grids[0].symbol if config.grids else config.sim.markets[0].symbol
    print(
        f"\nWatch it: sqt tail 'md.{config.sim.venue}.{subjects.symbol_token(primary)}.ticker'   "
        f"(or any NATS client: nats sub 'md.>')\nCtrl-C stops everything.\n",
        flush=True,
    )


class _Ticker(msgspec.Struct):
    last: str = "?"
    bid: str | None = None
    ask: str | None = None


class _Watch:
    """The facts behind the periodic status line: the primary market and grid states."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.symbol = config.grids[0].symbol if config.grids else config.sim.markets[0].symbol
        self.ticker: _Ticker | None = None
        self.ticks = 0
        self.grids: dict[str, dict[str, object]] = {}

    async def start(self, nc) -> None:  # type: ignore[no-untyped-def]
        dec = msgspec.json.Decoder(_Ticker)

        async def on_tick(msg) -> None:  # type: ignore[no-untyped-def]
            self.ticker = dec.decode(msg.data)
            self.ticks += 1

        async def on_state(msg) -> None:  # type: ignore[no-untyped-def]
            doc = msgspec.json.decode(msg.data)
            self.grids[doc.get("instance", "?")] = {
                "status": doc.get("status"),
                "open": doc.get("open_orders", 0),
                "fills": doc.get("fills", 0),
                "pnl": doc.get("realized_pnl", "0"),
                "position": doc.get("position", "0"),
            }

        await nc.subscribe(subjects.md(self.config.sim.venue, self.symbol, "ticker"), cb=on_tick)
        await nc.subscribe(subjects.ops("grid", "*", "state"), cb=on_state)

    async def line(self, nc) -> str:  # type: ignore[no-untyped-def]
        js = nc.jetstream()
        counts = []
        for name in ("MARKET", "ACCOUNT", "COMMAND"):
            try:
                counts.append(f"{name} {(await js.stream_info(name)).state.messages:,}")
            except Exception:  # noqa: BLE001 - the line is best effort
                counts.append(f"{name} ?")
        t = self.ticker
        market = f"{self.symbol} {t.last} (bid {t.bid} / ask {t.ask})" if t else f"{self.symbol}: waiting for ticks"
        grids = "; ".join(
            f"grid {k}: {v['status']}, {v['open']} open, position {v['position']}, {v['fills']} fills, pnl {v['pnl']}"
            for k, v in sorted(self.grids.items())
        )
        stamp = time.strftime("%H:%M:%S")
        return f"[{stamp}] {market} | {', '.join(counts)} msgs" + (f" | {grids}" if grids else "")
