"""The funding monitor's pure core: funding and tickers of the configured legs in, snapshots out.

Time comes from the inputs (the legs' funding and ticker times, and the `Clock` its shell stores
in the input stream), so a replay of the input stream publishes every snapshot again, identical,
at the same input. A pair's snapshot is published when one of its perpetuals' funding arrives,
when its state changes (`ok`, `stale`, `missing`: a leg going silent shows without any event
of its own), and otherwise at most every `publish_ms` of event time.

What any NATS client could publish on a leg's subjects is checked before it is folded in: a
funding interval that is not a duration, a rate no venue pays, a spot market said to pay
funding, a ticker that market-data sanity refuses (below a tick, absurd, a crossed book). Each
raises `InputRejected`; the runtime dead-letters it with the reason.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from msgspec.structs import replace

from bus.contract import Inbound, InputRejected
from monitors.funding.config import FundingConfig, PairConfig
from monitors.funding.spread import Terms, judge, snapshot
from monitors.funding.state import FundingState, LegSeen, leg_key
from schemas.market import FundingRate, Market, Ticker
from schemas.ops import Clock, FundingSpread, SpreadLeg
from schemas.sanity import PriceBand, check_ticker

ZERO = Decimal(0)
# Venues cap funding at a few percent per interval at most (Binance's widest caps are 2-4%): a
# rate beyond this is garbage, and folding it in would show an APR in the thousands.
MAX_RATE = Decimal("0.05")
MIN_INTERVAL_MS = 1_000
MAX_INTERVAL_MS = 7 * 24 * 3_600_000
_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^([0-9]{1,12})(ms|s|m|h|d)$")


def interval_ms(interval: str) -> int:
    """`8h` -> 28800000; ValueError naming the value for anything that is not a sane duration."""
    m = _DURATION.match(interval)
    if not m:
        raise ValueError(f"funding interval {interval!r} is not a duration like 30s, 1h or 8h")
    ms = int(m.group(1)) * _UNITS[m.group(2)]
    if not MIN_INTERVAL_MS <= ms <= MAX_INTERVAL_MS:
        raise ValueError(f"funding interval {interval!r} is outside 1s..7d")
    return ms


class FundingCore:
    def __init__(self, config: FundingConfig, markets: dict[str, Market]) -> None:
        """`markets`: each leg's rules by `venue|symbol` (its kind, its taker fee, its tick)."""
        self.cfg = config
        keys = [leg_key(v, s) for v, s in config.legs()]
        missing = [k for k in keys if k not in markets]
        if missing:
            raise ValueError(f"no market rules for {', '.join(missing)}")
        self.markets = {k: markets[k] for k in keys}
        for pair in config.pairs:
            if all(self.markets[leg_key(leg.venue, leg.symbol)].kind != "swap" for leg in pair.legs):
                raise ValueError(f"funding pair {pair.name!r} has no perpetual leg: there is no funding to collect")
        self.pairs_of: dict[str, list[str]] = {}
        for pair in config.pairs:
            for leg in pair.legs:
                self.pairs_of.setdefault(leg_key(leg.venue, leg.symbol), []).append(pair.name)
        self.terms = {
            p.name: Terms(hold_hours=config.hold_hours, slippage=config.slippage, borrow_rate=p.borrow_rate, margin=p.margin)
            for p in config.pairs
        }
        self.band = PriceBand()

    def initial_state(self) -> FundingState:
        return FundingState(instance=self.cfg.instance)

    # ------------------------------------------------------------------ inputs

    def step(self, st: FundingState, inbound: Inbound[Any]) -> tuple[FundingState, list[Any]]:
        ev = inbound.event
        kind = type(ev)
        funded: frozenset[str] = frozenset()
        if kind is FundingRate:
            key = leg_key(ev.venue, ev.symbol)
            if key not in self.markets:
                return st, []
            st, fresh = self.on_funding(st, key, ev)
            if fresh:
                funded = frozenset(self.pairs_of[key])
        elif kind is Ticker:
            key = leg_key(ev.venue, ev.symbol)
            if key not in self.markets:
                return st, []
            st = self.on_ticker(st, key, ev)
        elif kind is not Clock:
            return st, []
        now = max(st.now, ev.ts)
        st = replace(st, now=now, started=st.started or now, seq=inbound.seq)
        return self.publish(st, funded)

    def on_funding(self, st: FundingState, key: str, ev: FundingRate) -> tuple[FundingState, bool]:
        """Fold a leg's funding in: (state, whether it is news for the leg's pairs)."""
        if self.markets[key].kind != "swap":
            if ev.funding_rate != 0 or (ev.predicted_rate or ZERO) != 0:
                raise InputRejected(f"{ev.venue} {ev.symbol} is a spot market, which pays no funding, yet says {ev.funding_rate}")
            return st, False  # a spot market's zero: nothing a pair does not already assume
        try:
            interval = interval_ms(ev.interval)
        except ValueError as exc:
            raise InputRejected(str(exc)) from None
        for name, rate in (("funding_rate", ev.funding_rate), ("predicted_rate", ev.predicted_rate)):
            if rate is not None and abs(rate) > MAX_RATE:
                raise InputRejected(f"`{name}` {rate} per {ev.interval} is beyond any venue's cap ({MAX_RATE})")
        if ev.next_funding_time < 0 or ev.next_funding_time > ev.ts + MAX_INTERVAL_MS:
            raise InputRejected(f"`next_funding_time` {ev.next_funding_time} is not within 7 days after the event ({ev.ts})")
        seen = st.legs.get(key) or LegSeen()
        if ev.ts < seen.funding_ts:
            return st, False  # older than what we have: it says nothing about now
        legs = dict(st.legs)
        legs[key] = replace(
            seen,
            funding_rate=ev.funding_rate,
            predicted_rate=ev.predicted_rate,
            interval_ms=interval,
            next_funding_time=ev.next_funding_time,
            funding_ts=ev.ts,
        )
        return replace(st, legs=legs), True

    def on_ticker(self, st: FundingState, key: str, ev: Ticker) -> FundingState:
        seen = st.legs.get(key) or LegSeen()
        if ev.ts < seen.book_ts:
            return st
        problem = check_ticker(ev, self.markets[key], seen.last, seen.book_ts, self.band)
        if problem:
            raise InputRejected(problem)
        if ev.bid is None or ev.ask is None:
            return st  # a one-sided book prices no trade: the leg stays as fresh as its last full one
        legs = dict(st.legs)
        legs[key] = replace(seen, bid=ev.bid, ask=ev.ask, last=ev.last, book_ts=ev.ts)
        return replace(st, legs=legs)

    # ------------------------------------------------------------------ snapshots

    def leg(self, st: FundingState, venue: str, symbol: str) -> SpreadLeg:
        key = leg_key(venue, symbol)
        market = self.markets[key]
        seen = st.legs.get(key) or LegSeen()
        common: dict[str, Any] = dict(
            venue=venue, symbol=symbol, kind=market.kind, bid=seen.bid, ask=seen.ask, book_ts=seen.book_ts, fee=market.taker_fee
        )
        if market.kind != "swap":
            return SpreadLeg(funding_rate=ZERO, **common)
        return SpreadLeg(
            funding_rate=seen.funding_rate,
            predicted_rate=seen.predicted_rate,
            interval_ms=seen.interval_ms,
            next_funding_time=seen.next_funding_time,
            funding_ts=seen.funding_ts,
            **common,
        )

    def legs_of(self, st: FundingState, pair: PairConfig) -> tuple[tuple[SpreadLeg, SpreadLeg], tuple[int, int]]:
        a, b = pair.legs
        return (self.leg(st, a.venue, a.symbol), self.leg(st, b.venue, b.symbol)), (self.cfg.ttl(a.venue), self.cfg.ttl(b.venue))

    def snapshot(self, st: FundingState, pair: PairConfig) -> FundingSpread:
        legs, ttls = self.legs_of(st, pair)
        return snapshot(self.cfg.instance, pair.name, legs, ttls, self.terms[pair.name], st.now)

    def publish(self, st: FundingState, funded: frozenset[str]) -> tuple[FundingState, list[Any]]:
        outputs: list[FundingSpread] = []
        for pair in self.cfg.pairs:
            legs, ttls = self.legs_of(st, pair)
            last = st.snapshots.get(pair.name)
            if last is not None and pair.name not in funded and st.now - last.ts < self.cfg.publish_ms:
                if judge(legs, ttls, st.now)[0] == last.state:
                    continue  # not due, and no change of state (a leg going silent, or back)
            outputs.append(snapshot(self.cfg.instance, pair.name, legs, ttls, self.terms[pair.name], st.now))
        if not outputs:
            return st, []
        snapshots = dict(st.snapshots)
        for snap in outputs:
            snapshots[snap.pair] = snap
        return replace(st, snapshots=snapshots), list(outputs)
