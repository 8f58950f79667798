"""`open_archive(dir)`: an in-memory DuckDB with one view per kind of event over the archive's
Parquet files (ADR 0022). Nothing is copied and no database file is opened: the views read the
files as they are, so any number of readers may query while the archive writes.

Every view exists even when its files do not yet: it is then empty, with the columns the files
will have (columns.py), so a query never fails on a missing glob. A view's files are listed
when the view is created: reopen (or `.refresh` in `sqt query --shell`) to see newer files.

Columns: the envelope (`stream`, `seq`, `subject`, `stored_at` TIMESTAMP, `msg_id`, `type`),
the message's own fields typed from its schema (Decimals are DECIMAL(38,12), so that price *
amount stays exact; times such as `ts`, `ts_local`, `open_time`, `next_funding_time` are
TIMESTAMP (UTC), each with its integer milliseconds beside it as `<name>_ms`; nested values are
JSON), then `headers` and `raw` (the payload as JSON text), and `date` (the partition: the UTC
day of `stored_at`). For example:

    SELECT open_time_ms, open, high, low, close, volume FROM candles
    WHERE venue = 'sim' AND symbol = 'BTC/USDT:USDT' AND closed ORDER BY open_time_ms
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from monitors.archive.columns import UNDECODED, UNTYPED, empty_select, quote, schema_of


@dataclass(frozen=True)
class View:
    name: str
    streams: tuple[str, ...]  # the streams whose directories hold its files ("*": every one)
    types: tuple[str, ...]  # the file types it reads ("*": every one)
    where: str = ""  # a filter over those files (e.g. grid_states: the grid's states only)
    what: str = ""


VIEWS: tuple[View, ...] = (
    View("candles", ("MARKET",), ("candle",), what="bars, every update; `closed` marks the final one"),
    View("tickers", ("MARKET",), ("ticker",)),
    View("trades", ("MARKET",), ("trade",), what="public trades on the venue"),
    View("funding_rates", ("MARKET",), ("funding_rate",)),
    View("gaps", ("MARKET", "ACCOUNT"), ("gap",), what="a publisher's gap markers"),
    View("orders", ("ACCOUNT",), ("order",), what="order updates"),
    View("fills", ("ACCOUNT",), ("fill",), what="our executions"),
    View("positions", ("ACCOUNT",), ("position",)),
    View("balances", ("ACCOUNT",), ("balance",)),
    View("funding_payments", ("ACCOUNT",), ("funding_payment",)),
    View("borrow_interest", ("ACCOUNT",), ("borrow_interest",)),
    View("liquidations", ("ACCOUNT",), ("liquidation",)),
    View("commands", ("COMMAND",), ("place_order", "cancel_order", "cancel_all"), what="place, cancel and cancel-all commands"),
    View("strategy_states", ("OPS",), ("strategy_state",), what="every strategy's published state"),
    View("grid_states", ("OPS",), ("strategy_state",), where="component = 'grid'", what="the grids' published states"),
    View("breakers", ("OPS",), ("breaker",), what="risk breaker changes"),
    View("alerts", ("OPS",), ("risk_alert",)),
    View("reconciliations", ("OPS",), ("reconciliation",), what="reconciler findings"),
    View("controls", ("OPS",), ("control",), what="operator controls"),
    View("funding_spreads", ("OPS",), ("funding_spread",)),
    View("venue_snapshots", ("OPS",), ("venue_snapshot",)),
    View("dlq", ("DLQ",), ("*",), what="dead letters: their raw payload, and the reason in `headers`"),
    View("undecoded", ("*",), (UNDECODED, UNTYPED), what="payloads that did not decode, on any stream"),
    View("events", ("*",), ("*",), what="everything: the envelope, `type` and `raw`"),
)
ENVELOPE_ONLY = "stream, seq, subject, stored_at, msg_id, type, headers, raw, date"


def globs(root: Path, view: View) -> list[str]:
    """The file patterns of a view that match at least one file now."""
    out = []
    for stream in view.streams:
        for tag in view.types:
            pattern = f"{stream}/date=*/{tag}-*.parquet" if tag != "*" else f"{stream}/date=*/*.parquet"
            if any(root.glob(pattern)):
                out.append(str(root / pattern))
    return out


def view_sql(root: Path, view: View) -> str:
    """The SELECT behind a view: its files read by column name (a type's columns may grow
    between versions), or an empty SELECT of the right columns while there are none."""
    patterns = globs(root, view)
    if not patterns:
        types = view.types if view.types != ("*",) else (UNDECODED,)
        body = empty_select(types)
        return f"SELECT {ENVELOPE_ONLY} FROM ({body})" if view.name in ("events", "dlq") else body
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in patterns) + "]"
    source = f"read_parquet({files}, union_by_name = true, hive_partitioning = true)"
    what = ENVELOPE_ONLY if view.name in ("events", "dlq") else "*"
    sql = f"SELECT {what} FROM {source}"
    return sql + (f" WHERE {view.where}" if view.where else "")


def open_archive(directory: str | Path, db: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB (or `db`) with every view of VIEWS over the archive at `directory`."""
    root = Path(directory)
    con = db if db is not None else duckdb.connect(":memory:")
    for view in VIEWS:
        con.execute(f"CREATE OR REPLACE VIEW {quote(view.name)} AS {view_sql(root, view)}")
    return con


def columns(tag: str) -> list[tuple[str, str]]:
    """The columns of a type's files (for docs and `sqt query --shell`'s `.schema`)."""
    return schema_of(tag)
