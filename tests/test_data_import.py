"""`sqt data import` and the candle files the backtester reads (backtest/candles.py): every source
(CSV, freqtrade JSON, the archive, a ccxt venue through a local server in Binance's own kline
format), the stored Parquet format and its exactness, merging, every check with its file:line, and
the gap report. The CLI is driven through its own parser (`add_parser`) and `data_command`."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal as D
from pathlib import Path

import duckdb
import pytest
from aiohttp import web

from backtest import candles
from backtest.candles import CandleError, load_bars, read_any
from cli.config import Config
from cli.data import add_parser, data_command
from monitors.archive.batch import Stored, group
from monitors.archive.writer import StreamWriter
from schemas import ids, subjects
from schemas.codec import encode
from schemas.market import Candle
from testkit.ccxt import cases, write_markets
from venues.ccxt.config import CcxtVenueConfig
from venues.sim.config import SimConfig
from venues.sim.journal import Bar
from venues.sim.prices import CandleFile

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MIN = 60_000
SYMBOL = "BTC/USDT:USDT"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sqt")
    add_parser(p.add_subparsers(dest="command"))
    return p


def sqt(config: Config, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = data_command(config, parser().parse_args(["data", *argv]))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return Config(data_dir=str(tmp_path / "data"))


def stored_path(config: Config, venue: str = "sim", interval: str = "1m") -> Path:
    return Path(config.data_dir) / "candles" / venue / "BTC-USDT-USDT" / f"{interval}.parquet"


def csv_rows(n: int, start: int = T0, step: int = MIN, skip: tuple[int, ...] = ()) -> list[str]:
    return [f"{start + i * step},{100 + i},{101 + i},{99 + i},{100.5 + i},{i}.25" for i in range(n) if i not in skip]


def write(path: Path, lines: list[str], header: bool = True) -> Path:
    path.write_text(("timestamp,open,high,low,close,volume\n" if header else "") + "\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- the stored format


def test_a_csv_is_stored_as_sorted_decimal_parquet_with_its_market_and_reads_back_exactly(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "c.csv", [f"{T0},0.1,68000.12345678,0.1,68000.12345678,0.000000000000000001", *csv_rows(3, T0 + MIN)])
    rc, out, _ = sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 0, out
    path = stored_path(config)
    assert path.exists()
    con = duckdb.connect()
    schema = con.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))", [str(path)]).fetchall()
    assert schema == [("open_time", "BIGINT")] + [(c, "DECIMAL(38,18)") for c in ("open", "high", "low", "close", "volume")]
    meta = {
        bytes(k).decode(): bytes(v).decode()
        for k, v in con.execute("SELECT key, value FROM parquet_kv_metadata(?)", [str(path)]).fetchall()
    }
    assert meta == {"venue": "sim", "symbol": SYMBOL, "interval": "1m", "format": candles.FORMAT}
    bars = load_bars(path)
    assert bars[0] == Bar(T0, D("0.1"), D("68000.12345678"), D("0.1"), D("68000.12345678"), D("0.000000000000000001"))
    assert [str(x) for x in (bars[0].open, bars[0].high, bars[0].volume)] == ["0.1", "68000.12345678", "1E-18"]  # as written
    assert [b.open_time for b in bars] == [T0 + i * MIN for i in range(4)]
    assert bars[1:] == [Bar(T0 + (i + 1) * MIN, D(100 + i), D(101 + i), D(99 + i), D(f"{100.5 + i}"), D(f"{i}.25")) for i in range(3)]
    assert "4 new" in out and "no gaps" in out


def test_since_and_until_pick_a_window_of_the_stored_candles(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "c.csv", csv_rows(10))
    assert sqt(config, capsys, "import", str(src), "--out", str(tmp_path / "x.parquet"))[0] == 0
    assert [b.open_time for b in load_bars(tmp_path / "x.parquet", since_ms=T0 + 2 * MIN, until_ms=T0 + 5 * MIN)] == [
        T0 + 2 * MIN,
        T0 + 3 * MIN,
        T0 + 4 * MIN,
    ]
    assert len(load_bars(tmp_path / "x.parquet", since_ms=T0 + 8 * MIN)) == 2
    assert len(load_bars(tmp_path / "x.parquet", until_ms=T0 + MIN)) == 1


def test_a_csv_without_a_header_with_iso_times_and_extra_columns_reads_like_one_in_milliseconds(tmp_path: Path) -> None:
    ms = write(tmp_path / "ms.csv", csv_rows(3))
    iso = write(
        tmp_path / "iso.csv",
        [f"2024-01-01T00:0{i}:00Z,{100 + i},{101 + i},{99 + i},{100.5 + i},{i}.25,extra,{i}" for i in range(2)]
        + ["2024-01-01 00:02:00,102,103,101,102.5,2.25"],
        header=False,
    )
    assert read_any(iso) == read_any(ms)
    assert read_any(ms)[0].open_time == T0


def test_iso_times_without_an_offset_are_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert candles.parse_time("2024-01-01 00:00:00") == candles.parse_time("2024-01-01T02:00:00+02:00") == T0
        assert candles.parse_time(str(T0)) == T0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_read_any_picks_a_window_of_a_text_file_too(tmp_path: Path) -> None:
    src = write(tmp_path / "c.csv", csv_rows(10))
    assert [b.open_time for b in read_any(src, since_ms=T0 + 8 * MIN)] == [T0 + 8 * MIN, T0 + 9 * MIN]
    assert [b.open_time for b in read_any(src, until_ms=T0 + 2 * MIN)] == [T0, T0 + MIN]


def test_a_freqtrade_json_file_is_read_from_its_text_exactly(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = f"[[{T0},0.1,68000.12345678,0.1,0.3,1e-7],[{T0 + MIN},68000,68000.5,67999.25,68000.1,12.5]]"
    src = tmp_path / "BTC_USDT_USDT-1m-futures.json"
    src.write_text(data)
    assert read_any(src) == [
        Bar(T0, D("0.1"), D("68000.12345678"), D("0.1"), D("0.3"), D("1e-7")),
        Bar(T0 + MIN, D(68000), D("68000.5"), D("67999.25"), D("68000.1"), D("12.5")),
    ]
    assert str(read_any(src)[0].close) == "0.3"  # not 0.299999999999999988897769753748...
    gz = tmp_path / "BTC_USDT_USDT-1m-futures.json.gz"
    gz.write_bytes(gzip.compress(data.encode()))
    assert read_any(gz) == read_any(src)
    rc, out, _ = sqt(config, capsys, "import", str(src), "--venue", "binanceusdm", "--symbol", SYMBOL)
    assert rc == 0, out
    assert load_bars(stored_path(config, "binanceusdm")) == read_any(src)


def test_read_any_gives_the_same_bars_from_parquet_csv_and_freqtrade(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "c.csv", csv_rows(5))
    js = tmp_path / "c.json"
    js.write_text(json.dumps([[T0 + i * MIN, 100 + i, 101 + i, 99 + i, 100.5 + i, float(f"{i}.25")] for i in range(5)]))
    assert sqt(config, capsys, "import", str(src), "--out", str(tmp_path / "c.parquet"))[0] == 0
    assert read_any(tmp_path / "c.parquet") == read_any(src) == read_any(js) == load_bars(tmp_path / "c.parquet")
    assert len(read_any(src)) == 5


def test_a_parquet_file_not_written_by_the_import_is_refused_not_guessed_at(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign.parquet"
    duckdb.sql(
        f"COPY (SELECT {T0} AS open_time, 0.1::DOUBLE AS open, 0.1::DOUBLE AS high, 0.1::DOUBLE AS low, 0.1::DOUBLE AS close, "
        f"1.0::DOUBLE AS volume) TO '{foreign}' (FORMAT parquet)"
    )
    for read in (load_bars, read_any):
        with pytest.raises(CandleError, match="foreign.parquet: not a candle file written by `sqt data import`"):
            read(foreign)
    rc, _, err = sqt(config, capsys, "ls", str(foreign))
    assert rc == 2 and "not a candle file" in err


def test_a_files_interval_is_its_own_step_unless_given(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hourly = write(tmp_path / "h.csv", csv_rows(6, step=3_600_000, skip=(2,)))
    rc, out, _ = sqt(config, capsys, "import", str(hourly), "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 0
    assert stored_path(config, interval="1h").exists()
    assert "1 gap, 1 1h candle missing (not filled): 1 missing from 2024-01-01T01:00:00Z to 2024-01-01T03:00:00Z" in out
    rc, _, err = sqt(config, capsys, "import", str(hourly), "--venue", "sim", "--symbol", SYMBOL, "--interval", "4h")
    assert rc == 2 and "h.csv:3: the time 1704070800000 is not the start of a 4h candle" in err


# ----------------------------------------------------------------------------- merging


def test_importing_again_adds_new_candles_keeps_identical_ones_and_refuses_a_different_one(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write(tmp_path / "a.csv", csv_rows(5))
    assert sqt(config, capsys, "import", str(first), "--venue", "sim", "--symbol", SYMBOL)[0] == 0
    more = write(tmp_path / "b.csv", csv_rows(8)[3:])  # 2 already stored, 3 new
    rc, out, _ = sqt(config, capsys, "import", str(more), "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 0
    assert "3 new, 2 already stored" in out
    assert [b.open_time for b in load_bars(stored_path(config))] == [T0 + i * MIN for i in range(8)]
    written = stored_path(config).stat().st_mtime_ns
    assert "0 new, 5 already stored" in sqt(config, capsys, "import", str(first), "--venue", "sim", "--symbol", SYMBOL)[1]
    assert stored_path(config).stat().st_mtime_ns == written  # nothing new: not rewritten

    before = stored_path(config).read_bytes()
    changed = csv_rows(8)
    changed[6] = f"{T0 + 6 * MIN},106,107,105,106.75,6.25"  # close 106.5 -> 106.75
    changed[7] = f"{T0 + 7 * MIN},107,108,106,107.5,9"  # volume 7.25 -> 9
    rc, _, err = sqt(config, capsys, "import", str(write(tmp_path / "c.csv", changed)), "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 2
    assert "c.csv:8: the candle at 2024-01-01T00:06:00Z (1704067560000) differs from the one stored" in err
    assert "stored o=106 h=107 l=105 c=106.5 v=6.25, imported o=106 h=107 l=105 c=106.75 v=6.25" in err
    assert "1 more, at 2024-01-01T00:07:00Z" in err and "--replace" in err
    assert stored_path(config).read_bytes() == before  # nothing written

    rc, out, _ = sqt(config, capsys, "import", str(tmp_path / "c.csv"), "--venue", "sim", "--symbol", SYMBOL, "--replace")
    assert rc == 0
    assert "0 new, 6 already stored, 2 replaced" in out
    bars = load_bars(stored_path(config))
    assert (bars[6].close, bars[7].volume, len(bars)) == (D("106.75"), D(9), 8)


def test_a_file_holding_another_market_is_not_merged_into(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "a.csv", csv_rows(3))
    out = tmp_path / "x.parquet"
    assert sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", SYMBOL, "--out", str(out))[0] == 0
    rc, _, err = sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", "ETH/USDT:USDT", "--out", str(out))
    assert rc == 2 and f"{out} holds symbol '{SYMBOL}', not 'ETH/USDT:USDT'" in err
    rc, _, err = sqt(config, capsys, "import", str(src), "--interval", "5m", "--out", str(out))
    assert rc == 2 and "is not the start of a 5m candle" in err


# ----------------------------------------------------------------------------- the checks


BAD_ROWS = [
    (f"{T0 + 30_000},100,101,99,100,1", "the time 1704067230000 is not the start of a 1m candle (2024-01-01T00:00:30Z)"),
    ("1704067260,100,101,99,100,1", "not the start of a 1m candle (times are milliseconds; this looks like seconds)"),
    (f"{T0 + MIN},0,101,99,100,1", "`open` must be a positive price"),
    (f"{T0 + MIN},-100,101,99,100,1", "`open` must be a positive price"),
    (f"{T0 + MIN},100,101,99,NaN,1", "`close` must be a finite number, got NaN"),
    (f"{T0 + MIN},100,Infinity,99,100,1", "`high` must be a finite number, got Infinity"),
    (f"{T0 + MIN},100,99,101,100,1", "`low` 101 is above `high` 99"),
    (f"{T0 + MIN},98,101,99,100,1", "`open` 98 is outside low 99 .. high 101"),
    (f"{T0 + MIN},100,101,99,101.5,1", "`close` 101.5 is outside low 99 .. high 101"),
    (f"{T0 + MIN},100,101,99,100,-1", "`volume` must be zero or positive"),
    (f"{T0 + MIN},100,101,abc,100,1", "`low` is not a number: 'abc'"),
    (f"{T0 + MIN},100,101,99,100", "expected timestamp,open,high,low,close,volume, got 5 fields"),
    (f"{T0 + MIN},100.0000000000000000001,101,99,100,1", "`open` 100.0000000000000000001 has more than 18 decimal places"),
    ("yesterday,100,101,99,100,1", "the timestamp 'yesterday' is neither milliseconds nor an ISO-8601 time"),
    (f"{T0},100,101,99,100,1", "2024-01-01T00:00:00Z comes after 2024-01-01T00:02:00Z (bad.csv:4): rows must be sorted by time"),
    (f"{T0 + 2 * MIN},100,101,99,100,1", "a second candle at 2024-01-01T00:02:00Z (1704067320000) that differs from bad.csv:4"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_a_bad_row_names_its_file_line_and_problem_and_nothing_is_written(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, problem: str
) -> None:
    out = tmp_path / "x.parquet"
    assert sqt(config, capsys, "import", str(write(tmp_path / "ok.csv", csv_rows(2))), "--out", str(out))[0] == 0
    before = out.read_bytes()
    lines = csv_rows(3)
    lines.insert(3 if "sorted" in problem or "second candle" in problem else 1, row)  # after T0+2m (line 4), or as line 3
    src = write(tmp_path / "bad.csv", lines)
    rc, stdout, err = sqt(config, capsys, "import", str(src), "--out", str(out), "--interval", "1m")
    line = 5 if "sorted" in problem or "second candle" in problem else 3
    assert (rc, stdout) == (2, "")
    assert f"{src}:{line}: " in err and problem.replace("bad.csv:4", f"{src}:4") in err, err
    assert out.read_bytes() == before
    with pytest.raises(CandleError, match=f"bad.csv:{line}: "):
        read_any(src, interval="1m")


def test_an_identical_repeated_row_is_dropped_and_counted(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = csv_rows(3)
    src = write(tmp_path / "a.csv", [lines[0], lines[1], lines[1], lines[1], lines[2]])
    rc, out, _ = sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 0
    assert "imported 3 1m candles" in out and "2 repeated rows dropped (identical)" in out
    assert len(load_bars(stored_path(config))) == 3


def test_a_bad_candle_in_a_pretty_printed_freqtrade_file_is_named_by_line(tmp_path: Path) -> None:
    src = tmp_path / "f.json"
    src.write_text("[\n" + ",\n".join(f"  [{T0 + i * MIN}, 100, 101, {102 if i == 2 else 99}, 100, 1]" for i in range(4)) + "\n]\n")
    with pytest.raises(CandleError, match=r"f.json:4 \(candle #3\): `low` 102 is above `high` 101"):
        read_any(src)
    src.write_text(f'[[{T0}, 100, 101, 99, 100, 1], [{T0 + MIN}, "100", 101, 99, 100, 1]]')
    with pytest.raises(CandleError, match=r"f.json:1 \(candle #2\): `open` is not a number: '100'"):
        read_any(src)


def test_a_first_row_with_a_bad_time_is_an_error_not_a_header_and_a_byte_order_mark_is_no_part_of_a_time(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text("2024/01/01 00:00,100,101,99,100,1\n" + "\n".join(csv_rows(2)) + "\n")
    with pytest.raises(CandleError, match=r"c.csv:1: the timestamp '2024/01/01 00:00' is neither milliseconds nor an ISO-8601 time"):
        read_any(src)
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(csv_rows(3)).encode() + b"\n")  # Excel's UTF-8 CSV
    assert [b.open_time for b in read_any(src)] == [T0, T0 + MIN, T0 + 2 * MIN]


def test_a_header_with_the_columns_in_another_order_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "c.csv"
    src.write_text("time,open,low,high,close,volume\n" + "\n".join(csv_rows(2)) + "\n")
    with pytest.raises(CandleError, match=r"c.csv:1: the header's columns are time,open,low,high,close,volume"):
        read_any(src)


def test_usage_errors_exit_2_and_say_what_is_missing(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write(tmp_path / "a.csv", csv_rows(2))
    assert sqt(config, capsys, "import", str(src))[0:3:2] == (
        2,
        "sqt: where to? pass --venue and --symbol (stored under data_dir/candles), or --out FILE.parquet\n",
    )
    assert "not a unified symbol" in sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", "BTCUSDT")[2]
    assert "needs --venue and --symbol" in sqt(config, capsys, "import", "--from", "archive")[2]
    assert "needs --since" in sqt(config, capsys, "import", "--from", "ccxt", "--venue", "binanceusdm", "--symbol", SYMBOL)[2]
    assert "cannot tell its format" in sqt(config, capsys, "import", str(src.rename(tmp_path / "a.dat")), "--out", "x.parquet")[2]
    assert not Path("x.parquet").exists()


# ----------------------------------------------------------------------------- gaps


def test_gaps_are_reported_with_the_largest_and_the_first_few_and_never_filled(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = (2, 5, 6, 7, 10, 13, 16, 19, 22)  # 7 gaps: 1, 3, then 1 each
    src = write(tmp_path / "a.csv", csv_rows(25, skip=missing))
    rc, out, _ = sqt(config, capsys, "import", str(src), "--venue", "sim", "--symbol", SYMBOL, "--interval", "1m")
    assert rc == 0
    assert "7 gaps, 9 1m candles missing (not filled); largest: 3 missing" in out
    assert "largest: 3 missing from 2024-01-01T00:04:00Z to 2024-01-01T00:08:00Z" in out
    assert "first: 1 missing from 2024-01-01T00:01:00Z to 2024-01-01T00:03:00Z; 3 missing from" in out
    assert "and 2 more" in out and "2024-01-01T00:18:00Z" not in out  # the first five only
    assert [b.open_time for b in load_bars(stored_path(config))] == [T0 + i * MIN for i in range(25) if i not in missing]
    gaps = candles.check(candles.read_csv(src), MIN).gaps
    assert [(g.after, g.before, g.missing) for g in gaps[:2]] == [(T0 + MIN, T0 + 3 * MIN, 1), (T0 + 4 * MIN, T0 + 8 * MIN, 3)]


def test_data_ls_lists_each_stored_file_with_its_span_rows_and_gaps(
    config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sqt(config, capsys, "ls")[1].startswith("no candles stored under")
    sqt(config, capsys, "import", str(write(tmp_path / "a.csv", csv_rows(10, skip=(3, 4)))), "--venue", "sim", "--symbol", SYMBOL)
    sqt(config, capsys, "import", str(write(tmp_path / "b.csv", csv_rows(3, step=3_600_000))), "--venue", "okx", "--symbol", SYMBOL)
    rc, out, _ = sqt(config, capsys, "ls")
    assert rc == 0
    rows = [line.split() for line in out.splitlines()]
    assert rows[0][:6] == ["venue", "symbol", "interval", "first", "last", "rows"]
    assert rows[1][:8] == ["okx", SYMBOL, "1h", "2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z", "3", "0", "(0)"]
    assert rows[2][:8] == ["sim", SYMBOL, "1m", "2024-01-01T00:00:00Z", "2024-01-01T00:09:00Z", "8", "1", "(2)"]


# ----------------------------------------------------------------------------- the archive


def archived_candle(venue: str, symbol: str, minute: int, close: str, closed: bool = True) -> Candle:
    t = T0 + minute * MIN
    ts = t + MIN - 1 if closed else t + 1_000
    return Candle(
        id=ids.candle_id(venue, symbol, "1m", t, ts, closed),
        venue=venue,
        symbol=symbol,
        open_time=t,
        open=D("100"),
        high=D("101.5"),
        low=D("99.25"),
        close=D(close),
        volume=D("0.001"),
        closed=closed,
        ts=ts,
        ts_local=ts,
    )


def write_archive(root: Path, events: list[Candle]) -> None:
    """The archive's own writer, as `sqt run archive` commits a batch of the MARKET stream."""
    stored = [
        Stored(seq, subjects.md(e.venue, e.symbol, "candle1m"), encode(e), {"Nats-Msg-Id": e.id}, (e.ts + 5) * 1_000_000)
        for seq, e in enumerate(events, start=1)
    ]
    writer = StreamWriter(root, "MARKET")
    writer.recover()
    for chunk in (stored[:3], stored[3:]):  # two batches: two files
        writer.commit(group("MARKET", chunk))
    writer.close()


def test_the_archives_closed_candles_of_one_market_are_imported(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(config.data_dir) / "archive"
    write_archive(
        root,
        [
            archived_candle("sim", SYMBOL, 0, "100.1", closed=False),  # forming: not imported
            archived_candle("sim", SYMBOL, 0, "100.5"),
            archived_candle("sim", SYMBOL, 1, "100.75"),
            archived_candle("sim", "ETH/USDT:USDT", 1, "100"),  # another market
            archived_candle("sim2", SYMBOL, 2, "100"),  # another venue
            archived_candle("sim", SYMBOL, 1, "100.75"),  # published again (a backfill): the same candle
            archived_candle("sim", SYMBOL, 3, "101.5"),
        ],
    )
    rc, out, err = sqt(config, capsys, "import", "--from", "archive", "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 0, err
    assert "imported 3 1m candles from the archive" in out and "1 repeated row dropped (identical)" in out
    assert "1 gap, 1 1m candle missing" in out
    assert load_bars(stored_path(config)) == [
        Bar(T0 + m * MIN, D("100"), D("101.5"), D("99.25"), D(c), D("0.001")) for m, c in ((0, "100.5"), (1, "100.75"), (3, "101.5"))
    ]


def test_an_empty_or_missing_archive_is_said_so(config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = sqt(config, capsys, "import", "--from", "archive", "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 2 and "no archive there" in err
    (Path(config.data_dir) / "archive").mkdir(parents=True)
    rc, _, err = sqt(config, capsys, "import", "--from", "archive", "--venue", "sim", "--symbol", SYMBOL)
    assert rc == 2 and "no candles in the archive" in err


# ----------------------------------------------------------------------------- a ccxt venue


_KLINE = cases("binance", "fetchOHLCV")[2]["httpResponse"][0]  # "swap ohlcv": Binance USD-M's kline row


class Klines:
    """Binance USD-M's /fapi/v1/klines and /fapi/v1/time over a fixed history, in the recorded shape."""

    def __init__(self, first: int, count: int, now: int, missing: tuple[int, ...] = ()) -> None:
        self.now = now
        self.rows = []
        for i in range(count):
            if i in missing:
                continue
            t = first + i * MIN
            price = f"{68000 + i}.{i % 100:02d}"
            self.rows.append([t, price, f"{68001 + i}.50", f"{67999 + i}.10", price, f"{i}.001", t + MIN - 1, *_KLINE[7:]])
        self.asked: list[dict[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fapi/v1/time", self.time)
        app.router.add_get("/fapi/v1/klines", self.klines)
        return app

    async def time(self, _request: web.Request) -> web.Response:
        return web.json_response({"serverTime": self.now})

    async def klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.asked.append(q)
        limit = min(int(q.get("limit", 500)), 1500)
        start, end = int(q.get("startTime", 0)), int(q.get("endTime", 2**62))
        return web.json_response([r for r in self.rows if start <= r[0] <= end][:limit])


@pytest.fixture
async def binance(tmp_path: Path) -> AsyncIterator[tuple[Klines, CcxtVenueConfig]]:
    # 4,000 minutes, one missing; the venue's clock is inside the last one (still forming)
    venue = Klines(T0, 4_000, now=T0 + 3_999 * MIN + 20_000, missing=(2_500,))
    runner = web.AppRunner(venue.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cfg = CcxtVenueConfig(rest_url=f"http://127.0.0.1:{runner.addresses[0][1]}", markets_file=str(write_markets("binanceusdm", tmp_path)))
    yield venue, cfg
    await runner.cleanup()


async def test_a_venues_history_is_paged_through_ccxt_and_only_closed_candles_are_stored(
    tmp_path: Path, binance: tuple[Klines, CcxtVenueConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    venue, cfg = binance
    config = Config(data_dir=str(tmp_path / "data"), venues={"binanceusdm": cfg})
    args = parser().parse_args(["data", "import", "--from", "ccxt", "--venue", "binanceusdm", "--symbol", SYMBOL, "--since", "2024-01-01"])
    rc = await asyncio.to_thread(data_command, config, args)
    out, err = capsys.readouterr()
    assert rc == 0, err
    # ccxt asks Binance for at most 1,000 candles a request (Binance would give USD-M 1,500)
    assert [(q["symbol"], q["interval"], q["limit"]) for q in venue.asked] == [("BTCUSDT", "1m", "1000")] * 4
    assert [int(q["startTime"]) for q in venue.asked] == [T0, T0 + 1_000 * MIN, T0 + 2_000 * MIN, T0 + 3_001 * MIN]  # 2,500 is missing
    bars = load_bars(stored_path(config, "binanceusdm"))
    assert len(bars) == 3_998  # 4,000 less the missing one and the forming one
    assert bars[-1].open_time == T0 + 3_998 * MIN
    assert bars[1] == Bar(T0 + MIN, D("68001.01"), D("68002.50"), D("68000.10"), D("68001.01"), D("1.001"))
    assert "1 gap, 1 1m candle missing (not filled): 1 missing from 2024-01-02T17:39:00Z to 2024-01-02T17:41:00Z" in out
    assert "up to" in err  # progress


async def test_a_venues_window_ends_at_until(
    tmp_path: Path, binance: tuple[Klines, CcxtVenueConfig], capsys: pytest.CaptureFixture[str]
) -> None:
    venue, cfg = binance
    config = Config(data_dir=str(tmp_path / "data"), venues={"binanceusdm": cfg})
    since, until = T0 + 10 * MIN + 5, T0 + 20 * MIN  # an unaligned since starts at the next candle
    args = parser().parse_args(
        ["data", "import", "--from", "ccxt", "--venue", "binanceusdm", "--symbol", SYMBOL, "--since", str(since), "--until", str(until)]
    )
    assert await asyncio.to_thread(data_command, config, args) == 0, capsys.readouterr()
    assert [b.open_time for b in load_bars(stored_path(config, "binanceusdm"))] == [T0 + i * MIN for i in range(11, 20)]
    assert len(venue.asked) == 1


# ----------------------------------------------------------------------------- the simulated exchange's candle file


def test_the_simulated_exchanges_candle_file_reads_through_the_same_csv_reader(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(csv_rows(3)) + "\n")
    rows = CandleFile(SimConfig(prices="csv", csv_path=str(path))).rows
    assert rows == [(D(100 + i), D(101 + i), D(99 + i), D(f"{100.5 + i}"), D(f"{i}.25")) for i in range(3)]
    iso = tmp_path / "iso.csv"
    iso.write_text("2024-01-01T00:00:00Z,1,2,0.5,1.5,3\n2024-01-01T00:01:00Z,1,2,0.5,1.5,3\n")
    assert len(CandleFile(SimConfig(prices="csv", csv_path=str(iso))).rows) == 2  # ISO times too now
    path.write_text("timestamp,open,high,low,close,volume\n" + "\n".join(csv_rows(2)) + "\nnot,a,row\n")
    with pytest.raises(ValueError, match=r"c.csv:4: the timestamp 'not'"):
        CandleFile(SimConfig(prices="csv", csv_path=str(path)))
