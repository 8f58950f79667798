"""`sqt run <component>`: one component as its own process (what `sqt up` starts for each)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from bus import process
from bus.auth import init_credentials
from bus.connection import connect
from bus.embedded import EmbeddedServer, PortInUse, ServerFailed
from bus.streams import STREAMS, prepare, with_retention
from cli.config import Config, ConfigError
from venues.sim.config import SimConfig

log = logging.getLogger("sqt")


async def connect_and_apply(config: Config, name: str, role: str):
    nc = await connect(config.nats_url, name=name, role=role)
    await prepare(nc, with_retention(STREAMS, config.retention()))
    return nc


def run_component(
    config: Config,
    component: str,
    instance: str | None,
    from_file: Path | None = None,
    publisher: tuple[str, str | None, list[str] | None] | None = None,
    venue: str | None = None,
    account: str | None = None,
    shard: str | None = None,
) -> int:
    match component:
        case "nats":
            return run_nats(config)
        case "sim":
            sim = config.simulated(venue)
            return process.run("sim" if sim is config.sim else f"sim:{sim.venue}", lambda stop: _sim(config, sim, stop))
        case "executor":
            from executors.runner import run_executor

            ex = config.executor_for(venue, account)
            name = "executor" if ex is config.executor else f"executor:{ex.venue}-{ex.account}"
            return process.run(name, lambda stop: run_executor(config.bus(), ex, stop))
        case "funding":
            from monitors.funding.runner import run_funding

            async def funding(stop: asyncio.Event) -> None:
                try:
                    await run_funding(config.bus(), config.funding, stop)
                except ValueError as exc:  # a leg its venue does not list
                    logging.getLogger("funding").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run(f"funding:{config.funding.instance}", funding)
        case "arbitrage":
            arb = config.arbitrage(instance)
            from strategies.arbitrage.runner import ArbConfigError, run_arbitrage

            async def arbitrage(stop: asyncio.Event) -> None:
                try:
                    await run_arbitrage(config.bus(), arb, stop)
                except ArbConfigError as exc:
                    logging.getLogger("arbitrage").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run(f"arbitrage:{arb.instance}", arbitrage)
        case "risk":
            from monitors.risk.runner import RiskConfigError, run_risk

            async def risk(stop: asyncio.Event) -> None:
                try:
                    await run_risk(config.bus(), config.risk, stop)
                except RiskConfigError as exc:
                    logging.getLogger("risk").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run(f"risk:{config.risk.instance}", risk)
        case "alerts":
            from monitors.alerts.channels import ChannelConfigError
            from monitors.alerts.runner import run_alerts

            async def alerts(stop: asyncio.Event) -> None:
                try:
                    await run_alerts(config.bus(), config.alerts, stop)
                except ChannelConfigError as exc:  # names the variable, never its value
                    logging.getLogger("alerts").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run(f"alerts:{config.alerts.instance}", alerts)
        case "archive":
            from monitors.archive.runner import run_archive

            return process.run("archive", lambda stop: run_archive(config.bus(), config.archive, config.archive_dir(), stop))
        case "reconciler":
            from monitors.reconciler.runner import run_reconciler

            return process.run("reconciler", lambda stop: run_reconciler(config.bus(), config.reconciler, stop))
        case "gateway":
            from gateway.auth import AuthConfigError
            from gateway.runner import run_gateway

            async def gateway(stop: asyncio.Event) -> None:
                try:
                    await run_gateway(config.bus(), config.gateway, stop, from_file)
                except (AuthConfigError, ValueError, OSError) as exc:  # bad tokens, a bad incident file, a port in use
                    logging.getLogger("gateway").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run("gateway", gateway)
        case "publisher":
            venue, account, symbols = publisher or (None, None, None)
            if venue is None:
                raise ConfigError("`sqt run publisher` needs --venue (e.g. --venue binanceusdm --symbols BTC/USDT:USDT)")
            pub, venue_cfg = config.publisher(venue, account, symbols)
            from bus.errors import LeaseHeld
            from publishers.ccxt.runner import run_publisher

            async def publish(stop: asyncio.Event) -> None:
                try:
                    await run_publisher(config.bus(), venue_cfg, pub, stop)
                except (LeaseHeld, ValueError) as exc:  # another publisher of it runs; a symbol the venue lacks
                    logging.getLogger("publisher").error("%s", exc)
                    raise SystemExit(2) from None

            return process.run(f"publisher:{pub.name}", publish)
        case "grid":
            return _grid_host(config, instance)
        case "grids":
            if not shard:
                raise ConfigError("`sqt run grids` needs --shard N/M (e.g. --shard 0/2)")
            return _grids_host(config, shard)
    raise ConfigError(f"unknown component {component!r}")


def _grid_host(config: Config, instance: str | None) -> int:
    """One grid: from the registry if it is there (`sqt grid add`, or seeded by `sqt up`), else
    the config's; it ends once the registry says it is removed."""
    if instance is None:
        if len(config.grids) != 1:
            known = ", ".join(g.instance for g in config.grids) or "none configured"
            raise ConfigError(f"`sqt run grid` needs --instance (configured: {known})")
        instance = config.grids[0].instance
    fallback = next((g for g in config.grids if g.instance == instance), None)
    from orchestration.host import Host
    from orchestration.registry import Registry
    from strategies.grid.runner import GridConfigError

    name = instance

    async def main(stop: asyncio.Event) -> None:
        nc = await connect_and_apply(config, f"sqt-grid-{name}", "strategy")
        try:
            if fallback is None and await Registry(nc).get("grid", name) is None:
                known = ", ".join(g.instance for g in config.grids) or "none configured"
                logging.getLogger("grid").error(
                    "no grid instance %r in the registry or the config (configured: %s; see `sqt grid ls`)", name, known
                )
                raise SystemExit(2)
            host = Host(nc, config.bus(), lambda r: r.instance == name, fallback=fallback, name=f"grid:{name}")
            host.single = True
            await host.run(stop)
        except GridConfigError as exc:
            logging.getLogger("grid").error("%s", exc)
            raise SystemExit(2) from None
        finally:
            await nc.close()

    return process.run(f"grid:{instance}", main)


def _grids_host(config: Config, shard: str) -> int:
    """Every registry grid whose id falls in shard N of M, on one connection and event loop."""
    from bus.service import register
    from orchestration.host import Host, parse_shard, shard_of
    from orchestration.registry import Registry

    try:
        n, m = parse_shard(shard)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    async def main(stop: asyncio.Event) -> None:
        nc = await connect_and_apply(config, f"sqt-grids-{n}-of-{m}", "strategy")
        try:
            await Registry(nc).seed(config.grids, "config")
            host = Host(nc, config.bus(), lambda r: shard_of(r.instance, m) == n, name=f"grids:{n}/{m}")
            service = await register(nc, "grids", f"{n}-of-{m}", f"grid instances of shard {n}/{m}", host.status)
            try:
                await host.run(stop)
            finally:
                await service.stop()
        finally:
            await nc.close()

    return process.run(f"grids:{n}-of-{m}", main)


async def _sim(config: Config, sim: SimConfig, stop: asyncio.Event) -> None:
    from venues.sim.service import SimService

    nc = await connect_and_apply(config, f"sqt-sim-{sim.venue}", "exchange")
    try:
        await SimService(nc, sim).run(stop)
    finally:
        await nc.close()


def embedded_server(config: Config) -> EmbeddedServer:
    data = Path(config.data_dir)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    return EmbeddedServer(
        store_dir=data / "nats",
        host=config.nats.host,
        port=config.nats.port,
        monitor_port=config.nats.monitor_port,
        log_file=data / "logs" / "nats.log",
        credentials=credentials(config),
    )


def credentials(config: Config) -> Path | None:
    """The passwords' file for the embedded server's users, written on first start; None when
    `nats.auth` is off, which is said loudly: then any local process may place orders."""
    if not config.nats.auth:
        log.warning(
            "NATS authorization is OFF (nats.auth = false): any client of the server may publish commands and place "
            "orders. For local experiments only."
        )
        return None
    path = config.credentials_path
    if init_credentials(path):
        log.info("wrote NATS passwords for every role to %s (sqt auth init; never commit it)", path)
    return path


def start_embedded(config: Config) -> EmbeddedServer:
    """Start the embedded server, or exit 2 with the reason (a port in use, a dead binary)."""
    server = embedded_server(config)
    try:
        server.start()
    except (PortInUse, ServerFailed) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return server


def run_nats(config: Config) -> int:
    """The embedded server alone, in the foreground, until Ctrl-C."""
    server = start_embedded(config)
    print(f"nats-server with JetStream at {server.url} (monitoring http://{server.host}:{server.monitor_port}); Ctrl-C stops it")
    stopping = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping and server.process is not None and server.process.poll() is None:
        time.sleep(0.2)
    server.stop()
    return 0
