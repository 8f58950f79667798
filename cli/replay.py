"""`sqt replay`: reproduce an incident from the recorded streams, offline.

    sqt replay grid --instance ID --since 2026-11-23T06:00:00Z --until 2026-11-23T06:30:00Z
    sqt replay grid --instance ID --since 30m --set spacing=0.002      # try a changed parameter
    sqt replay export --since 30m --until 10m -o incident.jsonl
    sqt replay grid --instance ID --from-file incident.jsonl
    sqt replay arbitrage --instance ID --since 2h          (cli/replay_arbitrage.py; risk: cli/replay_risk.py)

`replay grid` starts from the grid's last full state event before the window (a full one
carries the whole state and the input sequence it reflects; compact ones between them only the
summary, docs/adr/0024-bounded-state-events.md), folds the grid's recorded
inputs through the same core, prints each decision, and compares them with the commands
recorded in COMMAND for the window: exit 0 when they match, 1 with the first difference.
It never touches a venue and publishes nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any, Protocol

import msgspec

from bus import export
from bus.connection import Unreachable, connect
from bus.contract import StoredMsg
from bus.reader import read_stream
from cli.config import Config, ConfigError, parse_duration
from cli.overrides import with_sets
from schemas import subjects
from schemas.codec import decode
from schemas.commands import CancelOrder, PlaceOrder
from schemas.ops import StrategyState
from strategies.grid.config import GridConfig
from strategies.grid.state import GridState

LOOKBACK = 3600.0  # how far before --since to look for the last full state (a grid publishes one a minute)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="reproduce a strategy's decisions from the recorded streams")
    what = p.add_subparsers(dest="what", required=True)
    grid = what.add_parser("grid", help="replay a grid instance's inputs through its core")
    grid.add_argument("--instance", required=True)
    grid.add_argument("--since", help="window start: ISO time, epoch ms, or a duration ago (30m)")
    grid.add_argument("--until", help="window end (default: now)")
    grid.add_argument("--from-file", type=Path, help="an exported incident (sqt replay export)")
    grid.add_argument("--config", dest="replay_config", help="config file to take the grid's parameters from")
    grid.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a grid parameter")
    grid.add_argument("--quiet", action="store_true", help="do not print every decision")
    risk = what.add_parser("risk", help="replay the risk monitor's inputs through its core: every breaker decision again")
    risk.add_argument("--instance", help="risk instance (default: the config's)")
    risk.add_argument("--since", help="window start: ISO time, epoch ms, or a duration ago (30m)")
    risk.add_argument("--until", help="window end (default: now)")
    risk.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a limit, e.g. flash_crash.move=0.03")
    risk.add_argument("--quiet", action="store_true", help="do not print every decision")
    arb = what.add_parser("arbitrage", help="replay a funding arbitrage's inputs through its core: every leg and unwind again")
    arb.add_argument("--instance", help="arbitrage instance (default: the only one configured)")
    arb.add_argument("--since", help="window start: ISO time, epoch ms, or a duration ago (30m)")
    arb.add_argument("--until", help="window end (default: now)")
    arb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a parameter, e.g. naked_ms=2000")
    arb.add_argument("--quiet", action="store_true", help="do not print every decision")
    exp = what.add_parser("export", help="write a window of every stream to a JSON lines file")
    exp.add_argument("--since", required=True)
    exp.add_argument("--until")
    exp.add_argument("-o", "--output", type=Path, required=True)
    exp.add_argument("--stream", action="append", default=[], help="only these streams (default: all)")


def parse_time(text: str | None, default: dt.datetime | None = None) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    if text is None:
        return default or now
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text) / 1000, dt.timezone.utc)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    except ValueError:
        pass
    try:
        return now - dt.timedelta(seconds=parse_duration(text, "time"))
    except ConfigError:
        raise ConfigError(f"not a time: {text!r} (use ISO 8601, epoch milliseconds, or a duration ago like 30m)") from None


def grid_config(config: Config, instance: str, overrides: list[str]) -> GridConfig:
    return with_sets(msgspec.to_builtins(config.grid(instance)), overrides, GridConfig)


class Progress:
    """Events/s on stderr for long replays."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, count: int, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < (0.5 if self.tty else 5.0):
            return
        self.last = now
        rate = count / max(now - self.started, 1e-9)
        end = "\n" if final or not self.tty else "\r"
        print(f"replayed {count:,} inputs ({rate:,.0f}/s)", end=end, file=sys.stderr, flush=True)


def replay(config: Config, args: argparse.Namespace) -> int:
    if args.what == "export":
        return asyncio.run(_export(config, args))
    if args.what == "risk":
        from cli.replay_risk import replay_risk

        return asyncio.run(replay_risk(config, args))
    if args.what == "arbitrage":
        from cli.replay_arbitrage import replay_arbitrage

        return asyncio.run(replay_arbitrage(config, args))
    if args.replay_config:
        from cli.config import load

        config = load(args.replay_config)
    grid = grid_config(config, args.instance, args.set)
    return asyncio.run(_replay_grid(config, grid, args))


# ----------------------------------------------------------------------------- sources


class Recorded(Protocol):
    """Where the record comes from: the live bus or an exported file."""

    async def start_state(self, grid: GridConfig, since: dt.datetime) -> StrategyState | None: ...

    def inputs(self, stream: str, first_seq: int, until: dt.datetime) -> AsyncIterator[list[StoredMsg]]: ...

    async def commands(self, grid: GridConfig, since_ns: int, until: dt.datetime) -> list[PlaceOrder | CancelOrder]: ...


class FromBus:
    def __init__(self, nc: Any) -> None:
        self.nc = nc

    async def start_state(self, grid: GridConfig, since: dt.datetime) -> StrategyState | None:
        subject = subjects.ops("grid", grid.instance, "state")
        last = None
        async for batch in export.window(self.nc, "OPS", since - dt.timedelta(seconds=LOOKBACK), since, (subject,)):
            last = last_full(batch) or last
        if last is None:  # no full one before the window: the first full state (for the market rules)
            async with aclosing(read_stream(self.nc, "OPS", subjects=(subject,))) as batches:
                async for batch in batches:
                    first = next((m for m in batch if is_full(m.data)), None)
                    if first is not None:
                        return msgspec.structs.replace(decode(first.data), input_seq=0, state=None)
            return None
        return decode(last.data)

    async def inputs(self, stream: str, first_seq: int, until: dt.datetime) -> AsyncIterator[list[StoredMsg]]:
        async for batch in export.window(self.nc, stream, None, until, start_seq=first_seq):
            yield batch

    async def commands(self, grid: GridConfig, since_ns: int, until: dt.datetime) -> list[PlaceOrder | CancelOrder]:
        subject = subjects.cmd(grid.venue, grid.account, grid.symbol, "*")
        start = dt.datetime.fromtimestamp(since_ns / 1e9, dt.timezone.utc) - dt.timedelta(seconds=10)
        out = []
        async for batch in export.window(self.nc, "COMMAND", start, until + dt.timedelta(seconds=30), (subject,)):
            out += [decode(m.data) for m in batch]
        return out


class FromFile:
    def __init__(self, path: Path) -> None:
        self.lines = list(export.read_lines(path))

    async def start_state(self, grid: GridConfig, since: dt.datetime) -> StrategyState | None:
        subject = subjects.ops("grid", grid.instance, "state")
        states = [line for line in self.lines if line.stream == "OPS" and line.subject == subject and is_full(export.payload(line))]
        before = [line for line in states if line.ts_ns <= export.ns(since)] or states[:1]
        if not before:
            return None
        state = decode(export.payload(before[-1]))
        return state if before[-1].ts_ns <= export.ns(since) else msgspec.structs.replace(state, state=None, input_seq=0)

    async def inputs(self, stream: str, first_seq: int, until: dt.datetime) -> AsyncIterator[list[StoredMsg]]:
        async for batch in export.from_lines(self.lines, stream, first_seq, export.ns(until)):
            yield batch

    async def commands(self, grid: GridConfig, since_ns: int, until: dt.datetime) -> list[PlaceOrder | CancelOrder]:
        return [decode(export.payload(line)) for line in self.lines if line.stream == "COMMAND"]


# ----------------------------------------------------------------------------- commands


async def _replay_grid(config: Config, grid: GridConfig, args: argparse.Namespace) -> int:
    from strategies.grid.core import GridCore
    from strategies.grid.replay import describe, first_difference
    from strategies.grid.replay import replay as run
    from strategies.grid.runner import input_stream

    until = parse_time(args.until)
    since = parse_time(args.since, default=dt.datetime.fromtimestamp(0, dt.timezone.utc))
    nc = None
    if args.from_file:
        source: Recorded = FromFile(args.from_file)
    else:
        try:
            nc = await connect(config.nats_url, name="sqt-replay", attempts=3, role="operator")
        except Unreachable as exc:
            print(f"sqt: {exc}", file=sys.stderr)
            return 1
        source = FromBus(nc)
    try:
        anchor = await source.start_state(grid, since)
        if anchor is None:
            print(f"sqt: no recorded state for grid {grid.instance}: nothing to replay", file=sys.stderr)
            return 1
        recorded_grid = grid_state_of(anchor)
        market = recorded_grid.market if recorded_grid else None
        if market is None:
            first = await source.start_state(grid, dt.datetime.now(dt.timezone.utc))
            first_grid = grid_state_of(first) if first else None
            market = first_grid.market if first_grid else None
        if market is None:
            print(f"sqt: the record of grid {grid.instance} carries no market rules", file=sys.stderr)
            return 1
        core = GridCore(grid, market)
        state = recorded_grid if recorded_grid is not None else core.initial_state()
        print(
            f"replaying grid {grid.instance} from input seq {anchor.input_seq + 1}"
            f" ({'recorded state' if recorded_grid else 'fresh state'}) until {until.isoformat()}",
            file=sys.stderr,
        )

        def show(seq: int, cmd: PlaceOrder | CancelOrder) -> None:
            if not args.quiet:
                print(f"{seq:>10}  {describe(cmd)}")

        progress = Progress()
        result = await run(core, state, source.inputs(input_stream(grid).name, anchor.input_seq + 1, until), show, progress)
        progress(result.inputs, final=True)
        replayed = [cmd for _, cmd in result.decisions]
        recorded: list[PlaceOrder | CancelOrder] = []
        if result.first_ts is not None and result.last_ts is not None:
            start = state if recorded_grid is not None else None
            in_span = decided_between(core.prefix, start, result.state, result.first_ts, result.last_ts)
            origin = f"grid/{grid.instance}"
            recorded = [
                c
                for c in await source.commands(grid, result.first_ts * 1_000_000, until)
                if isinstance(c, (PlaceOrder, CancelOrder)) and c.origin == origin and in_span(c)
            ]
        difference = first_difference(replayed, recorded)
        if difference is None:
            print(f"match: {len(replayed)} decisions over {result.inputs:,} inputs equal the record", file=sys.stderr)
            return 0
        print(f"DIFFERENT: {difference}", file=sys.stderr)
        return 1
    finally:
        if nc is not None:
            await nc.close()


class _Full(msgspec.Struct):
    state: msgspec.Raw = msgspec.Raw(b"null")


_full = msgspec.json.Decoder(_Full)


def is_full(data: bytes) -> bool:
    """Whether a stored state event is a full one (carries the state: a replay starting point),
    read without decoding the state itself. Undecodable bodies are not starting points."""
    try:
        return bytes(_full.decode(data).state) != b"null"
    except msgspec.DecodeError:
        return False


def last_full(batch: list[StoredMsg]) -> StoredMsg | None:
    """The last full state event of a batch of stored ones."""
    return next((m for m in reversed(batch) if is_full(m.data)), None)


def grid_state_of(event: StrategyState) -> GridState | None:
    """The grid's own state carried by a state event (None for a stripped starting point)."""
    return None if event.state is None else msgspec.convert(event.state, GridState)


def decided_between(prefix: str, start: GridState | None, end: GridState, first_ts: int, last_ts: int):
    """Which recorded commands the replayed inputs are responsible for.

    Places carry a generation: those issued after the starting state and by the end state are
    exactly the ones with start.next_generation <= generation < end.next_generation. A cancel
    belongs to the span by its time, unless the starting state was already canceling that order.
    """
    from strategies.grid.lattice import parse_client_order_id

    low = start.next_generation if start is not None else 0
    canceling = {s.client_order_id for s in start.slots if s.status == "canceling"} if start is not None else set()

    def in_span(cmd: PlaceOrder | CancelOrder) -> bool:
        if isinstance(cmd, PlaceOrder):
            parsed = parse_client_order_id(prefix, cmd.client_order_id)
            return parsed is not None and low <= parsed[2] < end.next_generation
        return first_ts <= cmd.ts <= last_ts and cmd.client_order_id not in canceling

    return in_span


async def _export(config: Config, args: argparse.Namespace) -> int:
    since, until = parse_time(args.since), parse_time(args.until)
    try:
        nc = await connect(config.nats_url, name="sqt-export", attempts=3, role="operator")
    except Unreachable as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return 1
    try:
        js = nc.jetstream()
        names = args.stream or sorted(i.config.name for i in await js.streams_info() if not (i.config.name or "").startswith("KV_"))
        count = 0
        with args.output.open("wb") as fh:
            # The last full state of every grid before the window: where a replay of it starts.
            last_by_grid: dict[str, StoredMsg] = {}
            async for batch in export.window(
                nc, "OPS", since - dt.timedelta(seconds=LOOKBACK), since, (subjects.ops("grid", "*", "state"),)
            ):
                last_by_grid.update((m.subject, m) for m in batch if is_full(m.data))
            for m in last_by_grid.values():
                fh.write(export.to_line("OPS", m))
            anchors = len(last_by_grid)
            for name in names:
                async for batch in export.window(nc, name, since, until):
                    for m in batch:
                        fh.write(export.to_line(name, m))
                    count += len(batch)
        print(
            f"wrote {count:,} messages from {len(names)} streams (+{anchors} full grid states before the window) to {args.output}",
            file=sys.stderr,
        )
        return 0
    finally:
        await nc.close()
