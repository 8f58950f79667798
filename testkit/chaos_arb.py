"""Kill -9 the funding arbitrage, the executor and the simulated exchange at random moments while
the funding rate swings between paying, nothing and receiving, so that sagas (entries, hedges,
exits, unwinds) are in flight when the kills land. Shared by tests/test_chaos_arbitrage.py (a
dozen kills) and bench/chaos_arb.py (a hundred).

Real processes (`sqt run sim|executor|funding|arbitrage`) on their own nats-server, the exchange
on its real-time clock. At the end the funding goes to zero (the arbitrage leaves), and:
- no client order id became two orders at the exchange;
- the exposure left unhedged (the legs' executed base quantities not summing to zero by one
  lot or more) never lasted longer than the naked limit plus the time a killed component took
  to come back;
- what the arbitrage holds on each leg is what the exchange says, and is flat;
- its recovered state is a fresh fold of its whole input stream (DESIGN rule 4a).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from nats.aio.client import Client

from bus import checkpoints
from bus.connection import connect
from bus.contract import fold_stream
from bus.reader import read_stream
from schemas.account import Fill, OrderUpdate
from schemas.codec import decode
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.core import ArbCore
from strategies.arbitrage.legs import lot_floor
from strategies.arbitrage.runner import arb_spec
from strategies.arbitrage.state import ArbState
from strategies.grid.lattice import client_prefix
from testkit.chaos import Cluster
from venues.errors import Transient
from venues.sim.client import SimVenue

INSTANCE = "chaos-arb"
SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
VICTIMS = ("arbitrage", "executor", "sim")
NAKED_MS = 3_000


def cluster_config(
    *, instance: str = INSTANCE, sim: str = "", usdt: str = "100000", perp: str = "", executor: str = "", arbitrage: str = ""
) -> str:
    """The exchange (spot following its perpetual, the funding hook on), the arbitrage's executor,
    the funding monitor and the arbitrage, on the account `arb`; each section takes extra lines.
    A `str.format` template for `data` (shared by bench/arbitrage.py)."""
    return f"""
data_dir = "{{data}}"
log_level = "INFO"
grids = []

[sim]
tick_ms = 250
history_minutes = 5
test_hooks = true
{sim}

[sim.accounts.arb]
USDT = "{usdt}"

[[sim.markets]]
symbol = "{PERP}"
kind = "swap"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
volatility = "0.0001"
tick_volume = "0.5"
{perp}

[[sim.markets]]
symbol = "{SPOT}"
kind = "spot"
tick_size = "0.01"
lot_size = "0.00001"
min_amount = "0.00001"
start_price = "60000"
tick_volume = "0.5"
follows = "{PERP}"

[executor]
venue = "sim"
account = "arb"
{executor}

[funding]
ttl_ms = 3000
publish_ms = 500
hold_hours = "720"

[[funding.pairs]]
name = "btc"
legs = [{{{{ venue = "sim", symbol = "{SPOT}" }}}}, {{{{ venue = "sim", symbol = "{PERP}" }}}}]

[[arbitrages]]
instance = "{instance}"
pair = "btc"
account = "arb"
amount = "0.01"
{arbitrage}
"""


CONFIG = cluster_config(
    sim="seed = {seed}\nfunding_every_ms = 500",
    perp="funding_interval_s = 5",
    executor="request_timeout = 2.0\nretries = 3\nbackoff_ms = 50",
    arbitrage=f'entry_apr = "1"\nentry_hold_ms = 500\nexit_apr = "0.5"\nnaked_ms = {NAKED_MS}\nunwinds_per_hour = 1000\nuse_margin = true',
)
# Paying (enter long spot / short perp), nothing (exit), receiving (enter the other way, on margin).
RATES = (Decimal("0.001"), Decimal(0), Decimal("-0.001"), Decimal(0))


@dataclass
class ArbOutcome:
    state: ArbState
    replayed: ArbState
    kills: dict[str, int] = field(default_factory=lambda: {v: 0 for v in VICTIMS})
    kill_times: list[float] = field(default_factory=list)  # wall clock, ms
    orders_by_cid: dict[str, set[str]] = field(default_factory=dict)
    venue_spot: Decimal = Decimal(0)
    venue_perp: Decimal = Decimal(0)
    naked: list[tuple[int, int]] = field(default_factory=list)  # (from, to) event time, ms
    places: int = 0
    swings: int = 0


async def _set_funding(venue: SimVenue, rate: Decimal) -> None:
    while True:
        try:
            await venue.set_funding(PERP, rate)
            return
        except Transient:
            await asyncio.sleep(0.2)  # the exchange is restarting


async def _arb_state(nc: Client) -> ArbState | None:
    cp = await checkpoints.load(nc, f"arbitrage-{INSTANCE}", ArbState)
    return cp.state if cp is not None else None


async def run(workdir: Path, seed: int, kills: int, swing_s: float = 2.5) -> ArbOutcome:
    rng = random.Random(seed * 104_729 + kills)
    with Cluster(workdir, CONFIG.format(data=workdir / "data", seed=seed), instance=INSTANCE) as cluster:
        from cli.config import load

        arb = load(cluster.config, environ={}).arbitrage(INSTANCE)
        for name in ("sim", "executor", "funding", "arbitrage"):
            cluster.start(name)
        nc = await connect(cluster.server.url, name="chaos-arb-driver", attempts=10, role="admin")
        outcome_kills = {v: 0 for v in VICTIMS}
        kill_times: list[float] = []
        try:
            venue = SimVenue(nc, "sim", "arb", timeout=5)
            swings = 0

            async def swing() -> None:
                nonlocal swings
                while True:
                    await _set_funding(venue, RATES[swings % len(RATES)])
                    swings += 1
                    await asyncio.sleep(swing_s * rng.uniform(0.7, 1.3))

            swinging = asyncio.create_task(swing())
            await asyncio.sleep(3.0)  # the first entry is on its way
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 2.5))  # anywhere inside a saga, or between two
                victim = rng.choice(VICTIMS)
                kill_times.append(time.time() * 1000)
                cluster.kill(victim)
                outcome_kills[victim] += 1
                cluster.start(victim)
            swinging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await swinging
            await _set_funding(venue, Decimal(0))  # nothing to collect: it leaves
            await _wait_flat(nc, venue, arb)
            cluster.stop("arbitrage")  # a graceful stop writes the final checkpoint
            state = await _arb_state(nc)
            assert state is not None
            outcome = ArbOutcome(state=state, replayed=await replay_all(nc, arb, state), kills=outcome_kills, kill_times=kill_times)
            outcome.swings = swings
            await _venue_facts(nc, venue, arb, outcome)
            return outcome
        finally:
            await nc.close()


async def _wait_flat(nc: Client, venue: SimVenue, arb: ArbConfig, timeout: float = 120.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        st = await _arb_state(nc)
        if st is not None and st.saga is None and not st.orders and flat(st):
            with contextlib.suppress(Transient):
                if await _holdings(venue) == held(st):
                    return
        await asyncio.sleep(0.5)
    raise TimeoutError("the arbitrage did not end flat")


def flat(st: ArbState) -> bool:
    """No whole lot left on either leg. A spot leg may keep less than a lot: buying back a
    margin short rounds up to repay the interest charged in the coin (legs.closing)."""
    return all(lot_floor(b, b.held) == 0 for b in st.legs)


def held(st: ArbState) -> tuple[Decimal, Decimal]:
    """(spot, perpetual) base quantity the arbitrage holds, to compare with the exchange's."""
    spot = next(b.held for b in st.legs if b.spot)
    perp = next(b.held for b in st.legs if not b.spot)
    return spot, perp


async def _holdings(venue: SimVenue) -> tuple[Decimal, Decimal]:
    spot = next((b.total for b in await venue.fetch_balance() if b.asset == "BTC"), Decimal(0))
    perp = Decimal(0)
    for p in await venue.fetch_positions([PERP]):
        perp += p.contracts if p.side == "long" else -p.contracts
    return spot, perp


async def replay_all(nc: Client, arb: ArbConfig, state: ArbState) -> ArbState:
    """A fresh fold of the input stream up to the input the stopped instance's state reflects (the
    exchange and the funding monitor go on adding tickers and spreads after it stopped)."""
    core = ArbCore(arb, [b.market for b in state.legs])
    spec = arb_spec(arb)
    final, _, _ = await fold_stream(core, core.initial_state(), read_stream(nc, spec.stream, end_seq=state.seq), spec.rules())
    return final


async def _venue_facts(nc: Client, venue: SimVenue, arb: ArbConfig, outcome: ArbOutcome) -> None:
    prefix = client_prefix(arb.instance)
    async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.arb.*.order",)):
        for m in batch:
            ev = decode(m.data)
            if isinstance(ev, OrderUpdate) and ev.order_id and ev.client_order_id.startswith(prefix):
                outcome.orders_by_cid.setdefault(ev.client_order_id, set()).add(ev.order_id)
    async for batch in read_stream(nc, "COMMAND", subjects=("cmd.sim.arb.*.place",)):
        outcome.places += len(batch)
    fills: list[Fill] = []
    async for batch in read_stream(nc, "ACCOUNT", subjects=("acct.sim.arb.*.fill",)):
        fills += [f for f in (decode(m.data) for m in batch) if isinstance(f, Fill) and f.client_order_id.startswith(prefix)]
    outcome.naked = naked_spans(fills, Decimal("0.001"))
    outcome.venue_spot, outcome.venue_perp = await _holdings(venue)


def naked_spans(fills: list[Fill], lot: Decimal) -> list[tuple[int, int]]:
    """Event-time spans during which the legs' executed base quantities did not cancel out by
    `lot` or more, from the fills in the order the exchange made them."""
    held = {SPOT: Decimal(0), PERP: Decimal(0)}
    spans: list[tuple[int, int]] = []
    since: int | None = None
    for f in sorted(fills, key=lambda f: (f.ts, f.trade_id)):
        held[f.symbol] += f.amount if f.side == "buy" else -f.amount
        naked = abs(held[SPOT] + held[PERP]) >= lot
        if naked and since is None:
            since = f.ts
        elif not naked and since is not None:
            spans.append((since, f.ts))
            since = None
    if since is not None:
        spans.append((since, 2**62))
    return spans
