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
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.auth import AuthError, may_administer
from bus.connection import Unreachable, connect
from bus.streams import STREAMS, StreamsMissing, prepare, with_retention
from cli.config import Config, ConfigError
from cli.overrides import with_sets
from cli.risk import operator_name
from orchestration.operations import Refused, add_grid, request_removal, set_desired
from orchestration.provision import provision
from orchestration.registry import Registry
from schemas import subjects
from schemas.codec import decode
from schemas.ops import StrategyState
from schemas.registry import InstanceRecord
from strategies.grid.config import GridConfig

EXIT_USAGE = 2


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
        nc = await connect(config.nats_url, name="sqt-grid-cli", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    registry = Registry(nc)
    try:
        await prepare(nc, with_retention(STREAMS, config.retention()), wait=False)
        by = operator_name()
        match args.action:
            case "add":
                fields = dict(instance=args.instance, venue=args.venue, account=args.account, symbol=args.symbol)
                grid = with_sets(msgspec.to_builtins(GridConfig(instance="x")) | fields, args.set, GridConfig, fixed=tuple(fields))
                taken = [g.instance for g in config.grids] + [a.instance for a in config.arbitrages]
                await add_grid(nc, config.bus(), registry, grid, taken, by)
                print(
                    f"added grid {grid.instance} on {grid.venue}/{grid.account} {grid.symbol}; `sqt up` starts it (`sqt grid ls` shows it)"
                )
                print(await _input_stream(config, nc, registry, grid.instance))
                return 0
            case "ls":
                return await _ls(nc, config, registry, args.all)
            case "pause" | "resume":
                print(await set_desired(registry, args.instance, "paused" if args.action == "pause" else "running", by))
                return 0
            case "remove":
                print(await request_removal(registry, args.instance, args.policy, by))
                return 0 if args.no_wait else await _wait_removed(registry, args.instance, args.timeout)
        return EXIT_USAGE
    except (Refused, ConfigError) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_USAGE if getattr(exc, "usage", True) else 1
    except StreamsMissing as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    finally:
        await registry.close()
        await nc.close()


async def _input_stream(config: Config, nc: Client, registry: Registry, instance: str) -> str:
    """The new grid's input stream, made as the admin when this machine has its password; the
    operator's user may not create streams (docs/adr/0026), so otherwise `sqt up` (which
    follows the registry) or `sqt streams apply` makes it, and the grid waits for it."""
    got = await registry.get("grid", instance)
    assert got is not None
    try:
        admin = (
            nc
            if may_administer(getattr(nc, "logged_in_as", None))
            else await connect(config.nats_url, name="sqt-grid-cli-admin", attempts=1, role="admin")
        )
    except (Unreachable, AuthError):
        return "its input stream is made by the admin: `sqt up` does it, or run `sqt streams apply`"
    try:
        return f"input stream {await provision(admin, got[0])}"
    except Exception:  # noqa: BLE001 - a user that may not (the environment's, in a container): the admin's to do
        return "its input stream is made by the admin: `sqt up` does it, or run `sqt streams apply`"
    finally:
        if admin is not nc:
            await admin.close()


async def _wait_removed(registry: Registry, instance: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    said = ""
    while True:
        got = await registry.get("grid", instance)
        assert got is not None
        rec = got[0]
        line = f"  {rec.phase or 'stopping'}" + (f": {rec.note}" if rec.note else "")
        if line != said:
            print(line, flush=True)
            said = line
        if rec.phase == "done":
            print(f"grid {instance} removed; the venue holds {rec.left_position} of {rec.symbol} on {rec.venue}/{rec.account}")
            return 0
        if time.monotonic() > deadline:
            print(f"sqt: grid {instance} is still being removed ({rec.phase}); it goes on: `sqt grid ls --all`", file=sys.stderr)
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
