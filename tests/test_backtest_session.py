"""The grid backtest session: the live core and engine over candles, and its quiet-candle
shortcut, which must leave every decision, fill and state exactly as printing every candle does."""

from __future__ import annotations

from decimal import Decimal as D
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtest.session import BacktestError, GridSession, run_grid_backtest
from strategies.grid.config import GridConfig
from testkit.backtest import candles
from venues.sim.candle_path import candle_path, print_volume
from venues.sim.config import SimConfig, SimMarket
from venues.sim.journal import Bar
from venues.sim.prices import CandleFile

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
SWAP = "BTC/USDT:USDT"
SPOT = "BTC/USDT"


def bars(n: int, seed: int, vol: float, start: float = 60_000.0, volume: str = "3.5") -> list[Bar]:
    return candles(n, seed=seed, vol=vol, t0=T0, start=start, volume=D(volume))


def sim(spot: bool = False, usdt: str = "100000", leverage: str = "5", funding_volatility: str = "0", **kw: Any) -> SimConfig:
    market = SimMarket(
        symbol=SPOT if spot else SWAP,
        kind="spot" if spot else "swap",
        tick_size=D("0.1"),
        lot_size=D("0.001"),
        min_amount=D("0.001"),
        start_price=D(60_000),
        tick_volume=D("0.5"),
        funding_volatility=D(funding_volatility),
        funding_interval_h=1,
    )
    return SimConfig(
        markets=[market],
        accounts={"main": {"USDT": D(usdt), "BTC": D(2)}},
        tick_ms=15_000,
        history_minutes=0,
        leverage=D(leverage),
        **kw,
    )


def grid(**kw: Any) -> GridConfig:
    base: dict[str, Any] = dict(instance="bt", levels=4, spacing=D("0.002"), notional=D(200), max_open_orders=16)
    return GridConfig(**(base | kw))


def outcome(session: GridSession) -> tuple[Any, ...]:
    acct = session.est.accounts["main"]
    return (
        session.decided,
        session.fills,
        session.funding_payments,
        session.gst,
        {s: (p.contracts, p.entry_price, p.realized_pnl) for s, p in acct.positions.items()},
        acct.balances,
        sorted(o.client_order_id for o in acct.open.values()),
    )


def both(g: GridConfig, s: SimConfig, candles: list[Bar]) -> tuple[GridSession, GridSession]:
    _, fast = run_grid_backtest(g, s, candles)
    _, exact = run_grid_backtest(g, s, candles, skip_quiet=False)
    return fast, exact


# ---------------------------------------------------------------------- the candle's path


def test_path_visits_the_extreme_nearer_the_open_first() -> None:
    assert candle_path(D(100), D(101), D(95), D(99)) == (D(100), D(101), D(95), D(99))  # high is nearer
    assert candle_path(D(100), D(105), D(99), D(104)) == (D(100), D(99), D(105), D(104))  # low is nearer
    assert candle_path(D(100), D(102), D(98), D(101)) == (D(100), D(98), D(102), D(101))  # a tie: an up bar dips first
    assert candle_path(D(100), D(102), D(98), D(99)) == (D(100), D(102), D(98), D(99))  # a tie: a down bar rises first


def test_a_print_carries_a_quarter_of_the_volume_in_whole_lots_and_at_least_one() -> None:
    assert print_volume(D("3.5"), D("0.001")) == D("0.875")
    assert print_volume(D("0.0035"), D("0.001")) == D("0.000") + D("0.001")  # below a lot: one lot
    assert print_volume(D("1.0003"), D("0.001")) == D("0.250")


def test_the_simulated_exchanges_candle_file_prints_the_same_path(tmp_path: Any) -> None:
    path = tmp_path / "c.csv"
    path.write_text("timestamp,open,high,low,close,volume\n0,100,101,99,100,4\n60000,100,101,95,99,8\n120000,99,104,98.5,103,2\n")
    cfg = SimConfig(prices="csv", csv_path=str(path), history_minutes=1, markets=[sim().markets[0]])
    source = CandleFile(cfg)
    prints = [source.next_print(SWAP, step, D(100)) for step in range(1, 9)]
    assert [p.price for p in prints] == [*candle_path(D(100), D(101), D(95), D(99)), *candle_path(D(99), D(104), D("98.5"), D(103))]
    assert [p.volume for p in prints] == [D(2)] * 4 + [D("0.5")] * 4


# ---------------------------------------------------------------------- the session


def test_a_session_trades_and_its_books_agree_with_the_venue_and_the_grid() -> None:
    result, session = run_grid_backtest(grid(), sim(), bars(3_000, seed=3, vol=0.0008))
    assert len(result.trades) > 20 and result.commands > len(result.trades)
    assert session.position == session.venue_position() == session.core.position(session.gst)
    # The wallet says what the session's books say: balance + unrealized - start = cash + position x price.
    acct = session.est.accounts["main"]
    pos = acct.positions[SWAP]
    last = session.est.markets[SWAP].last
    wallet = acct.balances["USDT"] - D(100_000) + pos.contracts * (last - pos.entry_price)
    assert abs(wallet - session.pnl(last)) < D("0.0001") * len(result.trades)
    assert result.samples[-1].equity == pytest.approx(result.start_equity + float(session.pnl(D(str(result.samples[-1].price)))))
    assert len(result.samples) == result.candles == 3_000
    assert result.levels and all(len(lv.prices) > 0 for lv in result.levels)


def test_funding_is_paid_at_each_funding_time_on_the_position() -> None:
    _, session = run_grid_backtest(grid(mode="long"), sim(), bars(600, seed=5, vol=0.0006))
    assert len(session.funding_payments) >= 9  # hourly funding over ten hours, with a long position most of it
    assert session.funding == sum(p.amount for p in session.funding_payments) != 0


@pytest.mark.parametrize("spot", [False, True])
def test_quiet_candles_skipped_leave_everything_as_printing_them_all(spot: bool) -> None:
    g = grid(symbol=SPOT, mode="long") if spot else grid()
    fast, exact = both(g, sim(spot=spot), bars(4_000, seed=11, vol=0.0004))
    assert fast.skipped > 1_000 and exact.skipped == 0  # the shortcut was really taken, and really not
    assert outcome(fast) == outcome(exact)


def crash() -> list[Bar]:
    """A slow fall through a long grid's buys on thin margin, then quiet candles, then a wick."""
    out = bars(100, seed=2, vol=0.0002)
    t, p, i = T0 + 100 * 60_000, 60_000, 0
    while p > 50_000:
        out.append(Bar(t + i * 60_000, D(p), D(p + 20), D(p - 200), D(p - 180), D(5)))
        p, i = p - 180, i + 1
    for _ in range(30):
        out.append(Bar(t + i * 60_000, D(p), D(p + 30), D(p - 30), D(p), D(5)))
        i += 1
    out.append(Bar(t + i * 60_000, D(p), D(p + 30), D(p - 2500), D(p - 50), D(5)))
    for k in range(30):
        out.append(Bar(t + (i + 1 + k) * 60_000, D(p - 50), D(p - 20), D(p - 80), D(p - 50), D(5)))
    return out


def test_a_liquidation_is_not_skipped_over() -> None:
    """Thin margin and a falling market: the account is liquidated inside a candle whose range
    touches no order and changes no decision; skipping its low would liquidate at another price."""
    g = grid(mode="long", levels=3, spacing=D("0.03"), notional=D(4000), trail_levels=0)
    fast, exact = both(g, sim(usdt="700", leverage="20"), crash())
    assert exact.liquidations and fast.skipped > 150
    assert outcome(fast) == outcome(exact)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    vol=st.sampled_from([0.0001, 0.0004, 0.0015]),
    spacing=st.sampled_from(["0.0005", "0.002", "0.01"]),
    mode=st.sampled_from(["long", "short", "neutral"]),
    levels=st.integers(1, 5),
    trail=st.integers(0, 3),
)
def test_property_the_shortcut_changes_nothing(seed: int, vol: float, spacing: str, mode: str, levels: int, trail: int) -> None:
    g = grid(mode=mode, levels=levels, spacing=D(spacing), trail_levels=trail)
    fast, exact = both(g, sim(), bars(400, seed=seed, vol=vol))
    assert outcome(fast) == outcome(exact)


def test_a_walking_funding_rate_turns_the_shortcut_off() -> None:
    """The walk moves once per print, so fewer prints would move it differently."""
    _, session = run_grid_backtest(grid(), sim(funding_volatility="0.0001"), bars(300, seed=1, vol=0.0002))
    assert session.skipped == 0


def test_bad_setups_name_what_is_wrong() -> None:
    with pytest.raises(BacktestError, match="account 'other'"):
        GridSession(grid(account="other"), sim())
    with pytest.raises(BacktestError, match="symbol 'ETH/USDT:USDT'"):
        GridSession(grid(symbol="ETH/USDT:USDT"), sim())
    with pytest.raises(BacktestError, match="no candles"):
        run_grid_backtest(grid(), sim(), [])
    with pytest.raises(BacktestError, match="grid bt: "):
        run_grid_backtest(grid(notional=D("0.01")), sim(), bars(5, seed=1, vol=0.001))


# ---------------------------------------------------------------------- the engine's quiet range


def _engine_with(orders: list[tuple[str, str, str]], usdt: str = "100000") -> tuple[Any, Any]:
    """A swap market printed at 60,000 and these (side, price, amount) resting orders."""
    from bus.contract import Inbound
    from venues.protocol import OrderRequest
    from venues.sim.engine import SimEngine
    from venues.sim.journal import Place, Print, Quote, Tick

    engine = SimEngine(sim(usdt=usdt, leverage="20"))
    state = engine.initial_state()
    seq = 0

    def apply(entry: Any) -> list[Any]:
        nonlocal state, seq
        seq += 1
        state, out = engine.step(state, Inbound(seq, "j", entry))
        return out

    apply(Tick(step=1, ts=T0, prints=[Print(SWAP, D(60_000), D(1))]))
    apply(Quote(step=1))
    for i, (side, price, amount) in enumerate(orders):
        req = OrderRequest(symbol=SWAP, client_order_id=f"o{i}", side=side, amount=D(amount), price=D(price))  # type: ignore[arg-type]
        apply(Place(account="main", order=req))
    return engine, (lambda: state, apply)


def test_the_quiet_range_stops_at_the_nearest_resting_orders_and_the_next_funding_time() -> None:
    engine, (state, _) = _engine_with(
        [("buy", "59900", "0.01"), ("buy", "59950", "0.01"), ("sell", "60100", "0.01"), ("sell", "60300", "0.01")]
    )
    low, high, until = engine.quiet_range(state(), SWAP)
    assert (low, high) == (D(59_950), D(60_100))
    assert until == state().markets[SWAP].next_funding_time > T0


def test_the_quiet_range_ends_where_a_position_would_be_liquidated() -> None:
    from venues.sim.journal import Print, Quote, Tick

    engine, (state, apply) = _engine_with([("buy", "60100", "0.5")], usdt="2000")  # through the ask: a taker buy
    assert state().accounts["main"].positions[SWAP].contracts == D("0.5")
    low, high, _ = engine.quiet_range(state(), SWAP)
    assert D(50_000) < low < D(59_000) and high == D("1e12")
    edge = low.quantize(D("0.1"))
    above = edge + D("0.5")
    out = apply(Tick(step=2, ts=T0 + 15_000, prints=[Print(SWAP, above, D(1))]))
    assert not [ev for ev in out if type(ev).__name__ == "Liquidation"]  # inside the range: nothing happens
    apply(Quote(step=2))
    out = apply(Tick(step=3, ts=T0 + 30_000, prints=[Print(SWAP, edge - D("0.5"), D(1))]))
    assert [ev for ev in out if type(ev).__name__ == "Liquidation"]  # just beyond it: liquidated


# ---------------------------------------------------------------------- what a run reports


def test_prices_off_the_tick_are_put_on_it_and_volumes_round_down_to_the_lot() -> None:
    from venues.sim.candle_path import on_tick

    assert on_tick(D("100.03"), D("0.1")) == D("100.0") and on_tick(D("100.06"), D("0.1")) == D("100.1")
    assert on_tick(D("100.1"), D("0.1")) == D("100.1")  # already on it: unchanged
    assert on_tick(D("0.01"), D("0.1")) == D("0.1")  # never below one tick
    assert on_tick(D("7"), D("0.5")) == D("7") and on_tick(D("7.3"), D("0.5")) == D("7.5")
    assert print_volume(D("0.0078"), D("0.001")) == D("0.001")  # 1.95 lots: down, not to the nearest
    assert candle_path(D(100), D(102), D(98), D(100)) == (D(100), D(98), D(102), D(100))  # a tie, a flat bar: dips first


def test_an_off_tick_candle_file_trades_on_the_tick() -> None:
    candles = [
        Bar(b.open_time, b.open + D("0.03"), b.high + D("0.04"), b.low + D("0.02"), b.close + D("0.07"), b.volume)
        for b in bars(600, 3, 0.0008)
    ]
    result, session = run_grid_backtest(grid(), sim(), candles)
    assert result.trades and all(t.price % D("0.1") == 0 for t in result.trades)
    assert session.est.markets[SWAP].last == (candles[-1].close / D("0.1")).to_integral_value() * D("0.1")


def test_the_result_reports_what_the_session_did() -> None:
    candles = bars(2_000, seed=4, vol=0.0008)
    g = grid(spacing=D("0.001"))
    result, s = run_grid_backtest(g, sim(), candles, capital=D(5_000))
    acct = s.est.accounts["main"]
    pos = acct.positions[SWAP]
    assert (result.strategy, result.symbol, result.candles, result.commands) == ("grid", SWAP, 2_000, len(s.decided))
    assert (result.since, result.until, result.start_equity) == (T0, T0 + 2_000 * 60_000, 5_000.0)
    assert result.params["spacing"] == "0.001" and result.params["levels"] == 4 and "metrics_port" not in result.params
    # the books: average-cost realized PnL as the exchange computes it, fees and funding as it charged them
    assert s.realized == pos.realized_pnl != 0
    assert s.fees == sum(f.fee_cost for f in s.fills) > 0 and s.funding == sum(p.amount for p in s.funding_payments)
    assert [(t.ts, t.client_order_id, t.side, t.price, t.amount, t.fee, t.liquidity, t.symbol) for t in result.trades] == [
        (f.ts, f.client_order_id, f.side, f.price, f.amount, f.fee_cost, f.liquidity, f.symbol) for f in s.fills
    ]
    last = result.samples[-1]
    assert (last.ts, last.price) == (T0 + 2_000 * 60_000 - 1, float(candles[-1].close))
    assert last.position == float(pos.contracts) == float(s.position)
    assert (last.realized, last.fees, last.funding) == (float(s.realized), float(s.fees), float(s.funding))
    assert last.equity == pytest.approx(5_000 + float(s.pnl(candles[-1].close)))
    assert [x.ts for x in result.samples] == [b.open_time + 59_999 for b in candles]
    # the grid's orders as they changed: the last entry is what rests at the end
    resting = sorted(float(o.price) for o in acct.open.values() if o.price is not None)
    assert result.levels[-1].prices == resting and len({lv.ts for lv in result.levels}) == len(result.levels) > 10
