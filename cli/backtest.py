"""`sqt backtest grid|arbitrage`: the live cores and matching engine over recorded candles.

    sqt backtest grid --data candles.csv                           # the config's first grid, every candle
    sqt backtest grid --data btc.parquet --since 2026-01-01 --until 2026-02-01 --set spacing=0.002
    sqt backtest grid --data btc.parquet --sweep spacing=0.0005,0.001,0.002 --sweep levels=5,10

The grid and the market (tick, lot, fees, leverage, the account's balances) come from the
config (`--config`, `--instance`); `--set` changes a grid parameter as `sqt replay grid` does.
Funding is a constant rate (`--funding-rate`, default the market's `funding_mean`), paid at the
market's funding times. Output goes to `--out` (default `<data_dir>/backtests/<instance>-<time>/`):
summary.json, trades.csv and report.html (self-contained: it opens offline).

    sqt backtest arbitrage --data-perp btc-perp.parquet --data-spot btc-spot.parquet --funding rates.csv
    sqt backtest arbitrage --data-perp btc-perp.csv --instance btc-basis --set entry_apr=0.2

`arbitrage` runs the funding monitor's and the arbitrage's cores (`[funding]`, `[[arbitrages]]`)
with both legs on the one simulated venue (spot-perp). Without `--data-spot` the spot leg must
`follow` the perpetual in the config: it prints the perpetual's price times the engine's basis
walk. `--funding` is a CSV `timestamp,funding_rate` of the perpetual's funding history (the rate
each funding time paid); without it the rate is constant (`--funding-rate`, default the market's
`funding_mean`). Details: backtest/arbitrage.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import msgspec

from backtest.arbitrage import read_funding_csv, run_arbitrage_backtest
from backtest.candles import CandleError, infer_interval
from backtest.metrics import format_summary, summarize, write_json, write_trades_csv
from backtest.progress import Progress
from backtest.report import write_report
from backtest.result import BacktestResult
from backtest.session import BacktestError, run_grid_backtest
from backtest.sweep import Data, combinations, parse_sweeps, run_sweep
from cli.config import Config, ConfigError
from cli.replay import grid_config, parse_time
from cli.replay_arbitrage import with_overrides
from strategies.grid.config import GridConfig
from venues.sim.config import SimConfig

EXIT_USAGE = 2


def add_parser(sub: argparse._SubParsersAction) -> None:
    bt = sub.add_parser("backtest", help="run a strategy over recorded candles with the live code")
    kinds = bt.add_subparsers(dest="backtest_kind", required=True)
    g = kinds.add_parser("grid", help="backtest a grid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--data", required=True, type=Path, help="candles: a file `sqt data import` stored, a CSV or a freqtrade JSON")
    g.add_argument("--since", help="first candle: ISO time or epoch ms (default: the data's first)")
    g.add_argument("--until", help="end of the window, exclusive (default: the data's last candle)")
    g.add_argument("--instance", help="which [[grids]] entry (default: the first)")
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a grid parameter")
    g.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2", help="run every combination of these values")
    g.add_argument("--capital", help="money the return is measured against (default: the account's quote balance)")
    g.add_argument("--funding-rate", help="constant funding rate per interval for perpetuals (default: the market's funding_mean)")
    g.add_argument("--interval", help="candle interval of a CSV or JSON file (default: inferred from its rows)")
    g.add_argument("--out", type=Path, help="output directory")
    g.add_argument("--jobs", type=int, help="processes for a sweep (default: every core)")
    g.add_argument("--exact", action="store_true", help="print every candle in full (no quiet-candle shortcut; same results, slower)")
    a = kinds.add_parser(
        "arbitrage",
        help="backtest a funding arbitrage (spot-perp on one venue)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("--data-perp", required=True, type=Path, help="the perpetual's candles (a stored file, a CSV or a freqtrade JSON)")
    a.add_argument("--data-spot", type=Path, help="the spot leg's candles (default: it follows the perpetual, as configured)")
    a.add_argument("--funding", type=Path, help="the perpetual's funding history: a CSV `timestamp,funding_rate`")
    a.add_argument("--since", help="first candle: ISO time or epoch ms (default: the data's first)")
    a.add_argument("--until", help="end of the window, exclusive (default: the data's last candle)")
    a.add_argument("--instance", help="which [[arbitrages]] entry (default: the only one)")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change an arbitrage parameter, e.g. entry_apr=0.2")
    a.add_argument("--capital", help="money the return is measured against (default: the account's settle-currency balance)")
    a.add_argument("--funding-rate", help="constant funding rate per interval without --funding (default: the market's funding_mean)")
    a.add_argument("--interval", help="candle interval of a CSV or JSON file (default: inferred from its rows)")
    a.add_argument("--out", type=Path, help="output directory")


def _ms(text: str | None) -> int | None:
    return None if text is None else int(parse_time(text).timestamp() * 1000)


def _decimal(name: str, text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{name}: not a number: {text!r}") from None
    if not value.is_finite():
        raise ConfigError(f"{name}: must be finite, got {text!r}")
    return value


def market_for(config: Config, grid: GridConfig, funding_rate: Decimal | None) -> SimConfig:
    """The configured simulated venue of the grid, its funding held constant: a walk that moves
    with every print has no meaning over candles (and a backtest's funding is a stated assumption)."""
    return _constant_funding(config.simulated(grid.venue), {grid.symbol}, funding_rate)


def _constant_funding(sim: SimConfig, symbols: set[str], funding_rate: Decimal | None) -> SimConfig:
    markets = []
    for m in sim.markets:
        if m.symbol in symbols:
            rate = m.funding_mean if funding_rate is None else funding_rate
            try:
                m = msgspec.structs.replace(m, funding_mean=rate, funding_volatility=Decimal(0))
                msgspec.convert(msgspec.to_builtins(m), type(m))  # the market's own checks, on the new rate
            except (ValueError, msgspec.ValidationError) as exc:
                raise ConfigError(f"--funding-rate: {exc}") from None
        markets.append(m)
    return msgspec.structs.replace(sim, markets=markets, history_minutes=0)


def _default_out(config: Config, grid: GridConfig) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(config.data_dir) / "backtests" / f"{grid.instance}-{stamp}"


def backtest_command(config: Config, args: argparse.Namespace) -> int:
    try:
        if args.backtest_kind == "arbitrage":
            return _arbitrage(config, args)
        return _grid(config, args)
    except (BacktestError, CandleError, ConfigError) as exc:
        print(f"sqt backtest: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as exc:
        print(f"sqt backtest: {exc.filename}: no such file", file=sys.stderr)
        return EXIT_USAGE


def _grid(config: Config, args: argparse.Namespace) -> int:
    if not config.grids:
        raise ConfigError("the config has no [[grids]] entry to backtest")
    instance = args.instance or config.grids[0].instance
    base = grid_config(config, instance, args.set)
    sweeps = parse_sweeps(args.sweep, list(GridConfig.__struct_fields__))
    grids = [grid_config(config, instance, [*args.set, *combo]) for combo in combinations(sweeps)] if sweeps else [base]
    sim = market_for(config, base, _decimal("--funding-rate", args.funding_rate))
    capital = _decimal("--capital", args.capital)
    data = Data(args.data, _ms(args.since), _ms(args.until), args.interval)
    out = args.out or _default_out(config, base)
    started = time.monotonic()
    if len(grids) == 1:
        bars = data.load()
        print(f"{len(bars):,} candles of {base.symbol} from {args.data}", file=sys.stderr)
        with Progress(len(bars)) as progress:
            result, session = run_grid_backtest(
                base, sim, bars, capital=capital, candle_ms=infer_interval(bars), on_candle=progress.set, skip_quiet=not args.exact
            )
        results = [result]
        if session.rejected_inputs:
            print(f"{len(session.rejected_inputs)} tickers refused by the grid's price guard, e.g. {session.rejected_inputs[0]}")
    else:
        workers = min(args.jobs or os.cpu_count() or 1, len(grids))
        print(f"{len(grids)} combinations of {', '.join(n for n, _ in sweeps)} on {workers} processes", file=sys.stderr)
        with Progress(len(grids), unit="runs") as progress:
            results = run_sweep(grids, sim, data, capital, args.jobs, on_done=progress.set)
    elapsed = time.monotonic() - started
    _write(results, out, [n for n, _ in sweeps])
    candles = sum(r.candles for r in results)
    print(f"{candles:,} candles in {elapsed:.1f} s ({candles / max(elapsed, 1e-9):,.0f} candles/s); written to {out}/")
    return 0


def _arbitrage(config: Config, args: argparse.Namespace) -> int:
    if not config.arbitrages:
        raise ConfigError("the config has no [[arbitrages]] entry to backtest")
    arb = with_overrides(config.arbitrage(args.instance), args.set)
    venues = {leg.venue for leg in arb.legs}
    if len(venues) != 1:
        raise ConfigError(
            f"arbitrage {arb.instance}: legs on {', '.join(sorted(venues))}: a backtest runs both legs on one simulated venue"
        )
    sim = config.simulated(venues.pop())
    kinds = {m.symbol: m.kind for m in sim.markets}
    perps = [leg.symbol for leg in arb.legs if kinds.get(leg.symbol) == "swap"]
    spots = [leg.symbol for leg in arb.legs if kinds.get(leg.symbol) == "spot"]
    if len(perps) != 1 or len(spots) != 1:
        raise ConfigError(
            f"arbitrage {arb.instance}: `sqt backtest arbitrage` takes a spot leg and a perpetual leg ({', '.join(kinds.get(leg.symbol, '?') + ' ' + leg.symbol for leg in arb.legs)})"
        )
    perp, spot = perps[0], spots[0]
    rates = {perp: read_funding_csv(args.funding)} if args.funding is not None else None
    sim = _constant_funding(sim, {perp}, _decimal("--funding-rate", args.funding_rate))
    capital = _decimal("--capital", args.capital)
    since, until = _ms(args.since), _ms(args.until)
    legs = {perp: Data(args.data_perp, since, until, args.interval).load()}
    if args.data_spot is not None:
        legs[spot] = Data(args.data_spot, since, until, args.interval).load()
    candle_ms = infer_interval(legs[perp])  # the prints' spacing follows the candles'
    out = args.out or Path(config.data_dir) / "backtests" / f"{arb.instance}-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    started = time.monotonic()
    print(", ".join(f"{len(b):,} candles of {s}" for s, b in legs.items()), file=sys.stderr)
    with Progress(max(len(b) for b in legs.values())) as progress:
        result, session = run_arbitrage_backtest(
            arb, config.funding, sim, legs, rates, capital=capital, candle_ms=candle_ms, on_candle=progress.set
        )
    elapsed = time.monotonic() - started
    st = session.ast
    print(
        f"arbitrage {arb.instance}: {st.entries} entries, {st.exits} exits, {len(st.unwinds)} unwinds in the last hour, "
        f"{len(session.funding_payments)} funding payments, borrow interest {session.borrow:f}"
        + (f", blocked: {st.blocked}" if st.blocked else "")
    )
    if session.refused:
        o = session.refused[-1]
        print(f"{len(session.refused)} orders refused by the exchange, the last: {o.symbol} {o.side} {o.reason} {o.message or ''}".rstrip())
    if session.rejected_inputs:
        print(f"{len(session.rejected_inputs)} inputs refused by the cores, e.g. {session.rejected_inputs[0]}")
    _write([result], out, [])
    print(f"{result.candles:,} candles in {elapsed:.1f} s ({result.candles / max(elapsed, 1e-9):,.0f} candles/s); written to {out}/")
    return 0


def _write(results: list[BacktestResult], out: Path, swept: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for r in results:
        r.summary = summarize(r)
    if len(results) == 1:
        r = results[0]
        print(format_summary(r.summary))
        write_json(r.summary, out / "summary.json")
        write_trades_csv(r.trades, out / "trades.csv")
    else:

        def rank(r: BacktestResult) -> float:
            ret = r.summary.get("total_return_pct")
            return float("inf") if ret is None else -ret

        ranked = sorted(results, key=rank)
        for r in ranked:
            label = ", ".join(f"{n}={r.params.get(n)}" for n in swept)
            ret, dd = r.summary.get("total_return_pct") or 0.0, r.summary.get("max_drawdown_pct") or 0.0
            print(f"{label:40s} return {ret:8.3f}%  max drawdown {dd:7.3f}%")
        write_json({"runs": [{"params": r.params, "summary": r.summary} for r in results]}, out / "summary.json")
        write_trades_csv(ranked[0].trades, out / "trades.csv")
    write_report(results, out / "report.html", swept or None)
    print(f"report: {out / 'report.html'}")
