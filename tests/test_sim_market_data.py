"""Market data from prints and backfills: trades, tickers, 1-minute bars, gaps, stale ticks."""

from __future__ import annotations

import msgspec

from schemas.market import Candle, GapMarker, Ticker, Trade
from tests.test_sim_helpers import MINUTE, SWAP, T0, D, Sim, bars, make_config, of, one, seeded, swap_market
from venues.sim.journal import History

# ---------------------------------------------------------------------------- candles, gaps, stale ticks


def test_ticks_in_one_minute_form_one_bar_and_the_next_minute_closes_it() -> None:
    sim = Sim()
    forming = []
    for offset, price, volume in [(58_000, "100", "1"), (58_500, "102", "2"), (59_000, "99", "3"), (59_500, "101", "4")]:
        candle = one(sim.tick(price, volume, ts=T0 + offset), Candle)
        assert (candle.closed, candle.open_time) == (False, T0)
        forming.append(candle)
    assert (forming[-1].open, forming[-1].high, forming[-1].low, forming[-1].close, forming[-1].volume) == (
        D("100"),
        D("102"),
        D("99"),
        D("101"),
        D("10"),
    )
    assert sim.engine.candles(sim.state, SWAP, None, None) == []

    events = sim.tick("103", "5", ts=T0 + MINUTE)
    candles = of(events, Candle)
    closed = [c for c in candles if c.closed]
    assert len(closed) == 1
    bar = closed[0]
    assert (bar.open_time, bar.open, bar.high, bar.low, bar.close, bar.volume) == (T0, D("100"), D("102"), D("99"), D("101"), D("10"))
    assert bar.ts == T0 + MINUTE - 1
    new = [c for c in candles if not c.closed]
    assert [(c.open_time, c.open, c.volume) for c in new] == [(T0 + MINUTE, D("103"), D("5"))]
    assert events.index(bar) < events.index(new[0])
    assert sim.engine.candles(sim.state, SWAP, None, None) == [bar]


def test_tick_emits_trade_and_ticker_with_quotes_one_tick_around_the_price() -> None:
    sim = Sim()
    events = sim.tick("100", "3")
    ticker = one(events, Ticker)
    assert (ticker.bid, ticker.ask, ticker.last) == (D("99.9"), D("100.1"), D("100"))
    trade = one(events, Trade)
    assert (trade.price, trade.amount) == (D("100"), D("3"))


def test_prints_for_unknown_symbols_are_ignored() -> None:
    sim = Sim()
    assert sim.tick("5", symbol="DOGE/USDT") == []
    assert "DOGE/USDT" not in sim.state.markets


def test_history_backfills_closed_bars_once() -> None:
    sim = Sim()
    backfill = bars(T0 - 3 * MINUTE, ["98", "99", "100"])
    events = sim.apply(History(symbol=SWAP, bars=backfill, ts=T0))
    assert [(c.open_time, c.close, c.closed) for c in events] == [(b.open_time, b.close, True) for b in backfill]
    assert [c.close for c in sim.engine.candles(sim.state, SWAP, None, None)] == [D("98"), D("99"), D("100")]
    market = sim.state.markets[SWAP]
    assert (market.last, market.bid, market.ask) == (D("100"), D("99.9"), D("100.1"))

    again = sim.apply(History(symbol=SWAP, bars=bars(T0 - 2 * MINUTE, ["50", "60"]), ts=T0))
    assert again == []
    assert [c.close for c in sim.engine.candles(sim.state, SWAP, None, None)] == [D("98"), D("99"), D("100")]
    assert sim.state.markets[SWAP].last == D("100")


def test_candles_query_honours_since_and_limit() -> None:
    sim = Sim()
    sim.apply(History(symbol=SWAP, bars=bars(T0, ["10", "20", "30", "40"]), ts=T0 + 4 * MINUTE))
    closes = lambda since, limit: [c.close for c in sim.engine.candles(sim.state, SWAP, since, limit)]  # noqa: E731
    assert closes(None, 2) == [D("30"), D("40")]  # the latest
    assert closes(T0 + MINUTE, 2) == [D("20"), D("30")]  # the first after `since`
    assert closes(T0 + 2 * MINUTE, None) == [D("30"), D("40")]


def test_tick_more_than_three_tick_intervals_after_the_last_emits_a_gap_marker() -> None:
    sim = seeded(spot=None)
    assert of(sim.tick("100", ts=T0 + 1_500), GapMarker) == []  # exactly 3 * tick_ms: no gap
    gap = one(sim.tick("100", ts=T0 + 1_500 + 1_501), GapMarker)
    assert (gap.symbol, gap.stream, gap.since, gap.until) == (SWAP, "ticker", T0 + 1_500, T0 + 3_001)


def test_tick_older_than_the_engine_time_is_ignored() -> None:
    sim = seeded()
    sim.place("b", "buy", "1", "99.5")
    sim.tick("100", ts=T0 + 1_000)
    before = msgspec.json.encode(sim.state)
    assert sim.tick("99.0", ts=T0 + 999) == []
    assert msgspec.json.encode(sim.state) == before


def test_quotes_stay_on_the_tick_grid_for_non_decimal_tick_sizes() -> None:
    sim = Sim(make_config(markets=[swap_market(tick_size=D("0.5"))]))
    ticker = one(sim.tick("100.3"), Ticker)
    assert ticker.bid % D("0.5") == 0 and ticker.ask % D("0.5") == 0
