"""The candle CSV: `timestamp,open,high,low,close,volume`, read one way for everyone (the simulated
exchange's candle file, `sqt data import`, the backtester's `--data file.csv`).

A header is optional (the first line, when it is not a row); columns after the sixth are ignored
(exchange dumps carry close time, trade count ...). The timestamp is integer milliseconds or
ISO-8601 (`2024-01-01T00:00:00Z`; without an offset it is UTC). Only the syntax is read here:
what a candle's values must satisfy, and a series' order, is checked by the reader's user
(venues/sim/prices.py, backtest/candles.py). Errors name the file and line.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

PRICE_COLUMNS = ("open", "high", "low", "close", "volume")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class CandleError(ValueError):
    """Candles that cannot be imported or read, phrased for the trader: names the file, the line
    (or the time) and what is wrong."""


def parse_time(text: str) -> int:
    """Integer milliseconds, or ISO-8601 (UTC unless it names an offset) -> milliseconds."""
    text = text.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CandleError(f"{text!r} is neither milliseconds nor an ISO-8601 time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    ms, rest = divmod(t - _EPOCH, _MS)
    if rest:
        raise CandleError(f"{text!r} is not a whole millisecond")
    return int(ms)


@dataclass(frozen=True)
class Row:
    """One candle as read, before it is checked; `where` is `file:line` (or what stands for it)."""

    where: str
    open_time: int
    values: tuple[Decimal, Decimal, Decimal, Decimal, Decimal]  # open, high, low, close, volume


def _decimal(where: str, name: str, text: str) -> Decimal:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        raise CandleError(f"{where}: `{name}` is not a number: {text!r}") from None


def read_csv(path: str | Path) -> list[Row]:
    """A CSV's rows as written (see the module's notes); only their syntax is checked here."""
    path = Path(path)
    rows: list[Row] = []
    header_allowed = True
    with path.open(newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's byte-order mark is no part of a time
        for line, fields in enumerate(csv.reader(fh), start=1):
            if not fields or not "".join(fields).strip():
                continue  # blank
            where = f"{path}:{line}"
            try:
                ts = parse_time(fields[0])
            except CandleError as exc:
                if header_allowed and not _numbers(fields[1:6]):  # a row with a bad time is no header
                    _check_header(where, fields)
                    header_allowed = False
                    continue
                raise CandleError(f"{where}: the timestamp {exc}") from None
            header_allowed = False
            if len(fields) < 6:
                raise CandleError(f"{where}: expected timestamp,open,high,low,close,volume, got {len(fields)} fields")
            o, h, lo, c, v = (_decimal(where, n, x) for n, x in zip(PRICE_COLUMNS, fields[1:6], strict=True))
            rows.append(Row(where, ts, (o, h, lo, c, v)))
    return rows


def _numbers(fields: list[str]) -> bool:
    try:
        return bool(fields) and all(Decimal(f.strip()).is_finite() for f in fields)
    except InvalidOperation:
        return False


def _check_header(where: str, fields: list[str]) -> None:
    # A header naming the columns in another order would silently swap high and low: refuse it.
    names = [f.strip().lower() for f in fields[1:6]]
    if set(names) == set(PRICE_COLUMNS) and tuple(names) != PRICE_COLUMNS:
        raise CandleError(f"{where}: the header's columns are {','.join(fields[:6])}; expected timestamp,open,high,low,close,volume")
