"""The backtest's summary (backtest/metrics.py), its HTML report (backtest/report.py) and its
progress bar (backtest/progress.py), on hand-made results whose answers are known.

The report is also opened in Debian's chromium (Playwright, like tests/test_page.py) from a
file:// URL with every request blocked: the charts draw, the fills and levels are on them, the
ranking sorts and the heatmap has its cells, and nothing was fetched.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backtest import metrics, report
from backtest.metrics import format_summary, summarize, write_json, write_trades_csv
from backtest.progress import Progress
from backtest.report import downsample, write_report
from backtest.result import Level, Sample
from testkit.backtest import MINUTE, T0, result, sweep, trade, walk

# ---- the summary -----------------------------------------------------------------------------


def ts(i: int) -> int:
    """The close time of sample i in testkit's results."""
    return T0 + (i + 1) * MINUTE


def test_a_drawdown_computed_by_hand() -> None:
    # peak 120 (sample 1) -> trough 90 (sample 2): 25 %, 30; back at 120 at sample 4; then 120 -> 108: 10 %, 12
    s = summarize(result([100, 120, 90, 110, 120, 108], start=100))
    assert s["max_drawdown_pct"] == pytest.approx(25.0)
    assert s["max_drawdown_abs"] == pytest.approx(30.0)
    assert (s["max_drawdown_peak_ts"], s["max_drawdown_trough_ts"]) == (ts(1), ts(2))
    assert s["max_drawdown_recovered_ts"] == ts(4)  # the first sample back at 120
    assert s["total_return_pct"] == pytest.approx(8.0)
    assert s["return_over_drawdown"] == pytest.approx(8.0 / 25.0)
    assert summarize(result([100, 120, 90, 110, 119], start=100))["max_drawdown_recovered_ts"] is None


def test_the_deepest_relative_and_the_largest_absolute_drawdown_can_be_two_episodes() -> None:
    s = summarize(result([50, 1000, 800], start=100))
    assert s["max_drawdown_pct"] == pytest.approx(50.0)  # the start (100, at `since`) -> 50
    assert (s["max_drawdown_peak_ts"], s["max_drawdown_trough_ts"]) == (T0, ts(0))
    assert s["max_drawdown_abs"] == pytest.approx(200.0)  # 1000 -> 800 is only 20 %
    assert (s["max_drawdown_abs_peak_ts"], s["max_drawdown_abs_trough_ts"]) == (ts(1), ts(2))
    assert s["max_drawdown_recovered_ts"] == ts(1)


def test_a_flat_equity_has_no_sharpe_no_sortino_and_no_drawdown() -> None:
    s = summarize(result([1000.0] * 50, start=1000))
    assert s["sharpe"] is None and s["sortino"] is None
    assert s["max_drawdown_pct"] == 0 and s["max_drawdown_peak_ts"] is None and s["return_over_drawdown"] is None
    steady = summarize(result([1000 * 1.001**i for i in range(1, 200)], start=1000))  # equal returns but rounding
    assert steady["sharpe"] is None and steady["sortino"] is None  # no losing sample either
    json.dumps(s, allow_nan=False)
    json.dumps(steady, allow_nan=False)


def test_sharpe_and_sortino_by_hand_and_annualized_from_the_sampling_period() -> None:
    r = result([110, 99, 108.9], start=100)  # returns +10 %, -10 %, +10 %
    mean, sd, down = 0.1 / 3, math.sqrt(((0.2 / 3) ** 2 * 2 + (0.4 / 3) ** 2) / 2), math.sqrt(0.01 / 3)
    once = summarize(r, periods_per_year=1)
    assert once["sharpe"] == pytest.approx(mean / sd) and once["sortino"] == pytest.approx(mean / down)
    yearly = summarize(r)  # one-minute samples: 525,600 a year
    assert yearly["sampling_period_ms"] == MINUTE
    assert yearly["sharpe"] == pytest.approx(mean / sd * math.sqrt(525_600))
    spaced = result([110, 99, 108.9, 110, 111], start=100, step=3_600_000)
    assert summarize(spaced)["sampling_period_ms"] == 3_600_000
    assert metrics.sampling_period_ms([0, 60, 120, 180, 10_000]) == 60  # a gap in the data is not the period
    assert metrics.sampling_period_ms([5, 5, 5]) is None and metrics.sampling_period_ms([5]) is None


def test_a_single_long_round_trip() -> None:
    # buy 1 at 100 (fee 0.1), price 105, sell 1 at 110 (fee 0.1)
    r = result(
        [999.9, 1004.9, 1009.8],
        start=1000,
        prices=[100, 105, 110],
        positions=[1, 1, 0],
        realized=[0, 0, 10],
        fees=[0.1, 0.1, 0.2],
        trades=[trade(0, "buy", "100", "1", "0.1"), trade(2, "sell", "110", "1", "0.1")],
        commands=4,
    )
    s = summarize(r)
    assert s["net_pnl"] == pytest.approx(9.8) and s["total_return_pct"] == pytest.approx(0.98)
    assert s["realized_pnl"] == 10 and s["fees"] == pytest.approx(0.2)
    assert s["unrealized_pnl"] == 0.0  # flat at the end: what is left is float rounding, shown as 0
    assert (s["fills"], s["buys"], s["sells"], s["maker_fills"], s["commands"], s["candles"]) == (2, 1, 1, 2, 4, 3)
    assert s["turnover"] == pytest.approx(210.0) and s["turnover_x"] == pytest.approx(0.21)
    assert s["time_in_market_pct"] == pytest.approx(200 / 3)
    assert (s["max_long"], s["max_long_ts"], s["max_short"], s["max_short_ts"]) == (1, ts(0), 0, None)
    assert s["max_exposure"] == pytest.approx(105.0) and s["max_exposure_ts"] == ts(1)
    assert (s["round_trips"], s["win_rate_pct"], s["avg_holding_s"]) == (1, 100.0, 120.0)
    assert s["fees_of_trades"] == pytest.approx(0.2)


def test_an_open_long_at_the_end_is_unrealized_pnl() -> None:
    r = result([999.9, 1004.9, 1009.9], start=1000, prices=[100, 105, 110], positions=[1, 1, 1], fees=[0.1] * 3)
    s = summarize(r)
    assert s["realized_pnl"] == 0 and s["unrealized_pnl"] == pytest.approx(10.0) and s["final_position"] == 1
    assert s["round_trips"] == 0 and s["win_rate_pct"] is None and s["avg_holding_s"] is None


def test_fees_are_paid_positive_and_funding_received_positive_and_unrealized_is_what_is_left() -> None:
    # realized +10, fees paid 2, funding paid 3, open position worth +7: equity 1000 + 10 - 2 - 3 + 7
    r = result([1000, 1012], start=1000, positions=[0, 1], realized=[0, 10], fees=[0, 2], funding=[0, -3])
    s = summarize(r)
    assert (s["fees"], s["funding"]) == (2, -3)
    assert s["unrealized_pnl"] == pytest.approx(7.0) and s["net_pnl"] == pytest.approx(12.0)
    received = summarize(result([1000, 1015], start=1000, funding=[0, 5], realized=[0, 10]))
    assert received["funding"] == 5 and received["unrealized_pnl"] == pytest.approx(0.0)


def test_time_in_market_inventory_extremes_and_a_short_round_trip() -> None:
    r = result(
        [1000] * 6,
        positions=[0, 2, -1, -3, 0, 0],
        prices=[100, 100, 90, 80, 80, 80],
        trades=[trade(1, "buy", "100", "2"), trade(2, "sell", "90", "3"), trade(3, "sell", "80", "2"), trade(4, "buy", "70", "3")],
    )
    s = summarize(r)
    assert s["time_in_market_pct"] == pytest.approx(50.0)
    assert (s["max_long"], s["max_long_ts"]) == (2, ts(1)) and (s["max_short"], s["max_short_ts"]) == (-3, ts(3))
    # sell 3 at 90 closes the long of 2 (a loss of 20) and opens a short of 1; buy 3 at 70 closes the shorts (+20, +20)
    assert (s["round_trips"], s["win_rate_pct"]) == (2, 50.0)
    assert s["avg_holding_s"] == pytest.approx((2 * 60 + 1 * 120 + 2 * 60) / 5)


def test_no_samples_summarizes_without_failing() -> None:
    s = summarize(result([], start=1000))
    assert s["final_equity"] == 1000 and s["total_return_pct"] == 0 and s["sharpe"] is None and s["time_in_market_pct"] is None
    assert "—" in format_summary(s)
    assert page_data(report.render([result([], start=1000)]))["charts"]["price"] == {"t": [], "v": [], "n": 0, "shown": 0}


def test_format_json_and_csv(tmp_path: Path) -> None:
    r = result([999.9, 1009.8], start=1000, positions=[1, 0], realized=[0, 10], fees=[0.1, 0.2])
    r.trades = [trade(0, "buy", "100.05", "0.123", "0.01"), trade(1, "sell", "110.1", "0.123", "-0.002")]
    s = summarize(r)
    text = format_summary(s)
    lines = text.splitlines()
    starts = {len(line) - len(line[len(line.split("  ")[0]) :].lstrip()) for line in lines}
    assert len(starts) == 1  # every value starts in the same column
    assert "total return          0.98%  (9.80 USDT)" in text and "fills                 2  (1 buys, 1 sells, 2 maker)" in text
    write_json(s, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == s
    write_trades_csv(r.trades, tmp_path / "t.csv")
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [Decimal(x["price"]) for x in rows] == [Decimal("100.05"), Decimal("110.1")]
    assert rows[1]["fee"] == "-0.002" and rows[0]["notional"] == str(Decimal("100.05") * Decimal("0.123"))
    assert rows[0]["time"] == metrics.iso(ts(0))


finite = st.floats(min_value=0.01, max_value=1e7, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=60), finite)
def test_max_drawdown_is_between_0_and_100_percent_and_is_the_deepest_pair(equity: list[float], start: float) -> None:
    s = summarize(result(equity, start=start))
    assert 0.0 <= s["max_drawdown_pct"] <= 100.0
    curve = [start, *equity]
    deepest = max((curve[i] - curve[j]) / curve[i] for i in range(len(curve)) for j in range(i, len(curve)))
    largest = max(curve[i] - curve[j] for i in range(len(curve)) for j in range(i, len(curve)))
    assert s["max_drawdown_pct"] == pytest.approx(100 * deepest, abs=1e-9)
    assert s["max_drawdown_abs"] == pytest.approx(largest, rel=1e-9, abs=1e-9)
    json.dumps(s, allow_nan=False)  # never NaN or inf


money = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, money, money, money), min_size=1, max_size=20), finite)
@example([(6841704.0, 0.0, 100000.0, 0.00390625)], 6941704.0)  # 0.004 unrealized on 7M is not rounding noise
def test_the_equity_identity_holds(rows: list[tuple[float, float, float, float]], start: float) -> None:
    eq, realized, fees, funding = (list(c) for c in zip(*rows))
    s = summarize(result(eq, start=start, realized=realized, fees=fees, funding=funding))
    booked = s["realized_pnl"] + s["unrealized_pnl"] - s["fees"] + s["funding"]
    scale = max(abs(x) for x in (start, eq[-1], realized[-1], fees[-1], funding[-1]))
    assert booked == pytest.approx(s["final_equity"] - s["start_equity"], abs=1e-11 * scale)
    assert s["net_pnl"] == pytest.approx(s["final_equity"] - start)


# ---- the downsampler ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=0, max_size=400), st.integers(min_value=4, max_value=60))
def test_the_downsampler_keeps_the_global_min_and_max_the_ends_and_at_most_max_points(values: list[float], max_points: int) -> None:
    idx = downsample(values, max_points)
    assert idx == sorted(set(idx)) and len(idx) <= max(max_points, 0)
    if not values:
        return
    kept = [values[i] for i in idx]
    assert min(kept) == min(values) and max(kept) == max(values)
    assert idx[0] == 0 and idx[-1] == len(values) - 1
    if len(values) <= max_points:
        assert idx == list(range(len(values)))


def test_a_years_dip_of_one_sample_survives_downsampling_in_the_report() -> None:
    r = walk(20_000, seed=3)
    i = 12_345
    r.samples[i] = Sample(r.samples[i].ts, r.samples[i].price, r.samples[i].equity * 0.7, 0.0, 0.0, 0.0, 0.0)
    s = summarize(r)
    data = report.chart_data(r, max_points=500)
    assert data["drawdown"]["shown"] <= 500 and data["drawdown"]["n"] == 20_000
    assert min(data["drawdown"]["v"]) == pytest.approx(-s["max_drawdown_pct"])
    assert min(data["equity"]["v"]) == min(x.equity for x in r.samples)
    assert r.samples[i].ts // 1000 in data["equity"]["t"]


# ---- the report --------------------------------------------------------------------------------


class Fetches(HTMLParser):
    """What a page would fetch from the network by itself: src/srcset/href/data/poster/action
    attributes on anything but a link the reader clicks (<a href>), url() and @import in CSS,
    and fetch/import/XMLHttpRequest/Worker/WebSocket/EventSource/sendBeacon in scripts."""

    ATTRS = {"src", "srcset", "href", "data", "poster", "action", "formaction", "background", "xlink:href"}
    REMOTE = re.compile(r"^\s*(https?:)?//", re.I)
    CALLS = re.compile(
        r"\bfetch\s*\(|\bimport\s*\(|\bimport\s+[^;]*?\bfrom\s*['\"]|\bimport\s*['\"]|XMLHttpRequest|new\s+(Worker|SharedWorker|WebSocket|EventSource)\b"
        r"|sendBeacon|@import|url\(\s*['\"]?\s*(https?:)?//|importScripts",
        re.I,
    )

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name == "style" and value and self.CALLS.search(value):
                self.found.append(f"<{tag} style={value[:80]}>")
            if name not in self.ATTRS or value is None or (tag == "a" and name == "href"):
                continue
            if any(self.REMOTE.match(part) for part in value.split(",")):
                self.found.append(f"<{tag} {name}={value[:80]}>")
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in:
            self.found.extend(f"<{self._in}> {m.group(0)}" for m in self.CALLS.finditer(data))


def fetches(page: str) -> list[str]:
    p = Fetches()
    p.feed(page)
    p.close()
    return p.found


def test_the_scan_for_fetches_finds_them() -> None:
    bad = [
        '<script src="https://cdn.example/x.js"></script>',
        '<link rel="stylesheet" href="//fonts.example/css">',
        "<style>@import 'x.css'; body { background: url(https://x/y.png) }</style>",
        "<script>fetch('/api')</script>",
        "<script type=module>import { a } from 'https://x/m.js'</script>",
        '<img srcset="a.png 1x, https://x/b.png 2x">',
    ]
    for page in bad:
        assert fetches(page), page
    assert fetches('<a href="https://www.tradingview.com/">TradingView</a><script>let u = "url(#a)"</script>') == []


def sweep_report(tmp_path: Path, **kw: Any) -> tuple[Path, list[Any]]:
    runs = sweep([0.001, 0.002, 0.005], [5, 10])
    path = tmp_path / "sweep.html"
    write_report(runs, path, sweep=["spacing", "levels"], **kw)
    return path, runs


def page_data(page: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert m
    data: dict[str, Any] = json.loads(m.group(1))
    return data


def test_the_report_is_one_file_that_fetches_nothing(tmp_path: Path) -> None:
    path, _ = sweep_report(tmp_path)
    page = path.read_text()
    assert fetches(page) == []
    assert report.LIBRARY.read_text() in page  # the library is inlined, unmodified
    assert "Copyright (c) 2023 TradingView, Inc." in page and "Apache License" in page  # its attribution and license


def test_the_report_carries_the_fills_the_levels_and_the_summary(tmp_path: Path) -> None:
    r = walk(600, fills_every=9, seed=5)
    path = tmp_path / "one.html"
    write_report([r], path)
    page = path.read_text()
    data = page_data(page)["charts"]
    assert data["fills"]["fills"] == len(r.trades) == len(data["fills"]["marks"])
    assert sum(m["buy"] for m in data["fills"]["marks"]) == sum(t.side == "buy" for t in r.trades)
    assert data["levels"]["p"][0] == sorted(r.levels[0].prices) and data["levels"]["changes"] == len(r.levels)
    assert data["price"]["shown"] == 600 and "Every sample is drawn" in page
    assert "Ranking" not in page and "heat-cell" not in page  # one run: no sweep sections
    s = summarize(r)
    for label, value in metrics.summary_rows(s):
        assert f"<th>{label}</th><td>{report._esc(value)}</td>" in page


def test_many_fills_are_aggregated_into_markers_and_the_page_says_so() -> None:
    r = walk(3000, fills_every=1, seed=2)
    data = report.chart_data(r, max_markers=100)
    assert data["fills"]["aggregated"] and len(data["fills"]["marks"]) <= 100 + 2
    assert sum(m["n"] for m in data["fills"]["marks"]) == len(r.trades)
    page = report.render([r], max_points=400, max_markers=100)
    assert "downsampled" in page and "fills are drawn as" in page


def test_long_level_histories_are_sampled_in_time() -> None:
    levels = [Level(T0 + i * MINUTE, [100.0 + i, 200.0 + i]) for i in range(1000)]
    out = report._levels(levels, T0 + 2000 * MINUTE, max_points=50)
    assert out["changes"] == 1000 and len(out["t"]) <= 51
    assert out["p"][0] == [100.0, 200.0] and out["p"][-1] == [1099.0, 1199.0] and out["t"][-1] == (T0 + 2000 * MINUTE) // 1000


def test_the_ranking_has_one_row_per_run_and_the_heatmap_a_cell_per_combination(tmp_path: Path) -> None:
    path, runs = sweep_report(tmp_path)
    page = path.read_text()
    assert page.count('data-testid="ranking-row"') == len(runs) == 6
    assert page.count('data-testid="heat-cell"') == 2 * 6  # return, and return over drawdown
    summaries = [summarize(r) for r in runs]
    best = max(range(6), key=lambda i: summaries[i]["total_return_pct"])
    assert page_data(page)["best"] == best
    assert f"Charts: run {best + 1} of 6" in page


def test_the_heatmap_aggregates_by_best_and_handles_one_parameter() -> None:
    runs = [
        result([100, 100 + k], start=100, params={"a": a, "b": b, "c": c})
        for k, (a, b, c) in enumerate([(1, "x", 0), (1, "x", 1), (2, "x", 0), (2, "y", 0), (2, "y", 5)])
    ]
    summaries = [summarize(r) for r in runs]
    h = report.heatmap(runs, summaries, ["a", "b", "c"], "total_return_pct")
    assert (h["x"], h["y"], h["xs"], h["ys"], h["aggregated"]) == ("a", "b", ["1", "2"], ["x", "y"], True)
    assert [[c["run"] for c in row] for row in h["rows"]] == [[1, 2], [None, 4]]  # (1, x): the better of runs 0 and 1
    one = report.heatmap(runs, summaries, ["b"], "total_return_pct")
    assert len(one["rows"]) == 1 and one["xs"] == ["x", "y"] and [c["run"] for c in one["rows"][0]] == [2, 4]
    assert report.swept_names(runs) == ["a", "b", "c"]
    numeric = [result([1, 2], params={"s": v}) for v in (0.01, 0.002, 0.1)]
    assert report.heatmap(numeric, [summarize(r) for r in numeric], ["s"], "total_return_pct")["xs"] == ["0.002", "0.01", "0.1"]


def test_the_inlined_json_cannot_close_its_script_element() -> None:
    text = report._script_json({"x": "</script><script>alert(1)</script>"})
    assert "</" not in text and json.loads(text) == {"x": "</script><script>alert(1)</script>"}


def test_parameters_are_escaped(tmp_path: Path) -> None:
    r = result([100, 101], params={"name": "</script><script>alert(1)</script>", "nested": {"k": "<b>"}})
    r2 = result([100, 99], params={"name": "plain", "nested": {"k": "<b>"}})
    page = report.render([r, r2])
    assert "<script>alert(1)" not in page and "&lt;/script&gt;" in page and "<b>" not in page
    assert "nested.k" in page


# ---- the progress bar --------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_progress_bar_shows_rate_and_eta_on_a_terminal() -> None:
    out, clock = Tty(), Clock()
    p = Progress(1000, stream=out, clock=clock)
    clock.now += 2.0
    p.update(250)  # 125 candles/s, 750 left: 6 s
    assert p.line().endswith("25.0% 250/1,000 candles  125/s  ETA 00:06")
    assert out.getvalue().startswith("\r[") and "ETA 00:06" in out.getvalue()
    clock.now += 0.01
    p.update(10)  # within the interval: not drawn again
    assert out.getvalue().count("\r") == 1
    clock.now += 6.0
    for _ in range(740):
        p.update()
    p.close()
    p.close()
    assert out.getvalue().endswith("1,000 candles in 00:08 (125 candles/s)\x1b[K\n") and out.getvalue().count("\n") == 1


def test_the_progress_bar_is_silent_when_stderr_is_not_a_terminal() -> None:
    out = io.StringIO()
    with Progress(10, stream=out) as p:
        for _ in range(10):
            p.update()
    assert out.getvalue() == "" and p.done == 10 and p.closed


def test_the_progress_bar_looks_at_the_clock_less_often_when_updates_are_frequent() -> None:
    out, clock = Tty(), Clock()
    reads = 0

    def counting() -> float:
        nonlocal reads
        reads += 1
        return clock()

    p = Progress(1_000_000, stream=out, clock=counting)
    for i in range(100_000):
        if i % 1000 == 0:
            clock.now += 0.01  # 100,000 updates a second
        p.update()
    assert reads < 2_000


# ---- the report in a real browser --------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("REQUIRE_BROWSER"):
    raise RuntimeError("REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)")


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
async def test_the_report_opens_offline_in_chromium_draws_its_charts_and_sorts_its_ranking(tmp_path: Path) -> None:
    from playwright.async_api import Route, async_playwright

    path, runs = sweep_report(tmp_path)
    url = path.as_uri()
    attempted: list[str] = []
    errors: list[str] = []

    async def block(route: Route) -> None:
        if route.request.url == url:
            await route.continue_()
        else:
            attempted.append(route.request.url)
            await route.abort()

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        tab = await chromium.new_page(viewport={"width": 1280, "height": 900})
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("request", lambda r: attempted.append(r.url) if r.url != url else None)
        await tab.route("**/*", block)
        await tab.goto(url)
        await tab.wait_for_function("window.report && report.ready", timeout=15_000)

        for name in ("price", "equity", "drawdown", "position"):
            sizes = await tab.eval_on_selector_all(f"[data-testid=chart-{name}] canvas", "cs => cs.map(c => [c.width, c.height])")
            assert sizes and all(w > 0 and h > 0 for w, h in sizes), (name, sizes)
        data = page_data(path.read_text())["charts"]
        assert await tab.evaluate("report.markers()") == len(data["fills"]["marks"]) > 0
        assert await tab.evaluate("report.levelSeries()") == max(len(p) for p in data["levels"]["p"]) > 0
        assert await tab.evaluate("report.levelPoints()") == sum(len(p) for p in data["levels"]["p"])

        # the attribution the library's license asks for: TradingView's logo, a link, on the price chart
        assert await tab.locator("[data-testid=chart-price] a[href^='https://www.tradingview.com/']").count() == 1

        rows = tab.get_by_test_id("ranking-row")
        assert await rows.count() == len(runs)

        async def column(key: str) -> list[float | None]:
            values = await rows.evaluate_all(f"rs => rs.map(r => r.getAttribute('data-{key}'))")
            return [None if v == "" else float(v) for v in values]

        await tab.get_by_test_id("rank-sort-max_drawdown_pct").click()
        dd = await column("max_drawdown_pct")
        assert dd == sorted(dd)  # smallest drawdown first
        await tab.get_by_test_id("rank-sort-max_drawdown_pct").click()
        assert await column("max_drawdown_pct") == sorted(dd, reverse=True)
        await tab.get_by_test_id("rank-sort-sharpe").click()
        sharpe = await column("sharpe")
        assert sharpe == sorted(sharpe, reverse=True) and sharpe != dd

        # a click on a run lays its equity over the best run's; a second click takes it away
        other = next(i for i in range(len(runs)) if i != page_data(path.read_text())["best"])
        row = tab.locator(f"[data-testid=ranking-row][data-run='{other}']")
        await row.click()
        assert await tab.evaluate("report.compared()") == other
        assert await tab.evaluate("report.comparePoints()") == len(page_data(path.read_text())["runs"][other]["equity"]["t"]) > 0
        assert f"run {other + 1}:" in await tab.get_by_test_id("compare-note").inner_text()
        await row.click()
        assert await tab.evaluate("report.compared()") is None and await tab.get_by_test_id("compare-note").inner_text() == ""

        heat = tab.get_by_test_id("heatmap-ret")
        assert await heat.is_visible() and await heat.get_by_test_id("heat-cell").count() == 6
        await tab.get_by_test_id("heat-rod").check()
        assert await tab.get_by_test_id("heatmap-rod").is_visible() and not await heat.is_visible()
        assert await tab.get_by_test_id("heatmap-rod").get_by_test_id("heat-cell").count() == 6
        await chromium.close()
    assert attempted == []
    assert errors == []


def test_round_trips_are_matched_market_by_market() -> None:
    """An arbitrage buys spot and sells the perpetual at once: that is two open legs, not a trip."""
    from decimal import Decimal as D

    from backtest.metrics import _round_trips
    from backtest.result import TradeRow

    def t(ts: int, symbol: str, side: str, price: str) -> TradeRow:
        return TradeRow(ts=ts, client_order_id=f"c{ts}", side=side, price=D(price), amount=D(1), fee=D(0), liquidity="taker", symbol=symbol)

    legs = [t(0, "BTC/USDT", "buy", "100"), t(1, "BTC/USDT:USDT", "sell", "101"), t(3_600_000, "BTC/USDT", "sell", "102")]
    trips = _round_trips(legs + [t(7_200_000, "BTC/USDT:USDT", "buy", "100")])
    assert trips["round_trips"] == 2 and trips["win_rate_pct"] == 100.0
    assert trips["avg_holding_s"] == pytest.approx(5_400.0, abs=0.01)  # one hour and two hours
    assert _round_trips(legs[:2])["round_trips"] == 0
