"""`sqt arbitrage`: an operator's hand on a funding arbitrage, and what it holds.

    sqt arbitrage ls                                   # every instance: status, held per leg, books, block
    sqt arbitrage exit --instance btc-basis --reason "funding looks off"   # close the position, then pause
    sqt arbitrage pause|resume|halt|reset --instance btc-basis

The commands go to the instance as operator controls on `ops.control.arbitrage.<instance>` (the
core decides, and its published state says what it did); `ls` reads each instance's last state.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import msgspec
from nats.js.errors import NotFoundError

from bus.connection import Unreachable, connect
from bus.publisher import Publisher
from cli.config import Config, ConfigError
from cli.risk import operator_name
from schemas import ids, subjects
from schemas.codec import decode
from schemas.ops import ControlCommand, StrategyState


def add_parser(sub: Any) -> None:
    p = sub.add_parser("arbitrage", help="list the funding arbitrages, or pause, resume, exit, halt or reset one")
    p.add_argument("action", choices=["ls", "pause", "resume", "exit", "halt", "reset"])
    p.add_argument("--instance", help="the instance (default: the only one configured)")
    p.add_argument("--reason", default="", help="said with the control")


def arbitrage_command(config: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_arbitrage(config, args))


async def _arbitrage(config: Config, args: argparse.Namespace) -> int:
    if not config.arbitrages:
        raise ConfigError("no [[arbitrages]] in the config")
    try:
        nc = await connect(config.nats_url, name="sqt-arbitrage-cli", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "ls":
            for arb in config.arbitrages:
                print(await _line(nc, arb.instance))
            return 0
        instance = config.arbitrage(args.instance).instance
        fields: dict[str, Any] = dict(
            target_component="arbitrage",
            target_instance=instance,
            action=args.action,
            reason=args.reason,
            operator=operator_name(),
            ts=int(time.time() * 1000),
        )
        publisher = await Publisher(nc).start()
        await publisher.publish(ControlCommand(id=ids.content_id("operator", fields), **fields))
        await publisher.close()
        print(f"sent {args.action} to arbitrage {instance}; `sqt arbitrage ls` shows the result")
        return 0
    finally:
        await nc.close()


async def _line(nc: Any, instance: str) -> str:
    try:
        msg = await nc.jetstream().get_last_msg("OPS", subjects.ops("arbitrage", instance, "state"))
    except NotFoundError:
        return f"{instance}: no state published yet"
    event = decode(msg.data)
    if not isinstance(event, StrategyState) or event.state is None:
        return f"{instance}: unreadable state"
    st: dict[str, Any] = msgspec.to_builtins(event.state)
    held = ", ".join(f"{leg['venue']}/{leg['symbol']} {leg['held']}" for leg in st.get("legs", []))
    total = st.get("books", {}).get("total", {})
    saga = st.get("saga") or {}
    parts = [
        f"{instance}: {event.status}",
        f"held {held}",
        f"saga {saga.get('step', 'none')}",
        f"{st.get('entries', 0)} entries, {st.get('exits', 0)} exits",
        "total " + ", ".join(f"{k} {total.get(k, '0')}" for k in ("funding", "basis", "fees", "borrow")),
    ]
    if st.get("blocked"):
        parts.append(f"BLOCKED: {st['blocked']} (sqt arbitrage reset --instance {instance})")
    return "; ".join(parts)
