"""`sqt`: run the system, one component, or look at the bus.

sqt up                         everything: embedded NATS, simulated exchange, executor, grids
sqt run <component>            one component in the foreground (sim, executor, grid, funding, arbitrage, ...)
sqt tail [subject]             events as they happen (`md.>` by default); --since/--seq for history
sqt status                     streams, consumers and their lag, services that answer
sqt streams apply|ls           create/update streams and buckets; list them
sqt schemas                    JSON Schema of every message type
sqt replay ...                 reproduce a strategy's decisions from the recorded streams
sqt query "SQL"                SQL over the archive's Parquet files (views: candles, fills, commands, ...)
sqt risk ... / sqt arbitrage ... operators' controls
sqt grid add|ls|pause|resume|remove   grids at runtime (the registry)
sqt auth init|roles            the NATS users' passwords; who may do what
sqt backup DIR / restore DIR   every stream and bucket, through JetStream's snapshot API
sqt cluster up|status          a local 3-node JetStream cluster
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bus.auth import AuthError, use_credentials
from cli.config import ConfigError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="TOML config file (default: $SQT_CONFIG or configs/sqt.toml)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start everything and supervise it")
    up.add_argument("--nats-port", type=int, help="client port of the embedded nats-server")
    up.add_argument("--nats-monitor-port", type=int, help="monitoring port of the embedded nats-server")
    up.add_argument("--quiet", action="store_true", help="no periodic status line")

    run = sub.add_parser("run", help="run one component in the foreground")
    run.add_argument(
        "component",
        choices=[
            "sim",
            "executor",
            "grid",
            "grids",
            "funding",
            "arbitrage",
            "gateway",
            "risk",
            "reconciler",
            "alerts",
            "archive",
            "publisher",
            "nats",
        ],
    )
    run.add_argument("--instance", help="grid or arbitrage instance id (for `run grid`, `run arbitrage`)")
    run.add_argument(
        "--venue", help="`run publisher`: the venue (a [venues.*] name or a ccxt id); `run sim`, `run executor`: which configured one"
    )
    run.add_argument(
        "--account", help="`run publisher`: also publish this account's orders, fills, positions, balances; `run executor`: which one"
    )
    run.add_argument("--symbols", help="`run publisher`: comma-separated markets, e.g. BTC/USDT:USDT,ETH/USDT:USDT")
    run.add_argument("--shard", help="`run grids`: N/M, host the registry's grids of shard N of M on one connection")
    run.add_argument("--from-file", type=Path, help="`run gateway`: playback plays this exported incident (sqt replay export)")
    run.add_argument("--nats-port", type=int)
    run.add_argument("--nats-monitor-port", type=int)

    tail = sub.add_parser("tail", help="print events as they arrive")
    tail.add_argument("subject", nargs="?", default="md.>")
    group = tail.add_mutually_exclusive_group()
    group.add_argument("--since", help="start from history: 10m, 2h, 1d ago")
    group.add_argument("--seq", type=int, help="start from this stream sequence")
    tail.add_argument("--json", action="store_true", help="raw JSON payloads")
    tail.add_argument("--limit", type=int, help="stop after this many events")

    sub.add_parser("status", help="streams, consumers, lag, services")

    streams = sub.add_parser("streams", help="streams and buckets")
    streams.add_argument("action", choices=["apply", "ls"])

    sub.add_parser("schemas", help="print the JSON Schema of every message type")

    from cli.arbitrage import add_parser as add_arbitrage
    from cli.auth import add_parser as add_auth
    from cli.backtest import add_parser as add_backtest
    from cli.backup import add_parser as add_backup
    from cli.cluster import add_parser as add_cluster
    from cli.data import add_parser as add_data
    from cli.grid import add_parser as add_grid
    from cli.query import add_parser as add_query
    from cli.replay import add_parser as add_replay
    from cli.risk import add_parser as add_risk

    add_replay(sub)
    add_risk(sub)
    add_arbitrage(sub)
    add_query(sub)
    add_backtest(sub)
    add_data(sub)
    add_grid(sub)
    add_backup(sub)
    add_auth(sub)
    add_cluster(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from cli import config as cfgmod

        config = cfgmod.load(args.config)
        use_credentials(config.credentials_path)  # where this process finds its NATS password
        if args.command == "run":  # the component's logging is set up from the environment (bus/process.py)
            os.environ.setdefault("SQT_LOG_FORMAT", config.log_format)
        if getattr(args, "nats_port", None) or getattr(args, "nats_monitor_port", None):
            import msgspec

            config = msgspec.structs.replace(
                config,
                nats=msgspec.structs.replace(
                    config.nats,
                    port=args.nats_port or config.nats.port,
                    monitor_port=args.nats_monitor_port or config.nats.monitor_port,
                ),
            )
        match args.command:
            case "up":
                from cli.up import up

                return up(config, args)
            case "run":
                from cli.run import run_component

                symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None
                publisher = (args.venue, args.account, symbols) if args.venue and args.component == "publisher" else None
                return run_component(config, args.component, args.instance, args.from_file, publisher, args.venue, args.account, args.shard)
            case "tail":
                from cli.tail import tail

                return tail(config, args)
            case "status":
                from cli.status import status

                return status(config)
            case "streams":
                from cli.status import streams_command

                return streams_command(config, args.action)
            case "replay":
                from cli.replay import replay

                return replay(config, args)
            case "risk":
                from cli.risk import risk_command

                return risk_command(config, args)
            case "grid":
                from cli.grid import grid_command

                return grid_command(config, args)
            case "arbitrage":
                from cli.arbitrage import arbitrage_command

                return arbitrage_command(config, args)
            case "backtest":
                from cli.backtest import backtest_command

                return backtest_command(config, args)
            case "data":
                from cli.data import data_command

                return data_command(config, args)
            case "query":
                from cli.query import query_command

                return query_command(config, args)
            case "backup" | "restore":
                from cli.backup import backup_command

                return backup_command(config, args)
            case "auth":
                from cli.auth import auth_command

                return auth_command(config, args)
            case "cluster":
                from cli.cluster import cluster_command

                return cluster_command(config, args)
            case "schemas":
                import json

                from schemas.codec import json_schemas

                print(json.dumps(json_schemas(), indent=2))
                return 0
    except (ConfigError, AuthError) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
