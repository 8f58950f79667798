"""The archive's pure parts and its commit: columns per type, file names and high-water marks,
the day split, grouping, and a crash at every step of a commit (docs/adr/0022)."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bus.contract import StoredMsg
from monitors.archive import writer as writer_mod
from monitors.archive.batch import Stored, day_of, file_name, group, high_water, parse_name, row_of
from monitors.archive.columns import DECIMAL, UNDECODED, columns_of, schema_of
from monitors.archive.config import ArchiveConfig
from monitors.archive.views import VIEWS, open_archive
from monitors.archive.writer import StreamWriter
from schemas.codec import encode
from schemas.market import GapMarker
from testkit import events

DAY0 = 1_700_006_400_000_000_000  # 2023-11-15 00:00:00 UTC, in ns
MINUTE_NS = 60 * 10**9


def stored(seq: int, msg: Any, at_ns: int = DAY0, subject: str = "md.sim.BTC-USDT-USDT.ticker") -> StoredMsg:
    data = msg if isinstance(msg, bytes) else encode(msg)
    return Stored(seq, subject, data, {"Nats-Msg-Id": f"id{seq}"}, at_ns)


# ----------------------------------------------------------------------------- columns


def test_columns_are_typed_from_the_schema() -> None:
    cols = dict(schema_of("candle"))
    assert cols["open"] == cols["close"] == cols["volume"] == DECIMAL
    assert cols["open_time"] == cols["ts"] == cols["ts_local"] == "TIMESTAMP"
    assert cols["open_time_ms"] == "BIGINT"  # the int ms kept beside the time
    assert cols["closed"] == "BOOLEAN" and cols["venue"] == "VARCHAR"
    assert list(cols)[:6] == ["stream", "seq", "subject", "stored_at", "msg_id", "type"]
    assert list(cols)[-2:] == ["headers", "raw"]
    state = dict(schema_of("strategy_state"))
    assert state["state"] == state["levels"] == "JSON"  # nested values
    assert state["input_seq"] == "BIGINT"  # an int that is not a time
    assert dict(schema_of("place_order"))["ttl_ms"] == "BIGINT"  # a duration is not a time
    assert dict(schema_of("funding_rate"))["next_funding_time"] == "TIMESTAMP"
    assert dict(schema_of("order"))["price"] == DECIMAL  # `Decimal | None`


def test_a_field_named_like_an_envelope_column_is_renamed() -> None:
    names = [c.name for c in columns_of("gap")]
    assert "msg_stream" in names and "stream" not in names
    gap = GapMarker(id="g", venue="sim", symbol="BTC/USDT:USDT", stream="ticker", since=1, until=2, reason="r", ts=3, ts_local=3)
    tag, row = row_of("MARKET", stored(1, gap))
    assert tag == "gap" and row["stream"] == "MARKET" and row["msg_stream"] == "ticker"


def test_undecoded_rows_keep_the_exact_bytes_and_the_reason() -> None:
    tag, row = row_of("OPS", Stored(9, "ops.x.y.z", b"\xff\x00{", {"Sqt-Reason": "r", "Nats-Msg-Id": "m"}, DAY0))
    assert tag == UNDECODED and row["raw_bytes"] == b"\xff\x00{" and row["error"]
    assert row["msg_id"] == "m" and row["headers"] == {"Sqt-Reason": "r"}
    # a known type that does not validate is undecoded too (the codec is the judge)
    tag, _ = row_of("MARKET", stored(2, b'{"type":"ticker","id":"t","venue":"v","symbol":"s","last":"-1","ts":1,"ts_local":1}'))
    assert tag == UNDECODED


# ----------------------------------------------------------------------------- names, marks, days


def test_file_names_sort_by_sequence_and_parse_back() -> None:
    assert file_name("funding_rate", 7, 1234) == "funding_rate-00000000000000000007-00000000000000001234.parquet"
    assert parse_name(file_name("funding_rate", 7, 1234)) == ("funding_rate", 7, 1234)
    assert file_name("a", 9, 9) < file_name("a", 10, 10)
    for other in (".fill-00000000000000000001-00000000000000000002.parquet.tmp", "fill-1-2.parquet", ".commit", "x.parquet"):
        assert parse_name(other) is None


def test_every_type_names_files_that_parse_back() -> None:
    """A tag the file-name pattern did not read would leave its files out of the high-water mark
    (and a restart would write them again): every message type's, and the two fallbacks'."""
    from monitors.archive.columns import TYPES, UNTYPED

    for tag in (*TYPES, UNDECODED, UNTYPED):
        assert parse_name(file_name(tag, 1, 2)) == (tag, 1, 2), tag


def test_the_high_water_mark_is_the_highest_last_sequence_of_a_committed_file() -> None:
    names = [file_name("ticker", 1, 50), file_name("fill", 20, 40), file_name("ticker", 51, 90), ".ticker-x.tmp"]
    assert high_water(names) == 90
    assert high_water([]) == 0
    assert high_water([f".{file_name('ticker', 91, 200)}.tmp"]) == 0  # temp names never count


def test_the_day_is_the_utc_day_of_the_store_time() -> None:
    assert day_of(DAY0) == "2023-11-15"
    assert day_of(DAY0 - 1) == "2023-11-14"
    assert day_of(DAY0 + 86_400 * 10**9 - 1) == "2023-11-15"


def test_a_batch_is_grouped_by_day_and_type_with_each_files_range() -> None:
    msgs = [
        stored(10, events.ticker("100", ts=1), DAY0 - MINUTE_NS),
        stored(11, events.candle("100"), DAY0 - MINUTE_NS),
        stored(12, events.ticker("101", ts=2), DAY0 - 1),
        stored(13, events.ticker("102", ts=3), DAY0),  # midnight: the next day's file
        stored(14, b"garbage", DAY0),
        stored(15, events.candle("101", open_time=1_700_000_060_000), DAY0 + MINUTE_NS),
    ]
    groups = group("MARKET", msgs)
    got = [(g.date, g.type, g.first, g.last, [r["seq"] for r in g.rows()]) for g in groups]
    assert got == [
        ("2023-11-14", "ticker", 10, 12, [10, 12]),
        ("2023-11-14", "candle", 11, 11, [11]),
        ("2023-11-15", "ticker", 13, 13, [13]),
        ("2023-11-15", "undecoded", 14, 14, [14]),
        ("2023-11-15", "candle", 15, 15, [15]),
    ]
    assert groups[0].directory == "MARKET/date=2023-11-14"


def test_the_config_refuses_what_cannot_work() -> None:
    assert ArchiveConfig().root("data") == Path("data/archive")
    assert ArchiveConfig(directory="/x").root("data") == Path("/x")
    for bad in ({"batch_size": 0}, {"flush_seconds": 0}, {"streams": ["NOPE"]}, {"streams": ["OPS", "OPS"]}, {"compression": "lz9"}):
        with pytest.raises(ValueError):
            ArchiveConfig(**bad)


# ----------------------------------------------------------------------------- commits


def batch(first: int, n: int) -> list[StoredMsg]:
    """n messages from `first`: tickers, candles and garbage, across midnight (several files)."""
    out = []
    for i in range(n):
        seq = first + i
        at = DAY0 + (seq - 50) * MINUTE_NS
        kind = seq % 3
        msg: Any = (
            events.ticker(str(100 + seq), ts=seq)
            if kind == 0
            else events.candle(str(100 + seq), open_time=seq * 60_000)
            if kind == 1
            else b"junk"
        )
        out.append(stored(seq, msg, at))
    return out


def visible(root: Path) -> list[int]:
    """Every seq in the `.parquet` files of MARKET, read by DuckDB (duplicates kept)."""
    files = sorted(root.glob("MARKET/date=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    return sorted(r[0] for f in files for r in con.execute(f"SELECT seq FROM read_parquet('{f}')").fetchall())


def test_a_commit_writes_typed_files_readers_can_query(tmp_path: Path) -> None:
    w = StreamWriter(tmp_path, "MARKET")
    assert w.recover().high_water == 0
    written = w.commit(group("MARKET", batch(1, 120)))
    assert len(written) == 6  # 3 types x 2 days
    assert visible(tmp_path) == list(range(1, 121))
    held = StreamWriter(tmp_path, "MARKET").recover()
    assert (held.high_water, held.files) == (120, 6)
    con = open_archive(tmp_path)
    row = con.execute("SELECT close, open_time, open_time_ms, closed FROM candles ORDER BY seq LIMIT 1").fetchone()
    assert row is not None and row[0] == Decimal(101) and row[2] == 60_000 and row[3] is True
    assert con.execute("SELECT count(*) FROM undecoded").fetchone() == (40,)


class Crash(Exception):
    pass


def test_a_crash_at_any_step_of_a_commit_shows_all_of_the_batch_or_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file-system step of a commit (write, fsync, rename, unlink) is a point where the
    process may die: the next start shows the whole batch or none of it, never a part, and its
    high-water mark says which. Each step is crashed in turn, until a commit runs through."""
    step = 0
    while True:
        root = tmp_path / f"step{step}"
        w = StreamWriter(root, "MARKET")
        w.recover()
        w.commit(group("MARKET", batch(1, 60)))
        count = [0]

        def counted(fn: Any, count: list[int] = count, step: int = step) -> Any:
            def wrapper(*a: Any, **kw: Any) -> Any:
                if count[0] == step:
                    raise Crash(f"step {step}: {fn.__name__}")
                count[0] += 1
                return fn(*a, **kw)

            return wrapper

        monkeypatch.setattr(writer_mod, "fsync_path", counted(writer_mod.fsync_path))
        monkeypatch.setattr(writer_mod.os, "replace", counted(os.replace))
        monkeypatch.setattr(Path, "unlink", counted(Path.unlink))
        monkeypatch.setattr(Path, "write_text", counted(Path.write_text))
        monkeypatch.setattr(StreamWriter, "_copy", counted(StreamWriter._copy))
        try:
            w.commit(group("MARKET", batch(61, 60)))
            crashed = False
        except Crash:
            crashed = True
        monkeypatch.undo()
        held = StreamWriter(root, "MARKET").recover()  # the next start
        seqs = visible(root)
        assert seqs in (list(range(1, 61)), list(range(1, 121))), f"crash at step {step}: a part of the batch is visible ({len(seqs)} rows)"
        assert held.high_water == seqs[-1]
        assert not list(root.glob("MARKET/date=*/.*.tmp")) and not list(root.glob("MARKET/.commit*"))
        # ... and what the next session writes (the batch again, if it was lost) makes it whole.
        if held.high_water == 60:
            StreamWriter(root, "MARKET").commit(group("MARKET", batch(61, 60)))
        assert visible(root) == list(range(1, 121))
        if not crashed:
            break
        step += 1
    assert step > 12  # 6 files: each written, fsynced, renamed; the manifest; the directories


def test_every_view_exists_and_is_empty_before_any_file(tmp_path: Path) -> None:
    con = open_archive(tmp_path / "nothing-here")
    for view in VIEWS:
        assert con.execute(f"SELECT count(*) FROM {view.name}").fetchone() == (0,), view.name
    cols = [r[0] for r in con.execute("DESCRIBE candles").fetchall()]
    assert {"open_time", "open", "high", "low", "close", "volume", "closed", "venue", "symbol"} <= set(cols)
    got = con.execute("SELECT open_time, open, high, low, close, volume FROM candles WHERE venue=? AND symbol=? AND closed", ["sim", "X"])
    assert got.fetchall() == []
