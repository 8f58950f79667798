"""A grid backtest: the live grid core and the live simulated exchange's engine, wired in one
process without NATS, over candles (docs/adr/0021-backtest.md).

Nothing here decides anything: `GridCore.step` makes every decision and `SimEngine.step` every
fill, fee and funding payment, exactly as in live trading. This module only routes, in the
order the bus delivers in live trading driven in lock-step (testkit/chaos.py):

- each candle is four prints (venues/sim/candle_path.py); each print is the engine's two
  halves, a `Tick` (fills) and then a `Quote` (market data);
- the events of one engine entry reach the grid in the order the engine made them; the
  commands the grid decides queue in order (the COMMAND stream) and reach the engine one by
  one after that (the executor), each one's events going to the grid in turn. That is the
  breadth-first order of the live system, where the exchange publishes all of one entry's
  events before the executor's next request can be journaled (backtest/wiring.py, which the
  arbitrage's backtest shares).

The executor's part is its pure pre-trade check (executors/validate.py) and its rejection
event; breakers, deadlines and retries do not arise without a network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from backtest.result import BacktestResult, Level, Sample, TradeRow, params_of
from backtest.wiring import BacktestError, Wiring, start_equity
from bus.contract import Inbound, InputRejected
from schemas import ids
from schemas.account import ZERO, Fill, FundingPayment, Liquidation, OrderUpdate
from schemas.commands import CancelAll, CancelOrder, PlaceOrder
from schemas.market import Ticker
from schemas.ops import VenueSnapshot
from strategies.grid.config import GridConfig
from strategies.grid.core import GridCore
from strategies.grid.lattice import check_config
from strategies.grid.state import GridState
from venues.sim.candle_path import PRINTS_PER_CANDLE, candle_path, on_tick, print_volume
from venues.sim.config import SimConfig
from venues.sim.engine import EngineState, SimEngine
from venues.sim.journal import Bar, Entry, History, Print, Quote, Tick
from venues.sim.state import money

NEVER = 2**62  # a backtest reads no periodic state events (GridCore.publish_every_ms)


class GridSession:
    """One grid on one simulated exchange, driven candle by candle."""

    def __init__(
        self, grid: GridConfig, sim: SimConfig, candle_ms: int = 60_000, history: list[Bar] | None = None, skip_quiet: bool = True
    ) -> None:
        if grid.venue != sim.venue:
            raise BacktestError(f"grid venue {grid.venue!r} is not the simulated exchange's {sim.venue!r}")
        if grid.account not in sim.accounts:
            raise BacktestError(f"account {grid.account!r} is not in the simulated exchange's accounts ({', '.join(sim.accounts)})")
        if candle_ms % PRINTS_PER_CANDLE or candle_ms < 60_000:
            raise BacktestError(f"candles of {candle_ms} ms: a backtest takes 1-minute candles or longer")
        self.grid = grid
        self.sim = sim
        self.engine = SimEngine(sim)
        market = self.engine.markets.get(grid.symbol)
        if market is None:
            raise BacktestError(f"symbol {grid.symbol!r} is not a market of the simulated exchange ({', '.join(self.engine.markets)})")
        self.market = market
        self.spec = {m.symbol: m for m in sim.markets}[grid.symbol]
        self.core = GridCore(grid, market, publish_every_ms=NEVER)
        self.step_ms = candle_ms // PRINTS_PER_CANDLE
        self.wire = Wiring(self.engine, self._route, self._feed)
        self.gst: GridState = self.core.initial_state()
        self.gseq = self.step_no = 0
        self.commands = self.wire.queue
        self.history = history or []
        # What a live run's logs would hold, kept for the result and for comparisons with one.
        self.decided: list[PlaceOrder | CancelOrder | CancelAll] = self.wire.decided
        self.trades: list[TradeRow] = []
        self.fills: list[Fill] = []
        self.funding_payments: list[FundingPayment] = []
        self.liquidations: list[Liquidation] = []
        self.rejected_inputs: list[str] = []
        self.started = False
        # Quiet candles print their close only; not while the funding walk moves (it moves per
        # print, so fewer prints would move it differently).
        self.skip_quiet = skip_quiet and not (market.kind == "swap" and self.spec.funding_volatility > 0)
        self.skipped = 0
        self.quoted: dict[Decimal, tuple[Decimal, Decimal]] = {}
        self.engine_range: tuple[Decimal, Decimal, int] | None = None  # SimEngine.quiet_range, until the engine moves
        self.waiting: tuple[int, int, Decimal, Decimal] | None = None  # the last quiet print (step, ts, price, volume), not printed yet
        # Running PnL of the account on this market (ADR 0021: the strategy's money, not the wallet's).
        self.position = ZERO
        self.cash = ZERO  # quote money paid and received for fills, fees and funding
        self.realized = ZERO
        self.avg_entry = ZERO
        self.fees = ZERO
        self.funding = ZERO
        self.booked = 0  # fills and payments booked so far (the run's curve reads the totals when it moves)

    # ------------------------------------------------------------------ driving

    def start(self, first: Bar) -> None:
        """The engine's backfill (if any) and the grid's first-start snapshot of an empty venue."""
        if self.history:
            end = first.open_time - self.step_ms
            self._apply(History(symbol=self.grid.symbol, bars=self.history, ts=end))
        ts = self.est.ts or first.open_time - 1
        fields: dict[str, Any] = dict(
            component="grid",
            instance=self.grid.instance,
            venue=self.grid.venue,
            account=self.grid.account,
            symbol=self.grid.symbol,
            input_seq=0,
            ts=ts,
        )
        self._feed(VenueSnapshot(id=ids.content_id(f"snapshot:{self.grid.instance}", fields), **fields))
        self._settle()
        self.started = True

    def candle(self, bar: Bar) -> None:
        if not self.started:
            problems = check_config(self.grid, self.market, on_tick(bar.open, self.market.tick_size))
            if problems:
                raise BacktestError(f"grid {self.grid.instance}: " + "; ".join(problems))
            self.start(bar)
        tick = self.market.tick_size
        volume = print_volume(bar.volume, self.market.lot_size)
        last = bar.open_time + (PRINTS_PER_CANDLE - 1) * self.step_ms
        if self.skip_quiet and self._quiet(on_tick(bar.low, tick), on_tick(bar.high, tick), last):
            # Nothing in this candle changes an account or a decision: its prints wait, and only the
            # last print of a quiet run is printed, before the next print that is not quiet (the
            # state that leaves is the one all the prints leave; tests/test_backtest_session.py).
            self.step_no += PRINTS_PER_CANDLE
            self.gseq += PRINTS_PER_CANDLE  # the tickers the grid passes over keep their numbers
            self.waiting = (self.step_no, last, bar.close, volume)  # a Tick only if it is printed
            self.skipped += 1
            return
        for i, price in enumerate(candle_path(bar.open, bar.high, bar.low, bar.close)):
            self.step_no += 1
            price = on_tick(price, tick)
            ts = bar.open_time + i * self.step_ms
            if self.skip_quiet and self._quiet(price, price, ts):  # one quiet print of a candle that is not
                self.gseq += 1
                self.waiting = (self.step_no, ts, price, volume)
                continue
            self.catch_up()
            self._apply(Tick(step=self.step_no, ts=ts, prints=[Print(self.grid.symbol, price, volume)]))
            self._settle()
            self._apply(Quote(step=self.step_no))
            self._settle()

    def catch_up(self) -> None:
        """Print the last quiet print that waits, so engine and grid stand where all of them left them."""
        if self.waiting is None:
            return
        step, ts, price, volume = self.waiting
        self.waiting = None
        self.gseq -= 1  # its ticker is the quiet run's last input, fed now
        self._apply(Tick(step=step, ts=ts, prints=[Print(self.grid.symbol, on_tick(price, self.market.tick_size), volume)]))
        self._apply(Quote(step=step))
        self._settle()

    def _quiet(self, low: Decimal, high: Decimal, until: int) -> bool:
        """Whether prints within [low, high] up to time `until` change no account and no decision."""
        if self.engine_range is None:
            self.engine_range = self.engine.quiet_range(self.est, self.grid.symbol) or (ZERO, ZERO, 0)
        lo, hi, before = self.engine_range
        if not (lo < low and high < hi and until < before):
            return False
        (bid_lo, ask_lo), (bid_hi, ask_hi) = self._quotes(low), self._quotes(high)
        return self.core.quiet_through(self.gst, (bid_lo, bid_hi), (ask_lo, ask_hi), (low, high), until)

    def _quotes(self, price: Decimal) -> tuple[Decimal, Decimal]:
        """The engine's bid and ask at `price` (a pure function of it: remembered, prices recur)."""
        quoted = self.quoted.get(price)
        if quoted is None:
            if len(self.quoted) > 100_000:
                self.quoted.clear()
            quoted = self.quoted[price] = self.engine.market_data.quotes(self.grid.symbol, price)
        return quoted

    # ------------------------------------------------------------------ routing

    @property
    def est(self) -> EngineState:
        return self.wire.est

    def _apply(self, entry: Entry) -> None:
        self.engine_range = None  # what the engine's quiet range was computed from may change
        self.wire.apply(entry)

    def _route(self, events: list[Any]) -> None:
        symbol, account = self.grid.symbol, self.grid.account
        for ev in events:
            kind = type(ev)
            if kind is Ticker:
                if ev.symbol == symbol:
                    self._feed(ev)
            elif kind is OrderUpdate or kind is Liquidation:
                if ev.account == account and ev.symbol == symbol:
                    if kind is Liquidation:
                        self.liquidations.append(ev)
                    self._feed(ev)
            elif kind is Fill:
                if ev.account == account and ev.symbol == symbol:
                    self._book_fill(ev)
            elif kind is FundingPayment:
                if ev.account == account and ev.symbol == symbol:
                    self.funding_payments.append(ev)
                    self.funding += ev.amount
                    self.cash += ev.amount
                    self.booked += 1

    def _feed(self, event: Any) -> None:
        self.gseq += 1
        try:
            self.gst, outputs = self.core.step(self.gst, Inbound(self.gseq, "backtest", event))
        except InputRejected as exc:  # live: dead-lettered, and the grid goes on
            self.rejected_inputs.append(f"{type(event).__name__}: {exc}")
            return
        for out in outputs:
            if isinstance(out, (PlaceOrder, CancelOrder, CancelAll)):
                self.commands.append(out)

    def _settle(self) -> None:
        """Execute the queued commands in order, as the executor does; what each causes queues behind."""
        self.wire.settle()

    def _book_fill(self, fill: Fill) -> None:
        """Average-cost PnL of the fills (the report's realized PnL; the wallet agrees, see tests)."""
        self.fills.append(fill)
        self.booked += 1
        size = self.market.contract_size
        signed = fill.amount if fill.side == "buy" else -fill.amount
        fee = fill.fee_cost if fill.fee_currency in (None, self.market.quote, self.market.settle) else fill.fee_cost * fill.price
        self.trades.append(
            TradeRow(
                ts=fill.ts,
                client_order_id=fill.client_order_id,
                side=fill.side,
                price=fill.price,
                amount=fill.amount * size,
                fee=fee,
                liquidity=fill.liquidity,
                symbol=fill.symbol,
            )
        )
        self.fees += fee
        self.cash -= signed * fill.price * size + fee
        pos = self.position
        if pos == 0 or (pos > 0) == (signed > 0):  # opening or adding: a new average entry
            self.avg_entry = (self.avg_entry * abs(pos) + fill.price * abs(signed)) / (abs(pos) + abs(signed))
        else:
            closed = min(abs(signed), abs(pos))
            self.realized += money((fill.price - self.avg_entry) * closed * size * (1 if pos > 0 else -1))  # as the venue rounds it
            if abs(signed) > abs(pos):  # through zero: the rest opens at this price
                self.avg_entry = fill.price
        self.position = pos + signed
        if self.position == 0:
            self.avg_entry = ZERO

    # ------------------------------------------------------------------ observing

    def pnl(self, price: Decimal) -> Decimal:
        return self.cash + self.position * price * self.market.contract_size

    def venue_position(self) -> Decimal:
        acct = self.est.accounts[self.grid.account]
        if self.market.kind == "swap":
            pos = acct.positions.get(self.grid.symbol)
            return pos.contracts if pos else ZERO
        return self.core.position(self.gst)

    def live_order_prices(self) -> list[float]:
        return sorted(float(s.price) for s in self.gst.slots if s.client_order_id is not None and s.price is not None)


def run_grid_backtest(
    grid: GridConfig,
    sim: SimConfig,
    bars: Iterable[Bar],
    *,
    capital: Decimal | None = None,
    candle_ms: int = 60_000,
    history: list[Bar] | None = None,
    on_candle: Callable[[int], None] | None = None,
    skip_quiet: bool = True,
) -> tuple[BacktestResult, GridSession]:
    """Run a grid over `bars`; `capital` is the money the return is measured against (default:
    the account's settle or quote balance)."""
    session = GridSession(grid, sim, candle_ms, history, skip_quiet)
    equity = start_equity(sim, grid.account, session.market.settle or session.market.quote, capital)
    samples: list[Sample] = []
    levels: list[Level] = []
    last_levels: list[float] = []
    first = until = 0
    count = decided = booked = 0
    size = float(session.market.contract_size)
    base = float(equity)
    cash = position = realized = fees = funding = 0.0
    for bar in bars:
        if count == 0:
            first = bar.open_time
        session.candle(bar)
        count += 1
        until = bar.open_time + candle_ms
        if session.booked != booked:  # money moved: its floats again (the curve's; totals stay Decimal)
            booked = session.booked
            cash, position = float(session.cash), float(session.position) * size
            realized, fees, funding = float(session.realized), float(session.fees), float(session.funding)
        close = float(bar.close)
        samples.append(Sample(until - 1, close, base + cash + position * close, position, realized, fees, funding))
        if len(session.decided) != decided:
            decided = len(session.decided)
            prices = session.live_order_prices()
            if prices != last_levels:
                levels.append(Level(bar.open_time, prices))
                last_levels = prices
        if on_candle is not None:
            on_candle(count)
    if count == 0:
        raise BacktestError("no candles in the chosen window")
    session.catch_up()
    result = BacktestResult(
        strategy="grid",
        symbol=grid.symbol,
        params=params_of(grid),
        since=first,
        until=until,
        candles=count,
        start_equity=base,
        samples=samples,
        trades=session.trades,
        levels=levels,
        commands=len(session.decided),
    )
    return result, session
