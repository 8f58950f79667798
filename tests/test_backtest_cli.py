"""`sqt backtest grid`: what a user types, what it writes, and what bad input gets."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest

from cli.main import main
from testkit.backtest import candles, write_csv

CONFIG = """
data_dir = "{data}"

[sim]
[sim.accounts.main]
USDT = "10000"

[[sim.markets]]
symbol = "BTC/USDT:USDT"
tick_size = "0.1"
lot_size = "0.001"
min_amount = "0.001"
start_price = "60000"
funding_interval_h = 1
funding_mean = "0.0002"

[[grids]]
instance = "bt"
symbol = "BTC/USDT:USDT"
levels = 4
spacing = "0.001"
notional = "200"
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "sqt.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data"))
    data = tmp_path / "btc.csv"
    write_csv(data, candles(2_000, seed=5, vol=0.0005, t0=1_767_225_600_000, volume=Decimal("2.5")))
    return config, data


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), "backtest", "grid", *args])


def test_one_run_prints_the_summary_and_writes_summary_trades_and_report(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    config, data = setup
    out = tmp_path / "out"
    assert run(config, "--data", str(data), "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert "total return" in printed and "max drawdown" in printed and str(out) in printed
    summary = json.loads((out / "summary.json").read_text())
    with (out / "trades.csv").open() as fh:
        trades = list(csv.DictReader(fh))
    assert summary["candles"] == 2_000 and summary["fills"] == len(trades) > 10
    assert summary["funding"] != 0  # the market's funding_mean, paid hourly on the position
    assert summary["start_equity"] == 10_000
    html = (out / "report.html").read_text()
    assert "<canvas" in html or "createChart" in html


def test_a_window_a_parameter_and_the_funding_rate_change_the_run(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    assert run(config, "--data", str(data), "--out", str(tmp_path / "a"), "--until", "1767254400000", "--funding-rate", "0") == 0
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert a["candles"] == 480 and a["funding"] == 0  # 8 hours; no funding at all
    assert run(config, "--data", str(data), "--out", str(tmp_path / "b"), "--set", "spacing=0.004", "--capital", "2000") == 0
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert b["start_equity"] == 2_000 and b["fills"] < json.loads(_full(config, data, tmp_path))["fills"]


def _full(config: Path, data: Path, tmp_path: Path) -> str:
    assert run(config, "--data", str(data), "--out", str(tmp_path / "full")) == 0
    return (tmp_path / "full" / "summary.json").read_text()


def test_the_exact_mode_gives_the_same_numbers(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    assert run(config, "--data", str(data), "--out", str(tmp_path / "fast")) == 0
    assert run(config, "--data", str(data), "--out", str(tmp_path / "exact"), "--exact") == 0
    assert (tmp_path / "fast" / "trades.csv").read_text() == (tmp_path / "exact" / "trades.csv").read_text()
    assert json.loads((tmp_path / "fast" / "summary.json").read_text()) == json.loads((tmp_path / "exact" / "summary.json").read_text())


def test_a_sweep_runs_every_combination_and_ranks_them(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    config, data = setup
    out = tmp_path / "sweep"
    assert (
        run(config, "--data", str(data), "--out", str(out), "--sweep", "spacing=0.001,0.002,0.004", "--sweep", "levels=2,4", "--jobs", "2")
        == 0
    )
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert sorted((r["params"]["spacing"], r["params"]["levels"]) for r in runs) == sorted(
        (s, n) for s in ("0.001", "0.002", "0.004") for n in (2, 4)
    )
    printed = capsys.readouterr().out.splitlines()
    ranked = [line for line in printed if line.startswith("spacing=")]
    returns = [float(line.split("return")[1].split("%")[0]) for line in ranked]
    assert len(ranked) == 6 and returns == sorted(returns, reverse=True)
    # each run of a sweep is the run alone: the best one again, by itself
    best = max(runs, key=lambda r: r["summary"]["total_return_pct"])
    p = best["params"]
    assert (
        run(
            config,
            "--data",
            str(data),
            "--out",
            str(tmp_path / "alone"),
            "--set",
            f"spacing={p['spacing']}",
            "--set",
            f"levels={p['levels']}",
        )
        == 0
    )
    assert json.loads((tmp_path / "alone" / "summary.json").read_text()) == best["summary"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--set", "spacing=-1"], "`spacing` must be positive"),
        (["--set", "nope=1"], "KEY one of"),
        (["--sweep", "levels"], "expected NAME=V1,V2"),
        (["--sweep", "colour=red,blue"], "'colour' is not a parameter"),
        (["--sweep", "levels=2,3", "--sweep", "levels=4"], "swept twice"),
        (["--funding-rate", "lots"], "--funding-rate: not a number"),
        (["--funding-rate", "5"], "--funding-rate"),
        (["--capital", "-5"], "capital"),
        (["--since", "2027-01-01"], "no candles"),
        (["--instance", "other"], "other"),
    ],
)
def test_bad_input_names_what_is_wrong_and_exits_2(setup: tuple[Path, Path], tmp_path: Path, capsys, args: list[str], says: str) -> None:
    config, data = setup
    assert run(config, "--data", str(data), "--out", str(tmp_path / "x"), *args) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_bad_data_names_the_file_and_line(setup: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    config, _ = setup
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n1767225600000,100,101,99,100,1\n1767225660000,100,99,101,100,1\n")
    assert run(config, "--data", str(bad)) == 2
    assert "bad.csv:3" in capsys.readouterr().err
    assert run(config, "--data", str(tmp_path / "missing.csv")) == 2
    assert "missing.csv" in capsys.readouterr().err


def test_five_minute_candles_print_across_their_five_minutes(tmp_path: Path) -> None:
    """A candle's four prints span its own interval: 5-minute candles are not traded as 1-minute ones."""
    from backtest.candles import read_any
    from backtest.session import run_grid_backtest
    from cli.config import load

    config = tmp_path / "sqt.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data"))
    data = tmp_path / "5m.csv"
    rows = [f"{1_767_225_600_000 + i * 300_000},60000,60120,59880,60000,3" for i in range(50)]
    data.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert run(config, "--data", str(data), "--out", str(out)) == 0
    with (out / "trades.csv").open() as fh:
        times = [int(r["ts"]) for r in csv.DictReader(fh)]
    cfg = load(config, environ={})
    _, session = run_grid_backtest(cfg.grids[0], cfg.sim, read_any(data), candle_ms=300_000)
    assert times == [f.ts for f in session.fills] and times
    assert {(t - 1_767_225_600_000) % 300_000 for t in times} - {0, 75_000, 150_000, 225_000} == set()
