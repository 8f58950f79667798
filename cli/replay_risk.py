"""`sqt replay risk`: every breaker decision of a window again, from the monitor's own input stream.

    sqt replay risk --since 2026-11-23T06:00:00Z --until 2026-11-23T06:30:00Z
    sqt replay risk --since 2h --set flash_crash.move=0.03     # where would a tighter limit have tripped?

Exit 0 when the replayed decisions equal the recorded ones, 1 with the first difference.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from decimal import Decimal

from msgspec.structs import replace
from nats.aio.client import Client

from bus import export
from bus.connection import Unreachable, connect
from bus.settings import BusSettings
from cli.config import Config, ConfigError
from cli.replay import Progress, parse_time
from monitors.risk.config import RiskConfig
from monitors.risk.core import RiskCore
from monitors.risk.replay import describe, first_difference, replay, with_overrides
from monitors.risk.runner import RiskConfigError, input_stream, market_rules
from monitors.risk.state import market_key
from schemas import subjects
from schemas.codec import decode
from schemas.market import Market
from schemas.ops import BreakerChange
from venues.errors import Transient


async def replay_risk(config: Config, args: argparse.Namespace) -> int:
    cfg = config.risk if not args.instance else replace(config.risk, instance=args.instance)
    try:
        changed = with_overrides(cfg, args.set)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    until = parse_time(args.until)
    since = parse_time(args.since, default=dt.datetime.fromtimestamp(0, dt.timezone.utc))
    try:
        nc = await connect(config.nats_url, name="sqt-replay-risk", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        markets = await _rules(nc, cfg, config.bus())
        core = RiskCore(changed, markets)
        stream = input_stream(cfg).name
        print(f"replaying risk {cfg.instance} from the first input of {stream} until {until.isoformat()}", file=sys.stderr)

        def show(seq: int, change: BreakerChange) -> None:
            if not args.quiet:
                print(f"{seq:>10}  {describe(change)}")

        progress = Progress()
        batches = export.window(nc, stream, None, until)
        result = await replay(core, batches, int(since.timestamp() * 1e9), int(until.timestamp() * 1e9), show)
        progress(result.inputs, final=True)
        recorded = []
        async for batch in export.window(nc, "OPS", since, until, (subjects.ops("risk", cfg.instance, "breaker"),)):
            recorded += [c for c in (decode(m.data) for m in batch) if isinstance(c, BreakerChange)]
        replayed = [c for _, c in result.decisions]
        difference = first_difference(replayed, recorded)
        if difference is None:
            print(f"match: {len(replayed)} breaker decisions over {result.inputs:,} inputs equal the record", file=sys.stderr)
            return 0
        print(f"DIFFERENT{' (with --set)' if args.set else ''}: {difference}", file=sys.stderr)
        return 1
    finally:
        await nc.close()


async def _rules(nc: Client, cfg: RiskConfig, settings: BusSettings) -> dict[str, Market]:
    """The venues' market rules if they answer; else rules that refuse no price for its tick (said)."""
    stop = asyncio.Event()
    try:
        found = await asyncio.wait_for(market_rules(nc, cfg, settings, stop), 5)
    except (asyncio.TimeoutError, RiskConfigError, Transient):
        found = None
    finally:
        stop.set()
    if found is not None:
        return found
    print("sqt: the venue did not answer: replaying without its tick sizes (a ticker below one tick is not refused)", file=sys.stderr)
    anything = Decimal("1e-12")
    return {
        market_key(v, s): Market(symbol=s, kind="swap", base="?", quote="?", tick_size=anything, lot_size=anything, min_amount=anything,
                                 min_notional=anything)
        for v, s in cfg.markets()
    }  # fmt: skip
