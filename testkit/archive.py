"""The archive under test: mixed events for every stream, and a message-by-message comparison of
the archive's files with the streams (tests/test_archive*.py, bench/archive.py)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
from nats.aio.client import Client

from bus.publisher import Publisher
from bus.reader import read_stream
from schemas import subjects
from schemas.codec import encode
from schemas.market import Trade
from schemas.ops import BreakerChange, RiskAlert, StrategyState
from testkit import events

T0 = 1_700_000_000_000
ARCHIVED = ("MARKET", "ACCOUNT", "COMMAND", "OPS", "DLQ")
# What any client could publish on a stream's subjects that the codec refuses.
GARBAGE: tuple[bytes, ...] = (
    b"not json at all",
    b'{"type": "candle", "id": "x"}',  # a known type, fields missing
    b'{"type": "no_such_type", "id": "x", "ts": 1}',
    b"\x00\xff\xfe binary \x80\x81",
    b"[1, 2, 3]",
    b"",
    b'{"type": "ticker", "id": "t", "venue": "sim", "symbol": "BTC/USDT:USDT", "last": "-1", "ts": 1, "ts_local": 1}',
)


@dataclass(frozen=True)
class Item:
    subject: str
    data: bytes
    msg_id: str | None = None
    headers: dict[str, str] | None = None


def one(i: int, rng: random.Random) -> Item:
    """The i-th message of a mixed run: every stream, most types, some garbage everywhere."""
    ts = T0 + i * 1_000
    price = Decimal(60_000) + Decimal(rng.randint(-5_000, 5_000)) / 10
    k = i % 16
    msg: Any
    if k in (0, 1, 2):
        msg = events.ticker(price, ts=ts)
    elif k == 3:
        msg = events.candle(str(price), open_time=T0 + i * 60_000, closed=i % 2 == 0)
    elif k == 4:
        msg = Trade(
            id=f"tr{i}",
            venue="sim",
            symbol="BTC/USDT:USDT",
            trade_id=str(i),
            side="buy",
            price=price,
            amount=Decimal("0.01"),
            ts=ts,
            ts_local=ts,
        )
    elif k == 5:
        msg = events.order_update(client_order_id=f"c{i}", price=str(price), ts=ts, ts_local=ts)
    elif k == 6:
        msg = events.fill(client_order_id=f"c{i}", trade_id=f"t{i}", price=str(price), ts=ts)
    elif k == 7:
        msg = events.place(client_order_id=f"c{i}", price=str(price), ts=ts)
    elif k == 8:  # full and compact states (docs/adr/0024-bounded-state-events.md)
        msg = StrategyState(
            id=f"s{i}", component="grid", instance="g", venue="sim", account="main", symbol="BTC/USDT:USDT", status="running",
            input_seq=i, realized_pnl=Decimal(i) / 100, state={"slots": [1, 2]} if i % 32 < 16 else None, ts=ts,
        )  # fmt: skip
    elif k == 9:
        msg = BreakerChange(id=f"b{i}", instance="risk", scope="global", state="ok", previous="halted", reason="test", ts=ts)
    elif k == 10:
        msg = RiskAlert(id=f"a{i}", instance="risk", severity="warning", kind="exposure", message="m", value=price, ts=ts)
    elif k == 11:
        original = subjects.md("sim", "BTC/USDT:USDT", "ticker")
        return Item(subjects.dlq(original), GARBAGE[i % len(GARBAGE)] or b"{}", f"dlq{i}", {"Sqt-Reason": "undecodable: test"})
    elif k == 12:
        original = subjects.acct("sim", "main", "BTC/USDT:USDT", "fill")
        fill = events.fill(trade_id=f"d{i}", ts=ts)
        return Item(subjects.dlq(original), encode(fill), f"dlq{i}", {"Sqt-Reason": "the subject is the authority"})
    else:  # garbage on one of the four streams' subjects
        where = [
            subjects.md("sim", "BTC/USDT:USDT", "ticker"),
            subjects.acct("sim", "main", "BTC/USDT:USDT", "order"),
            subjects.cmd("sim", "main", "BTC/USDT:USDT", "place"),
            subjects.ops("grid", "g", "state"),
        ][(i // 16) % 4]
        return Item(where, GARBAGE[i % len(GARBAGE)], f"g{i}")
    return Item(subjects.subject_of(msg), encode(msg), msg.id if k != 8 else f"s{i}")


def mixed(n: int, seed: int = 7, start: int = 0) -> list[Item]:
    rng = random.Random(seed)
    return [one(i, rng) for i in range(start, start + n)]


async def publish(nc: Client, items: list[Item]) -> None:
    pub = await Publisher(nc).start()
    try:
        futures = [await pub.send(it.subject, it.data, it.msg_id, it.headers) for it in items]
        for f in futures:
            await f
    finally:
        await pub.close()


async def stream_contents(nc: Client, stream: str) -> dict[int, tuple[str, bytes]]:
    """seq -> (subject, payload) of everything the stream holds now."""
    out: dict[int, tuple[str, bytes]] = {}
    async for batch in read_stream(nc, stream):
        for m in batch:
            out[m.seq] = (m.subject, bytes(m.data))
    return out


def archive_rows(root: Path, stream: str) -> list[tuple[int, str, bytes, str]]:
    """(seq, subject, payload bytes, type) of every row of a stream's files, duplicates kept."""
    files = sorted((root / stream).glob("date=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    try:
        out: list[tuple[int, str, bytes, str]] = []
        for f in files:  # file by file: an undecoded file's raw_bytes is exact, a typed one's raw is UTF-8 JSON
            cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{f}')").fetchall()}
            payload = "raw_bytes" if "raw_bytes" in cols else "encode(raw)"
            rows = con.execute(f"SELECT seq, subject, {payload}, type FROM read_parquet('{f}')").fetchall()
            out += [(int(s), str(subj), bytes(p), str(t)) for s, subj, p, t in rows]
        return out
    finally:
        con.close()


@dataclass
class Comparison:
    stream: str
    in_stream: int = 0
    archived: int = 0
    duplicates: list[int] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    extra: list[int] = field(default_factory=list)
    different: list[int] = field(default_factory=list)
    types: Counter[str] = field(default_factory=Counter)

    @property
    def equal(self) -> bool:
        return not (self.duplicates or self.missing or self.extra or self.different)

    def __str__(self) -> str:
        return (
            f"{self.stream}: {self.in_stream} in the stream, {self.archived} rows; duplicates {self.duplicates[:5]}, "
            f"missing {self.missing[:5]} ({len(self.missing)}), extra {self.extra[:5]}, different {self.different[:5]}"
        )


async def compare(nc: Client, root: Path, stream: str) -> Comparison:
    """The archive of a stream against the stream, message by message."""
    want = await stream_contents(nc, stream)
    rows = archive_rows(root, stream)
    c = Comparison(stream, len(want), len(rows))
    seen: Counter[int] = Counter(r[0] for r in rows)
    c.duplicates = sorted(s for s, n in seen.items() if n > 1)
    c.missing = sorted(set(want) - set(seen))
    c.extra = sorted(set(seen) - set(want))
    for seq, subject, payload, type_ in rows:
        c.types[type_] += 1
        if seq in want and want[seq] != (subject, payload):
            c.different.append(seq)
    return c


def partial_files(root: Path) -> list[str]:
    """Files under a `.parquet` name that DuckDB cannot read to the end (none may exist)."""
    bad = []
    con = duckdb.connect()
    for f in root.glob("*/date=*/*.parquet"):
        try:
            con.execute(f"SELECT count(*) FROM read_parquet('{f}')").fetchall()
        except duckdb.Error:
            bad.append(str(f))
    con.close()
    return bad
