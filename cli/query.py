"""`sqt query "SQL"`: DuckDB over the archive's Parquet files, through views (monitors/archive/views.py).

    sqt query "SELECT date_trunc('hour', ts) AS hour, count(*) AS fills FROM fills GROUP BY 1 ORDER BY 1"
    sqt query --csv "SELECT * FROM candles WHERE closed" > candles.csv
    sqt query --json "SELECT * FROM breakers ORDER BY ts DESC LIMIT 5"
    sqt query --shell                       an interactive prompt (.tables, .schema <view>, .refresh, .quit)

Nothing is locked: the archive keeps writing while any number of queries read. A query that
DuckDB refuses prints DuckDB's message and exits 2 (no traceback).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import duckdb

from cli.config import Config
from monitors.archive.views import VIEWS, open_archive

EXIT_SQL = 2

# The README's examples (tests/test_archive_query.py checks their figures on a known archive).
EXAMPLES: dict[str, str] = {
    "fills per hour": """
SELECT date_trunc('hour', ts) AS hour, symbol, count(*) AS fills, sum(amount) AS amount,
       sum(price * amount) AS notional, sum(fee_cost) AS fees
FROM fills GROUP BY ALL ORDER BY hour, symbol""",
    "realized pnl per day": """
SELECT day, instance, pnl - coalesce(lag(pnl) OVER (PARTITION BY instance ORDER BY day), 0) AS realized_pnl,
       pnl AS cumulative
FROM (SELECT CAST(ts AS DATE) AS day, instance, arg_max(realized_pnl, ts) AS pnl FROM grid_states GROUP BY ALL)
ORDER BY instance, day""",
    "slippage against the ticker at command time": """
SELECT f.client_order_id, c.side, c.ts AS commanded, coalesce((t.bid + t.ask) * 0.5, t.last) AS mid_at_command,
       f.price AS fill_price,
       round((CASE WHEN c.side = 'buy' THEN f.price - mid_at_command ELSE mid_at_command - f.price END)
             / mid_at_command * 10000, 2) AS slippage_bps
FROM commands c
JOIN fills f ON f.client_order_id = c.client_order_id AND f.venue = c.venue
ASOF JOIN tickers t ON t.venue = c.venue AND t.symbol = c.symbol AND c.ts >= t.ts
WHERE c.type = 'place_order'
ORDER BY commanded, f.ts""",
}


def add_parser(sub: Any) -> None:
    q = sub.add_parser("query", help="SQL over the archive (views: candles, tickers, fills, orders, commands, grid_states, ...)")
    q.add_argument("sql", nargs="?", help="the query (a view per kind of event; `--shell` lists them)")
    fmt = q.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV with a header line")
    fmt.add_argument("--json", action="store_true", help="a JSON array of objects (decimals as strings)")
    q.add_argument("--shell", action="store_true", help="an interactive prompt")
    q.add_argument("--examples", action="store_true", help="print example queries (fills per hour, PnL per day, slippage)")
    q.add_argument("--archive", type=Path, help="the archive directory (default: the config's, <data_dir>/archive)")


def cell(value: Any) -> str:
    """A value as text: decimals without padding zeros, times in ISO form, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def plain(value: Decimal) -> str:
    if not value.is_finite():
        return str(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time, dt.timedelta)):
        return cell(value) if not isinstance(value, dt.timedelta) else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned text: numbers to the right, everything else to the left."""
    text = [[cell(v) for v in r] for r in rows]
    numeric = [
        all(isinstance(r[i], (int, float, Decimal)) and not isinstance(r[i], bool) for r in rows if r[i] is not None)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in text]
    n = len(rows)
    out.append(f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(out)


def run_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur = con.execute(sql)
    if cur.description is None:
        return [], []
    return [d[0] for d in cur.description], cur.fetchall()


def emit(headers: list[str], rows: list[tuple[Any, ...]], fmt: str, out: TextIO) -> None:
    if not headers:
        return
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(headers)
        w.writerows([cell(v) for v in r] for r in rows)
    elif fmt == "json":
        json.dump([{h: json_value(v) for h, v in zip(headers, r)} for r in rows], out, indent=None)
        out.write("\n")
    else:
        out.write(table(headers, rows) + "\n")


def query_command(config: Config, args: argparse.Namespace) -> int:
    try:
        return _query(config, args)
    except BrokenPipeError:  # `sqt query ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _query(config: Config, args: argparse.Namespace) -> int:
    root: Path = args.archive or config.archive_dir()
    fmt = "csv" if args.csv else "json" if args.json else "table"
    if args.examples:
        for title, sql in EXAMPLES.items():
            print(f"-- {title}{sql};\n")
        return 0
    if args.shell:
        return shell(root)
    if not args.sql:
        print('sqt: give a query (sqt query "SELECT ...") or --shell', file=sys.stderr)
        return EXIT_SQL
    try:
        con = open_archive(root)
        try:
            headers, rows = run_sql(con, args.sql)
        finally:
            con.close()
    except duckdb.Error as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_SQL
    emit(headers, rows, fmt, sys.stdout)
    return 0


HELP = """.tables            the views (one per kind of event)
.schema <view>     its columns
.refresh           see files written since the prompt opened
.quit              leave (or Ctrl-D)
Anything else is SQL, run when it ends with `;` (or on its own line without one)."""


def shell(root: Path, stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    """A prompt over the archive's views; errors are printed and the prompt goes on."""
    out = out or sys.stdout
    interactive = stdin is None and sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401 - line editing and history for input()
    con = open_archive(root)
    out.write(f"archive at {root}: {len(VIEWS)} views; .tables lists them, .help for more\n")
    buffer = ""
    while True:
        try:
            prompt = ("sqt> " if not buffer else "...> ") if interactive else ""
            line = input(prompt) if stdin is None else _read(stdin)
        except EOFError:
            break
        stripped = line.strip()
        if not buffer and stripped.startswith("."):
            word, _, rest = stripped.partition(" ")
            if word in (".quit", ".exit"):
                break
            if word == ".help":
                out.write(HELP + "\n")
            elif word == ".tables":
                out.write(table(["view", "what"], [(v.name, v.what) for v in VIEWS]) + "\n")
            elif word == ".schema":
                _print(con, f"DESCRIBE {rest.strip() or 'events'}", out)
            elif word == ".refresh":
                open_archive(root, con)
                out.write("views refreshed\n")
            else:
                out.write(f"unknown command {word} (.help)\n")
            continue
        buffer = f"{buffer}\n{line}" if buffer else line
        if not buffer.strip():
            buffer = ""
            continue
        if buffer.rstrip().endswith(";") or stdin is not None or not interactive:
            _print(con, buffer, out)
            buffer = ""
    con.close()
    return 0


def _read(stdin: TextIO) -> str:
    line = stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def _print(con: duckdb.DuckDBPyConnection, sql: str, out: TextIO) -> None:
    try:
        headers, rows = run_sql(con, sql)
    except duckdb.Error as exc:
        out.write(f"error: {exc}\n")
        return
    emit(headers, rows, "table", out)
