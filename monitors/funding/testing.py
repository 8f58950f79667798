"""Test support for the funding monitor: event factories, a driver for its core, and what the
project's hostile-input suite (testkit/hostile.py) needs to include it.

The driver feeds events through the same admission as live (bus/contract.py `apply_input`),
so a test sees exactly what the runtime would publish or dead-letter.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client

from bus.runtime import ConsumerRuntime
from bus.settings import BusSettings
from monitors.funding.config import FundingConfig, LegConfig, PairConfig
from monitors.funding.core import FundingCore
from monitors.funding.runner import build_funding, clock_event, clock_subject, funding_spec, market_rules
from monitors.funding.state import FundingState, leg_key
from schemas import ids, subjects
from schemas.codec import encode
from schemas.market import FundingRate, Market, Ticker
from schemas.ops import FundingSpread
from schemas.subjects import subject_of
from testkit.cores import Admitted

if TYPE_CHECKING:
    from testkit.hostile import Stack

T0 = 1_700_000_000_000
SPOT = "BTC/USDT"
PERP = "BTC/USDT:USDT"
HOUR_MS = 3_600_000


def market(symbol: str, kind: str = "swap", taker_fee: str = "0.0005", tick: str = "0.1") -> Market:
    """Rules like the simulated exchange's (BTC perpetual: tick 0.1; BTC spot: tick 0.01)."""
    base, _, rest = symbol.partition("/")
    quote, _, settle = rest.partition(":")
    return Market(
        symbol=symbol,
        kind="spot" if kind == "spot" else "swap",
        base=base,
        quote=quote,
        settle=settle or None,
        tick_size=Decimal(tick),
        lot_size=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        min_notional=Decimal(5),
        taker_fee=Decimal(taker_fee),
    )


def sim_markets(*venues: str) -> dict[str, Market]:
    """BTC spot and perpetual on each venue (default: `sim`), by `venue|symbol`."""
    out: dict[str, Market] = {}
    for v in venues or ("sim",):
        out[leg_key(v, SPOT)] = market(SPOT, "spot", "0.001", "0.01")
        out[leg_key(v, PERP)] = market(PERP)
    return out


def spot_perp(name: str = "btc", venue: str = "sim", **kw: Any) -> PairConfig:
    return PairConfig(name=name, legs=[LegConfig(venue=venue, symbol=SPOT), LegConfig(venue=venue, symbol=PERP)], **kw)


def perp_perp(name: str = "btc-x", venues: tuple[str, str] = ("sim", "sim2"), **kw: Any) -> PairConfig:
    return PairConfig(name=name, legs=[LegConfig(venue=venues[0], symbol=PERP), LegConfig(venue=venues[1], symbol=PERP)], **kw)


def funding(
    rate: str | Decimal,
    ts: int = T0,
    venue: str = "sim",
    symbol: str = PERP,
    interval: str = "8h",
    predicted: str | Decimal | None = None,
    next_funding_time: int | None = None,
) -> FundingRate:
    return FundingRate(
        id=ids.funding_id(venue, symbol, ts),
        venue=venue,
        symbol=symbol,
        funding_rate=Decimal(rate),
        predicted_rate=None if predicted is None else Decimal(predicted),
        next_funding_time=ts + HOUR_MS if next_funding_time is None else next_funding_time,
        interval=interval,
        ts=ts,
        ts_local=ts,
    )


def book(bid: str | Decimal, ask: str | Decimal, ts: int = T0, venue: str = "sim", symbol: str = PERP) -> Ticker:
    b, a = Decimal(bid), Decimal(ask)
    return Ticker(id=ids.ticker_id(venue, symbol, ts), venue=venue, symbol=symbol, bid=b, ask=a, last=b, ts=ts, ts_local=ts)


class FundingDriver(Admitted):
    """The core, fed one event at a time as the runtime would."""

    def __init__(self, cfg: FundingConfig | None = None, markets: dict[str, Market] | None = None) -> None:
        self.cfg = cfg or FundingConfig(pairs=[spot_perp()])
        super().__init__(FundingCore(self.cfg, markets or sim_markets("sim", "sim2")), funding_spec(self.cfg).rules())
        self.state: FundingState

    def at(self, ts: int) -> list[FundingSpread]:
        return self.feed(clock_event(self.cfg.instance, ts))

    def last(self, pair: str = "btc") -> FundingSpread:
        return self.state.snapshots[pair]


# ----------------------------------------------------------------------------- the hostile-input suite

HOSTILE = FundingConfig(instance="hostile", pairs=[spot_perp("hostile")], ttl_ms=600_000)


def funding_inputs() -> list[tuple[str, Any]]:
    """One valid example per subject the monitor reads."""
    events: list[Any] = [
        funding("0.0001", T0),
        funding("0", T0, symbol=SPOT),
        book("60000", "60000.1", T0),
        book("60000", "60000.01", T0, symbol=SPOT),
    ]
    out = [(subject_of(e), e) for e in events]
    out.append((clock_subject(HOSTILE), clock_event(HOSTILE.instance, T0)))
    return out


def funding_semantic() -> list[tuple[str, bytes]]:
    """Inputs that decode but no venue would say: the core refuses each."""
    now = int(time.time() * 1000)
    bad: list[Any] = [
        funding("0.0001", now, interval="-1h"),
        funding("0.0001", now, interval="0h"),
        funding("0.5", now),  # 50% per interval
        funding("0.0001", now, predicted="-0.9"),
        funding("0.001", now, symbol=SPOT),  # a spot market paying funding
        book("60001", "60000", now),  # crossed
        book("0.01", "0.02", now),  # below one tick of the perpetual
    ]
    return [(subject_of(e), encode(e)) for e in bad]


async def funding_start(nc: Client, stack: AsyncExitStack, stop: asyncio.Event) -> Stack:
    """The monitor on `HOSTILE` (BTC spot against its perpetual on the simulated exchange),
    its market rules asked of a running simulated exchange, as `run_funding` does."""
    from testkit import hostile

    _sim, venue = await hostile.sim_stack(nc, stack, stop)
    markets = await market_rules(nc, HOSTILE, BusSettings(nats_url=""), stop)
    assert markets is not None
    pub = await hostile.publisher(nc, stack)
    runtime = await build_funding(nc, HOSTILE, markets, pub)
    await hostile.run_consumer(runtime, stack, stop)
    return hostile.Stack(nc, runtime, pub, runtime.spec.stream, venue, extra={"funding_ts": 0})


async def funding_valid(s: Stack) -> None:
    """A new funding of the perpetual: a snapshot that carries it is published."""
    from testkit.bus import eventually

    s.counter += 1
    ts = max(int(time.time() * 1000), s.extra["funding_ts"] + 1)
    s.extra["funding_ts"] = ts
    await s.publisher.publish(funding("0.0001", ts, predicted="0.00012"))
    runtime = s.consumer
    assert isinstance(runtime, ConsumerRuntime)

    def carried() -> bool:
        snap = runtime.state.snapshots.get("hostile")
        return snap is not None and ts in (snap.long.funding_ts, snap.short.funding_ts)

    await eventually(carried, timeout=20, what="a snapshot carrying the valid funding")
    snap = runtime.state.snapshots["hostile"]
    stored = await s.nc.jetstream().get_last_msg("OPS", subjects.funding_spread(PERP))
    assert stored.data == encode(snap), "the snapshot in the state is the last one stored on OPS"
