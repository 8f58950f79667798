"""Candles the backtester reads: one Parquet format, the files it is imported from, and the checks.

The stored format (`sqt data import` writes it, `load_bars` reads it):

    <data_dir>/candles/<venue>/<symbol token>/<interval>.parquet
    open_time BIGINT (ms, bar start), open, high, low, close, volume DECIMAL(38,18), sorted by open_time
    Parquet key-value metadata: venue, symbol, interval, format ("sqt-candles-1")

DECIMAL(38,18): 38 digits is the widest DuckDB decimal (a 128-bit integer, exact); 18 places hold
every tick and lot a venue quotes (8 is common, a wei is 18) and leave 20 integer digits, far above
the journal's largest price (1e12) and volume (1e15). A value with more than 18 places is refused
on import, never rounded.

What is imported (`read_csv`, `read_freqtrade`, and the archive and ccxt sources in
backtest/candle_sources.py) goes through one check (`check`) before anything is written:

- every row: a time on the interval's grid, prices positive and finite, low <= open, close <= high,
  volume >= 0, the journal's bounds (a `Bar` must accept it); a bad row names its file and line;
- rows sorted by time: an unsorted file is refused (naming the first row out of order), not sorted
  for you: rows out of order usually mean two files were glued or a column was misread;
- one candle per time: an identical repeat is dropped and counted, a different one is refused;
- gaps (missing candles) are reported (count, largest, the first few) and never filled.

CSV (venues/sim/candle_csv.py): `timestamp,open,high,low,close,volume`, header optional, extra
columns ignored; the timestamp in integer milliseconds or ISO-8601 (UTC unless it names an offset).
Seconds are not accepted: a file in seconds (or microseconds) is refused by the grid check, which
says so. A text file's interval is the smallest step between its rows unless one is given.
"""

from __future__ import annotations

import gzip
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal
from pathlib import Path
from typing import Any, Literal

import duckdb
import msgspec

from schemas.subjects import symbol_token
from venues.sim.candle_csv import PRICE_COLUMNS, CandleError, Row, parse_time, read_csv
from venues.sim.journal import Bar

# The CSV reader lives beside the simulated exchange, which reads candle files too (and may not
# import from here); it is part of this module's API all the same.
__all__ = ["CandleError", "Row", "parse_time", "read_csv"]

FORMAT = "sqt-candles-1"
SCALE = 18
DECIMAL_TYPE = f"DECIMAL(38,{SCALE})"
_COLUMNS = "{'open_time': 'BIGINT', " + ", ".join(f"'{c}': '{DECIMAL_TYPE}'" for c in PRICE_COLUMNS) + "}"
_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}
_WIDE = Context(prec=100)  # for counting decimal places without rounding any away
_SHOWN_GAPS = 5

Source = Literal["csv", "freqtrade"]


# ----------------------------------------------------------------------------- times and intervals


def interval_ms(interval: str) -> int:
    """`1m`, `15m`, `1h`, `4h`, `1d` ... -> milliseconds (whole minutes: a `Bar` starts on a minute)."""
    m = re.fullmatch(r"([1-9][0-9]*)([mhd])", interval)
    if m is None:
        raise CandleError(f"interval {interval!r}: expected a number and m, h or d (1m, 5m, 1h, 4h, 1d)")
    return int(m.group(1)) * _UNITS[m.group(2)]


def interval_name(ms: int) -> str:
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    raise CandleError(f"{ms} ms is not a whole number of minutes")


def iso(ms: int) -> str:
    """UTC, to the second (candle times are whole minutes)."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- reading sources


def read_freqtrade(path: str | Path) -> list[Row]:
    """freqtrade's JSON candle file (`[[ts, o, h, l, c, v], ...]`, ts in ms; `.json.gz` too). The
    numbers are read from their text, exactly (0.1 stays 0.1): no float in between."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    try:
        data = msgspec.json.Decoder(float_hook=Decimal).decode(raw)
    except msgspec.DecodeError as exc:
        raise CandleError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise CandleError(f"{path}: expected a list of [timestamp, open, high, low, close, volume]")
    rows: list[Row] = []
    lines = _row_lines(raw, len(data))
    for i, item in enumerate(data):
        where = f"{path}:{lines[i]} (candle #{i + 1})"
        if not isinstance(item, list) or len(item) < 6:
            raise CandleError(f"{where}: this is not [timestamp, open, high, low, close, volume]: {item!r}")
        ts = item[0]
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise CandleError(f"{where}: the timestamp must be integer milliseconds, got {ts!r}")
        values = []
        for name, x in zip(PRICE_COLUMNS, item[1:6], strict=True):
            if isinstance(x, bool) or not isinstance(x, (int, Decimal)):
                raise CandleError(f"{where}: `{name}` is not a number: {x!r}")
            values.append(Decimal(x))
        o, h, lo, c, v = values
        rows.append(Row(where, ts, (o, h, lo, c, v)))
    return rows


def _row_lines(raw: bytes, count: int) -> list[str]:
    """The line of each candle of a JSON file, for messages: freqtrade writes one line (every
    candle is on line 1, so each is named by its number too); a pretty-printed file has one
    candle a line."""
    if raw.count(b"\n", 0, len(raw.rstrip())) == 0:
        return ["1"] * count
    lines, line, pos = [], 1, 0
    for m in re.finditer(rb"\[\s*-?[0-9]", raw):  # the start of an inner [ts, ...]
        line += raw.count(b"\n", pos, m.start())
        pos = m.start()
        lines.append(str(line))
    return lines if len(lines) == count else ["?"] * count


def read_rows(path: str | Path, fmt: Source | None = None) -> list[Row]:
    """A candle file by its format, or by its name: `.csv`, `.json`/`.json.gz` (freqtrade)."""
    fmt = fmt or guess_format(path)
    return read_csv(path) if fmt == "csv" else read_freqtrade(path)


def guess_format(path: str | Path) -> Source:
    name = Path(path).name.lower()
    if name.endswith((".json", ".json.gz")):
        return "freqtrade"
    if name.endswith((".csv", ".txt")):
        return "csv"
    raise CandleError(f"{path}: cannot tell its format from its name; pass --format csv or --format freqtrade")


# ----------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Gap:
    """Candles missing between two that are there (`after` and `before`: their open times)."""

    after: int
    before: int
    missing: int

    def __str__(self) -> str:
        return f"{self.missing} missing from {iso(self.after)} to {iso(self.before)}"


@dataclass
class Checked:
    """Candles that passed every check, sorted, one per time, with what was noticed on the way."""

    bars: list[Bar]
    wheres: list[str]  # where each bar was read, for messages about it later (a merge conflict)
    interval: int
    duplicates: int = 0  # identical repeats dropped
    gaps: list[Gap] = field(default_factory=list)

    def window(self, since_ms: int | None, until_ms: int | None) -> Checked:
        """The candles with since_ms <= open_time < until_ms (the gaps within them)."""
        keep = [
            i
            for i, b in enumerate(self.bars)
            if (since_ms is None or b.open_time >= since_ms) and (until_ms is None or b.open_time < until_ms)
        ]
        bars = [self.bars[i] for i in keep]
        return Checked(
            bars, [self.wheres[i] for i in keep], self.interval, self.duplicates, find_gaps((b.open_time for b in bars), self.interval)
        )


def _places_ok(x: Decimal) -> bool:
    exponent = x.as_tuple().exponent
    if isinstance(exponent, int) and exponent >= -SCALE:
        return True
    exponent = _WIDE.normalize(x).as_tuple().exponent  # 1.50000000000000000000 has 1 place
    return isinstance(exponent, int) and exponent >= -SCALE


def check_row(row: Row, step: int) -> Bar:
    """One row as a `Bar`, or a CandleError naming its file and line and what is wrong."""
    where, ts = row.where, row.open_time
    for name, x in zip(PRICE_COLUMNS, row.values, strict=True):
        if not x.is_finite():
            raise CandleError(f"{where}: `{name}` must be a finite number, got {x}")
        if not _places_ok(x):
            raise CandleError(f"{where}: `{name}` {x} has more than {SCALE} decimal places (it would be rounded)")
    if ts % step or ts < 0:
        raise CandleError(f"{where}: the time {ts} is not the start of a {interval_name(step)} candle{_unit_hint(ts)}")
    try:
        bar = Bar(ts, *row.values)
    except ValueError as exc:
        raise CandleError(f"{where}: {exc}") from None
    for name in ("open", "close"):
        if not bar.low <= getattr(bar, name) <= bar.high:
            raise CandleError(f"{where}: `{name}` {getattr(bar, name)} is outside low {bar.low} .. high {bar.high}")
    return bar


def _unit_hint(ts: int) -> str:
    if 0 < ts < 10**11:
        return " (times are milliseconds; this looks like seconds)"
    if ts >= 10**14:
        return " (times are milliseconds; this looks like microseconds)"
    return f" ({iso(ts)})" if ts >= 0 else ""


def infer_interval(rows: Sequence[Row] | Sequence[Bar]) -> int:
    """The smallest step between consecutive rows or bars (1m when it cannot tell)."""
    times = [r.open_time for r in rows]
    steps = {b - a for a, b in zip(times, times[1:], strict=False)}
    positive = [s for s in steps if s > 0]
    step = min(positive, default=60_000)
    return step if step % 60_000 == 0 else 60_000


def check(rows: Sequence[Row], step: int) -> Checked:
    """Every check of the module's notes, on rows in the order they were read."""
    out = Checked([], [], step)
    prev: Bar | None = None
    for row in rows:
        bar = check_row(row, step)
        if prev is not None:
            if bar.open_time < prev.open_time:
                raise CandleError(
                    f"{row.where}: {iso(bar.open_time)} comes after {iso(prev.open_time)} ({out.wheres[-1]}): rows must be sorted by time"
                )
            if bar.open_time == prev.open_time:
                if bar != prev:
                    raise CandleError(
                        f"{row.where}: a second candle at {iso(bar.open_time)} ({bar.open_time}) that differs from {out.wheres[-1]}"
                    )
                out.duplicates += 1
                continue
            if bar.open_time - prev.open_time > step:
                out.gaps.append(Gap(prev.open_time, bar.open_time, (bar.open_time - prev.open_time) // step - 1))
        out.bars.append(bar)
        out.wheres.append(row.where)
        prev = bar
    return out


def find_gaps(times: Iterable[int], step: int) -> list[Gap]:
    gaps, prev = [], None
    for t in times:
        if prev is not None and t - prev > step:
            gaps.append(Gap(prev, t, (t - prev) // step - 1))
        prev = t
    return gaps


def describe_gaps(gaps: Sequence[Gap], step: int) -> str:
    """`no gaps`, or the count, the candles missing, the largest and the first few."""
    if not gaps:
        return "no gaps"
    missing = sum(g.missing for g in gaps)
    head = f"{plural(len(gaps), 'gap')}, {plural(missing, interval_name(step) + ' candle')} missing (not filled)"
    if len(gaps) == 1:
        return f"{head}: {gaps[0]}"
    largest = max(gaps, key=lambda g: g.missing)
    more = f"; and {len(gaps) - _SHOWN_GAPS} more" if len(gaps) > _SHOWN_GAPS else ""
    return f"{head}; largest: {largest}; first: {'; '.join(str(g) for g in gaps[:_SHOWN_GAPS])}{more}"


def plural(n: int, what: str) -> str:
    return f"{n:,} {what}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------------- the stored format


@dataclass(frozen=True)
class Meta:
    venue: str
    symbol: str
    interval: str


def default_path(data_dir: str | Path, venue: str, symbol: str, interval: str) -> Path:
    return Path(data_dir) / "candles" / venue / symbol_token(symbol) / f"{interval}.parquet"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def write_parquet(path: str | Path, bars: Sequence[Bar], meta: Meta) -> None:
    """Bars (sorted, checked) as the stored format, atomically: a reader sees the old file or the
    new one, never half of one. Rows go to DuckDB as text, so nothing passes through a float."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, text = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".csv", dir=path.parent)
    staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            for b in bars:
                fh.write(f"{b.open_time},{b.open:f},{b.high:f},{b.low:f},{b.close:f},{b.volume:f}\n")
        kv = ", ".join(
            f"{k}: {_sql_text(v)}"
            for k, v in (("venue", meta.venue), ("symbol", meta.symbol), ("interval", meta.interval), ("format", FORMAT))
        )
        con = duckdb.connect()
        try:
            con.execute(
                f"COPY (SELECT * FROM read_csv({_sql_text(text)}, header = false, auto_detect = false, columns = {_COLUMNS}) "
                f"ORDER BY open_time) TO {_sql_text(str(staged))} (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{kv}}})"
            )
        finally:
            con.close()
        os.replace(staged, path)
    finally:
        Path(text).unlink(missing_ok=True)
        staged.unlink(missing_ok=True)


def read_meta(path: str | Path) -> Meta:
    found = _kv(path)
    if found.get("format") != FORMAT:
        raise CandleError(f"{path}: not a candle file written by `sqt data import` (no format {FORMAT!r} in its metadata)")
    return Meta(found.get("venue", ""), found.get("symbol", ""), found.get("interval", ""))


def _kv(path: str | Path) -> dict[str, str]:
    con = duckdb.connect()
    try:
        pairs = con.execute("SELECT key, value FROM parquet_kv_metadata(?)", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise CandleError(f"{path}: not a readable Parquet file ({exc})") from None
    finally:
        con.close()
    return {bytes(k).decode(): bytes(v).decode() for k, v in pairs}


def _trimmed(column: str) -> str:
    # DECIMAL(38,18) prints 18 places: 68000.123456780000000000 -> 68000.12345678 (the same value,
    # written as it was imported), by trimming text, exactly.
    return f"rtrim(rtrim({column}::VARCHAR, '0'), '.')"


def load_bars(path: str | Path, since_ms: int | None = None, until_ms: int | None = None) -> list[Bar]:
    """The stored candles with since_ms <= open_time < until_ms, sorted, as Decimal bars.

    DuckDB prints the decimals and msgspec turns the text into Decimals and Bars: of the exact ways
    measured (DuckDB's own Decimal conversion, text + a comprehension, text + JSON) the fastest,
    about 1.6 s for a year of 1-minute candles (DuckDB's Decimals: 2.6 s)."""
    read_meta(path)
    where, params = [], []
    if since_ms is not None:
        where.append("open_time >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("open_time < ?")
        params.append(until_ms)
    columns = ", ".join(_trimmed(c) for c in PRICE_COLUMNS)
    sql = f"SELECT open_time, {columns} FROM read_parquet(?)" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY open_time"
    con = duckdb.connect()
    try:
        rows = con.execute(sql, [str(path), *params]).fetchall()
    except duckdb.Error as exc:
        raise CandleError(f"{path}: {exc}") from None
    finally:
        con.close()
    try:
        return msgspec.convert(rows, list[Bar])
    except msgspec.ValidationError as exc:
        raise CandleError(f"{path}: a stored candle is not valid ({exc})") from None


@dataclass(frozen=True)
class Summary:
    """What `sqt data ls` shows of a stored file."""

    path: Path
    meta: Meta
    rows: int
    first: int | None
    last: int | None
    gaps: int
    missing: int


def summarize(path: str | Path) -> Summary:
    meta = read_meta(path)
    step = interval_ms(meta.interval)
    con = duckdb.connect()
    try:
        found = con.execute(
            "SELECT count(*), min(open_time), max(open_time), count(*) FILTER (WHERE d > ?), "
            "coalesce(sum(d // ? - 1) FILTER (WHERE d > ?), 0) "
            "FROM (SELECT open_time, open_time - lag(open_time) OVER (ORDER BY open_time) AS d FROM read_parquet(?))",
            [step, step, step, str(path)],
        ).fetchone()
    finally:
        con.close()
    assert found is not None
    rows, first, last, gaps, missing = found
    return Summary(Path(path), meta, int(rows), first, last, int(gaps), int(missing))


# ----------------------------------------------------------------------------- merging and reading any


@dataclass
class Merged:
    bars: list[Bar]
    added: int = 0  # not stored before
    kept: int = 0  # stored already, identical
    replaced: int = 0  # stored, different, replaced (only with `replace`)


def merge(stored: Sequence[Bar], new: Checked, *, replace: bool = False, path: str | Path = "") -> Merged:
    """The stored candles with the new ones added. A new candle that disagrees with the stored one
    at its time is an error naming the time (the first few), unless `replace` (the new one wins)."""
    by_time = {b.open_time: b for b in stored}
    out = Merged([])
    conflicts = []
    for bar, where in zip(new.bars, new.wheres, strict=True):
        old = by_time.get(bar.open_time)
        if old is None:
            out.added += 1
        elif old == bar:
            out.kept += 1
            continue
        elif replace:
            out.replaced += 1
        else:
            conflicts.append((bar, old, where))
            continue
        by_time[bar.open_time] = bar
    if conflicts:
        bar, old, where = conflicts[0]
        more = f"; {len(conflicts) - 1} more, at " + ", ".join(iso(b.open_time) for b, _, _ in conflicts[1:4]) if len(conflicts) > 1 else ""
        raise CandleError(
            f"{where}: the candle at {iso(bar.open_time)} ({bar.open_time}) differs from the one stored in {path}: "
            f"stored {_ohlcv(old)}, imported {_ohlcv(bar)}{more}{'...' if len(conflicts) > 4 else ''}. "
            "Nothing was written; pass --replace to store the imported candles instead"
        )
    out.bars = [by_time[t] for t in sorted(by_time)]
    return out


def _ohlcv(b: Bar) -> str:
    return f"o={b.open} h={b.high} l={b.low} c={b.close} v={b.volume}"


def is_parquet(path: str | Path) -> bool:
    with Path(path).open("rb") as fh:
        return fh.read(4) == b"PAR1"


def read_any(
    path: str | Path,
    *,
    interval: str | None = None,
    fmt: Source | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
) -> list[Bar]:
    """Candles from a stored Parquet file, a CSV or a freqtrade JSON file, checked like an import
    (a text file's interval is inferred from its rows unless given). `since_ms <= open_time < until_ms`."""
    if is_parquet(path):
        meta = read_meta(path)
        if interval is not None and interval_ms(interval) != interval_ms(meta.interval):
            raise CandleError(f"{path}: holds {meta.interval} candles, not {interval}")
        return load_bars(path, since_ms, until_ms)
    rows = read_rows(path, fmt)
    step = interval_ms(interval) if interval else infer_interval(rows)
    return check(rows, step).window(since_ms, until_ms).bars


def rows_from(where: str, records: Iterable[Sequence[Any]]) -> list[Row]:
    """Rows from (open_time, open, high, low, close, volume) records of another source (the archive,
    a venue): `where` names the source; each row adds its time."""
    rows = []
    for r in records:
        o, h, lo, c, v = (x if isinstance(x, Decimal) else Decimal(str(x)) for x in r[1:6])
        t = int(r[0])
        rows.append(Row(f"{where}, candle {iso(t) if 0 <= t < 10**14 else t}", t, (o, h, lo, c, v)))
    return rows
