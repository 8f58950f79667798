"""A funding-arbitrage backtest: the live funding monitor's core, the live arbitrage's core and the
live simulated exchange's engine, wired in one process without NATS, over candles.

Nothing here decides anything: `FundingCore.step` makes every snapshot, `ArbCore.step` every
decision and `SimEngine.step` every fill, fee, funding payment and interest charge, as in live
trading. This module only routes, in the bus's breadth-first order (backtest/wiring.py, shared
with the grid's backtest, backtest/session.py):

- Scope: one simulated venue holding both legs (spot-perp, the shipped `btc-basis` shape; two
  perpetuals of that one venue work the same way). Both legs' candles print together: each
  candle is four prints per market (venues/sim/candle_path.py), and print i of both markets is
  ONE `Tick` (then its `Quote`), as the exchange's own clock prints every market in one tick.
  A leg without candles of its own must `follow` the other in the config: it prints the
  leader's price times the engine's own basis walk (venues/sim/basis.py), as the live exchange
  does. A candle one market lacks is a print it does not make (its feed goes quiet: stale, as
  live); gaps are never filled.
- Events of one engine entry go, in the engine's order, to the funding monitor (tickers and
  funding rates of the legs) and then to the arbitrage (tickers, its order events, funding
  payments, borrow interest): the subjects their input streams source. What the monitor
  publishes (spreads) and what the arbitrage decides (commands) queue behind, in order.
- Time: both shells put `Clock` events into their input streams every `period` of the wall
  clock (bus/clock.py; 500 ms for the arbitrage, `funding.clock_ms` for the monitor). Here they
  are put at every multiple of the period of event time: before the print at time P, every tick
  time T up to and including P not yet ticked, the monitor's before the arbitrage's at one T,
  each T settled before the next. So a naked leg's deadline, an entry's wait and a stale leg are
  decided between prints as they would be live. There is no quiet-candle shortcut: every clock
  tick and every print is stepped (correctness first: a month of 1-minute candles is some
  fourteen million core steps, about 400 candles/s, under two minutes on one core).
- Funding: by default what the engine's config says (the CLI holds it constant: the market's
  `funding_mean`, `funding_volatility` 0). With rates from data (`timestamp,funding_rate` per
  perpetual, a venue's funding history: the rate the funding time `timestamp` paid), each rate is
  pinned with the engine's `SetFunding` entry (this sets `test_hooks` on the backtest's copy of
  the config) from the previous funding time on, after that time's payment: the engine quotes it
  (FundingRate) and pays it at `timestamp` on the position then held, so the monitor sees what
  the live venue would have said and the payments follow the real schedule.

The executor's part is its pure pre-trade check and its rejection event (backtest/wiring.py).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import msgspec

from backtest.result import BacktestResult, Sample, TradeRow, params_of
from backtest.wiring import BacktestError, Later, Wiring, start_equity
from bus.clock import clock_event
from bus.contract import Inbound, InputRejected
from monitors.funding.config import FundingConfig, UnknownPair
from monitors.funding.core import FundingCore
from monitors.funding.runner import CLOCK_COMPONENT
from monitors.funding.state import FundingState, leg_key
from schemas.account import ZERO, BorrowInterest, Fill, FundingPayment, Liquidation, OrderUpdate
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import FundingRate, Market, Ticker
from schemas.ops import FundingSpread, RiskAlert, StrategyState
from strategies.arbitrage.config import ArbConfig
from strategies.arbitrage.core import COMPONENT, ArbCore
from strategies.arbitrage.runner import CLOCK_MS, check_config
from strategies.arbitrage.state import ArbState
from venues.sim.basis import Basis
from venues.sim.candle_path import PRINTS_PER_CANDLE, candle_path, on_tick, print_volume
from venues.sim.config import SimConfig, SimMarket
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Bar, Print, Quote, SetFunding, Tick

ID_LIMIT = 32  # the simulated venue's client ids (the runner's default for a venue that says none)


class LegBooks:
    """One leg's trading from its fills: base held, average cost, realized price PnL."""

    __slots__ = ("held", "avg", "realized")

    def __init__(self) -> None:
        self.held = ZERO
        self.avg = ZERO
        self.realized = ZERO

    def book(self, signed: Decimal, price: Decimal) -> None:
        pos = self.held
        if pos == 0 or (pos > 0) == (signed > 0):
            self.avg = (self.avg * abs(pos) + price * abs(signed)) / (abs(pos) + abs(signed))
        else:
            closed = min(abs(signed), abs(pos))
            self.realized += (price - self.avg) * closed * (1 if pos > 0 else -1)
            if abs(signed) > abs(pos):
                self.avg = price
        self.held = pos + signed
        if self.held == 0:
            self.avg = ZERO


def read_funding_csv(path: str | Path) -> list[tuple[int, Decimal]]:
    """`timestamp,funding_rate` rows (epoch ms or an ISO time; a header line optional), in
    ascending time: a venue's funding history, each row the rate its funding time paid. A bad row
    names the file and the line."""
    out: list[tuple[int, Decimal]] = []
    with Path(path).open(newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2:
                raise BacktestError(f"{path}:{line}: expected `timestamp,funding_rate`, got {','.join(row)!r}")
            stamp, text = row[0].strip(), row[1].strip()
            try:
                rate = Decimal(text)
            except InvalidOperation:
                if not out and line == 1:
                    continue  # the header
                raise BacktestError(f"{path}:{line}: `funding_rate` {text!r} is not a number") from None
            ts = _epoch_ms(stamp)
            if ts is None:
                raise BacktestError(f"{path}:{line}: `timestamp` {stamp!r} is neither epoch ms nor an ISO time")
            if ts < 10**11:
                raise BacktestError(
                    f"{path}:{line}: `timestamp` {stamp} reads as 1973 or before: give milliseconds since the epoch, not seconds"
                )
            try:
                SetFunding(symbol="X/Y:Y", rate=rate)  # the engine's own bounds on a pinned rate
            except ValueError as exc:
                raise BacktestError(f"{path}:{line}: {exc}") from None
            if out and ts <= out[-1][0]:
                raise BacktestError(f"{path}:{line}: `timestamp` {ts} is not after the previous row's {out[-1][0]}")
            out.append((ts, rate))
    if not out:
        raise BacktestError(f"{path}: no funding rates")
    return out


def _epoch_ms(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).timestamp() * 1000)


class ArbSession:
    """One funding arbitrage and its funding monitor on one simulated exchange, driven candle by candle."""

    def __init__(
        self,
        arb: ArbConfig,
        funding: FundingConfig,
        sim: SimConfig,
        with_candles: Iterable[str],
        candle_ms: int = 60_000,
        funding_rates: Mapping[str, list[tuple[int, Decimal]]] | None = None,
        arb_clock_ms: int = CLOCK_MS,
    ) -> None:
        """`arb_clock_ms`: the arbitrage's clock period (its runner's, unless a test drives another)."""
        if len(arb.legs) != 2:
            raise BacktestError(f"arbitrage {arb.instance}: `legs` must be its pair's two legs (filled from pair {arb.pair!r})")
        for i, leg in enumerate(arb.legs):
            if leg.venue != sim.venue:
                raise BacktestError(
                    f"legs[{i}].venue: {leg.venue!r} is not the simulated exchange {sim.venue!r} (a backtest runs both legs on one venue)"
                )
        if arb.account not in sim.accounts:
            raise BacktestError(f"account: {arb.account!r} is not in the simulated exchange's accounts ({', '.join(sim.accounts)})")
        if candle_ms % PRINTS_PER_CANDLE or candle_ms < 60_000:
            raise BacktestError(f"candles of {candle_ms} ms: a backtest takes 1-minute candles or longer")
        specs = {m.symbol: m for m in sim.markets}
        for i, leg in enumerate(arb.legs):
            if leg.symbol not in specs:
                raise BacktestError(f"legs[{i}].symbol: {leg.symbol!r} is not a market of the simulated exchange ({', '.join(specs)})")
        if funding.instance != arb.monitor:
            raise BacktestError(f"monitor: the arbitrage reads funding monitor {arb.monitor!r}, the config's is {funding.instance!r}")
        try:
            pair = funding.pair(arb.pair)
        except UnknownPair as exc:
            raise BacktestError(f"pair: {exc}") from None
        if {(leg.venue, leg.symbol) for leg in pair.legs} != {(leg.venue, leg.symbol) for leg in arb.legs}:
            raise BacktestError(f"pair: funding pair {arb.pair!r} has other legs than the arbitrage's")
        self.step_ms = candle_ms // PRINTS_PER_CANDLE
        symbols = [leg.symbol for leg in arb.legs]
        with_candles = set(with_candles)
        self.leaders = [s for s in symbols if s in with_candles]
        self.followers: list[SimMarket] = []
        for s in symbols:
            if s in with_candles:
                continue
            spec = specs[s]
            if spec.follows is None or spec.follows not in self.leaders:
                raise BacktestError(
                    f"{s}: no candles, and it does not follow a leg that has them (give its candles, or set its market's `follows`)"
                )
            self.followers.append(spec)
        if not self.leaders:
            raise BacktestError("no candles for either leg")
        rates = {s: list(r) for s, r in (funding_rates or {}).items() if r}
        for s in rates:
            if s not in symbols or specs[s].kind != "swap":
                raise BacktestError(f"funding rates for {s}: not a perpetual leg of arbitrage {arb.instance} ({', '.join(symbols)})")
        if rates:
            sim = msgspec.structs.replace(sim, test_hooks=True)  # SetFunding pins the rates from data
        for s in rates:
            self._check_schedule(s, rates[s], specs[s])
        self._check_time(arb, funding, sim, specs, symbols)
        self.arb_cfg, self.funding_cfg, self.sim = arb, msgspec.structs.replace(funding, pairs=[pair]), sim
        self.engine = SimEngine(sim)
        markets: list[Market] = [self.engine.markets[s] for s in symbols]
        problems = check_config(arb, markets, [ID_LIMIT, ID_LIMIT])
        if problems:
            raise BacktestError(f"arbitrage {arb.instance}: " + "; ".join(problems))
        try:
            self.monitor = FundingCore(self.funding_cfg, {leg_key(sim.venue, m.symbol): m for m in markets})
            self.core = ArbCore(arb, markets)
        except ValueError as exc:
            raise BacktestError(str(exc)) from None
        self.markets = markets
        self.specs = specs
        self.symbols = symbols
        self.spot_base = {m.base for m in markets if m.kind == "spot"}
        self.order = [m.symbol for m in sim.markets if m.symbol in symbols]  # the engine's order of prints in a tick
        self.basis = Basis(sim)
        self.wire = Wiring(self.engine, self._route, self._to_arb)
        self.fst: FundingState = self.monitor.initial_state()
        self.ast: ArbState = self.core.initial_state()
        self.fseq = self.aseq = self.step_no = 0
        self.clock_ms = {"monitor": self.funding_cfg.clock_ms, "arbitrage": arb_clock_ms}
        self.next_clock = {"monitor": 0, "arbitrage": 0}  # the next tick time of each shell (0: from the first print)
        # Rates from data: (pinned from, symbol, rate), in time order.
        self.pins: list[tuple[int, str, Decimal]] = sorted(
            (ts - specs[s].funding_interval_ms, s, r) for s, rows in rates.items() for ts, r in rows
        )
        self.pinned = 0
        self.last: dict[str, Decimal] = {}  # each market's last print (the followers' basis)
        # What a live run's logs would hold, kept for the result and for comparisons with one.
        self.decided = self.wire.decided
        self.spreads = 0  # snapshots the monitor published (a month of them would fill memory: counted)
        self.first_ok: FundingSpread | None = None  # the first `ok` one
        self.alerts: list[RiskAlert] = []
        self.last_state: StrategyState | None = None
        self.trades: list[TradeRow] = []
        self.fills: list[Fill] = []
        self.funding_payments: list[FundingPayment] = []
        self.interest: list[BorrowInterest] = []
        self.liquidations: list[Liquidation] = []
        self.refused: list[OrderUpdate] = []  # orders the exchange refused
        self.rejected_inputs: list[str] = []
        # The arbitrage's money (quote currency): every fill, fee, funding payment and interest charge.
        self.books = {s: LegBooks() for s in symbols}
        self.cash = ZERO
        self.fees = ZERO
        self.funding = ZERO
        self.borrow_base = ZERO  # interest charged in the spot leg's base (the wallet's coin falls by it)
        self.borrow = ZERO  # the same valued at the spot leg's last print when charged
        self.booked = 0

    @staticmethod
    def _check_schedule(symbol: str, rows: list[tuple[int, Decimal]], spec: SimMarket) -> None:
        """The data's funding times must be the market's: every `funding_interval` (a few ms of a
        venue's jitter aside, and gaps in the data allowed)."""
        interval = spec.funding_interval_ms
        for (a, _), (b, _) in zip(rows, rows[1:]):
            if abs((b - a) - round((b - a) / interval) * interval) > 60_000 or b - a < interval // 2:
                hours = interval / 3_600_000
                raise BacktestError(
                    f"funding rates for {symbol}: funding times {a} and {b} are {(b - a) / 3_600_000:g} h apart, "
                    f"not a multiple of the market's funding_interval_h ({hours:g} h)"
                )

    def _check_time(self, arb: ArbConfig, funding: FundingConfig, sim: SimConfig, specs: dict[str, SimMarket], symbols: list[str]) -> None:
        """Prints come every `step_ms` of event time, not every tick_ms: what the cores judge by
        age must allow it, or every spread is stale between two prints."""
        step = self.step_ms
        for s in symbols:
            ttl = funding.ttl(sim.venue)
            name = f"funding.ttl_ms_by_venue.{sim.venue}" if sim.venue in funding.ttl_ms_by_venue else "funding.ttl_ms"
            if ttl < step:
                raise BacktestError(
                    f"{name}: {ttl} ms is shorter than the {step} ms between two prints of a candle: every leg would be stale"
                )
            if specs[s].kind == "swap" and ttl < sim.funding_every_ms:
                raise BacktestError(f"{name}: {ttl} ms is shorter than the engine's funding_every_ms ({sim.funding_every_ms} ms)")
        if arb.spread_fresh_ms < step:
            raise BacktestError(
                f"spread_fresh_ms: {arb.spread_fresh_ms} ms is shorter than the {step} ms between two prints: the books are never fresh"
            )

    # ------------------------------------------------------------------ driving

    def candle(self, bars: Mapping[str, Bar]) -> None:
        """One candle time: the bars of the markets that have one (by symbol, same open time)."""
        open_time = next(iter(bars.values())).open_time
        paths: list[tuple[SimMarket, tuple[Decimal, ...], Decimal]] = []
        for symbol in self.leaders:
            bar = bars.get(symbol)
            if bar is None:
                continue
            spec = self.specs[symbol]
            paths.append((spec, candle_path(bar.open, bar.high, bar.low, bar.close), print_volume(bar.volume, spec.lot_size)))
        if not paths:
            return
        for i in range(PRINTS_PER_CANDLE):
            self.step_no += 1
            ts = open_time + i * self.step_ms
            drawn: dict[str, Print] = {}
            for spec, path, volume in paths:
                drawn[spec.symbol] = Print(spec.symbol, on_tick(path[i], spec.tick_size), volume)
            for spec in self.followers:  # a leg without candles of its own follows its leader's print
                leader = drawn.get(spec.follows or "")
                if leader is not None:
                    before = self.last.get(leader.symbol), self.last.get(spec.symbol)
                    drawn[spec.symbol] = self.basis.follow(spec, self.step_no, leader, *before)
            prints = [drawn[s] for s in self.order if s in drawn]
            self.clocks(ts)
            self.wire.apply(Tick(step=self.step_no, ts=ts, prints=prints))
            self.wire.settle()
            self.wire.apply(Quote(step=self.step_no))
            self.wire.settle()
            for p in prints:
                self.last[p.symbol] = p.price
            self.pin(ts)

    def clocks(self, until: int) -> None:
        """Both shells' clock ticks up to and including `until` (event time), in time order."""
        nxt = self.next_clock
        if nxt["monitor"] == 0:  # the first print: time starts here
            nxt["monitor"] = until - until % self.clock_ms["monitor"]
            nxt["arbitrage"] = until - until % self.clock_ms["arbitrage"]
        instance = self.arb_cfg.instance
        while True:
            t = min(nxt.values())
            if t > until:
                return
            if nxt["monitor"] == t:
                self._to_monitor(clock_event(CLOCK_COMPONENT, self.funding_cfg.instance, t))
                nxt["monitor"] = t + self.clock_ms["monitor"]
            if nxt["arbitrage"] == t:
                self._to_arb(clock_event(COMPONENT, instance, t))
                nxt["arbitrage"] = t + self.clock_ms["arbitrage"]
            self.wire.settle()

    def pin(self, ts: int) -> None:
        """The rates from data in force by `ts` (after this print's payment): SetFunding entries."""
        pins = self.pins
        while self.pinned < len(pins) and pins[self.pinned][0] <= ts:
            _, symbol, rate = pins[self.pinned]
            self.pinned += 1
            if self.engine.funding_problem(self.wire.est, SetFunding(symbol=symbol, rate=rate)) is None:
                self.wire.apply(SetFunding(symbol=symbol, rate=rate))
                self.wire.settle()

    # ------------------------------------------------------------------ routing

    def _route(self, events: list[Any]) -> None:
        legs, account = self.symbols, self.arb_cfg.account
        for ev in events:
            kind = type(ev)
            if kind is Ticker:
                if ev.symbol in legs:
                    self._to_monitor(ev)
                    self._to_arb(ev)
            elif kind is FundingRate:
                if ev.symbol in legs:
                    self._to_monitor(ev)
            elif kind is OrderUpdate:
                if ev.account == account and ev.symbol in legs:
                    if ev.status == "rejected":
                        self.refused.append(ev)
                    self._to_arb(ev)
            elif kind is Fill:
                if ev.account == account and ev.symbol in legs:
                    self._book_fill(ev)
            elif kind is FundingPayment:
                if ev.account == account and ev.symbol in legs:
                    self.funding_payments.append(ev)
                    self.funding += ev.amount
                    self.cash += ev.amount
                    self.booked += 1
                    self._to_arb(ev)
            elif kind is BorrowInterest:
                if ev.account == account and ev.asset in self.spot_base:
                    self.interest.append(ev)
                    self.borrow_base += ev.interest
                    spot = next(m.symbol for m in self.markets if m.kind == "spot" and m.base == ev.asset)
                    self.borrow += ev.interest * self.last.get(spot, ZERO)
                    self.booked += 1
                    self._to_arb(ev)
            elif kind is Liquidation:
                if ev.account == account:
                    self.liquidations.append(ev)

    def _to_monitor(self, event: Any) -> None:
        self.fseq += 1
        try:
            self.fst, outputs = self.monitor.step(self.fst, Inbound(self.fseq, "backtest", event))
        except InputRejected as exc:  # live: dead-lettered, and the monitor goes on
            self.rejected_inputs.append(f"funding monitor: {type(event).__name__}: {exc}")
            return
        for out in outputs:
            if type(out) is FundingSpread:
                self.spreads += 1
                if self.first_ok is None and out.state == "ok":
                    self.first_ok = out
                self.wire.queue.append(Later(self._to_arb, out))

    def _to_arb(self, event: Any) -> None:
        self.aseq += 1
        try:
            self.ast, outputs = self.core.step(self.ast, Inbound(self.aseq, "backtest", event))
        except InputRejected as exc:
            self.rejected_inputs.append(f"arbitrage: {type(event).__name__}: {exc}")
            return
        for out in outputs:
            kind = type(out)
            if kind is PlaceOrder or kind is CancelOrder or kind is CancelAll:
                self.wire.queue.append(out)
            elif kind is StrategyState:
                self.last_state = out
            elif kind is RiskAlert:
                self.alerts.append(out)

    def _book_fill(self, fill: Fill) -> None:
        self.fills.append(fill)
        self.booked += 1
        market = self.engine.markets[fill.symbol]
        size = market.contract_size
        base = fill.amount * size
        fee = fill.fee_cost if fill.fee_currency in (None, market.quote, market.settle) else fill.fee_cost * fill.price
        self.trades.append(
            TradeRow(
                ts=fill.ts,
                client_order_id=fill.client_order_id,
                side=fill.side,
                price=fill.price,
                amount=base,
                fee=fee,
                liquidity=fill.liquidity,
                symbol=fill.symbol,
            )
        )
        signed = base if fill.side == "buy" else -base
        self.fees += fee
        self.cash -= signed * fill.price + fee
        self.books[fill.symbol].book(signed, fill.price)

    # ------------------------------------------------------------------ observing

    @property
    def est(self) -> EngineState:
        return self.wire.est

    def price(self, symbol: str) -> Decimal:
        ms = self.wire.est.markets.get(symbol)
        return ms.last if ms is not None else ZERO

    def pnl(self) -> Decimal:
        """Cash flows plus what both legs hold at their last prints, less the interest's coins."""
        value = sum((b.held * self.price(s) for s, b in self.books.items()), ZERO)
        spot = next((m.symbol for m in self.markets if m.kind == "spot"), None)
        owed = self.borrow_base * self.price(spot) if spot else ZERO
        return self.cash + value - owed

    def realized(self) -> Decimal:
        return sum((b.realized for b in self.books.values()), ZERO)

    def held(self) -> dict[str, Decimal]:
        """Base quantity of each leg from the arbitrage's fills."""
        return {s: b.held for s, b in self.books.items()}

    def venue_held(self) -> dict[str, Decimal]:
        """Base quantity of each leg at the exchange: the perpetual's position, the spot coin's
        balance change (fills less the interest charged in it)."""
        acct = self.wire.est.accounts[self.arb_cfg.account]
        out = {}
        for m in self.markets:
            if m.kind == "swap":
                pos = acct.positions.get(m.symbol)
                out[m.symbol] = pos.contracts * m.contract_size if pos else ZERO
            else:
                start = self.sim.accounts[self.arb_cfg.account].get(m.base, ZERO)
                out[m.symbol] = acct.balances.get(m.base, ZERO) - start
        return out

    def unhedged(self) -> Decimal:
        """Base quantity the legs' fills leave uncovered (0 when hedged)."""
        return abs(sum(self.held().values(), ZERO))


def align(legs_bars: Mapping[str, Iterable[Bar]]) -> list[dict[str, Bar]]:
    """The candle times of every leg's bars, in order: per time, the bars that exist (by symbol)."""
    by_time: dict[int, dict[str, Bar]] = {}
    for symbol, bars in legs_bars.items():
        for bar in bars:
            by_time.setdefault(bar.open_time, {})[symbol] = bar
    return [by_time[t] for t in sorted(by_time)]


def run_arbitrage_backtest(
    arb: ArbConfig,
    funding: FundingConfig,
    sim: SimConfig,
    legs_bars: Mapping[str, Iterable[Bar]],
    funding_rates: Mapping[str, list[tuple[int, Decimal]]] | None = None,
    *,
    capital: Decimal | None = None,
    candle_ms: int = 60_000,
    on_candle: Callable[[int], None] | None = None,
    on_candle_end: Callable[[ArbSession], None] | None = None,
    arb_clock_ms: int = CLOCK_MS,
) -> tuple[BacktestResult, ArbSession]:
    """Run a funding arbitrage over the legs' candles (`legs_bars` by symbol; a leg that follows the
    other may have none); `capital` is the money the return is measured against (default: the
    account's balance of the perpetual's settle currency)."""
    candles = align(legs_bars)
    session = ArbSession(arb, funding, sim, [s for s, bars in legs_bars.items()], candle_ms, funding_rates, arb_clock_ms)
    perp = next((m for m in session.markets if m.kind == "swap"), session.markets[0])
    equity = start_equity(sim, arb.account, perp.settle or perp.quote, capital)
    if not candles:
        raise BacktestError("no candles in the chosen window")
    samples: list[Sample] = []
    base = float(equity)
    first = candles[0][next(iter(candles[0]))].open_time
    until = first
    count = 0
    for bars in candles:
        session.candle(bars)
        count += 1
        until = next(iter(bars.values())).open_time + candle_ms
        close = session.price(perp.symbol)
        samples.append(
            Sample(
                until - 1,
                float(close),
                base + float(session.pnl()),
                float(session.books[perp.symbol].held),
                float(session.realized()),
                float(session.fees),
                float(session.funding),
            )
        )
        if on_candle_end is not None:
            on_candle_end(session)
        if on_candle is not None:
            on_candle(count)
    result = BacktestResult(
        strategy="arbitrage",
        symbol=perp.symbol,
        params=params_of(arb),
        since=first,
        until=until,
        candles=count,
        start_equity=base,
        samples=samples,
        trades=session.trades,
        levels=[],
        commands=len(session.decided),
    )
    return result, session
