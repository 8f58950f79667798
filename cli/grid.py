"""`sqt grid`: the registry's grid instances, added, paused, resumed and removed at runtime.

    sqt grid add --instance eth-1 --symbol ETH/USDT:USDT --set levels=8 --set spacing=0.002
    sqt grid ls [--all]                       # every instance: where it came from, what it does
    sqt grid pause eth-1 / sqt grid resume eth-1
    sqt grid remove eth-1 --policy cancel     # its orders canceled; its position left, and said
    sqt grid remove eth-1 --policy flatten    # also its position closed, reduce-only

Every change is a compare-and-set on the instance's record in the `registry` bucket and an
event on `ops.registry.grid.<id>` saying who made it; `sqt up` (or `sqt run grids`) follows the
registry and does the rest (orchestration/, docs/adr/0025). A parameter is checked against the
venue's market rules before anything is written: a bad one names the field, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import msgspec
from msgspec.structs import replace
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.connection import Unreachable, connect
from bus.streams import STREAMS, apply, with_retention
from cli.config import Config, ConfigError
from cli.overrides import with_sets
from cli.risk import operator_name
from orchestration.registry import Conflict, Registry, grid_record, now_ms
from schemas import subjects
from schemas.codec import decode
from schemas.ops import StrategyState
from schemas.registry import InstanceRecord
from strategies.grid.config import GridConfig
from strategies.grid.lattice import check_config, client_prefix
from strategies.grid.runner import GridConfigError, client_ids_fit, market_and_price
from venues.factory import UnsupportedVenue, open_venue

EXIT_USAGE = 2
VENUE_WAIT = 10.0  # seconds a venue gets to answer the market-rules check of an add


def add_parser(sub: Any) -> None:
    p = sub.add_parser("grid", help="add, list, pause, resume or remove grid instances at runtime (the registry)")
    acts = p.add_subparsers(dest="action", required=True)
    add = acts.add_parser("add", help="add a grid instance; `sqt up` starts it")
    add.add_argument("--instance", required=True, help="its id: 1-32 of a-z 0-9 - _ (also its client order id prefix)")
    add.add_argument("--symbol", required=True, help="e.g. ETH/USDT:USDT")
    add.add_argument("--venue", default="sim")
    add.add_argument("--account", default="main")
    add.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a grid parameter, e.g. levels=8")
    ls = acts.add_parser("ls", help="every instance: source, desired state, status, position")
    ls.add_argument("--all", action="store_true", help="removed instances too")
    for name, what in (("pause", "no new opening orders (closing orders stay)"), ("resume", "trade again")):
        a = acts.add_parser(name, help=what)
        a.add_argument("instance")
    rm = acts.add_parser("remove", help="stop an instance for good: cancel its orders (and flatten its position)")
    rm.add_argument("instance")
    rm.add_argument("--policy", choices=["cancel", "flatten"], required=True, help="cancel: leave the position; flatten: close it too")
    rm.add_argument("--no-wait", action="store_true", help="return once the removal is recorded")
    rm.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the removal to finish")


def grid_command(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_grid(config, args))


async def _grid(config: Config, args: argparse.Namespace) -> int:
    try:
        nc = await connect(config.nats_url, name="sqt-grid-cli", attempts=3)
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        await apply(nc.jetstream(), with_retention(STREAMS, config.retention()))
        registry = Registry(nc)
        match args.action:
            case "add":
                return await _add(nc, config, registry, args)
            case "ls":
                return await _ls(nc, config, registry, args.all)
            case "pause" | "resume":
                return await _desire(registry, args.instance, "paused" if args.action == "pause" else "running", args.action)
            case "remove":
                return await _remove(registry, args)
        return EXIT_USAGE
    except Conflict as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if registry._publisher is not None:
            await registry._publisher.close()
        await nc.close()


async def _add(nc: Client, config: Config, registry: Registry, args: argparse.Namespace) -> int:
    fields = dict(instance=args.instance, venue=args.venue, account=args.account, symbol=args.symbol)
    try:
        grid = with_sets(msgspec.to_builtins(GridConfig(instance="x")) | fields, args.set, GridConfig, fixed=tuple(fields))
    except ConfigError as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if any(a.instance == grid.instance for a in config.arbitrages):
        print(f"sqt: instance: {grid.instance!r} is an arbitrage instance in the config; choose another id", file=sys.stderr)
        return EXIT_USAGE
    got = await registry.get("grid", grid.instance)
    if got is not None:
        rec = got[0]
        why = (
            "was removed; an id is not used again (its client order ids would repeat)" if rec.desired == "removed" else f"is {rec.desired}"
        )
        print(f"sqt: instance: grid {grid.instance!r} is already in the registry and {why}; `sqt grid ls --all`", file=sys.stderr)
        return EXIT_USAGE
    overlap = prefix_overlap(
        grid.instance,
        [r.instance for r, _ in await registry.records("grid")]
        + [g.instance for g in config.grids]
        + [a.instance for a in config.arbitrages],
    )
    if overlap:
        print(f"sqt: instance: {overlap}; choose another id", file=sys.stderr)
        return EXIT_USAGE
    try:
        venue = open_venue(nc, grid.venue, grid.account, config.bus())
    except UnsupportedVenue as exc:
        print(f"sqt: venue: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        stop = asyncio.Event()
        found = await asyncio.wait_for(market_and_price(venue, grid, stop), VENUE_WAIT)
    except GridConfigError as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except asyncio.TimeoutError:
        print(
            f"sqt: venue {grid.venue} did not answer within {VENUE_WAIT:g}s, so the parameters cannot be checked; is it running?",
            file=sys.stderr,
        )
        return 1
    finally:
        await venue.close()
    assert found is not None
    market, price = found
    problems = check_config(grid, market, price) + client_ids_fit(grid, getattr(venue, "client_id_max", 32))
    if problems:
        print(f"sqt: grid {grid.instance}: " + "; ".join(problems), file=sys.stderr)
        return EXIT_USAGE
    by = operator_name()
    await registry.create(grid_record(grid, "sqt", by, now_ms()), "add", by)
    print(f"added grid {grid.instance} on {grid.venue}/{grid.account} {grid.symbol}; `sqt up` starts it (`sqt grid ls` shows it)")
    return 0


def prefix_overlap(instance: str, others: list[str]) -> str:
    """Why `instance` cannot be used beside `others`: its client order ids would begin like one of
    theirs (a removal finds an instance's orders by that prefix, so it would cancel the other's)."""
    mine = client_prefix(instance)
    for other in others:
        theirs = client_prefix(other)
        if other != instance and (mine.startswith(theirs) or theirs.startswith(mine)):
            return f"its client order ids ({mine}...) would begin like those of {other!r} ({theirs}...)"
    return ""


async def _desire(registry: Registry, instance: str, desired: str, action: str) -> int:
    for _ in range(5):  # a concurrent writer: read again
        got = await registry.get("grid", instance)
        if got is None:
            print(f"sqt: no grid {instance!r} in the registry (`sqt grid ls`)", file=sys.stderr)
            return EXIT_USAGE
        rec, rev = got
        if rec.desired == "removed":
            print(f"sqt: grid {instance} is removed ({rec.phase or 'starting'})", file=sys.stderr)
            return EXIT_USAGE
        if rec.desired == desired:
            print(f"grid {instance} is already {desired}")
            return 0
        try:
            await registry.update(replace(rec, desired=desired), rev, action, operator_name())  # type: ignore[arg-type]
        except Conflict:
            continue
        print(f"grid {instance}: {desired}")
        return 0
    raise Conflict(f"grid {instance} kept changing while it was written; try again")


async def _remove(registry: Registry, args: argparse.Namespace) -> int:
    got = await registry.get("grid", args.instance)
    if got is None:
        print(f"sqt: no grid {args.instance!r} in the registry (`sqt grid ls`)", file=sys.stderr)
        return EXIT_USAGE
    rec, rev = got
    if rec.desired != "removed":
        rec, rev = await registry.update(
            replace(rec, desired="removed", policy=args.policy, phase="stopping"), rev, "remove", operator_name()
        )
        print(f"grid {args.instance}: removing ({args.policy})")
    elif rec.policy != args.policy:
        print(f"grid {args.instance} is already being removed with --policy {rec.policy}")
    if args.no_wait:
        return 0
    deadline = time.monotonic() + args.timeout
    said = ""
    while True:
        got = await registry.get("grid", args.instance)
        assert got is not None
        rec = got[0]
        line = f"  {rec.phase or 'stopping'}" + (f": {rec.note}" if rec.note else "")
        if line != said:
            print(line, flush=True)
            said = line
        if rec.phase == "done":
            print(f"grid {args.instance} removed; the venue holds {rec.left_position} of {rec.symbol} on {rec.venue}/{rec.account}")
            return 0
        if time.monotonic() > deadline:
            print(f"sqt: grid {args.instance} is still being removed ({rec.phase}); it goes on: `sqt grid ls --all`", file=sys.stderr)
            return 1
        await asyncio.sleep(0.5)


async def _ls(nc: Client, config: Config, registry: Registry, every: bool) -> int:
    records = await registry.records("grid")
    rows: list[tuple[str, ...]] = [("INSTANCE", "MARKET", "DESIRED", "STATUS", "POSITION", "ORDERS", "FILLS", "SOURCE")]
    js = nc.jetstream()
    for rec, _rev in records:
        if rec.desired == "removed" and rec.phase == "done" and not every:
            continue
        rows.append(await _row(js, rec))
    seeded = {r.instance for r, _ in records}
    for g in config.grids:
        if g.instance not in seeded:
            rows.append(
                (g.instance, f"{g.venue}/{g.account} {g.symbol}", "-", "not in the registry yet (sqt up seeds it)", "", "", "", "config")
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


async def _row(js: Any, rec: InstanceRecord) -> tuple[str, ...]:
    status, position, orders, fills = "no state yet", "", "", ""
    try:
        msg = await js.get_last_msg("OPS", subjects.ops("grid", rec.instance, "state"))
        st = decode(msg.data)
        if isinstance(st, StrategyState):
            status, position, orders, fills = st.status, str(st.position), str(st.open_orders), str(st.fills)
    except NotFoundError:
        pass
    desired: str = rec.desired
    if rec.desired == "removed":
        desired = f"removed ({rec.policy}, {rec.phase or 'stopping'})"
        if rec.phase == "done":
            status, position, orders = "removed", f"{rec.left_position} left", "0"
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec.created_ts / 1000)) if rec.created_ts else ""
    source = "config file" if rec.source == "config" else f"sqt grid add by {rec.created_by} {when}"
    return (rec.instance, f"{rec.venue}/{rec.account} {rec.symbol}", desired, status, position, orders, fills, source)
