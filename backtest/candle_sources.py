"""Candles from the archive and from a venue's history, as rows for backtest/candles.py to check.

- The archive (`monitors.archive.views.open_archive`): the closed candles the bus carried, in
  order of their open time. The archive may hold one closed candle more than once (a publisher's
  backfill after a reconnect publishes it again): identical repeats are dropped by the check.
- A ccxt venue's OHLCV history (public data, no keys): through the project's venue adapter, paged
  by the venue's largest page; only candles closed by the venue's clock are kept.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

from backtest.candles import CandleError, Row, iso, rows_from
from venues.ccxt.config import CcxtVenueConfig

ARCHIVE_SQL = (
    "SELECT open_time_ms, open, high, low, close, volume FROM candles "
    'WHERE venue = ? AND symbol = ? AND closed AND "interval" = ? ORDER BY open_time_ms, seq'
)


def from_archive(directory: str | Path, venue: str, symbol: str, interval: str = "1m") -> list[Row]:
    """The archive's closed candles of one market, sorted by open time."""
    from monitors.archive.views import open_archive

    if not Path(directory).is_dir():
        raise CandleError(f"{directory}: no archive there (`sqt run archive` writes it; `data_dir` in the config says where)")
    con = open_archive(directory)
    try:
        records = con.execute(ARCHIVE_SQL, [venue, symbol, interval]).fetchall()
    finally:
        con.close()
    return rows_from(f"archive {directory} {venue} {symbol}", records)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def from_ccxt(
    venue: str,
    cfg: CcxtVenueConfig,
    symbol: str,
    interval: str,
    since_ms: int,
    until_ms: int | None = None,
    *,
    progress: Callable[[str], None] = _say,
) -> list[Row]:
    """A venue's closed candles with since_ms <= open_time < until_ms (the present by default)."""
    from venues.ccxt.exchange import build
    from venues.ccxt.parse import INTERVAL_MS
    from venues.ccxt.venue import OHLCV_PAGE, CcxtVenue

    if interval not in INTERVAL_MS:
        raise CandleError(f"--interval {interval}: a venue's history is fetched in {', '.join(INTERVAL_MS)}")
    step = INTERVAL_MS[interval]
    venue_obj = CcxtVenue(build(venue, None, cfg), venue, "public")
    try:
        now = await venue_obj.now_ms(fresh=True)
        end = now if until_ms is None else min(until_ms, now)
        chunk = OHLCV_PAGE.get(venue_obj.exchange_id, 500) * 10  # ten requests between progress lines
        cursor = math.ceil(since_ms / step) * step
        records: list[tuple[object, ...]] = []
        while cursor < end:
            want = min(chunk, math.ceil((end - cursor) / step))
            candles = await venue_obj.fetch_ohlcv(symbol, cursor, want, interval=interval)
            records += [
                (c.open_time, c.open, c.high, c.low, c.close, c.volume) for c in candles if c.closed and cursor <= c.open_time < end
            ]
            if not candles or candles[-1].open_time + step <= cursor:
                break  # nothing more from the venue
            cursor = candles[-1].open_time + step
            progress(f"{venue} {symbol} {interval}: {len(records):,} candles, up to {iso(min(cursor, end))}")
    finally:
        await venue_obj.close()
    return rows_from(f"{venue} {symbol}", records)
