"""`sqt up`: the embedded NATS server, streams, and every component as its own process.

Prints what runs and where, keeps everything running (cli/supervisor.py: a component or the
nats-server that dies is restarted with backoff, and we say so), shows a status line with live
market data (cli/statusline.py), and on Ctrl-C stops everything within a few seconds:
components first (SIGTERM, so they checkpoint), then the server; nothing is left behind
(children also die with their parent, through PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import nats.errors

from bus import log as buslog
from bus.auth import COMPONENT_ROLES, CREDENTIALS_ENV, PASSWORD_ENV, ROLES, USER_ENV, read_credentials
from bus.connection import Unreachable, connect
from bus.embedded import EmbeddedServer
from bus.errors import BusError
from bus.secrets import is_secret_variable, redact, uses_secret
from bus.streams import apply
from cli.config import Config
from cli.run import start_embedded
from cli.statusline import print_status_lines
from cli.supervisor import GIVEN_UP, NOT_SCHEDULED, Child, Supervisor
from orchestration.provision import follow as provision_follow
from orchestration.provision import provision_all
from orchestration.registry import Registry, grid_config
from schemas import subjects
from schemas.registry import InstanceRecord
from strategies.grid.config import GridConfig

log = logging.getLogger("sqt.up")

CLOSE_WITHIN = 1.0  # seconds for sqt up's own connection to close (it may be down)
MANY_PROCESSES = 20  # grids past which one process each costs more memory than it buys


def components(config: Config, config_path: str | None) -> list[tuple[str, list[str], str]]:
    """(name, argv, description) of every component `sqt up` runs."""
    base = [sys.executable, "-m", "cli.main"] + (["--config", config_path] if config_path else [])
    out = [
        ("sim", base + ["run", "sim"], f"simulated exchange {config.sim.venue!r} ({config.sim.clock} clock)"),
        ("executor", base + ["run", "executor"], f"order executor for {config.executor.venue}/{config.executor.account}"),
        ("risk", base + ["run", "risk"], f"risk monitor {config.risk.instance!r} over {len(config.risk.markets())} markets"),
        (
            "reconciler",
            base + ["run", "reconciler"],
            f"reconciler of {config.reconciler.venue}/{config.reconciler.account} ({config.reconciler.policy})",
        ),
        ("alerts", base + ["run", "alerts"], "alerts to Slack and Telegram (from the environment)"),
        ("archive", base + ["run", "archive"], f"every stream into Parquet at {config.archive_dir()} (sqt query)"),
        *[
            (f"sim:{s.venue}", base + ["run", "sim", "--venue", s.venue], f"simulated exchange {s.venue!r} ({s.prices} prices)")
            for s in config.sims
        ],
        *[
            (
                f"executor:{e.venue}-{e.account}",
                base + ["run", "executor", "--venue", e.venue, "--account", e.account],
                f"order executor for {e.venue}/{e.account}",
            )
            for e in config.executors
        ],
        ("gateway", base + ["run", "gateway"], f"live page http://{config.gateway.host}:{config.gateway.port}/"),
    ]
    for pub in config.publishers:
        argv = base + ["run", "publisher", "--venue", pub.venue] + (["--account", pub.account] if pub.account else [])
        out.append(
            (
                f"publisher:{pub.name}",
                argv,
                f"{pub.venue} data of {len(pub.symbols)} markets{' and account ' + pub.account if pub.account else ''}",
            )
        )
    if config.funding.pairs:
        out.append(
            (
                f"funding:{config.funding.instance}",
                base + ["run", "funding"],
                f"funding monitor over {len(config.funding.pairs)} pairs ({', '.join(p.name for p in config.funding.pairs)})",
            )
        )
    for arb in config.arbitrages:
        out.append(
            (f"arbitrage:{arb.instance}", base + ["run", "arbitrage", "--instance", arb.instance], f"funding arbitrage on {arb.pair}")
        )
    if config.hosting.grid_shards:
        m = config.hosting.grid_shards
        for n in range(m):
            out.append((f"grids:{n}", base + ["run", "grids", "--shard", f"{n}/{m}"], f"grid instances of shard {n}/{m} (the registry's)"))
    else:
        out += [grid_child(base, grid) for grid in config.grids]  # seeded into the registry; it follows it from then on
    return out


def grid_child(base: list[str], grid: GridConfig) -> tuple[str, list[str], str]:
    return (
        f"grid:{grid.instance}",
        base + ["run", "grid", "--instance", grid.instance],
        f"{grid.mode} grid on {grid.symbol} ({grid.levels} levels each side)",
    )


def child_environment(env: dict[str, str], component: str, credentials: Path | None) -> dict[str, str]:
    """What one child gets: its own role's login and only the secrets it uses, not the whole
    credentials file nor another component's keys (docs/adr/0026)."""
    own = {k: v for k, v in env.items() if not is_secret_variable(k) or uses_secret(component, k)}
    for name in (CREDENTIALS_ENV, USER_ENV, PASSWORD_ENV):
        own.pop(name, None)
    role = COMPONENT_ROLES.get(component)
    if role is not None and credentials is not None:
        own[USER_ENV] = role
        own[PASSWORD_ENV] = read_credentials(credentials, (role,))[ROLES[role].password_variable]
    return own


def up(config: Config, args: argparse.Namespace) -> int:
    buslog.setup("sqt-up", config.log_level, config.log_format)
    data = Path(config.data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    server = start_embedded(config) if config.embedded else None
    url = server.url if server else config.nats_url
    env = dict(os.environ, NATS_URL=url, PYTHONUNBUFFERED="1", SQT_LOG_FORMAT=config.log_format)
    credentials = config.credentials_path if (config.nats.auth or not config.embedded) and config.credentials_path.exists() else None

    def child(name: str, argv: list[str], what: str) -> Child:
        own = child_environment(env, name.split(":")[0], credentials)
        return Child(name, argv, data / "logs" / f"{name.replace(':', '-')}.log", what, env=own)

    children = [child(name, argv, what) for name, argv, what in components(config, args.config)]
    supervisor = Supervisor(children, server)
    base = [sys.executable, "-m", "cli.main"] + (["--config", args.config] if args.config else [])
    follow = None if config.hosting.grid_shards else GridChildren(supervisor, lambda g: child(*grid_child(base, g)))
    try:
        return asyncio.run(_run(config, url, supervisor, quiet=args.quiet, follow=follow))
    except KeyboardInterrupt:
        return 0
    finally:
        supervisor.kill()  # only what an error on the way out left running


async def _run(config: Config, url: str, supervisor: Supervisor, quiet: bool, follow: GridChildren | None = None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # The supervisor reports an embedded server's outages itself; its client need not.
        level = logging.DEBUG if supervisor.server is not None else logging.WARNING
        nc = await connect(url, name="sqt-up", attempts=10, outage_level=level, role="admin")
        changes = await apply(nc.jetstream(), config.declared_streams())
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        await supervisor.stop()
        return 1
    except (BusError, nats.errors.Error, asyncio.TimeoutError) as exc:
        print(f"sqt: could not set up the streams: {exc or type(exc).__name__}", file=sys.stderr)
        await supervisor.stop()
        return 1
    for change in changes:
        if change.kind != "unchanged":
            log.info("stream %s", change)
    registry = Registry(nc)
    seeded = await registry.seed(config.grids, "config")
    if seeded:
        log.info("registry: seeded %s from the config (from now on the registry is the truth: sqt grid ls)", ", ".join(seeded))
    await registry.heal()
    # The registry's grids' input streams are the admin's to make (orchestration/provision.py).
    for change in await provision_all(nc, registry):
        if change.kind != "unchanged":
            log.info("stream %s", change)
    provisioning = asyncio.create_task(provision_follow(nc, registry), name="provision")
    for record, _rev in await registry.records("grid"):
        mine = next((g for g in config.grids if g.instance == record.instance), None)
        if mine is not None and record.source == "config" and grid_config(record) != mine:
            log.warning(
                "grid %s: its [[grids]] table differs from the registry's record, which runs (the registry is the truth once "
                "seeded: remove the instance and add it with the new parameters, under a new id)",
                record.instance,
            )
    following = None
    if follow is not None:
        live = [r for r, _ in await registry.records("grid") if not (r.desired == "removed" and r.phase == "done")]
        if len(live) > MANY_PROCESSES:
            log.warning(
                "%d grids, each its own process (about 65 MB each): [hosting] grid_shards = 2 runs them in two (bench/scale.py)",
                len(live),
            )
        for record, revision in await registry.records("grid"):
            try:
                follow.on_record(record, revision, started=False)
            except Exception as exc:
                log.error("registry: grid %s (revision %d) cannot run: %s", record.instance, revision, exc)
        following = asyncio.create_task(follow.run(registry))
    supervisor.start()
    _print_table(config, url, supervisor.server.server if supervisor.server else None, supervisor.children)
    status = None if quiet else asyncio.create_task(print_status_lines(nc, config, stop))
    await supervisor.run(stop)
    print("stopping: components first, then nats-server ...", flush=True)
    provisioning.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await provisioning
    if following is not None:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
    if status is not None:
        status.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await status
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(nc.close(), CLOSE_WITHIN)
    await supervisor.stop()
    return 0


class GridChildren:
    """One process per grid instance, following the registry: a child for every instance that
    is not removed yet (its removal runs in it), gone once the removal is done. Nothing else
    restarts."""

    def __init__(self, supervisor: Supervisor, make: Callable[[GridConfig], Child]) -> None:
        self.supervisor = supervisor
        self.make = make

    def on_record(self, record: InstanceRecord, revision: int, started: bool = True) -> None:
        name = f"grid:{record.instance}"
        have = any(c.name == name for c in self.supervisor.children)
        if record.desired == "removed" and record.phase == "done":
            if have:
                self.supervisor.drop(name)
                log.info("%s removed from the registry (%s): its process is gone", name, record.policy)
            return
        if have and record.desired == "removed":
            child = next(c for c in self.supervisor.children if c.name == name)
            if not child.alive and child.next_start == GIVEN_UP:
                # Given up on (it could not start: a price outside its bounds, say), yet its removal
                # must run, and runs in it: the host of a removal does not check the market again.
                child.next_start, child.restarts = NOT_SCHEDULED, child.restarts + 1
                child.launch()
                log.warning("%s started again to carry out its removal (pid %s)", name, child.pid)
            return
        if not have:
            child = self.make(grid_config(record))
            self.supervisor.add(child, launch=started)
            if started:
                log.warning("%s added from the registry (by %s): started, pid %s", name, record.changed_by, child.pid)

    async def run(self, registry: Registry) -> None:
        async for record, revision in registry.follow("grid"):
            try:
                self.on_record(record, revision)
            except Exception as exc:  # a record whose parameters no grid takes: said, and skipped
                log.error("registry: grid %s (revision %d) cannot run: %s", record.instance, revision, exc)


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
        rows.append((c.name, str(c.pid or "-"), c.what, str(c.log_path)))
    widths = [max(len(r[i]) for r in rows + [("component", "pid", "what", "log")]) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(("component", "pid", "what", "log"), widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
    primary = config.grids[0].symbol if config.grids else config.sim.markets[0].symbol
    print(
        f"\nOpen the live page: http://{config.gateway.host}:{config.gateway.port}/\n"
        f"Watch it: sqt tail 'md.{config.sim.venue}.{subjects.symbol_token(primary)}.ticker'   "
        f"(or any NATS client: nats sub 'md.>')\nCtrl-C stops everything.\n",
        flush=True,
    )
