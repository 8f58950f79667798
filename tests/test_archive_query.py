"""`sqt query` over a known small archive: a table, CSV, JSON, exit 2 on bad SQL, the shell, and
the README's examples (fills per hour, realized PnL per day, slippage) with their figures."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cli.query import EXAMPLES, shell, table
from monitors.archive.batch import Stored, group
from monitors.archive.views import open_archive
from monitors.archive.writer import StreamWriter
from schemas import subjects
from schemas.codec import encode
from schemas.commands import CancelOrder
from schemas.ops import StrategyState
from testkit import events
from testkit.processes import ROOT, clean_env

T0 = 1_700_000_000_000  # 2023-11-14 22:13:20 UTC
DAY = 86_400_000


def state(seq: int, ts: int, pnl: str, component: str = "grid", instance: str = "g1") -> StrategyState:
    return StrategyState(
        id=f"s{seq}",
        component=component,
        instance=instance,
        venue="sim",
        account="main",
        symbol="BTC/USDT:USDT",
        status="running",
        input_seq=seq,
        realized_pnl=Decimal(pnl),
        ts=ts,
    )


def known() -> dict[str, list[Any]]:
    cancel = CancelOrder(id="x", venue="sim", account="main", symbol="BTC/USDT:USDT", client_order_id="c3", origin="t", ts=T0 + 95_000)
    return {
        "MARKET": [events.ticker("100", ts=T0), events.ticker("110", ts=T0 + 60_000), events.candle("105", open_time=T0)],
        "COMMAND": [
            events.place("c1", price="101", side="buy", ts=T0 + 30_000),
            events.place("c2", price="109", side="sell", ts=T0 + 90_000),
            cancel,
        ],
        "ACCOUNT": [
            events.fill("c1", "t1", price="100.5", amount="0.01", ts=T0 + 31_000),
            events.fill("c2", "t2", price="109", amount="0.01", side="sell", ts=T0 + 91_000),
            events.fill("c1", "t3", price="100.2", amount="0.02", ts=T0 + 3_600_000),
        ],
        "OPS": [
            state(1, T0, "1"),
            state(2, T0 + 100_000, "3"),
            state(3, T0 + DAY, "2"),
            state(4, T0 + DAY + 1_000, "5"),
            state(5, T0 + DAY + 2_000, "99", component="arbitrage", instance="a1"),
        ],
    }


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    for stream, msgs in known().items():
        w = StreamWriter(root, stream)
        w.recover()
        stored = [Stored(i + 1, subjects.subject_of(m), encode(m), {"Nats-Msg-Id": m.id}, m.ts * 1_000_000) for i, m in enumerate(msgs)]
        w.commit(group(stream, stored))
        w.close()
    return root


def sqt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=60)


def rows(root: Path, sql: str) -> list[tuple[Any, ...]]:
    return open_archive(root).execute(sql).fetchall()


def test_fills_per_hour(archive: Path) -> None:
    got = [(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows(archive, EXAMPLES["fills per hour"])]
    assert got == [
        ("2023-11-14 22:00:00", "BTC/USDT:USDT", 2, Decimal("0.02"), Decimal("2.095")),
        ("2023-11-14 23:00:00", "BTC/USDT:USDT", 1, Decimal("0.02"), Decimal("2.004")),
    ]


def test_realized_pnl_per_day_from_the_grid_states(archive: Path) -> None:
    got = [(str(r[0]), r[1], r[2], r[3]) for r in rows(archive, EXAMPLES["realized pnl per day"])]
    assert got == [("2023-11-14", "g1", Decimal(3), Decimal(3)), ("2023-11-15", "g1", Decimal(2), Decimal(5))]  # not the arbitrage's


def test_slippage_of_fills_against_the_ticker_at_command_time(archive: Path) -> None:
    got = [(r[0], r[1], r[3], r[4], r[5]) for r in rows(archive, EXAMPLES["slippage against the ticker at command time"])]
    assert got == [
        ("c1", "buy", Decimal(100), Decimal("100.5"), 50.0),  # paid 0.5 over the mid of then
        ("c1", "buy", Decimal(100), Decimal("100.2"), 20.0),
        ("c2", "sell", Decimal(110), Decimal(109), 90.91),  # the later ticker's mid, not the first one's
    ]


def test_sqt_query_prints_a_table_csv_and_json(archive: Path) -> None:
    sql = "SELECT client_order_id, price, ts FROM fills ORDER BY ts"
    out = sqt("query", "--archive", str(archive), sql)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["client_order_id", "price", "ts"]
    assert lines[2].split()[:2] == ["c1", "100.5"] and lines[-1] == "(3 rows)"
    assert [len(rule) for rule in lines[1].split()] == [15, 5, 19]  # each column as wide as its widest cell
    csv_out = sqt("query", "--archive", str(archive), "--csv", sql)
    assert csv_out.stdout.splitlines() == [
        "client_order_id,price,ts",
        "c1,100.5,2023-11-14 22:13:51",
        "c2,109,2023-11-14 22:14:51",
        "c1,100.2,2023-11-14 23:13:20",
    ]
    js = json.loads(sqt("query", "--archive", str(archive), "--json", sql).stdout)
    assert js[0] == {"client_order_id": "c1", "price": "100.5", "ts": "2023-11-14 22:13:51"}


def test_bad_sql_prints_duckdbs_message_and_exits_2(archive: Path) -> None:
    out = sqt("query", "--archive", str(archive), "SELEC nonsense")
    assert out.returncode == 2
    assert "syntax error" in out.stderr and "Traceback" not in out.stderr
    missing = sqt("query", "--archive", str(archive), "SELECT nope FROM fills")
    assert missing.returncode == 2 and "nope" in missing.stderr and "Traceback" not in missing.stderr


def test_a_view_with_no_files_answers_empty(archive: Path) -> None:
    out = sqt("query", "--archive", str(archive), "--csv", "SELECT count(*) AS n FROM liquidations")
    assert out.returncode == 0 and out.stdout.splitlines() == ["n", "0"]
    empty = sqt("query", "--archive", str(archive / "nothing"), "--csv", "SELECT count(*) AS n FROM events")
    assert empty.returncode == 0 and empty.stdout.splitlines() == ["n", "0"]


def test_the_shell_runs_commands_and_sql_and_survives_errors(archive: Path) -> None:
    out = io.StringIO()
    script = ".tables\nSELECT count(*) AS n FROM fills;\nSELEC x;\n.schema fills\n.quit\nSELECT 1;\n"
    assert shell(archive, io.StringIO(script), out) == 0
    text = out.getvalue()
    assert "grid_states" in text and "(1 row)" in text and "error:" in text and "client_order_id" in text
    assert text.count("(1 row)") == 1  # nothing after .quit


def test_the_table_aligns_numbers_to_the_right() -> None:
    text = table(["a", "n"], [("x", Decimal("1.50")), ("yy", Decimal(10))])
    assert text.splitlines()[2:4] == ["x   1.5", "yy   10"]


def test_the_archive_can_be_read_without_the_views(archive: Path) -> None:
    con = duckdb.connect()
    n = con.execute(f"SELECT count(*) FROM read_parquet('{archive}/*/date=*/*.parquet', union_by_name=true)").fetchone()
    assert n == (14,)


def test_real_prices_multiply_exactly(tmp_path: Path) -> None:
    """price * amount (and a sum of them) at real prices: exact, no overflow (ADR 0022: the scale)."""
    w = StreamWriter(tmp_path, "ACCOUNT")
    w.recover()
    fills = [events.fill("c1", f"t{i}", price="65000.5", amount="1.5", ts=T0 + i) for i in range(3)]
    w.commit(group("ACCOUNT", [Stored(i + 1, subjects.subject_of(f), encode(f), None, f.ts * 1_000_000) for i, f in enumerate(fills)]))
    got = rows(tmp_path, "SELECT sum(price * amount), max(price * amount * 100000) FROM fills")
    assert got == [(Decimal("292502.25"), Decimal("9750075000"))]
