"""Funding arbitrage end to end: the simulated exchange, the executor, the funding monitor and the
arbitrage as real processes on a real nats-server, the funding rate scripted through the
exchange's test hook. Each test checks what the arbitrage says it holds and earned against what
the exchange says (positions, balances) and what the account events recorded (fills, funding).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from bus.embedded import EmbeddedServer
from bus.reader import read_stream
from schemas import subjects
from schemas.account import Fill, FundingPayment, OrderUpdate
from schemas.codec import decode
from schemas.commands import PlaceOrder
from schemas.ops import RiskAlert, StrategyState
from strategies.arbitrage.state import ArbState
from testkit.bus import eventually
from testkit.processes import ROOT, Components
from venues.errors import Transient
from venues.sim.client import SimVenue

pytestmark = pytest.mark.e2e

SPOT, PERP = "BTC/USDT", "BTC/USDT:USDT"
CONFIG = """
data_dir = "{data}"
grids = []
[nats]
url = "{url}"
[sim]
tick_ms = 250
history_minutes = 5
test_hooks = true
funding_every_ms = 1000
{sim_extra}
[sim.accounts.arb]
USDT = "{usdt}"
[[sim.markets]]
symbol = "BTC/USDT:USDT"
kind = "swap"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
volatility = "0.00005"
tick_volume = "0.5"
funding_interval_s = 10
[[sim.markets]]
symbol = "BTC/USDT"
kind = "spot"
tick_size = "0.01"
lot_size = "0.00001"
min_amount = "0.00001"
start_price = "60000"
tick_volume = "0.5"
follows = "BTC/USDT:USDT"
[executor]
venue = "sim"
account = "arb"
[funding]
ttl_ms = 5000
hold_hours = "720"
[[funding.pairs]]
name = "btc"
legs = [{{ venue = "sim", symbol = "BTC/USDT" }}, {{ venue = "sim", symbol = "BTC/USDT:USDT" }}]
[[arbitrages]]
instance = "e2e"
pair = "btc"
account = "arb"
amount = "0.01"
entry_apr = "1"
entry_hold_ms = 1000
exit_apr = "0.5"
unwinds_per_hour = 2
use_margin = {use_margin}
"""


class System(Components):
    def __init__(self, workdir: Path, url: str) -> None:
        super().__init__(workdir)
        self.url = url

    def configure(self, usdt: str = "100000", use_margin: bool = False, sim_extra: str = "") -> None:
        text = CONFIG.format(data=self.workdir / "data", url=self.url, usdt=usdt, use_margin=str(use_margin).lower(), sim_extra=sim_extra)
        self.config.write_text(text)


@pytest.fixture
def system(tmp_path: Path, nats_server: EmbeddedServer) -> Iterator[System]:
    s = System(tmp_path, nats_server.url)
    yield s
    s.stop()


async def arb_state(bus: Client) -> tuple[ArbState, dict[str, Any]] | None:
    """The arbitrage's last published state and its books."""
    try:
        msg = await bus.jetstream().get_last_msg("OPS", subjects.ops("arbitrage", "e2e", "state"))
    except NotFoundError:
        return None
    event = decode(msg.data)
    assert isinstance(event, StrategyState) and event.state is not None
    return msgspec.convert(event.state, ArbState), event.state["books"]


async def state_is(bus: Client, check: Any) -> bool:
    got = await arb_state(bus)
    return got is not None and bool(check(*got))


async def stored(bus: Client, stream: str, subject: str) -> list[Any]:
    out: list[Any] = []
    async for batch in read_stream(bus, stream, subjects=(subject,)):
        out += [decode(m.data) for m in batch]
    return out


async def venue_holds(venue: SimVenue) -> tuple[Decimal, Decimal]:
    """(spot BTC, perpetual contracts signed) of the account at the exchange."""
    btc = next((b.total for b in await venue.fetch_balance() if b.asset == "BTC"), Decimal(0))
    perp = Decimal(0)
    for p in await venue.fetch_positions([PERP]):
        perp += p.contracts if p.side == "long" else -p.contracts
    return btc, perp


async def funding_ready(venue: SimVenue) -> bool:
    try:
        await venue.time()
    except Transient:
        return False
    return True


async def start(system: System, bus: Client, rate: str) -> SimVenue:
    system.start("sim", "executor", "funding", "arbitrage")
    venue = SimVenue(bus, "sim", "arb")
    await eventually(lambda: funding_ready(venue), timeout=60, what="the simulated exchange")
    await venue.set_funding(PERP, Decimal(rate))
    return venue


async def test_positive_funding_enters_long_spot_short_perp_collects_funding_and_exits_when_it_flips(bus: Client, system: System) -> None:
    system.configure()
    venue = await start(system, bus, "0.001")  # the perpetual pays: long spot, short perp
    await eventually(lambda: state_is(bus, lambda st, _b: st.entries >= 1), timeout=60, what="an entry")
    spot, perp = await venue_holds(venue)
    assert (spot, perp) == (Decimal("0.01"), Decimal("-0.01"))  # the same base quantity, opposite

    # Funding is paid every 10 s: the arbitrage books what the exchange paid, to the cent.
    await eventually(lambda: state_is(bus, lambda _s, b: Decimal(b["total"]["funding"]) > 0), timeout=60, what="funding collected")
    await venue.set_funding(PERP, Decimal("-0.001"))  # it flips: the arbitrage leaves
    await eventually(lambda: state_is(bus, lambda st, _b: st.exits >= 1 and st.saga is None), timeout=60, what="the exit")
    assert await venue_holds(venue) == (Decimal(0), Decimal(0))

    got = await arb_state(bus)
    assert got is not None
    st, books = got
    payments = [p for p in await stored(bus, "ACCOUNT", subjects.acct("sim", "arb", PERP, "funding")) if isinstance(p, FundingPayment)]
    assert payments and Decimal(books["total"]["funding"]) == sum((p.amount for p in payments), Decimal(0))
    fills = [f for f in await stored(bus, "ACCOUNT", "acct.sim.arb.*.fill") if isinstance(f, Fill)]
    cash = sum(((f.price * f.amount) * (1 if f.side == "sell" else -1) for f in fills), Decimal(0))
    assert Decimal(books["total"]["basis"]) == cash  # flat: the price PnL is what the fills paid and got
    assert Decimal(books["total"]["fees"]) == sum((f.fee_cost for f in fills), Decimal(0))
    # Negative funding needs a margin short of spot, and this instance may not: blocked before any order.
    await eventually(lambda: state_is(bus, lambda s, _b: s.blocked == "margin_unavailable"), timeout=30, what="the margin block")
    alerts = [a for a in await stored(bus, "OPS", subjects.ops("arbitrage", "e2e", "alert")) if isinstance(a, RiskAlert)]
    assert [a.kind for a in alerts] == ["arbitrage_margin_unavailable"]
    places = [c for c in await stored(bus, "COMMAND", "cmd.sim.arb.>") if isinstance(c, PlaceOrder)]
    assert not [c for c in places if c.symbol == SPOT and c.side == "sell" and c.use_margin]


async def test_negative_funding_enters_with_a_margin_short_and_use_margin_reaches_the_exchange(bus: Client, system: System) -> None:
    system.configure(use_margin=True)
    venue = await start(system, bus, "-0.001")  # the perpetual receives: long perp, short spot on margin
    await eventually(lambda: state_is(bus, lambda st, _b: st.entries >= 1), timeout=60, what="an entry")
    assert await venue_holds(venue) == (Decimal("-0.01"), Decimal("0.01"))  # the exchange lent the BTC sold
    orders = [o for o in await stored(bus, "ACCOUNT", subjects.acct("sim", "arb", SPOT, "order")) if isinstance(o, OrderUpdate)]
    places = [c for c in await stored(bus, "COMMAND", subjects.cmd("sim", "arb", SPOT, "place")) if isinstance(c, PlaceOrder)]
    assert [(c.side, c.use_margin, c.time_in_force) for c in places] == [("sell", True, "IOC")]
    assert any(o.status == "closed" and o.side == "sell" for o in orders)
    # Funding received on the long perpetual, booked apart from the price PnL.
    await eventually(lambda: state_is(bus, lambda _s, b: Decimal(b["total"]["funding"]) > 0), timeout=60, what="funding collected")
    # An operator closes it: both legs flat at the exchange (the loan repaid), and no new entry.
    done = system.sqt("arbitrage", "exit", "--reason", "test")
    assert done.returncode == 0, done.stderr
    await eventually(lambda: state_is(bus, lambda st, _b: st.exits == 1 and st.paused and st.saga is None), timeout=60, what="the exit")
    spot, perp = await venue_holds(venue)
    # Flat; if an hour turned meanwhile, the interest (charged in BTC) was repaid by a buy-back
    # rounded up to the lot, which leaves less than one lot of spot.
    assert perp == 0 and Decimal(0) <= spot < Decimal("0.00001"), (spot, perp)
    listed = system.sqt("arbitrage", "ls")
    assert "e2e: paused" in listed.stdout and "1 entries, 1 exits" in listed.stdout, listed.stdout


async def test_a_refused_hedge_is_unwound_and_the_failure_budget_stops_the_next_entries(bus: Client, system: System) -> None:
    # 650 USDT buys 0.01 BTC of spot, and then has no margin left for the perpetual's short.
    system.configure(usdt="650")
    venue = await start(system, bus, "0.001")
    await eventually(lambda: state_is(bus, lambda st, _b: st.blocked == "failure_budget"), timeout=90, what="the failure budget")
    st_books = await arb_state(bus)
    assert st_books is not None
    st, _ = st_books
    assert st.entries == 0 and len(st.unwinds) == 2
    hedges = [o for o in await stored(bus, "ACCOUNT", subjects.acct("sim", "arb", PERP, "order")) if isinstance(o, OrderUpdate)]
    assert hedges and {o.reason for o in hedges} == {"insufficient_balance"}
    assert await venue_holds(venue) == (Decimal(0), Decimal(0))  # every spot leg bought was sold back
    places = [c for c in await stored(bus, "COMMAND", "cmd.sim.arb.>") if isinstance(c, PlaceOrder)]
    spot_buys = [c for c in places if c.symbol == SPOT and c.side == "buy"]
    assert len(spot_buys) == 2 and len({c.client_order_id for c in places}) == len(places)  # no more entries, no id twice


async def test_a_margin_refusal_by_the_exchange_blocks_reentry(bus: Client, system: System) -> None:
    system.configure(use_margin=True, sim_extra='borrow_limit = { BTC = "0" }')  # BTC cannot be borrowed here
    await start(system, bus, "-0.001")
    await eventually(lambda: state_is(bus, lambda st, _b: st.blocked == "margin_unavailable"), timeout=60, what="the margin block")
    spot = [o for o in await stored(bus, "ACCOUNT", subjects.acct("sim", "arb", SPOT, "order")) if isinstance(o, OrderUpdate)]
    assert [(o.status, o.reason) for o in spot] == [("rejected", "margin_unavailable")]
    # The spread stays as wide for five more seconds: no second try.
    await asyncio.sleep(5)
    assert await state_is(bus, lambda st, _b: st.blocked == "margin_unavailable" and st.spread is not None and st.spread.state == "ok")
    places = [c for c in await stored(bus, "COMMAND", "cmd.sim.arb.>") if isinstance(c, PlaceOrder)]
    assert [(c.symbol, c.side, c.use_margin) for c in places] == [(SPOT, "sell", True)]


async def test_the_shipped_perp_perp_config_longs_the_lower_funding_venue_shorts_the_higher_and_replays_to_the_same_orders(
    bus: Client, tmp_path: Path, nats_server: EmbeddedServer
) -> None:
    """configs/arbitrage.toml as shipped (sim2's funding richer than sim's), faster and on this server."""
    text = (ROOT / "configs" / "arbitrage.toml").read_text()
    text = re.sub(r"(?m)^metrics_port = \d+", "metrics_port = 0", text)
    text = re.sub(r'(?m)^data_dir = ".*"', f'data_dir = "{tmp_path / "data"}"', text)
    text = text.replace('host = "127.0.0.1"\nport = 4222\nmonitor_port = 8222', f'url = "{nats_server.url}"')
    text = text.replace("entry_hold_ms = 30000", "entry_hold_ms = 1000").replace("history_minutes = 60", "history_minutes = 5")
    system = Components(tmp_path, instance="btc-x")
    system.config.write_text(text)
    try:
        system.start("sim", "sim:sim2", "executor", "executor:sim2-arb", "funding", "arbitrage")

        async def entered() -> bool:
            try:
                msg = await bus.jetstream().get_last_msg("OPS", subjects.ops("arbitrage", "btc-x", "state"))
            except NotFoundError:
                return False
            state = decode(msg.data).state
            return state is not None and msgspec.convert(state, ArbState).entries >= 1

        await eventually(entered, timeout=90, what="the perp-perp entry")
        sims = [SimVenue(bus, v, "arb") for v in ("sim", "sim2")]
        held = [sum((p.contracts if p.side == "long" else -p.contracts for p in await v.fetch_positions([PERP])), Decimal(0)) for v in sims]
        assert held == [Decimal("0.05"), Decimal("-0.05")]  # long sim (8 h at 0.01%), short sim2 (4 h at 0.03%)
        replayed = system.sqt("replay", "arbitrage", "--instance", "btc-x", "--quiet")
        assert replayed.returncode == 0 and "match: 2 decisions" in replayed.stderr, replayed.stderr
        changed = system.sqt("replay", "arbitrage", "--instance", "btc-x", "--quiet", "--set", "amount=0.02")
        assert changed.returncode == 1 and "DIFFERENT (with --set)" in changed.stderr, changed.stderr
    finally:
        system.stop()
