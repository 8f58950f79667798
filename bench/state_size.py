"""What a grid's state events cost the OPS stream: bytes per instance per day of event time.

    .venv/bin/python bench/state_size.py [--hours 24] [--seed 1]

The grid core, wired in lock-step to the simulated exchange's engine (testkit/grid.py Harness,
no bus), trades the default `sqt up` grid (BTC/USDT:USDT neutral, 5 levels each side, 0.05%
geometric spacing, 200 USDT an order) over a random walk at the default market's volatility
(0.02% per 500 ms print, the sim's `tick_ms`) for a simulated day. It runs twice on the same
prices: once with every state event full (`full_every_ms=FULL_ALWAYS`, the policy before
ADR 0024) and once with the default policy (a full one at most once a minute of event time and
on a status change, compact ones between), checks that both decided exactly the same commands,
and prints, for each, state events per day, full ones per day, payload bytes per day, and an
estimate of what JetStream stores (payload + subject + `Nats-Msg-Id` header + its record
overhead), with the ratio.

`state_bytes` (and `state_bytes_on_bus`, over a stream) counts the same per instance from any
sequence of stored (subject, payload) pairs, for the scale benchmark.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import math
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from cli.config import default_grids
from schemas import subjects
from schemas.codec import encode
from strategies.grid.config import GridConfig
from strategies.grid.core import FULL_ALWAYS, FULL_EVERY_MS
from testkit.grid import Harness
from venues.sim.config import SimConfig, SimMarket

DAY_MS = 86_400_000
TICK_MS = 500  # the sim's default print interval (and the Harness's)
RECORD_OVERHEAD = 30  # bytes JetStream's file store adds to a record (sequence, time, lengths, checksum)


@dataclass
class StateBytes:
    """One instance's state events: how many, how many full, and their size."""

    events: int = 0
    full: int = 0
    payload: int = 0  # bytes of the JSON bodies
    stored: int = 0  # payload + subject + the Nats-Msg-Id header + the store's record overhead
    first_ts: int | None = None  # event time of the first and last (ms)
    last_ts: int | None = None

    def add(self, subject: str, data: bytes, msg_id: str | None = None, ts: int | None = None, full: bool | None = None) -> None:
        """One stored state event; `msg_id`, `ts` and `full` are read from the body when not given."""
        if msg_id is None or ts is None or full is None:
            head = msgspec.json.decode(data, type=_Head)
            msg_id, ts, full = head.id, head.ts, bytes(head.state) != b"null"
        self.events += 1
        self.full += bool(full)
        self.payload += len(data)
        self.stored += len(data) + len(subject) + len(header(msg_id)) + RECORD_OVERHEAD
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)

    def per_day(self, span_ms: int | None = None) -> dict[str, float]:
        """Events, full events, payload and stored bytes scaled to a day of event time (over
        `span_ms`, else the span between the first and last event)."""
        span = span_ms if span_ms is not None else (self.last_ts or 0) - (self.first_ts or 0)
        k = DAY_MS / max(span, 1)
        return {"events": self.events * k, "full": self.full * k, "payload": self.payload * k, "stored": self.stored * k}


class _Head(msgspec.Struct):
    id: str
    ts: int
    state: msgspec.Raw = msgspec.Raw(b"null")


def header(msg_id: str) -> bytes:
    return f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()


def state_bytes(stored: Iterable[tuple[str, bytes]], component: str = "grid") -> dict[str, StateBytes]:
    """Per instance: what the state events among these stored (subject, payload) pairs cost."""
    out: dict[str, StateBytes] = {}
    for subject, data in stored:
        parts = subject.split(".")
        if len(parts) == 4 and parts[0] == "ops" and parts[1] == component and parts[3] == "state":
            out.setdefault(parts[2], StateBytes()).add(subject, data)
    return out


async def state_bytes_on_bus(nc: Any, component: str = "grid", stream: str = "OPS") -> dict[str, StateBytes]:
    """`state_bytes` over what a stream holds now (the state subjects only)."""
    from bus.reader import read_stream

    async def pairs() -> AsyncIterator[tuple[str, bytes]]:
        async for batch in read_stream(nc, stream, subjects=(subjects.ops(component, "*", "state"),)):
            for m in batch:
                yield m.subject, m.data

    out: dict[str, StateBytes] = {}
    async for subject, data in pairs():
        instance = subject.split(".")[2]
        out.setdefault(instance, StateBytes()).add(subject, data)
    return out


# ----------------------------------------------------------------------------- the session


def sim() -> SimConfig:
    """The default `sqt up` market (configs/sqt.toml) in lock-step."""
    market = SimMarket(
        symbol="BTC/USDT:USDT",
        kind="swap",
        tick_size=Decimal("0.1"),
        lot_size=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        min_notional=Decimal(5),
        start_price=Decimal(60_000),
        tick_volume=Decimal("0.5"),
    )
    return SimConfig(
        markets=[market], accounts={"main": {"USDT": Decimal(100_000), "BTC": Decimal(1)}}, fill_ratio=Decimal("0.5"), tick_ms=TICK_MS
    )


def grid() -> GridConfig:
    """The default `sqt up` grid (configs/sqt.toml), without its metrics port."""
    return msgspec.structs.replace(default_grids()[0], metrics_port=0)


def prices(hours: float, seed: int, volatility: float = 0.0002, start: float = 60_000.0) -> Iterable[tuple[str, str]]:
    """(price, volume) per print: a log-normal random walk, exponential volumes around 0.5."""
    rng = random.Random(seed)
    price = start
    for _ in range(int(hours * 3_600_000 / TICK_MS)):
        price *= math.exp(rng.gauss(0.0, volatility))
        yield f"{price:.1f}", f"{max(rng.expovariate(2.0), 0.001):.3f}"


@dataclass
class Run:
    counted: StateBytes
    commands: int
    fingerprint: int  # of every command decided, in order: both policies must decide the same
    span_ms: int
    largest_full: int
    largest_compact: int
    seconds: float


def run(hours: float, seed: int, full_every_ms: int) -> Run:
    h = Harness(grid(), sim(), full_every_ms=full_every_ms)
    counted = StateBytes()
    largest = {True: 0, False: 0}
    commands = 0
    fingerprint = 0
    subject = subjects.ops("grid", h.cfg.instance, "state")
    began = time.perf_counter()
    start_ts = h.ts

    def drain() -> None:  # count, then forget: a day of full states would not fit in memory
        nonlocal commands, fingerprint
        for st in h.states:
            data = encode(st)
            full = st.state is not None
            counted.add(subject, data, st.id, st.ts, full)
            largest[full] = max(largest[full], len(data))
        for cmd in (*h.placed, *h.canceled):
            commands += 1
            fingerprint = hash((fingerprint, cmd.id))
        h.states.clear()
        h.inputs.clear()
        h.placed.clear()
        h.canceled.clear()

    drain()  # the adoption's
    for price, volume in prices(hours, seed):
        h.tick(price, volume)
        drain()
    return Run(counted, commands, fingerprint, h.ts - start_ts, largest[True], largest[False], time.perf_counter() - began)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="event time simulated (default: a day)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--full-every-s", type=float, default=FULL_EVERY_MS / 1000, help="the policy measured (default: the core's)")
    args = parser.parse_args()

    before = run(args.hours, args.seed, FULL_ALWAYS)
    every = int(args.full_every_s * 1000)
    after = run(args.hours, args.seed, every)
    assert (before.commands, before.fingerprint) == (after.commands, after.fingerprint), "the policy changed a decision"
    b, a = before.counted.per_day(before.span_ms), after.counted.per_day(after.span_ms)
    print(f"grid {grid().instance}: {args.hours:g} h of event time, {before.commands:,} commands, seed {args.seed}")
    print(f"{'per instance per day':<34}{'before (all full)':>20}{f'after (full/{every / 1000:g} s)':>20}{'ratio':>9}")
    rows = [
        ("state events", b["events"], a["events"], f"{b['events']:,.0f}", f"{a['events']:,.0f}"),
        ("  of which full", b["full"], a["full"], f"{b['full']:,.0f}", f"{a['full']:,.0f}"),
        ("payload bytes", b["payload"], a["payload"], human(b["payload"]), human(a["payload"])),
        ("stored bytes (estimate)", b["stored"], a["stored"], human(b["stored"]), human(a["stored"])),
    ]
    for name, x, y, xs, ys in rows:
        print(f"{name:<34}{xs:>20}{ys:>20}{x / max(y, 1e-9):>8.1f}x")
    print(f"{'over 30 days of OPS retention':<34}{human(b['stored'] * 30):>20}{human(a['stored'] * 30):>20}")
    print(f"largest full event {before.largest_full:,} B, largest compact {after.largest_compact:,} B")
    print(f"simulated in {before.seconds:.0f} s + {after.seconds:.0f} s")


if __name__ == "__main__":
    main()
