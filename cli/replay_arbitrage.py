"""`sqt replay arbitrage`: every decision of a funding arbitrage again, from its own input stream.

    sqt replay arbitrage --instance btc-basis --since 2026-11-23T06:00:00Z --until 2026-11-23T06:30:00Z
    sqt replay arbitrage --instance btc-basis --since 2h --set naked_ms=2000   # what a tighter limit would have done

The core is folded over the instance's whole input stream (every input since it started: its
state is made of nothing else), and the places and cancels it decides within the window are
compared with the commands COMMAND recorded from it in the same window. Exit 0 when they are
the same, 1 with the first difference. It never touches a venue and publishes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

import msgspec
from nats.aio.client import Client

from bus import export
from bus.connection import Unreachable, connect
from bus.contract import Outgoing, StoredMsg, fold_stream
from bus.reader import read_stream
from cli.config import Config
from cli.overrides import with_sets
from cli.replay import Progress, parse_time
from schemas import subjects
from schemas.codec import decode
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import Market
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.core import COMPONENT, ArbCore
from strategies.arbitrage.runner import arb_spec, input_stream
from strategies.arbitrage.state import ArbState
from strategies.decisions import Decision, describe, first_difference


def with_overrides(cfg: ArbConfig, overrides: list[str]) -> ArbConfig:
    return with_sets(msgspec.to_builtins(cfg), overrides, ArbConfig, fixed=("instance", "legs", "pair"))


async def recorded_markets(nc: Client, cfg: ArbConfig) -> list[Market] | None:
    """The legs' market rules as the instance's first published state carries them."""
    subject = subjects.ops(COMPONENT, cfg.instance, "state")
    async for batch in read_stream(nc, "OPS", subjects=(subject,)):
        state = decode(batch[0].data).state
        if state is None:
            return None
        return [leg.market for leg in msgspec.convert(state, ArbState).legs]
    return None


async def replay_arbitrage(config: Config, args: argparse.Namespace) -> int:
    cfg = with_overrides(config.arbitrage(args.instance), args.set)
    until = parse_time(args.until)
    since = parse_time(args.since, default=dt.datetime.fromtimestamp(0, dt.timezone.utc))
    first_ms, last_ms = int(since.timestamp() * 1000), int(until.timestamp() * 1000)
    try:
        nc = await connect(config.nats_url, name="sqt-replay-arbitrage", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        markets = await recorded_markets(nc, cfg)
        if markets is None:
            print(f"sqt: no recorded state of arbitrage {cfg.instance}: nothing to replay", file=sys.stderr)
            return 1
        core = ArbCore(cfg, markets)
        stream = input_stream(cfg).name
        print(f"replaying arbitrage {cfg.instance} from the first input of {stream} until {until.isoformat()}", file=sys.stderr)
        replayed: list[Decision] = []

        def step(m: StoredMsg, _after: Any, outputs: list[Outgoing], _reason: str) -> None:
            for out in outputs:
                cmd = out.message
                if isinstance(cmd, (PlaceOrder, CancelOrder)) and first_ms <= cmd.ts <= last_ms:
                    replayed.append(cmd)
                    if not args.quiet:
                        print(f"{m.seq:>10}  {describe(cmd)}")

        progress = Progress()
        _, _, count = await fold_stream(
            core, core.initial_state(), export.window(nc, stream, None, until), arb_spec(cfg).rules(), step, progress
        )
        progress(count, final=True)
        origin = f"arbitrage/{cfg.instance}"
        recorded: list[Decision] = []
        for leg in cfg.legs:
            pattern = subjects.cmd(leg.venue, cfg.account, leg.symbol, "*")
            async for batch in export.window(nc, "COMMAND", since - dt.timedelta(seconds=60), until + dt.timedelta(seconds=60), (pattern,)):
                for m in batch:
                    cmd = decode(m.data)
                    if isinstance(cmd, (PlaceOrder, CancelOrder)) and cmd.origin == origin and first_ms <= cmd.ts <= last_ms:
                        recorded.append(cmd)
        difference = first_difference(replayed, recorded)
        if difference is None:
            print(f"match: {len(replayed)} decisions over {count:,} inputs equal the record", file=sys.stderr)
            return 0
        print(f"DIFFERENT{' (with --set)' if args.set else ''}: {difference}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
