"""`sqt risk`: what the breakers say, and an operator's hand on them.

    sqt risk ls                                   # every scope that is not ok, with what tripped it
    sqt risk halt --scope venue.sim --reason "exchange maintenance"
    sqt risk pause --scope symbol.sim.BTC-USDT-USDT          # reduce-only
    sqt risk reset [--scope SCOPE]                # close what no longer holds (all scopes by default)

The commands go to the risk monitor as operator controls on `ops.control.risk.<instance>`
(it decides, writes the bucket and publishes the change); `ls` reads the `breakers` bucket.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NoKeysError

from bus.connection import Unreachable, connect
from bus.publisher import Publisher
from bus.streams import BREAKERS
from cli.config import Config
from schemas import ids
from schemas.ops import BreakerChange, ControlCommand, RiskHeartbeat
from schemas.subjects import HEARTBEAT_KEY


def add_parser(sub: Any) -> None:
    p = sub.add_parser("risk", help="list the risk breakers, or halt, pause or reset a scope")
    p.add_argument("action", choices=["ls", "halt", "pause", "reset"])
    p.add_argument("--scope", help="global, venue.<v>, account.<v>.<a> or symbol.<v>.<symbol token> (reset: all by default)")
    p.add_argument("--reason", default="", help="said in the breaker's evidence")
    p.add_argument("--instance", help="risk instance (default: the config's)")


def risk_command(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_risk(config, args))


async def _risk(config: Config, args: argparse.Namespace) -> int:
    try:
        nc = await connect(config.nats_url, name="sqt-risk-cli", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "ls":
            return await _ls(nc)
        if args.action in ("halt", "pause") and not args.scope:
            args.scope = "global"
        known = config.risk.scopes()
        if args.scope is not None and args.scope not in known:
            print(f"sqt: no watched market is in scope {args.scope!r}; the scopes: {', '.join(sorted(known))}", file=sys.stderr)
            return 2
        fields: dict[str, Any] = dict(
            target_component="risk",
            target_instance=args.instance or config.risk.instance,
            action=args.action,
            reason=args.reason,
            scope=args.scope,
            operator=operator_name(),
            ts=int(time.time() * 1000),
        )
        publisher = await Publisher(nc).start()
        await publisher.publish(ControlCommand(id=ids.content_id("operator", fields), **fields))
        await publisher.close()
        print(f"sent {args.action} {args.scope or '(every scope)'} to risk {fields['target_instance']}; `sqt risk ls` shows the result")
        return 0
    finally:
        await nc.close()


def operator_name() -> str:
    """Who sends a control from this terminal (said in the event, for the log)."""
    try:
        return getpass.getuser() or "operator"
    except (KeyError, OSError):  # a container without a user entry
        return "operator"


async def _ls(nc: Client) -> int:
    try:
        kv = await nc.jetstream().key_value(BREAKERS.name)
        keys = await kv.keys()
    except (BucketNotFoundError, NoKeysError):
        keys = []
    rows = []
    beat = None
    for key in sorted(keys):
        entry = await kv.get(key)
        if key == HEARTBEAT_KEY:
            try:
                beat = msgspec.json.decode(entry.value or b"{}", type=RiskHeartbeat)
            except msgspec.DecodeError:
                beat = None
            continue
        try:
            change = msgspec.json.decode(entry.value or b"{}", type=BreakerChange)
        except msgspec.DecodeError:
            rows.append((key, "unreadable (the executor treats it as halted)", ""))
            continue
        if change.state != "ok":
            rows.append((key, change.state, change.reason))
    if beat is None:
        print("risk monitor: no heartbeat (executors requiring one are reduce-only)")
    else:
        print(f"risk monitor {beat.instance}: last heartbeat {(time.time() * 1000 - beat.ts) / 1000:.1f} s ago")
    if not rows:
        print("every scope is ok")
    for scope, state, reason in rows:
        print(f"{scope:<40} {state:<12} {reason}")
    return 0
