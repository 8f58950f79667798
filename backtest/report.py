"""The backtest's report: one self-contained HTML file that opens offline.

Everything is inside the file: the vendored lightweight-charts build (web/vendor/) inlined as a
classic script, the data as JSON in a ``<script type="application/json">``, the CSS, and a
small script that draws the charts and sorts the ranking. Nothing is fetched: no CDN, no web
font, no image (tests/test_backtest_report.py opens it in chromium with every request blocked).

For the best run (the highest total return; the only run when there is one): price with the
fills as markers and the grid's levels as step lines, equity, drawdown and inventory over time,
the parameters and the summary. Long series are downsampled for the browser: each bucket keeps
its lowest and highest point (so no drawdown or inventory extreme is hidden), and the page says
how many points it shows of how many. For a sweep: a ranking of every run, sortable by return,
drawdown, return over drawdown, Sharpe and Sortino, and a heatmap of return (and of return over
drawdown) over the first two swept parameters, each cell the best run of its combination.
The charts are the best run's; clicking a run in the ranking lays its equity and drawdown
(coarser) over the best run's.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backtest.metrics import num, pct, summarize, summary_rows
from backtest.result import BacktestResult, Level

VENDOR = Path(__file__).resolve().parent.parent / "web" / "vendor"
LIBRARY = VENDOR / "lightweight-charts.standalone.production.js"
LICENSE = VENDOR / "lightweight-charts.LICENSE"

MAX_POINTS = 5000  # per series drawn
MAX_MARKERS = 1000  # fills drawn one by one up to this; beyond, one marker per side and bucket
COMPARE_POINTS = 400  # per run of a sweep: its equity and drawdown, to lay over the best run's


# ---- downsampling ------------------------------------------------------------------------------


def downsample(values: Sequence[float], max_points: int = MAX_POINTS) -> list[int]:
    """Indices of the points to draw: all of them up to ``max_points``; beyond, the first and
    the last, and in each of (max_points - 2) // 2 equal buckets its lowest and highest point,
    in order. The global minimum and maximum are always kept, and never more than
    ``max_points`` indices come back."""
    n = len(values)
    if n <= max_points:
        return list(range(n))
    buckets = max(1, (max_points - 2) // 2)
    size = math.ceil(n / buckets)
    get = values.__getitem__
    keep = {0, n - 1}
    for lo in range(0, n, size):
        r = range(lo, min(lo + size, n))
        keep.add(min(r, key=get))
        keep.add(max(r, key=get))
    return sorted(keep)


def _series(ts: list[int], values: list[float], max_points: int) -> dict[str, Any]:
    """{"t": [seconds], "v": [values], "n": points in, "shown": points out} for the page."""
    idx = downsample(values, max_points)
    t_out: list[int] = []
    v_out: list[float] = []
    for i in idx:
        sec = ts[i] // 1000
        if t_out and sec <= t_out[-1]:  # the chart needs strictly increasing seconds
            if sec < t_out[-1]:
                continue
            t_out.pop()
            v_out.pop()
        t_out.append(sec)
        v_out.append(values[i])
    return {"t": t_out, "v": v_out, "n": len(values), "shown": len(t_out)}


def _drawdown_pct(start: float, equity: list[float]) -> list[float]:
    """The drawdown at each sample, in percent below the running peak (0 or negative)."""
    out = []
    peak = start
    for e in equity:
        if e > peak:
            peak = e
        out.append(-100.0 * (peak - e) / peak if peak > 0 else 0.0)
    return out


def _markers(result: BacktestResult, max_markers: int) -> dict[str, Any]:
    """Fill markers: one per fill, or (beyond ``max_markers``) one per side and time bucket
    with the number of fills it stands for."""
    trades = sorted(result.trades, key=lambda t: t.ts)
    if len(trades) <= max_markers:
        marks = [{"time": t.ts // 1000, "buy": t.side == "buy", "n": 1} for t in trades]
        return {"marks": marks, "fills": len(trades), "aggregated": False}
    lo, hi = trades[0].ts, trades[-1].ts
    buckets = max(1, max_markers // 2)
    width = max(1, math.ceil((hi - lo + 1) / buckets))
    agg: dict[tuple[int, bool], list[int]] = {}  # (bucket, buy) -> [first ts, count]
    for t in trades:
        key = ((t.ts - lo) // width, t.side == "buy")
        slot = agg.get(key)
        if slot is None:
            agg[key] = [t.ts, 1]
        else:
            slot[1] += 1
    marks = [{"time": ts // 1000, "buy": buy, "n": n} for (_, buy), (ts, n) in agg.items()]
    marks.sort(key=lambda m: (m["time"], not m["buy"]))
    return {"marks": marks, "fills": len(trades), "aggregated": True}


def _levels(levels: list[Level], end_ts: int, max_points: int) -> dict[str, Any]:
    """The grid's levels as steps: {"t": [seconds], "p": [[prices sorted] per time]}. Beyond
    ``max_points`` changes, the set in force at evenly spaced times."""
    ordered = sorted(levels, key=lambda lv: lv.ts)
    n = len(ordered)
    if n > max_points:
        lo, hi = ordered[0].ts, ordered[-1].ts
        picked: list[Level] = []
        j = 0
        for k in range(max_points):
            at = lo + (hi - lo) * k // (max_points - 1)
            while j + 1 < n and ordered[j + 1].ts <= at:
                j += 1
            picked.append(Level(at, ordered[j].prices))
        ordered = picked
    t_out: list[int] = []
    p_out: list[list[float]] = []
    for lv in ordered:
        sec = lv.ts // 1000
        if t_out and sec <= t_out[-1]:
            t_out.pop()
            p_out.pop()
        t_out.append(sec)
        p_out.append(sorted(lv.prices))
    if p_out and end_ts // 1000 > t_out[-1]:  # the last set stays in force to the end
        t_out.append(end_ts // 1000)
        p_out.append(p_out[-1])
    return {"t": t_out, "p": p_out, "changes": n, "shown": len(t_out)}


# ---- sweeps ------------------------------------------------------------------------------------


def param_value(params: dict[str, Any], name: str) -> Any:
    """``params[name]``, or a dotted path into nested tables (``risk.max_position``)."""
    if name in params:
        return params[name]
    cur: Any = params
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def swept_names(results: list[BacktestResult]) -> list[str]:
    """The parameters whose values differ between the runs (when the caller did not say)."""
    if len(results) < 2:
        return []
    names = list(results[0].params)
    return [k for k in names if len({_key(r.params.get(k)) for r in results}) > 1]


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def _label(v: Any) -> str:
    return v if isinstance(v, str) else _key(v)


def _order(v: Any) -> tuple[int, float, str]:
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, _key(v))


def _better(a: float | None, b: float | None) -> bool:
    return a is not None and (b is None or a > b)


def heatmap(results: list[BacktestResult], summaries: list[dict[str, Any]], names: list[str], metric: str) -> dict[str, Any]:
    """Cells of ``metric`` over the first two swept parameters (one row when there is one);
    a combination that several runs share (more than two swept) shows its best run."""
    x_name = names[0]
    y_name = names[1] if len(names) > 1 else None
    xs = sorted({_key(param_value(r.params, x_name)): param_value(r.params, x_name) for r in results}.values(), key=_order)
    ys: list[Any] = (
        sorted({_key(param_value(r.params, y_name)): param_value(r.params, y_name) for r in results}.values(), key=_order)
        if y_name
        else [None]
    )
    best: dict[tuple[str, str], tuple[float | None, int]] = {}
    for i, (r, s) in enumerate(zip(results, summaries)):
        cell = (_key(param_value(r.params, x_name)), _key(param_value(r.params, y_name)) if y_name else _key(None))
        value = s.get(metric)
        if cell not in best or _better(value, best[cell][0]):
            best[cell] = (value, i)
    rows = []
    for y in ys:
        row = []
        for x in xs:
            value, run = best.get((_key(x), _key(y)), (None, None))
            row.append({"value": value, "run": run})
        rows.append(row)
    return {
        "metric": metric,
        "x": x_name,
        "y": y_name,
        "xs": [_label(x) for x in xs],
        "ys": [_label(y) for y in ys] if y_name else [],
        "rows": rows,
        "aggregated": len(names) > 2,
    }


# ---- the page ----------------------------------------------------------------------------------


def best_index(summaries: list[dict[str, Any]]) -> int:
    """The run with the highest total return (the first of equals)."""
    best = 0
    for i, s in enumerate(summaries):
        if _better(s.get("total_return_pct"), summaries[best].get("total_return_pct")):
            best = i
    return best


def run_label(result: BacktestResult, names: list[str]) -> str:
    return " ".join(f"{n}={_label(param_value(result.params, n))}" for n in names) or result.strategy


def _flat(params: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for k, v in params.items():
        if isinstance(v, dict) and v:
            out.extend(_flat(v, f"{prefix}{k}."))
        else:
            out.append((f"{prefix}{k}", _label(v)))
    return out


def _price_format(prices: list[float]) -> dict[str, Any]:
    top = max((abs(p) for p in prices), default=1.0)
    precision = 2 if top >= 100 else 4 if top >= 1 else 6 if top >= 0.01 else 8
    return {"type": "price", "precision": precision, "minMove": 10.0**-precision}


def chart_data(result: BacktestResult, max_points: int = MAX_POINTS, max_markers: int = MAX_MARKERS) -> dict[str, Any]:
    """What the page draws for one run (downsampled)."""
    ts = [s.ts for s in result.samples]
    prices = [s.price for s in result.samples]
    equity = [s.equity for s in result.samples]
    end = ts[-1] if ts else result.until
    return {
        "price": _series(ts, prices, max_points),
        "equity": _series(ts, equity, max_points),
        "drawdown": _series(ts, _drawdown_pct(float(result.start_equity), equity), max_points),
        "position": _series(ts, [s.position for s in result.samples], max_points),
        "fills": _markers(result, max_markers),
        "levels": _levels(result.levels, end, max_points),
        "price_format": _price_format(prices),
        "max_points": max_points,
    }


def compare_data(result: BacktestResult, max_points: int = COMPARE_POINTS) -> dict[str, Any]:
    """A sweep run's equity and drawdown, coarser, for the page to lay over the best run's."""
    ts = [s.ts for s in result.samples]
    equity = [s.equity for s in result.samples]
    return {
        "equity": _series(ts, equity, max_points),
        "drawdown": _series(ts, _drawdown_pct(float(result.start_equity), equity), max_points),
    }


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _attr(x: float | None) -> str:
    return "" if x is None else repr(float(x))


RANK_COLUMNS = [  # key, header, better (high|low), format
    ("total_return_pct", "return", "high", pct),
    ("max_drawdown_pct", "max drawdown", "low", pct),
    ("return_over_drawdown", "return / drawdown", "high", num),
    ("sharpe", "Sharpe", "high", num),
    ("sortino", "Sortino", "high", num),
    ("fills", "fills", "high", lambda x: "—" if x is None else f"{x:,}"),
]


def _ranking(results: list[BacktestResult], summaries: list[dict[str, Any]], names: list[str], best: int) -> str:
    order = sorted(
        range(len(results)), key=lambda i: (summaries[i].get("total_return_pct") is None, -(summaries[i].get("total_return_pct") or 0))
    )
    head = "".join(f"<th>{_esc(n)}</th>" for n in names)
    head += "".join(
        f'<th data-key="{k}" data-better="{b}" class="sortable" data-testid="rank-sort-{k}" aria-sort="none">{_esc(h)}</th>'
        for k, h, b, _ in RANK_COLUMNS
    )
    rows = []
    for i in order:
        s = summaries[i]
        cells = "".join(f"<td>{_esc(_label(param_value(results[i].params, n)))}</td>" for n in names)
        cells += "".join(f'<td class="n">{_esc(f(s.get(k)))}</td>' for k, _, _, f in RANK_COLUMNS)
        attrs = " ".join(f'data-{k}="{_attr(s.get(k))}"' for k, _, _, _ in RANK_COLUMNS)
        mark = ' class="best" title="the run charted above"' if i == best else ""
        rows.append(f'<tr data-testid="ranking-row" data-run="{i}" {attrs}{mark}><td class="n">{i + 1}</td>{cells}</tr>')
    return (
        '<table class="ranking" data-testid="ranking"><thead><tr><th>run</th>'
        + head
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _heat_table(h: dict[str, Any], fmt: Any, testid: str, hidden: bool) -> str:
    values = [c["value"] for row in h["rows"] for c in row if c["value"] is not None]
    scale = max((abs(v) for v in values), default=0.0) or 1.0
    out = [f'<table class="heat" data-testid="{testid}"{" hidden" if hidden else ""}><thead><tr>']
    corner = f"{_esc(h['y'])} \\ {_esc(h['x'])}" if h["y"] else _esc(h["x"])
    out.append(f"<th>{corner}</th>" + "".join(f"<th>{_esc(x)}</th>" for x in h["xs"]) + "</tr></thead><tbody>")
    for j, row in enumerate(h["rows"]):
        label = _esc(h["ys"][j]) if h["y"] else _esc(h["metric"])
        out.append(f"<tr><th>{label}</th>")
        for c in row:
            v = c["value"]
            if v is None:
                out.append('<td class="empty" data-testid="heat-cell">—</td>')
                continue
            alpha = 0.15 + 0.75 * min(1.0, abs(v) / scale)
            color = f"rgba(38,166,154,{alpha:.2f})" if v >= 0 else f"rgba(239,83,80,{alpha:.2f})"
            out.append(
                f'<td data-testid="heat-cell" data-run="{c["run"]}" style="background:{color}" title="run {c["run"] + 1}">{_esc(fmt(v))}</td>'
            )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element (no '</script>' can close it early)."""
    return json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def render(
    results: list[BacktestResult], sweep: list[str] | None = None, *, max_points: int = MAX_POINTS, max_markers: int = MAX_MARKERS
) -> str:
    """The report's HTML (``write_report`` writes it)."""
    if not results:
        raise ValueError("a report needs at least one result")
    summaries = [r.summary or summarize(r) for r in results]
    names = list(sweep) if sweep else swept_names(results)
    best = best_index(summaries)
    run = results[best]
    data = chart_data(run, max_points=max_points, max_markers=max_markers)
    shown = {k: (data[k]["shown"], data[k]["n"]) for k in ("price", "equity", "drawdown", "position")}
    sampled = any(s < n for s, n in shown.values())
    notes = []
    if sampled:
        notes.append(
            f"Long series are downsampled for the browser: each chart shows at most {max_points:,} points, keeping the lowest "
            f"and highest point of every bucket, so no drawdown or inventory extreme is hidden ("
            + ", ".join(f"{k} {s:,} of {n:,}" for k, (s, n) in shown.items())
            + ")."
        )
    else:
        notes.append("Every sample is drawn (no downsampling).")
    if data["fills"]["aggregated"]:
        notes.append(
            f"{data['fills']['fills']:,} fills are drawn as {len(data['fills']['marks']):,} markers: one per side and time bucket, "
            "labelled with the number of fills it stands for."
        )
    if data["levels"]["changes"] > max_points:
        notes.append(
            f"The grid levels changed {data['levels']['changes']:,} times; the steps show the set in force at {max_points:,} times."
        )
    which = (
        f"Charts: run {best + 1} of {len(results)}, the highest total return ({_esc(run_label(run, names))})."
        if len(results) > 1
        else "Charts: the run."
    )

    summary_html = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in summary_rows(summaries[best]))
    params_html = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in _flat(run.params)) or (
        '<tr><td colspan="2">none</td></tr>'
    )
    sweep_html = ""
    runs: list[dict[str, Any]] = []
    if len(results) > 1:
        runs = [{"label": f"run {i + 1}: {run_label(r, names)}", **compare_data(r)} for i, r in enumerate(results)]
        parts = [
            f'<section><h2>Ranking ({len(results)} runs)</h2><p class="note">Click a column to sort, again to reverse. ',
            "Click a run to lay its equity and drawdown over the best run's (coarser: at most "
            f"{COMPARE_POINTS:,} points); click it again to take it away.</p>",
            '<p class="note compare" data-testid="compare-note"></p>',
        ]
        parts.append(_ranking(results, summaries, names, best))
        parts.append("</section>")
        if names:
            h_ret = heatmap(results, summaries, names, "total_return_pct")
            h_rod = heatmap(results, summaries, names, "return_over_drawdown")
            agg = (
                " Each cell is the best of the runs sharing its two values (more than two parameters were swept)."
                if h_ret["aggregated"]
                else ""
            )
            parts.append(
                "<section><h2>Heatmap</h2>"
                '<p class="note"><label><input type="radio" name="heat" value="ret" checked data-testid="heat-ret"> return</label> '
                '<label><input type="radio" name="heat" value="rod" data-testid="heat-rod"> return / drawdown</label>'
                f" over {_esc(' × '.join(names[:2]))}.{agg} Click a cell to find its run in the ranking.</p>"
                + _heat_table(h_ret, pct, "heatmap-ret", False)
                + _heat_table(h_rod, num, "heatmap-rod", True)
                + "</section>"
            )
        sweep_html = "".join(parts)

    library = LIBRARY.read_text()
    if "</script" in library.lower():
        raise ValueError(f"{LIBRARY} contains '</script' and cannot be inlined")
    title = f"backtest · {run.strategy} · {run.symbol}"
    return PAGE.format(
        title=_esc(title),
        css=CSS,
        heading=_esc(title),
        which=which,
        notes="".join(f'<p class="note" data-testid="note">{_esc(n)}</p>' for n in notes),
        summary=summary_html,
        params=params_html,
        sweep=sweep_html,
        data=_script_json({"best": best, "charts": data, "runs": runs}),
        library=library,
        license=_esc(LICENSE.read_text()),
        script=SCRIPT,
    )


def write_report(results: list[BacktestResult], path: Path, sweep: list[str] | None = None) -> None:
    """One self-contained HTML file of ``results`` (one run, or a sweep named by ``sweep``:
    the parameters swept, the first two of which the heatmap spans; when None, the parameters
    whose values differ between the runs)."""
    Path(path).write_text(render(results, sweep))


CSS = """
:root { --bg:#0b0e13; --bg2:#11151c; --line:#1f2630; --text:#d6dde6; --muted:#7d8796; --up:#26a69a; --down:#ef5350; }
* { box-sizing: border-box; }
body { margin: 0; padding: 16px 20px 40px; background: var(--bg); color: var(--text);
  font: 13px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 14px; margin: 22px 0 8px; color: #aeb8c6; }
a { color: #8fb4ff; }
.note { color: var(--muted); margin: 4px 0; }
.chart { width: 100%; border: 1px solid var(--line); margin-bottom: 6px; position: relative; }
.chart-title { color: var(--muted); font-size: 12px; margin: 10px 0 2px; }
#chart-price { height: 360px; } #chart-equity { height: 220px; } #chart-drawdown, #chart-position { height: 160px; }
.tables { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
table { border-collapse: collapse; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
.kv th { color: var(--muted); font-weight: normal; white-space: nowrap; }
.kv td { font-variant-numeric: tabular-nums; }
.ranking td.n, .heat td { text-align: right; font-variant-numeric: tabular-nums; }
.ranking th.sortable { cursor: pointer; user-select: none; white-space: nowrap; }
.ranking th[aria-sort=ascending]::after { content: ' ▲'; } .ranking th[aria-sort=descending]::after { content: ' ▼'; }
.ranking tbody tr { cursor: pointer; } .ranking tr.compared td { background: rgba(240,185,11,0.15); }
.compare { color: #f0b90b; } .ranking tr.best td { color: #fff; font-weight: 600; }
.ranking tr.flash td { background: #243047; }
.heat th { color: var(--muted); font-weight: normal; }
.heat td { min-width: 72px; border: 1px solid var(--bg); cursor: pointer; } .heat td.empty { color: var(--muted); cursor: default; }
footer { margin-top: 30px; color: var(--muted); font-size: 12px; }
details pre { white-space: pre-wrap; max-height: 300px; overflow: auto; background: var(--bg2); padding: 8px; }
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<h1>{heading}</h1>
<p class="note" data-testid="which">{which}</p>
{notes}
<div class="chart-title">price (close), fills (▲ buy, ▼ sell) and grid levels</div>
<div id="chart-price" class="chart" data-testid="chart-price"></div>
<div class="chart-title">equity</div>
<div id="chart-equity" class="chart" data-testid="chart-equity"></div>
<div class="chart-title">drawdown (% below the running peak)</div>
<div id="chart-drawdown" class="chart" data-testid="chart-drawdown"></div>
<div class="chart-title">inventory (base quantity: + long, − short)</div>
<div id="chart-position" class="chart" data-testid="chart-position"></div>
<p class="note">Times are UTC. Drag to pan, scroll to zoom; the four charts move together.</p>
<div class="tables">
<section><h2>Summary</h2><table class="kv" data-testid="summary">{summary}</table></section>
<section><h2>Parameters</h2><table class="kv" data-testid="params">{params}</table></section>
</div>
{sweep}
<footer>
Charts by <a href="https://www.tradingview.com/" target="_blank" rel="noopener">TradingView</a> Lightweight Charts™ ·
Copyright (c) 2023 TradingView, Inc. · Apache License 2.0 (below). The chart library is inlined in this file: it opens offline.
<details><summary>Lightweight Charts license</summary><pre>{license}</pre></details>
</footer>
<script type="application/json" id="report-data">{data}</script>
<script>{library}</script>
<script>{script}</script>
</body>
</html>
"""

SCRIPT = r"""
(() => {
  'use strict';
  const LC = window.LightweightCharts;
  const D = JSON.parse(document.getElementById('report-data').textContent).charts;
  const UP = '#26a69a', DOWN = '#ef5350';
  const charts = [];
  const api = (window.report = { charts, ready: false });

  function chart(id, extra) {
    const c = LC.createChart(document.getElementById(id), Object.assign({
      autoSize: true,
      layout: { background: { type: LC.ColorType.Solid, color: '#0b0e13' }, textColor: '#8b95a5', fontSize: 11,
                attributionLogo: id === 'chart-price' },
      grid: { vertLines: { color: 'rgba(255,255,255,0.035)' }, horzLines: { color: 'rgba(255,255,255,0.035)' } },
      rightPriceScale: { borderColor: '#1f2630' },
      timeScale: { borderColor: '#1f2630', timeVisible: true, secondsVisible: false },
      crosshair: { mode: LC.CrosshairMode.Normal },
    }, extra || {}));
    charts.push(c);
    return c;
  }
  const points = (s) => s.t.map((t, i) => ({ time: t, value: s.v[i] }));

  // price, fills, levels
  const price = chart('chart-price');
  const line = price.addLineSeries({ color: '#d6dde6', lineWidth: 1, priceFormat: D.price_format });
  line.setData(points(D.price));
  const marks = D.fills.marks.map((m) => ({
    time: m.time,
    position: m.buy ? 'belowBar' : 'aboveBar',
    color: m.buy ? UP : DOWN,
    shape: m.buy ? 'arrowUp' : 'arrowDown',
    text: m.n > 1 ? String(m.n) : '',
  }));
  line.setMarkers(marks);
  const width = D.levels.p.reduce((w, p) => Math.max(w, p.length), 0);
  const levelSeries = [];
  for (let k = 0; k < width; k++) {
    const s = price.addLineSeries({
      color: 'rgba(240,185,11,0.35)', lineWidth: 1, lineType: LC.LineType.WithSteps, lineStyle: LC.LineStyle.Dotted,
      priceLineVisible: false, lastValueVisible: false, crosshairMarkerVisible: false, priceFormat: D.price_format,
    });
    s.setData(D.levels.t.map((t, i) => (k < D.levels.p[i].length ? { time: t, value: D.levels.p[i][k] } : { time: t })));
    levelSeries.push(s);
  }

  const eq = chart('chart-equity');
  eq.addLineSeries({ color: '#4c8dff', lineWidth: 1 }).setData(points(D.equity));
  const dd = chart('chart-drawdown');
  dd.addAreaSeries({ lineColor: DOWN, topColor: 'rgba(239,83,80,0.05)', bottomColor: 'rgba(239,83,80,0.4)', lineWidth: 1,
                     invertFilledArea: true, priceFormat: { type: 'custom', formatter: (x) => x.toFixed(2) + '%' } })
    .setData(points(D.drawdown));
  const pos = chart('chart-position');
  pos.addBaselineSeries({ baseValue: { type: 'price', price: 0 }, lineWidth: 1,
                          priceFormat: { type: 'price', precision: 6, minMove: 0.000001 } }).setData(points(D.position));

  charts.forEach((c) => c.timeScale().fitContent());
  let syncing = false;
  charts.forEach((c) => c.timeScale().subscribeVisibleTimeRangeChange((range) => {
    if (syncing || !range) return;
    syncing = true;
    for (const o of charts) if (o !== c) { try { o.timeScale().setVisibleRange(range); } catch (e) { /* no data */ } }
    syncing = false;
  }));

  api.markers = () => line.markers().length;
  api.levelSeries = () => levelSeries.length;
  api.levelPoints = () => levelSeries.reduce((n, s) => n + s.data().filter((p) => 'value' in p).length, 0);
  api.points = () => ({ price: line.data().length, equity: D.equity.t.length });

  // ranking: sort by a column (best first on the first click, reversed on the next)
  const table = document.querySelector('[data-testid=ranking]');
  if (table) {
    const body = table.tBodies[0];
    table.querySelectorAll('th[data-key]').forEach((th) => th.addEventListener('click', () => {
      const key = th.dataset.key;
      const first = th.dataset.better === 'low' ? 'ascending' : 'descending';
      const dir = th.getAttribute('aria-sort') === first ? (first === 'ascending' ? 'descending' : 'ascending') : first;
      table.querySelectorAll('th[data-key]').forEach((o) => o.setAttribute('aria-sort', 'none'));
      th.setAttribute('aria-sort', dir);
      const sign = dir === 'ascending' ? 1 : -1;
      const val = (tr) => { const v = tr.getAttribute('data-' + key); return v === '' ? null : parseFloat(v); };
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = val(a), y = val(b);
        if (x === null || y === null) return (x === null) - (y === null);  // undefined last, either way
        return sign * (x - y) || (+a.dataset.run - +b.dataset.run);
      });
      body.append(...rows);
    }));
    document.querySelectorAll('.heat td[data-run]').forEach((td) => td.addEventListener('click', () => {
      const tr = body.querySelector('tr[data-run="' + td.dataset.run + '"]');
      if (!tr) return;
      tr.scrollIntoView({ block: 'center' });
      tr.classList.add('flash');
      setTimeout(() => tr.classList.remove('flash'), 1200);
    }));
  }
  document.querySelectorAll('input[name=heat]').forEach((r) => r.addEventListener('change', () => {
    document.querySelector('[data-testid=heatmap-ret]').hidden = r.value !== 'ret' || !r.checked;
    document.querySelector('[data-testid=heatmap-rod]').hidden = r.value !== 'rod' || !r.checked;
  }));
  // a sweep: lay another run's equity and drawdown over the best run's
  const RUNS = JSON.parse(document.getElementById('report-data').textContent).runs;
  let compared = null;
  api.compared = () => (compared ? compared.run : null);
  api.comparePoints = () => (compared ? compared.eq.data().length : 0);
  function compare(run) {
    if (compared) {
      eq.removeSeries(compared.eq);
      dd.removeSeries(compared.dd);
      document.querySelectorAll('.ranking tr.compared').forEach((tr) => tr.classList.remove('compared'));
    }
    const again = compared && compared.run === run;
    compared = null;
    const note = document.querySelector('[data-testid=compare-note]');
    if (again || !RUNS[run]) { if (note) note.textContent = ''; return; }
    const style = { color: '#f0b90b', lineWidth: 1, priceLineVisible: false, lastValueVisible: true };
    const c = { run, eq: eq.addLineSeries(style), dd: dd.addLineSeries(Object.assign({}, style, {
      priceFormat: { type: 'custom', formatter: (x) => x.toFixed(2) + '%' } })) };
    c.eq.setData(points(RUNS[run].equity));
    c.dd.setData(points(RUNS[run].drawdown));
    compared = c;
    const tr = document.querySelector('.ranking tr[data-run="' + run + '"]');
    if (tr) tr.classList.add('compared');
    if (note) note.textContent = 'Compared (yellow, on equity and drawdown): ' + RUNS[run].label + '.';
  }
  document.querySelectorAll('.ranking tbody tr').forEach((tr) => tr.addEventListener('click', () => compare(+tr.dataset.run)));
  api.ready = true;
})();
"""
