"""`sqt data`: candles for backtests, imported once, checked, stored as Parquet.

    sqt data import candles.csv --venue binanceusdm --symbol BTC/USDT:USDT        # ms or ISO times
    sqt data import BTC_USDT_USDT-1m-futures.json --venue binanceusdm --symbol BTC/USDT:USDT   # freqtrade
    sqt data import --from archive --venue sim --symbol BTC/USDT:USDT               # what the bus carried
    sqt data import --from ccxt --venue binanceusdm --symbol BTC/USDT:USDT --since 2024-01-01 --until 2024-02-01
    sqt data import candles.csv --out btc.parquet                                   # anywhere
    sqt data ls                                                                     # what is stored

Stored under `<data_dir>/candles/<venue>/<symbol token>/<interval>.parquet` unless `--out`.
Importing into a file that exists merges: new candles are added, identical ones kept; one that
disagrees with the stored candle at its time stops the import (naming the time) unless
`--replace`. A bad row stops it too, naming the file and line; nothing is written then (exit 2).
Gaps are reported, never filled. The checks: backtest/candles.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from backtest import candles
from backtest.candles import CandleError, Checked, Meta
from cli.config import Config
from schemas.subjects import SubjectError, symbol_token
from venues.ccxt.config import CcxtVenueConfig
from venues.errors import VenueError
from venues.sim.journal import Bar

EXIT_BAD = 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="import candles for backtests (CSV, freqtrade, the archive, a venue) and list them")
    actions = p.add_subparsers(dest="data_action", required=True)
    imp = actions.add_parser("import", help="check candles and store them as Parquet (merging with what is stored)")
    imp.add_argument("file", nargs="?", help="a CSV (timestamp,open,high,low,close,volume) or a freqtrade JSON candle file")
    imp.add_argument("--format", choices=["csv", "freqtrade"], help="the file's format (default: from its name)")
    imp.add_argument("--from", dest="source", choices=["file", "archive", "ccxt"], default="file", help="where the candles come from")
    imp.add_argument("--venue", help="the venue the candles are of (sim, binanceusdm, ...)")
    imp.add_argument("--symbol", help="the market, as ccxt writes it (BTC/USDT:USDT)")
    imp.add_argument("--interval", help="1m, 5m, 1h, ... (default: a file's own step; 1m from the archive or a venue)")
    imp.add_argument("--since", help="from this time (ISO-8601 UTC or ms; required with --from ccxt)")
    imp.add_argument("--until", help="up to this time, excluded (ISO-8601 UTC or ms; default: all, or now)")
    imp.add_argument("--out", help="the Parquet file to write (default: <data_dir>/candles/<venue>/<symbol>/<interval>.parquet)")
    imp.add_argument("--replace", action="store_true", help="where a candle disagrees with the stored one, store the imported one")
    imp.add_argument("--archive", help="the archive's directory (default: <data_dir>/archive)")
    ls = actions.add_parser("ls", help="the stored candles: venue, symbol, interval, first and last time, rows, gaps")
    ls.add_argument("paths", nargs="*", help="files or directories (default: <data_dir>/candles)")


def data_command(config: Config, args: argparse.Namespace) -> int:
    try:
        if args.data_action == "ls":
            return _ls(config, args)
        return _import(config, args)
    except (CandleError, SubjectError) as exc:
        print(f"sqt: {exc}", file=sys.stderr)
        return EXIT_BAD
    except VenueError as exc:
        print(f"sqt: the venue: {exc}", file=sys.stderr)
        return 1


def _time(text: str | None, flag: str) -> int | None:
    if text is None:
        return None
    try:
        return candles.parse_time(text)
    except CandleError as exc:
        raise CandleError(f"{flag}: {exc}") from None


def _import(config: Config, args: argparse.Namespace) -> int:
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    if args.symbol is not None:
        symbol_token(args.symbol)  # a bad symbol is named before anything is read
    if args.source == "file":
        if not args.file:
            raise CandleError("which file? `sqt data import FILE` (or --from archive|ccxt)")
        rows = candles.read_rows(args.file, args.format)
        origin = args.file
    else:
        if args.file:
            raise CandleError(f"--from {args.source} reads no file ({args.file!r})")
        if not args.venue or not args.symbol:
            raise CandleError(f"--from {args.source} needs --venue and --symbol")
        interval = args.interval or "1m"
        if args.source == "archive":
            from backtest.candle_sources import from_archive

            directory = args.archive or str(Path(config.data_dir) / "archive")
            rows = from_archive(directory, args.venue, args.symbol, interval)
            origin = f"the archive ({directory})"
        else:
            from backtest.candle_sources import from_ccxt

            if since is None:
                raise CandleError("--from ccxt needs --since (and --until, or it goes up to now)")
            venue_cfg = config.venues.get(args.venue, CcxtVenueConfig())
            try:
                venue_cfg.exchange_id(args.venue)
            except ValueError as exc:
                raise CandleError(str(exc)) from None
            rows = asyncio.run(from_ccxt(args.venue, venue_cfg, args.symbol, interval, since, until))
            origin = f"{args.venue}"
    if not rows:
        raise CandleError(f"no candles in {origin}")
    step = candles.interval_ms(args.interval) if args.interval else candles.infer_interval(rows)
    interval = candles.interval_name(step)
    checked = candles.check(rows, step)
    if since is not None or until is not None:
        checked = checked.window(since, until)
        if not checked.bars:
            raise CandleError(f"no candles of {origin} between --since and --until")
    out = _out_path(config, args, interval)
    meta = Meta(args.venue or "", args.symbol or "", interval)
    stored: list[Bar] = []
    if out.exists():
        meta = _same_market(out, meta)
        stored = candles.load_bars(out)
    merged = candles.merge(stored, checked, replace=args.replace, path=out)
    if merged.added or merged.replaced or not out.exists():
        candles.write_parquet(out, merged.bars, meta)  # else: nothing new, the file stays as it is
    _report(origin, out, interval, checked, merged)
    return 0


def _out_path(config: Config, args: argparse.Namespace, interval: str) -> Path:
    if args.out:
        return Path(args.out)
    if not args.venue or not args.symbol:
        raise CandleError("where to? pass --venue and --symbol (stored under data_dir/candles), or --out FILE.parquet")
    return candles.default_path(config.data_dir, args.venue, args.symbol, interval)


def _same_market(path: Path, meta: Meta) -> Meta:
    """The stored file's market, which the import must not contradict."""
    held = candles.read_meta(path)
    for name in ("venue", "symbol", "interval"):
        mine, theirs = getattr(meta, name), getattr(held, name)
        if mine and theirs and mine != theirs:
            raise CandleError(f"{path} holds {name} {theirs!r}, not {mine!r}; nothing was written")
    return Meta(held.venue or meta.venue, held.symbol or meta.symbol, held.interval or meta.interval)


def _report(origin: str, out: Path, interval: str, checked: Checked, merged: candles.Merged) -> None:
    step = candles.interval_ms(interval)
    print(f"imported {candles.plural(len(checked.bars), interval + ' candle')} from {origin} into {out}")
    parts = [f"{merged.added:,} new", f"{merged.kept:,} already stored"]
    if merged.replaced:
        parts.append(f"{merged.replaced:,} replaced")
    if checked.duplicates:
        parts.append(f"{candles.plural(checked.duplicates, 'repeated row')} dropped (identical)")
    print("  " + ", ".join(parts))
    print(f"  imported: {candles.describe_gaps(checked.gaps, step)}")
    bars = merged.bars
    whole = candles.find_gaps((b.open_time for b in bars), step)
    missing = sum(g.missing for g in whole)
    print(
        f"  stored: {candles.plural(len(bars), 'candle')}, {candles.iso(bars[0].open_time)} to {candles.iso(bars[-1].open_time)}, "
        f"{candles.plural(len(whole), 'gap')} ({missing:,} missing)"
    )


def _ls(config: Config, args: argparse.Namespace) -> int:
    roots = [Path(p) for p in args.paths] or [Path(config.data_dir) / "candles"]
    files: list[Path] = []
    for root in roots:
        files += sorted(root.rglob("*.parquet")) if root.is_dir() else [root] if root.exists() else []
    if not files:
        print(f"no candles stored under {', '.join(map(str, roots))} (`sqt data import` puts them there)")
        return 0
    table = [("venue", "symbol", "interval", "first", "last", "rows", "gaps (missing)", "file")]
    bad = 0
    for path in files:
        try:
            s = candles.summarize(path)
        except CandleError as exc:
            print(f"sqt: {exc}", file=sys.stderr)
            bad += 1
            continue
        first = candles.iso(s.first) if s.first is not None else "-"
        last = candles.iso(s.last) if s.last is not None else "-"
        table.append((s.meta.venue, s.meta.symbol, s.meta.interval, first, last, f"{s.rows:,}", f"{s.gaps} ({s.missing:,})", str(path)))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_BAD if bad else 0
