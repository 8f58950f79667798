"""Prices into market state and market data: quotes, trades, 1-minute bars, backfilled history, gaps.

A print moves a market's last price and quotes, refills its book, and forms the minute's bar;
its market data waits in `EngineState.pending` until the Quote entry publishes it (ADR 0004:
"a tick in two halves").
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

from schemas import ids
from schemas.account import ZERO
from schemas.market import GapMarker, Market, Ticker, Trade
from venues.sim.config import SimConfig, SimMarket
from venues.sim.journal import Bar, History, Print, Tick
from venues.sim.state import MINUTE_MS, EngineState, MarketState, minute
from venues.sim.views import EventViews


class MarketData:
    def __init__(self, config: SimConfig, markets: dict[str, Market], views: EventViews) -> None:
        self.venue = config.venue
        self.markets = markets
        self.specs: dict[str, SimMarket] = {m.symbol: m for m in config.markets}
        self.views = views
        self.gap_ms = 3 * config.tick_ms
        self.kept = config.history_kept  # closed bars per market

    def market_state(self, state: EngineState, symbol: str, price: Decimal) -> MarketState:
        """The market's state, created at `price` on its first print or backfill."""
        ms = state.markets.get(symbol)
        if ms is None:
            bid, ask = self.quotes(symbol, price)
            ms = state.markets[symbol] = MarketState(last=price, bid=bid, ask=ask)
        return ms

    def quotes(self, symbol: str, price: Decimal) -> tuple[Decimal, Decimal]:
        m = self.markets[symbol]
        half = m.tick_size * self.specs[symbol].spread_ticks
        # A multiple of the tick (quantize alone only fixes the number of decimals).
        bid = ((price - half) / m.tick_size).to_integral_value(rounding=ROUND_DOWN) * m.tick_size
        bid = max(bid, m.tick_size)
        return bid, bid + 2 * half

    def history(self, state: EngineState, entry: History, out: list[Any]) -> None:
        if entry.symbol not in self.markets:
            return
        ms = state.markets.get(entry.symbol)
        if ms is not None and ms.history:
            return  # a market is backfilled once
        candles = [self.views.candle(entry.symbol, bar, bar.open_time + MINUTE_MS - 1, True) for bar in entry.bars]  # before any change
        last = entry.bars[-1]
        ms = self.market_state(state, entry.symbol, last.close)  # a market with live prints keeps its price
        ms.history = list(entry.bars[-self.kept :])
        # last_ts stays unset: the backfill is not a live print, so no gap is measured from it.
        state.ts = max(state.ts, last.open_time + MINUTE_MS - 1)
        out.extend(candles)

    def apply_print(self, state: EngineState, ms: MarketState, tick: Tick, p: Print, out: list[Any], md: list[Any]) -> None:
        """`out` takes account events (positions marked as a bar closes), `md` market data."""
        ts, symbol, price = tick.ts, p.symbol, p.price
        if ms.last_ts and ts - ms.last_ts > self.gap_ms:
            md.append(
                GapMarker(
                    id=ids.gap_id(self.venue, symbol, "ticker", ms.last_ts, ts),
                    venue=self.venue,
                    symbol=symbol,
                    stream="ticker",
                    since=ms.last_ts,
                    until=ts,
                    reason="simulated exchange was not running",
                    ts=ts,
                    ts_local=ts,
                )
            )
        previous = ms.last
        ms.last, ms.step, ms.last_ts = price, tick.step, ts
        ms.bid, ms.ask = self.quotes(symbol, price)
        ms.ask_taken = ms.bid_taken = ZERO  # the book refills
        if ms.bar is not None and ms.bar.open_time != minute(ts):
            self._close_bar(state, ms, symbol, ts, out, md)
        bar = ms.bar
        if bar is None:
            bar = Bar(minute(ts), price, price, price, price, p.volume)
        else:
            bar = Bar(bar.open_time, bar.open, max(bar.high, price), min(bar.low, price), price, bar.volume + p.volume)
        ms.bar = bar
        md.append(
            Trade(
                id=ids.trade_id(self.venue, symbol, f"{symbol}:{tick.step}"),
                venue=self.venue,
                symbol=symbol,
                trade_id=str(tick.step),
                side="buy" if price >= previous else "sell",
                price=price,
                amount=p.volume,
                ts=ts,
                ts_local=ts,
            )
        )
        md.append(
            Ticker(
                id=ids.ticker_id(self.venue, symbol, ts),
                venue=self.venue,
                symbol=symbol,
                bid=ms.bid,
                ask=ms.ask,
                last=price,
                ts=ts,
                ts_local=ts,
            )
        )
        md.append(self.views.candle(symbol, bar, ts, False))

    def _close_bar(self, state: EngineState, ms: MarketState, symbol: str, ts: int, out: list[Any], md: list[Any]) -> None:
        bar = ms.bar
        assert bar is not None
        ms.history.append(bar)
        if len(ms.history) > self.kept:
            del ms.history[: len(ms.history) - self.kept]
        ms.bar = None
        md.append(self.views.candle(symbol, bar, bar.open_time + MINUTE_MS - 1, True))
        # Mark open positions to market once a minute, so PnL moves on screens without a fill.
        for name in sorted(state.accounts):
            pos = state.accounts[name].positions.get(symbol)
            if pos is not None and pos.contracts != 0:
                out.append(self.views.position(state, name, symbol))
