"""The funding arbitrage's figures: entry latency on the simulated exchange, and replay speed.

    .venv/bin/python bench/arbitrage.py [--samples 50] [--days 30] [--seed 7]

Entry latency. Real processes (`sqt run sim|executor|funding|arbitrage`, the exchange on its
real-time clock, the arbitrage with `entry_hold_ms = 0`) on one nats-server. Each sample pins
the perpetual's funding at 0 through the exchange's test hook and waits until the arbitrage is
flat (its last published state: no saga, no order, nothing held, the zero funding seen), then
pins it at a rate whose net APR crosses `entry_apr` and waits for the entry (each rate is pinned
in an exchange tick of its own: see Arb.set_funding). A warm-up entry comes first. Measured
afterwards with the server's own store times, from the first FundingRate at the new rate stored
in MARKET (the one the hook published) to the hedge's `closed` order event stored in ACCOUNT,
and split:
  funding stored -> the monitor's spread snapshot stored in OPS (sourcing into its input stream,
  the monitor) -> leg 1's place stored in COMMAND (sourcing, the arbitrage) -> leg 1 `closed` in
  ACCOUNT (the executor, the exchange's request/reply, its journal and engine) -> leg 2's place
  in COMMAND -> leg 2 `closed` in ACCOUNT.
Ceiling, in the same run, one ceiling sample after each of ours: the same hops with nothing of
ours in them, plain nats-py on the same server. A message `js.publish`ed into a stream is read by
an ordered push consumer that publishes the next one: funding -> snapshot -> command -> (a plain
`nc.request` to a responder, the exchange) account event -> command -> (request) account event,
five JetStream hops and two round trips, each role on a connection of its own. A second ceiling
adds the three stream sourcings our path has (the monitor reads the funding, and the arbitrage
the snapshot and leg 1's event, from input streams sourced from MARKET, OPS and ACCOUNT); the
exchange's journal (a JetStream write per order) is in neither.

Replay. A month (`--days`) of recorded inputs, generated from `--seed`: both legs' tickers every
10 s (a random walk at about BTC's volatility, the spot a small basis below the perpetual), a
spread snapshot every 10 s whose funding (a mean-reverting walk of the annualized rate that
crosses the entry and exit thresholds a few times a day, and flips sign now and then) moves the
net APR, funding payments every 8 h and borrow interest every hour while held, and the order
events of a scripted exchange that answers each place at once (open, then filled; now and then
half filled, or refused). No clock ticks: a live input stream also holds one every 500 ms.
The core decides from them as it is fed (testkit/arbitrage.py's ArbHarness), and every input is
kept in memory as (seq, subject, encoded bytes, stored at its event time). Timed: `fold_stream` over
them with the arbitrage's own admission rules (what `sqt replay arbitrage` does, without NATS),
next to decoding the same bytes with msgspec alone (`schemas.codec.decode` of each). The replay
must decide the same orders (client ids) and end in the same state as the generation.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run as a script: the project, not bench/

import argparse
import asyncio
import contextlib
import gc
import math
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
import nats
import uvloop
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamConfig, StreamSource
from nats.js.errors import NotFoundError

from bus.connection import connect
from bus.contract import Inbound, Outgoing, StoredMsg, fold_stream
from bus.process import tune_gc
from bus.reader import read_stream
from schemas import ids, subjects
from schemas.account import BorrowInterest, FundingPayment, OrderUpdate
from schemas.codec import decode, encode
from schemas.commands import CancelOrder, PlaceOrder
from schemas.market import FundingRate, Ticker
from schemas.ops import FundingSpread, SpreadLeg, StrategyState
from schemas.subjects import subject_of
from strategies.arbitrage.core import ArbCore
from strategies.arbitrage.runner import arb_spec
from strategies.arbitrage.state import ArbState
from testkit.arbitrage import PERP as PERP_MARKET
from testkit.arbitrage import SPOT as SPOT_MARKET
from testkit.arbitrage import T0, ArbHarness, arb_config
from testkit.chaos import Cluster
from testkit.chaos_arb import cluster_config
from venues.errors import Transient
from venues.sim.client import SimVenue

INSTANCE = "bench-arb"
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
ACCOUNT = "arb"
ENTER_RATE = Decimal("0.001")  # per 8 h: an APR of 1.1, above ENTRY_APR after costs
ENTRY_APR, EXIT_APR = "0.5", "0.2"
CONFIG = cluster_config(
    instance=INSTANCE,
    usdt="1000000",
    sim="funding_every_ms = 1000    # within the monitor's ttl_ms: the funding never goes stale between two",
    executor="rate_limit = 10000         # measure the pipeline, not the rate limiter\nburst = 10000",
    arbitrage=f'entry_apr = "{ENTRY_APR}"\nentry_hold_ms = 0          # the first snapshot above the threshold enters\nexit_apr = "{EXIT_APR}"',
)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def until(predicate: Any, timeout: float = 30.0, what: str = "a benchmark condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"bench: {what} not reached in {timeout:.0f} s")
        await asyncio.sleep(0.005)


async def stored(nc: nats.NATS, stream: str, subject: str, start_seq: int = 1) -> list[tuple[int, int, Any]]:
    """(seq, stored ns, decoded) of every message of `subject` in `stream` from `start_seq`."""
    out: list[tuple[int, int, Any]] = []
    async for batch in read_stream(nc, stream, start_seq=start_seq, subjects=(subject,)):
        out += [(m.seq, m.ts_ns, decode(m.data)) for m in batch]
    return out


# ----------------------------------------------------------------------------- entry latency

STAGES = (
    "funding -> spread snapshot",
    "snapshot -> leg 1 place",
    "leg 1 place -> leg 1 closed",
    "leg 1 closed -> leg 2 place",
    "leg 2 place -> leg 2 closed",
)


@dataclass
class Entry:
    """One sample: where MARKET and COMMAND stood when the funding moved, and COMMAND after the entry."""

    market_from: int  # MARKET's last seq before the funding moved
    command_from: int  # COMMAND's ...
    command_to: int  # ... and once the entry was done


class Arb:
    """The real processes, driven through the exchange's test hook and read from the bus."""

    def __init__(self, nc: nats.NATS) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.venue = SimVenue(nc, "sim", ACCOUNT, timeout=10)
        self.last: ArbState | None = None
        self.pinned_ts = 0  # the exchange's time of the last rate pinned

    async def start(self) -> None:
        async def on_state(msg: Any) -> None:
            ev = decode(msg.data)
            if isinstance(ev, StrategyState) and ev.state is not None:
                st = msgspec.convert(ev.state, ArbState)
                if self.last is None or st.seq >= self.last.seq:
                    self.last = st

        await self.nc.subscribe(subjects.ops("arbitrage", INSTANCE, "state"), cb=on_state)
        await until(self._venue_up, timeout=60, what="the simulated exchange")
        await self.set_funding(Decimal(0))
        await until(self._flat, timeout=90, what="the arbitrage running, flat, on a zero funding")

    async def _venue_up(self) -> bool:
        try:
            await self.venue.time()
        except Transient:
            return False
        return True

    async def set_funding(self, rate: Decimal) -> None:
        # The FundingRate the hook publishes is identified by what it says (rate, mark, time): a
        # rate pinned back to one pinned within the same exchange tick would be the same message
        # again, dropped as a duplicate. Pin each rate in a tick of its own.
        while (await self.venue.time()).ts <= self.pinned_ts:
            await asyncio.sleep(0.01)
        self.pinned_ts = (await self.venue.set_funding(PERP, rate)).ts

    async def _flat(self) -> bool:
        st = self.last
        if st is None:
            with contextlib.suppress(NotFoundError):  # the first state may have come before we subscribed
                msg = await self.js.get_last_msg("OPS", subjects.ops("arbitrage", INSTANCE, "state"))
                ev = decode(msg.data or b"")
                if isinstance(ev, StrategyState) and ev.state is not None:
                    self.last = st = msgspec.convert(ev.state, ArbState)
        if st is None or st.status != "running" or st.saga is not None or st.orders or any(b.held for b in st.legs):
            return False
        sp = st.spread
        return sp is not None and sp.state == "ok" and sp.net_apr is not None and sp.net_apr < Decimal(EXIT_APR)

    async def last_seq(self, stream: str) -> int:
        return (await self.js.stream_info(stream)).state.last_seq

    async def sample(self) -> Entry:
        assert self.last is not None
        entries = self.last.entries
        market, command = await self.last_seq("MARKET"), await self.last_seq("COMMAND")
        await self.set_funding(ENTER_RATE)

        async def entered() -> bool:
            st = self.last
            return st is not None and st.entries > entries and st.saga is None

        await until(entered, timeout=30, what="the entry")
        return Entry(market, command, await self.last_seq("COMMAND"))

    async def leave(self) -> None:
        await self.set_funding(Decimal(0))
        await until(self._flat, timeout=30, what="the exit")


async def entry_figures(nc: nats.NATS, entries: list[Entry]) -> tuple[list[float], list[list[float]], dict[str, int]]:
    """Total and per-stage latencies (ms) of the entries, from the server's store times."""
    first = min(e.command_from for e in entries) + 1
    funding = [
        (s, ns)
        for s, ns, ev in await stored(nc, "MARKET", subjects.md("sim", PERP, "funding"), min(e.market_from for e in entries) + 1)
        if isinstance(ev, FundingRate) and ev.funding_rate == ENTER_RATE
    ]
    snaps = [(ns, ev) for _s, ns, ev in await stored(nc, "OPS", subjects.funding_spread(PERP)) if isinstance(ev, FundingSpread)]
    places = [
        (s, ns, ev)
        for s, ns, ev in await stored(nc, "COMMAND", subjects.cmd("sim", ACCOUNT, "*", "place"), first)
        if isinstance(ev, PlaceOrder) and ev.origin == f"arbitrage/{INSTANCE}"
    ]
    ended: dict[str, tuple[str, int]] = {}
    for _s, ns, ev in await stored(nc, "ACCOUNT", subjects.acct("sim", ACCOUNT, "*", "order")):
        if isinstance(ev, OrderUpdate) and ev.status in ("closed", "canceled", "expired", "rejected"):
            ended.setdefault(ev.client_order_id, (ev.status, ns))
    total: list[float] = []
    stages: list[list[float]] = [[] for _ in STAGES]
    skipped = {"more than two orders": 0, "a leg not closed": 0, "not found": 0}
    for e in entries:
        t0 = next((ns for s, ns in funding if s > e.market_from), None)  # the first at the new rate
        snap = next((ns for ns, sp in snaps if t0 is not None and ns >= t0 and _perp_rate(sp) == ENTER_RATE), None)
        legs = [(ns, p.client_order_id) for s, ns, p in places if e.command_from < s <= e.command_to]
        if t0 is None or snap is None or len(legs) < 2:
            skipped["not found"] += 1
            continue
        if len(legs) > 2:
            skipped["more than two orders"] += 1
        (p1, c1), (p2, c2) = legs[0], legs[-1]
        if ended.get(c1, ("",))[0] != "closed" or ended.get(c2, ("",))[0] != "closed":
            skipped["a leg not closed"] += 1
            continue
        e1, e2 = ended[c1][1], ended[c2][1]
        total.append((e2 - t0) / 1e6)
        if len(legs) == 2:
            for i, (a, b) in enumerate(((t0, snap), (snap, p1), (p1, e1), (e1, p2), (p2, e2))):
                stages[i].append((b - a) / 1e6)
    return total, stages, skipped


def _perp_rate(sp: FundingSpread) -> Decimal | None:
    leg = sp.short if sp.short.symbol == PERP else sp.long
    return leg.funding_rate


# ----------------------------------------------------------------------------- the raw ceiling


class Relay:
    """Five JetStream hops and two request/reply round trips of plain nats-py, nothing of ours.

    relay.0 (funding) -> relay.1 (snapshot) -> relay.2 (command) -> request -> relay.3 (account
    event) -> relay.4 (command) -> request -> relay.5 (account event). With `sourced`, the
    readers of relay.0, relay.1 and relay.3 read them from streams sourced from the one they
    were stored in, as our monitor and arbitrage read their input streams."""

    HOPS = 5
    PAD = b"x" * 600  # about the size of our events

    def __init__(self, server_url: str, name: str, sourced: bool) -> None:
        self.url = server_url
        self.name = name
        self.sourced = sourced
        self.prefix = f"relay{name}"
        self.conns: list[nats.NATS] = []
        self.done: asyncio.Queue[list[int]] = asyncio.Queue()
        self.seqs: list[int] = []
        self.samples: list[list[int]] = []

    async def start(self) -> None:
        monitor, arbitrage, executor, exchange = [await connect(self.url, attempts=10) for _ in range(4)]
        self.conns = [monitor, arbitrage, executor, exchange]
        js = monitor.jetstream()
        stream = f"RELAY_{self.name.upper()}"
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{self.prefix}.>"]))
        read_from = {k: stream for k in range(self.HOPS)}
        if self.sourced:
            for k, inbox in ((0, "MON"), (1, "ARB"), (3, "ARB")):
                read_from[k] = f"{stream}_IN_{inbox}"
            for inbox, hops in (("MON", (0,)), ("ARB", (1, 3))):
                sources = [StreamSource(name=stream, filter_subject=f"{self.prefix}.{k}") for k in hops]
                await js.add_stream(StreamConfig(name=f"{stream}_IN_{inbox}", subjects=[], sources=sources))
        exchange_subject = f"{self.prefix}.exchange"

        async def answer(msg: Any) -> None:
            await msg.respond(msg.data)

        await exchange.subscribe(exchange_subject, cb=answer)
        roles = {0: monitor, 1: arbitrage, 2: executor, 3: arbitrage, 4: executor}
        for k in range(self.HOPS):
            conn = roles[k]
            rjs = conn.jetstream()

            async def relay(msg: Any, k: int = k, conn: nats.NATS = conn, rjs: Any = rjs) -> None:
                data = msg.data
                if k in (2, 4):  # the executor asks the exchange, which answers
                    data = (await conn.request(exchange_subject, data, timeout=10)).data
                ack = await rjs.publish(f"{self.prefix}.{k + 1}", data, stream=stream)
                self.seqs.append(ack.seq)
                if k == self.HOPS - 1:
                    await self.done.put(self.seqs)

            await rjs.subscribe(
                f"{self.prefix}.{k}",
                stream=read_from[k],
                cb=relay,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
            )
        self.stream = stream
        await asyncio.sleep(0.2)  # the ordered consumers are created
        for _ in range(3):  # warm the chain
            await self.sample(record=False)

    async def sample(self, record: bool = True) -> None:
        js = self.conns[0].jetstream()
        ack = await js.publish(f"{self.prefix}.0", self.PAD, stream=self.stream)
        self.seqs = [ack.seq]
        seqs = await asyncio.wait_for(self.done.get(), 10)
        if record:
            self.samples.append(seqs)

    async def figures(self, nc: nats.NATS) -> tuple[list[float], list[list[float]]]:
        times: dict[int, int] = {}
        async for batch in read_stream(nc, self.stream):
            for m in batch:
                times[m.seq] = m.ts_ns
        total = [(times[s[-1]] - times[s[0]]) / 1e6 for s in self.samples]
        stages = [[(times[s[i + 1]] - times[s[i]]) / 1e6 for s in self.samples] for i in range(self.HOPS)]
        return total, stages

    async def close(self) -> None:
        for c in self.conns:
            await c.close()


# ----------------------------------------------------------------------------- a recorded month


STEP_MS = 10_000
DAY_MS = 86_400_000
MU, SIGMA, TAU_S = 0.06, 0.08, 2 * 3600  # the funding APR: mean, stationary spread, reversion time
COST_APR, BORROW_APR = Decimal("0.0050"), Decimal("0.0200")
REFUSED, HALF = 0.03, 0.05  # shares of the exchange's answers
EIGHT_H = 28_800_000


class Recorder(ArbHarness):
    """An ArbHarness that keeps every input it feeds its core, in order."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.inputs: list[Any] = []
        self.decisions: list[str] = []  # every place's and cancel's client id, in order
        self.unwinds = 0  # sagas that turned to an unwind
        super().__init__(*args, **kw)

    def feed(self, event: Any, subject: str = "") -> list[Any]:
        """ArbHarness.feed, keeping the decisions but not every output (a month of published
        states, each with the whole state, would not fit in memory)."""
        self.inputs.append(event)
        before = self.state.saga
        self.seq += 1
        self.state, out = self.core.step(self.state, Inbound(self.seq, subject, event))
        for o in out:
            if isinstance(o, PlaceOrder):
                self.pending.append(o)
                self.decisions.append(o.client_order_id)
            elif isinstance(o, CancelOrder):
                self.decisions.append(o.client_order_id or "")
        after = self.state.saga
        if after is not None and after.step == "unwind" and (before is None or before.step != "unwind"):
            self.unwinds += 1
        return out


@dataclass
class Month:
    stored: list[StoredMsg]
    decisions: list[str]  # every place's and cancel's client id, in order
    state: ArbState
    kinds: dict[str, int] = field(default_factory=dict)
    unwinds: int = 0
    resets: int = 0
    took: float = 0.0


def record_month(days: int, seed: int) -> Month:
    started = time.perf_counter()
    rng = random.Random(seed)
    cfg = arb_config(instance="replay", use_margin=True)
    h = Recorder(cfg, price=Decimal(60000))
    spot_leg, perp_leg = cfg.legs
    mid, basis, apr = 60000.0, 0.0003, MU
    keep = math.exp(-STEP_MS / 1000 / TAU_S)
    shock = SIGMA * math.sqrt(1 - keep * keep)
    resets = 0
    blocked_at = 0

    def answer() -> None:
        while h.pending:
            cmd = h.pending[0]
            r = rng.random()
            if r < REFUSED:
                h.answer(status="rejected", reason="upstream_rejected")
                continue
            h.feed(h.update(cmd, Decimal(0), "open"))
            h.answer(fill="0.5" if r < REFUSED + HALF else "1")

    def ticker(venue: str, symbol: str, last: Decimal, tick: Decimal) -> None:
        h.feed(
            Ticker(
                id=ids.ticker_id(venue, symbol, h.now),
                venue=venue,
                symbol=symbol,
                last=last,
                bid=last - tick,
                ask=last + tick,
                ts=h.now,
                ts_local=h.now,
            )
        )
        answer()

    for k in range(1, days * DAY_MS // STEP_MS + 1):
        h.now = T0 + k * STEP_MS
        mid *= math.exp(rng.gauss(0, 0.00032))  # about 3% a day
        basis = 0.0003 + 0.9995 * (basis - 0.0003) + rng.gauss(0, 0.00001)
        apr = MU + keep * (apr - MU) + shock * rng.gauss(0, 1)
        perp_px = Decimal(f"{mid:.1f}")
        spot_px = Decimal(f"{mid * (1 - basis):.2f}")
        ticker(perp_leg.venue, perp_leg.symbol, perp_px, Decimal("0.1"))
        ticker(spot_leg.venue, spot_leg.symbol, spot_px, Decimal("0.01"))
        h.feed(spread(h, apr, spot_px, perp_px))
        answer()
        st = h.state
        if h.now % EIGHT_H == 0 and st.legs[1].held:
            rate = Decimal(f"{apr / 1095:.8f}")
            contracts = st.legs[1].held
            h.feed(
                FundingPayment(
                    id=f"fp:{h.now}",
                    venue=perp_leg.venue,
                    account=cfg.account,
                    symbol=perp_leg.symbol,
                    asset="USDT",
                    amount=-(contracts * perp_px * rate).quantize(Decimal("0.00000001")),
                    funding_rate=rate,
                    contracts=contracts,
                    mark_price=perp_px,
                    funding_time=h.now,
                    ts=h.now,
                    ts_local=h.now,
                )
            )
            answer()
        if h.now % 3_600_000 == 0 and st.legs[0].held < 0:
            loan = -st.legs[0].held
            h.feed(
                BorrowInterest(
                    id=f"bi:{h.now}",
                    venue=spot_leg.venue,
                    account=cfg.account,
                    asset="BTC",
                    amount_borrowed=loan,
                    interest=(loan * Decimal("0.0000023")).quantize(Decimal("0.000000001")),
                    interest_rate=Decimal("0.0000023"),
                    ts=h.now,
                    ts_local=h.now,
                )
            )
            answer()
        if h.state.blocked == "failure_budget":  # an operator looks, an hour later, and resets
            blocked_at = blocked_at or h.now
            if h.now - blocked_at >= 3_600_000:
                h.control("reset")
                resets += 1
                blocked_at = 0
                answer()
    out = [
        StoredMsg(seq, subject_of(ev), encode(ev), b"", ev.ts * 1_000_000)
        for seq, ev in enumerate(h.inputs, 1)  # stored when it happened
    ]
    kinds: dict[str, int] = {}
    for ev in h.inputs:
        kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1
    return Month(out, h.decisions, h.state, kinds, h.unwinds, resets, time.perf_counter() - started)


def spread(h: ArbHarness, apr: float, spot_px: Decimal, perp_px: Decimal) -> FundingSpread:
    """The monitor's snapshot of the pair with the perpetual paying `apr` a year (signed)."""
    now = h.now
    rate = Decimal(f"{apr / 1095:.8f}")  # per 8 h
    next_funding = now - now % EIGHT_H + EIGHT_H
    spot = SpreadLeg(
        venue="sim",
        symbol=SPOT_MARKET.symbol,
        kind="spot",
        funding_rate=Decimal(0),
        bid=spot_px - Decimal("0.01"),
        ask=spot_px + Decimal("0.01"),
        book_ts=now,
        fee=SPOT_MARKET.taker_fee,
    )
    perp = SpreadLeg(
        venue="sim",
        symbol=PERP_MARKET.symbol,
        kind="swap",
        funding_rate=rate,
        predicted_rate=rate,
        interval_ms=EIGHT_H,
        next_funding_time=next_funding,
        funding_ts=now - now % 60_000,
        bid=perp_px - Decimal("0.1"),
        ask=perp_px + Decimal("0.1"),
        book_ts=now,
        fee=PERP_MARKET.taker_fee,
    )
    long, short = (spot, perp) if rate >= 0 else (perp, spot)
    gross = Decimal(f"{abs(apr):.6f}")
    borrow = BORROW_APR if short is spot else Decimal(0)
    fields: dict[str, Any] = dict(
        monitor=h.cfg.monitor,
        pair=h.cfg.pair,
        symbol=PERP_MARKET.symbol,
        state="ok",
        long=long,
        short=short,
        use_margin=short is spot,
        spread=abs(rate),
        apr=gross,
        predicted_apr=gross,
        cost_apr=COST_APR,
        borrow_apr=borrow,
        net_apr=gross - COST_APR - borrow,
        next_funding_time=next_funding,
        ts=now,
    )
    return FundingSpread(id=ids.content_id("spread", fields), **fields)


async def batches(msgs: list[StoredMsg], size: int = 1000) -> AsyncIterator[list[StoredMsg]]:
    for i in range(0, len(msgs), size):
        yield msgs[i : i + size]


async def replay_month(month: Month) -> tuple[float, float, bool, bool]:
    """(events/s of the fold, events/s of decoding alone, same decisions, same state)."""
    cfg = arb_config(instance="replay", use_margin=True)
    core = ArbCore(cfg, [SPOT_MARKET, PERP_MARKET])
    rules = arb_spec(cfg).rules()
    decisions: list[str] = []

    def step(_m: StoredMsg, _after: Any, outputs: list[Outgoing], reason: str) -> None:
        if reason:
            raise RuntimeError(f"the replay dead-lettered input {_m.seq}: {reason}")
        for out in outputs:
            if isinstance(out.message, (PlaceOrder, CancelOrder)):
                decisions.append(out.message.client_order_id or "")

    gc.collect()
    started = time.perf_counter()
    final, _, count = await fold_stream(core, core.initial_state(), batches(month.stored), rules, step)
    ours = count / (time.perf_counter() - started)
    gc.collect()
    started = time.perf_counter()
    for m in month.stored:
        decode(m.data)
    ceiling = len(month.stored) / (time.perf_counter() - started)
    return ours, ceiling, decisions == month.decisions, final == month.state


# ----------------------------------------------------------------------------- main


async def main(samples: int, days: int, seed: int) -> None:
    tune_gc()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), CONFIG.format(data=Path(tmp) / "data"), instance=INSTANCE)
        with cluster:
            for name in ("sim", "executor", "funding", "arbitrage"):
                cluster.start(name)
            nc = await connect(cluster.server.url, name="bench-arbitrage", attempts=10)
            try:
                arb = Arb(nc)
                await arb.start()
                plain = Relay(cluster.server.url, "plain", sourced=False)
                sourced = Relay(cluster.server.url, "sourced", sourced=True)
                await plain.start()
                await sourced.start()
                await arb.sample()  # the first order through every process: a warm-up, not a sample
                await arb.leave()
                entries = []
                for _ in range(samples):
                    entries.append(await arb.sample())
                    await plain.sample()
                    await sourced.sample()
                    await arb.leave()
                total, stages, skipped = await entry_figures(nc, entries)
                ceiling, ceiling_stages = await plain.figures(nc)
                ceiling_src, ceiling_src_stages = await sourced.figures(nc)
                await plain.close()
                await sourced.close()
            finally:
                await nc.close()
    month = record_month(days, seed)
    ours, decode_rate, same_decisions, same_state = await replay_month(month)

    print(f"bench/arbitrage.py  python {platform.python_version()}  {platform.machine()}  cpus={os.cpu_count()}  seed={seed}")
    print(f"  entry: funding crosses entry_apr -> both legs filled at the exchange ({len(total)} of {samples} samples)")
    line = "    {:<40} p50 {:7.2f} ms  p99 {:7.2f} ms"
    print(line.format("ours: funding stored -> leg 2 closed", statistics.median(total), pct(total, 0.99)))
    print(line.format("ceiling: 5 hops + 2 request/reply", statistics.median(ceiling), pct(ceiling, 0.99)))
    print(line.format("ceiling with the 3 sourcings", statistics.median(ceiling_src), pct(ceiling_src, 0.99)))
    print(
        f"    {'':<40} ratio p50 {statistics.median(total) / statistics.median(ceiling):.2f}x  p99 {pct(total, 0.99) / pct(ceiling, 0.99):.2f}x"
        f"  (sourced ceiling: p50 {statistics.median(total) / statistics.median(ceiling_src):.2f}x"
        f"  p99 {pct(total, 0.99) / pct(ceiling_src, 0.99):.2f}x)"
    )
    print("    stages (ours | ceiling | sourced ceiling), p50 / p99 ms:")
    for name, ms, raw, src in zip(STAGES, stages, ceiling_stages, ceiling_src_stages):
        if ms:
            print(
                f"      {name:<30} {statistics.median(ms):6.2f} / {pct(ms, 0.99):6.2f}"
                f"  | {statistics.median(raw):5.2f} / {pct(raw, 0.99):5.2f}  | {statistics.median(src):5.2f} / {pct(src, 0.99):5.2f}"
            )
    if any(skipped.values()):
        print(f"    not in the figures: {', '.join(f'{v} {k}' for k, v in skipped.items() if v)}")
    st = month.state
    kinds = ", ".join(f"{v:,} {k}" for k, v in sorted(month.kinds.items(), key=lambda kv: -kv[1]))
    print(f"  replay: {days} days recorded ({len(month.stored):,} inputs: {kinds}; generated in {month.took:.0f} s)")
    print(
        f"    fold_stream through the core   {ours:,.0f} events/s  ({ours / decode_rate:.2f}x msgspec decode alone {decode_rate:,.0f}/s;"
        f" a month in {len(month.stored) / ours:.1f} s)"
    )
    print(
        f"    {st.entries} entries, {st.exits} exits, {month.unwinds} unwinds, {month.resets} operator resets; {len(month.decisions)} orders"
        f" and cancels; same decisions as recorded: {same_decisions}; same final state: {same_state}"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=50)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args()
    uvloop.run(main(a.samples, a.days, a.seed))
